"""Peer check: tabfm's TabM network against the reference ``tabm`` package's network.

Both run inside the same estimator (``TabMClassifier`` / ``TabMRegressor``), so they see the same
splits, preprocessing (quantile map, 48 quantile bins, one-hot categoricals), validation rows,
optimiser, batches and early stopping; only the ``nn.Module`` differs. The reference network is
``tabm.TabM.make`` with ``rtdl_num_embeddings.PiecewiseLinearEmbeddings(version="B")``, as in the
reference package's example. Install it with ``pip install -e .[peer]``.

Run from the repository root::

    nice -n 10 python -m benchmarks.tabm_peer --data-dir ../shared/datasets --seeds 3 \
        --out benchmarks/results/tabm_peer.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from benchmarks import data as bdata
from benchmarks.run import classification_metrics, regression_metrics
from models.tabm import TabMConfig
from tabfm.tabm import TabMClassifier, TabMRegressor

# Eight small public datasets (binary, multiclass, regression; some categorical) so that three
# seeds of both networks fit in well under an hour on two shared cores.
DEFAULT_DATASETS = [
    "hepatitis",
    "ionosphere",
    "207_autoPrice",
    "560_bodyfat",
    "hitters_salary",
    "ecoli",
    "547_no2",
    "dermatology",
]


class _ReferenceTabM(nn.Module):
    """The reference package's TabM behind this project's ``(x_num, x_cat) -> (B, k, O)`` call."""

    def __init__(self, config: TabMConfig, bins: list[Tensor] | None) -> None:
        super().__init__()
        import rtdl_num_embeddings
        import tabm

        embeddings = None
        if config.uses_embeddings:
            embeddings = rtdl_num_embeddings.PiecewiseLinearEmbeddings(
                bins, config.d_embedding, activation=False, version="B"
            )
        self.net = tabm.TabM.make(
            n_num_features=config.n_num_features,
            cat_cardinalities=list(config.cat_cardinalities) or None,
            d_out=config.d_out,
            num_embeddings=embeddings,
            k=config.k,
            n_blocks=config.resolved_n_blocks,
            d_block=config.d_block,
            dropout=config.dropout,
            arch_type=config.arch,
        )

    def forward(self, x_num: Tensor | None, x_cat: Tensor | None) -> Tensor:
        if self.net._n_num_features == 0:
            x_num = None
        return self.net(x_num, x_cat)


class ReferenceTabMClassifier(TabMClassifier):
    def _build_model(self, config, bins):
        return _ReferenceTabM(config, bins)


class ReferenceTabMRegressor(TabMRegressor):
    def _build_model(self, config, bins):
        return _ReferenceTabM(config, bins)


def _score(task: str, est, split: bdata.Split, classes: np.ndarray) -> dict[str, float]:
    if task == "regression":
        return regression_metrics(split.y_test, est.predict(split.X_test))
    y_test = np.searchsorted(classes, split.y_test)
    proba = np.zeros((len(y_test), len(classes)))
    proba[:, np.searchsorted(classes, est.classes_)] = est.predict_proba(split.X_test)
    return classification_metrics(y_test, proba)


def run(args: argparse.Namespace) -> pd.DataFrame:
    names = args.datasets.split(",") if args.datasets else DEFAULT_DATASETS
    csv = Path(args.csv) if args.csv else None
    # Rows already in --csv are kept and not re-run, so an interrupted check resumes.
    rows = pd.read_csv(csv).to_dict("records") if csv is not None and csv.is_file() else []
    done = {(r["dataset"], int(r["seed"]), r["impl"]) for r in rows}
    for entry in bdata.local_datasets(args.data_dir, names):
        dataset = entry.load()
        classes = np.unique(dataset.y) if entry.task != "regression" else np.array([])
        for seed in range(args.seeds):
            split = bdata.make_split(dataset, seed, max_train_rows=args.max_train_rows)
            for impl in ("tabfm", "reference"):
                if (entry.name, seed, impl) in done:
                    continue
                if entry.task == "regression":
                    cls = TabMRegressor if impl == "tabfm" else ReferenceTabMRegressor
                else:
                    cls = TabMClassifier if impl == "tabfm" else ReferenceTabMClassifier
                est = cls(random_state=seed, max_epochs=args.max_epochs, device="cpu")
                start = time.perf_counter()
                est.fit(split.X_train, split.y_train)
                fit_s = time.perf_counter() - start
                metrics = _score(entry.task, est, split, classes)
                score = metrics["r2"] if entry.task == "regression" else metrics["roc_auc"]
                rows.append(
                    dict(
                        dataset=entry.name,
                        task=entry.task,
                        seed=seed,
                        impl=impl,
                        n_train=len(split.y_train),
                        score=score,
                        **metrics,
                        fit_s=fit_s,
                        epochs=est.training_["n_epochs"],
                    )
                )
                if csv is not None:
                    pd.DataFrame(rows).to_csv(csv, index=False)
                print(
                    f"{entry.name:>16} seed {seed} {impl:>9}: score {score:.4f} fit {fit_s:6.1f}s "
                    f"epochs {est.training_['n_epochs']}",
                    flush=True,
                )
    return pd.DataFrame(rows)


def summarise(results: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Per dataset: mean and spread (std over seeds) of both, their difference, fit-time ratio."""
    table = []
    for (name, task), group in results.groupby(["dataset", "task"], sort=False):
        ours = group[group.impl == "tabfm"].sort_values("seed")
        ref = group[group.impl == "reference"].sort_values("seed")
        spread = max(ours.score.std(ddof=1), ref.score.std(ddof=1))
        diff = ours.score.mean() - ref.score.mean()
        table.append(
            dict(
                dataset=name,
                task=task,
                metric="r2" if task == "regression" else "roc_auc",
                n_train=int(ours.n_train.iloc[0]),
                tabfm=f"{ours.score.mean():.4f} ± {ours.score.std(ddof=1):.4f}",
                reference=f"{ref.score.mean():.4f} ± {ref.score.std(ddof=1):.4f}",
                diff=round(diff, 4),
                within_spread=bool(abs(diff) <= spread),
                fit_s_tabfm=round(ours.fit_s.mean(), 1),
                fit_s_reference=round(ref.fit_s.mean(), 1),
                time_ratio=round(ours.fit_s.sum() / ref.fit_s.sum(), 2),
            )
        )
    table = pd.DataFrame(table)
    total_ratio = (
        results[results.impl == "tabfm"].fit_s.sum()
        / results[results.impl == "reference"].fit_s.sum()
    )
    verdict = (
        f"{int(table.within_spread.sum())} of {len(table)} datasets have |mean difference| within the "
        f"seeds' spread (the larger standard deviation over seeds of the two); total fit time "
        f"ratio tabfm / reference = {total_ratio:.2f}."
    )
    return table, verdict


def _markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/datasets")
    parser.add_argument(
        "--datasets", default=None, help="comma-separated names (default: 8 small ones)"
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-train-rows", type=int, default=3000)
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--out", default="benchmarks/results/tabm_peer.md")
    parser.add_argument(
        "--csv",
        default=None,
        help="per-run rows, written after every fit; existing rows are reused",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = run(args)
    results = results[
        results.dataset.isin(args.datasets.split(",") if args.datasets else DEFAULT_DATASETS)
    ]
    table, verdict = summarise(results)
    lines = [
        "# TabM peer check: tabfm network vs the reference `tabm` package",
        "",
        f"Run {started}; command: `python -m benchmarks.tabm_peer --seeds {args.seeds} "
        f"--max-train-rows {args.max_train_rows} --max-epochs {args.max_epochs}`; torch threads "
        f"{torch.get_num_threads()}; machine shared with other jobs (times are relative).",
        "",
        "Same estimator, splits (70/30, stratified for classification), preprocessing, validation rows,",
        "AdamW, batches and early stopping for both; only the network differs. Score: ROC-AUC",
        "(one-vs-rest macro for multiclass) or R² on the test rows; mean ± std over seeds.",
        "",
        _markdown(table),
        "",
        verdict,
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
