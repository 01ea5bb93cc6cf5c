"""How much longer contexts help the shipped ICL weights: all training rows against subsamples.

    python -m benchmarks.icl_context_rows --datasets magic,adult,letter,krkopt,197_cpu_act \\
        [--max-train-rows 3000] [--context-rows 1000] [--seeds 0,1]

For each dataset and seed (the benchmark's split), the default estimator (4 members, seed 0) is
scored three ways: with every training row as context; with one ``--context-rows`` subsample
shared by all members (``max_context_rows``); and with a different subsample per member
("bagged"), so that the ensemble as a whole still reads every row. Contexts longer than those of
pretraining (at most 1,024 rows) only pay when the network has learnt to use them.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from benchmarks import data as bdata
from benchmarks.icl_attention_options import _score
from tabfm import TabFMClassifier, TabFMRegressor


def bagged(base: type, rows: int, seed: int = 123) -> type:
    """``base`` whose members each read a different ``rows``-row subsample of the training rows."""

    class Bagged(base):  # type: ignore[misc, valid-type]
        @torch.inference_mode()
        def _encode_contexts(self) -> None:
            self.contexts_ = []
            rng = np.random.default_rng(seed)
            n = len(self.X_train_)
            for member in self.members_:
                keep = np.sort(rng.choice(n, size=min(n, rows), replace=False))
                ridge = self._train_ridge_columns()  # leave-one-out, as for the whole context
                x, cat = self._member_table(member, self.X_train_[keep], None if ridge is None else ridge[keep])
                y = torch.as_tensor(self._train_targets(member)[keep], dtype=torch.float32, device=self.device_)[None]
                self.contexts_.append(self.network_.encode_context(x, y, categorical=cat))

    return Bagged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--datasets", required=True)
    parser.add_argument("--max-train-rows", type=int, default=3000)
    parser.add_argument("--context-rows", type=int, default=1000)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = args.context_rows
    print(f"| dataset | seed | all rows | one {rows}-row context | a {rows}-row context per member |")
    print("|---|---|---|---|---|")
    scores: list[list[float]] = []
    for entry in bdata.local_datasets(args.data_dir, args.datasets.split(",")):
        task = "regression" if entry.task == "regression" else "classification"
        base = TabFMRegressor if task == "regression" else TabFMClassifier
        variants = [
            lambda b=base: b(random_state=0),
            lambda b=base: b(random_state=0, max_context_rows=rows),
            lambda b=base: bagged(b, rows)(random_state=0),
        ]
        for seed in (int(s) for s in args.seeds.split(",")):
            split = bdata.make_split(entry.load(), seed, max_train_rows=args.max_train_rows, max_test_rows=1000)
            cells, row = [], []
            for make in variants:
                start = time.perf_counter()
                model = make().fit(split.X_train, split.y_train)
                score = _score(model, task, split.X_test, split.y_test)
                row.append(score)
                cells.append(f"{score:.4f} ({time.perf_counter() - start:.1f} s)")
            scores.append(row)
            print(f"| {entry.name} | {seed} | " + " | ".join(cells) + " |", flush=True)
    if len(scores) > 1:
        a = np.asarray(scores)
        diffs = a[:, 1:] - a[:, :1]  # each subsample variant minus all rows, per split
        se = diffs.std(axis=0, ddof=1) / np.sqrt(len(a))
        print(f"\nMean over {len(a)} splits: all rows {a[:, 0].mean():.4f}; one shared context "
              f"{a[:, 1].mean():.4f} ({diffs[:, 0].mean():+.4f} ± {se[0]:.4f}); a context per member "
              f"{a[:, 2].mean():.4f} ({diffs[:, 1].mean():+.4f} ± {se[1]:.4f}, above all rows on "
              f"{int((diffs[:, 1] > 0).sum())} of {len(a)}).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
