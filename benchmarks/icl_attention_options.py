"""Score a checkpoint's unchanged weights under other in-context attention options.

    python -m benchmarks.icl_attention_options --task classification --length-scale-ref none,256,128 \\
        --datasets magic,adult,letter,krkopt [--checkpoint FILE] [--max-train-rows 3000]

For each value of ``attention.length_scale_ref`` (``none`` = off) the network is rebuilt with that
option and the same weights, then scored with the default estimator (4 members, seed 0): on the
checkpoint-selection splits (``tabfm.validation``, at most 1,000 training rows) and, when
``--datasets`` are given, on seed 0 of the benchmark split of each with ``--max-train-rows``
training rows, where contexts are longer than in pretraining. Option choices are measured here
before a pretraining run continues with them.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from sklearn.metrics import r2_score, roc_auc_score

from benchmarks import data as bdata
from models.icl import ICLConfig, ICLTransformer
from tabfm import TabFMClassifier, TabFMRegressor
from tabfm.checkpoint import load_checkpoint, shipped_checkpoint
from tabfm.validation import score_estimator


def with_length_scale(network: ICLTransformer, ref: int | None) -> ICLTransformer:
    """The same weights with ``attention.length_scale_ref = ref``."""
    config = network.config.to_dict()
    config["attention"] = {**config["attention"], "length_scale_ref": ref}
    rebuilt = ICLTransformer(ICLConfig(**config))
    rebuilt.load_state_dict(network.state_dict())
    return rebuilt.eval()


def _score(model: object, task: str, X: object, y: np.ndarray) -> float:
    if task == "regression":
        return float(r2_score(y, model.predict(X)))
    proba = model.predict_proba(X)
    if proba.shape[1] == 2:
        return float(roc_auc_score(y, proba[:, 1]))
    return float(roc_auc_score(y, proba, multi_class="ovr", labels=model.classes_))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["classification", "regression"], required=True)
    parser.add_argument("--checkpoint", type=Path, help="default: the shipped one")
    parser.add_argument("--length-scale-ref", default="none,256,128", help="values to try; 'none' is off")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--datasets", default="", help="benchmark datasets scored at --max-train-rows")
    parser.add_argument("--max-train-rows", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    base = load_checkpoint(args.checkpoint or shipped_checkpoint(args.task))
    cls = TabFMClassifier if args.task == "classification" else TabFMRegressor
    names = [n for n in args.datasets.split(",") if n]
    entries = bdata.local_datasets(args.data_dir, names) if names else []
    splits = [bdata.make_split(e.load(), 0, max_train_rows=args.max_train_rows, max_test_rows=1000) for e in entries]
    metric = "R²" if args.task == "regression" else "ROC-AUC"
    print(f"| length_scale_ref | validation mean {metric} | " + " | ".join(e.name for e in entries) + " |")
    print("|---" * (2 + len(entries)) + "|")
    for text in args.length_scale_ref.split(","):
        ref = None if text == "none" else int(text)
        network = with_length_scale(base, ref)
        val = score_estimator(lambda n=network: cls(checkpoint=n, random_state=0, device="cpu"), args.task, args.data_dir)
        row = [f"{np.mean(list(val.values())):.4f}"]
        for split in splits:
            model = cls(checkpoint=network, random_state=0, device="cpu").fit(split.X_train, split.y_train)
            row.append(f"{_score(model, args.task, split.X_test, split.y_test):.4f}")
        print(f"| {text} | " + " | ".join(row) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
