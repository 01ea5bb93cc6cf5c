"""Paired comparison of benchmark rows: how a model or a variant changed the per-dataset scores.

    python -m benchmarks.compare RESULTS.csv --base tabfm [--models 'tabfm[n_estimators=8]',...]
        [--before EARLIER.csv] [--task classification|regression] [--tolerance 0.0005]

Scores are the runner's (ROC-AUC for classification, R² for regression), averaged over seeds per
dataset, on the datasets where the base and every compared model have one. Each compared model is
printed with its mean, its mean difference to the base, how many datasets it beat and lost by more
than ``--tolerance``, and its largest gains and losses. ``--before`` compares the base's rows in an
earlier results file (a committed one: ``git show REV:path > earlier.csv``) with those in
RESULTS.csv, for example the same estimator before and after a new checkpoint, on the splits
(dataset and seed) that both files hold, so that a six-seed earlier file pairs with a three-seed
new one. The last line is the mean of the per-dataset best of all compared columns: what choosing
per dataset would reach.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from benchmarks.report import CLASSIFICATION, dataset_scores


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"dataset": str, "model": str, "error": str})


def _scores(path: Path, models: list[str]) -> pd.DataFrame:
    return dataset_scores(_read(path), models)


def _common_splits(now: pd.DataFrame, before: pd.DataFrame, base: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both files' rows cut to the (dataset, seed) splits on which the base has a row in each."""
    splits = [set(zip(f.loc[f["model"] == base, "dataset"], f.loc[f["model"] == base, "seed"], strict=True)) for f in (now, before)]
    common = splits[0] & splits[1]

    def cut(f: pd.DataFrame) -> pd.DataFrame:
        return f[[(d, s) in common for d, s in zip(f["dataset"], f["seed"], strict=True)]]

    return cut(now), cut(before)


def paired(scores: pd.DataFrame, base: str, tolerance: float) -> pd.DataFrame:
    """Per compared column of ``scores`` (datasets × columns, no NaN): mean, difference to ``base``,
    datasets better and worse by more than ``tolerance``, largest gains and losses."""
    rows = []
    for column in scores.columns:
        diff = (scores[column] - scores[base]).sort_values()
        rows.append({
            "model": column,
            "mean": scores[column].mean(),
            "minus_base": diff.mean(),
            "better": int((diff > tolerance).sum()),
            "worse": int((diff < -tolerance).sum()),
            "largest_gains": ", ".join(f"{d} {v:+.4f}" for d, v in diff[::-1].head(2).items() if v > tolerance),
            "largest_losses": ", ".join(f"{d} {v:+.4f}" for d, v in diff.head(2).items() if v < -tolerance),
        })
    return pd.DataFrame(rows).set_index("model")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path, help="results CSV of benchmarks.run")
    p.add_argument("--base", required=True, help="the reference model (as named in the CSV)")
    p.add_argument("--models", default="", help="comma-separated models to compare with the base")
    p.add_argument("--before", type=Path, default=None, help="an earlier results CSV: compare the base's rows in it")
    p.add_argument("--task", choices=["classification", "regression"], default=None, help="only these datasets")
    p.add_argument("--tolerance", type=float, default=0.0, help="differences within it count as ties")
    args = p.parse_args(argv)

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    rows = _read(args.results)
    if args.before is not None:
        rows, before_rows = _common_splits(rows, _read(args.before), args.base)
    now = dataset_scores(rows, [args.base, *models])
    if args.task is not None:
        cls = now["task"].isin(CLASSIFICATION)
        now = now[cls if args.task == "classification" else ~cls]
    scores = now[[args.base, *models]]
    if args.before is not None:
        before = dataset_scores(before_rows, [args.base])[args.base].rename(f"{args.base} (before)")
        scores = pd.concat([before.reindex(scores.index), scores], axis=1)
        base = before.name
    else:
        base = args.base
    scores = scores.dropna()
    if scores.empty:
        raise SystemExit("no dataset has a score for the base and every compared model")
    table = paired(scores, base, args.tolerance)
    with pd.option_context("display.width", 200, "display.max_colwidth", 80):
        print(f"{len(scores)} datasets; differences within {args.tolerance} count as ties\n")
        print(table.round(4).to_string())
    print(f"\nper-dataset best of the {scores.shape[1]} columns: mean {scores.max(axis=1).mean():.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
