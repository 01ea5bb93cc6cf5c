"""How well the ICL network has learnt its own prior: TabFM against LightGBM on fresh prior tables.

    python -m benchmarks.in_prior --task regression [--n 60] [--train-rows 1000] [--test-rows 1000] \\
        [--checkpoints A.safetensors,B.safetensors] [--out results.md] [--csv rows.csv]

Tables are sampled from the pretraining prior (recipe ``default``) with seeds the pretraining
stream never uses, each split into training and test rows. On such tables a network that had
learnt its prior well would approximate the Bayes-optimal prediction and beat any fixed learner,
LightGBM included; the margin, per prior family, says how far pretraining still is from that,
independently of how realistic the prior is (which the real-data benchmark measures). Several
checkpoints (for example shipped files of earlier commits) are scored on the same tables, so
their differences are paired.

Printed: per model, the mean score (ROC-AUC or R²), the mean paired difference to LightGBM with
its standard error, and the share of tables won; then the same per family (mlp_scm, tree_scm,
smooth). Models run on one thread, TabFM with its default ensemble.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd

from benchmarks.report import command_line, markdown_table
from benchmarks.run import macro_ovr_auc

SEED_TAG = 11  # derive_seed(seed, SEED_TAG, i): a sub-stream disjoint from the batches' (tag 2)


def sample_tables(task: str, n: int, train_rows: int, test_rows: int, seed: int, recipe: str = "default"):
    """``n`` prior tables as ``(family, X DataFrame, y)``; categorical columns as pandas categories."""
    from priors.common import derive_seed
    from priors.sampler import sample_dataset

    rng = np.random.default_rng(derive_seed(seed, SEED_TAG))
    for i in range(n):
        n_features = round(math.exp(rng.uniform(math.log(2), math.log(30))))
        X, y, categorical, meta = sample_dataset(
            recipe, task, n_rows=train_rows + test_rows, n_features=n_features,
            seed=derive_seed(seed, SEED_TAG, i), n_train=train_rows if task == "classification" else None,
        )
        frame = pd.DataFrame(X, columns=[f"x{j}" for j in range(n_features)])
        for j in np.flatnonzero(categorical):
            frame[f"x{j}"] = pd.Categorical(X[:, j])
        yield meta["family"], frame, y


def score(task: str, model: object, X: pd.DataFrame, y: np.ndarray) -> float:
    from sklearn.metrics import r2_score

    if task == "regression":
        return float(r2_score(y, model.predict(X)))
    # Every class of a prior table occurs among its training rows: the columns are labels 0..C-1.
    return macro_ovr_auc(y.astype(int), model.predict_proba(X))


def paired_table(scores: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per model: mean, mean difference to ``reference`` with its standard error, share won."""
    rows = []
    for model in scores.columns:
        diff = scores[model] - scores[reference]
        rows.append({
            "model": model, "tables": int(scores[model].notna().sum()), "mean": scores[model].mean(),
            f"minus_{reference}": diff.mean(), "se": diff.std(ddof=1) / math.sqrt(max(1, diff.notna().sum())),
            "won": (diff > 0).mean() if model != reference else float("nan"),
        })
    return pd.DataFrame(rows).set_index("model")


FEATURE_BINS = [(2, 5), (6, 12), (13, 30)]


def lightgbm_table(frame: pd.DataFrame) -> str:
    """Markdown of :func:`paired_table` against LightGBM for the per-table scores in ``frame``."""
    models = [c for c in frame.columns if c.startswith("tabfm")] + ["lightgbm"]
    fmt = {"mean": ".4f", "minus_lightgbm": "+.4f", "se": ".4f", "won": ".2f"}
    return markdown_table(paired_table(frame[models], "lightgbm"), fmt)


def summary_text(frame: pd.DataFrame, header: list[str]) -> str:
    """Markdown: all tables, then per prior family and per feature count, paired with LightGBM."""
    lines = [*header, "## All tables", "", lightgbm_table(frame), "", "## Per prior family", ""]
    for family, part in frame.groupby("family"):
        lines += [f"### {family}", "", lightgbm_table(part), ""]
    lines += ["## Per number of features", ""]
    for lo, hi in FEATURE_BINS:
        part = frame[frame["n_features"].between(lo, hi)]
        if len(part):
            lines += [f"### {lo}-{hi} features", "", lightgbm_table(part), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=["classification", "regression"], required=True)
    p.add_argument("--n", type=int, default=60, help="prior tables (default 60)")
    p.add_argument("--train-rows", type=int, default=1000)
    p.add_argument("--test-rows", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoints", default="", help="comma-separated checkpoint files (default: the shipped one)")
    p.add_argument("--out", type=Path, help="write the summary (Markdown) here")
    p.add_argument("--csv", type=Path, help="write the per-table scores here")
    p.add_argument("--from-csv", type=Path, help="only summarise the per-table scores of an earlier run")
    args = p.parse_args(argv)
    args.command = command_line("benchmarks.in_prior", argv)
    if args.from_csv:
        frame = pd.read_csv(args.from_csv)
        args.train_rows, args.test_rows = int(frame["n_train"].iloc[0]), int(frame["n_test"].iloc[0])
        _write_summary(frame, args, float("nan"))
        return 0

    import lightgbm as lgb
    import torch

    from tabfm import TabFMClassifier, TabFMRegressor
    from tabfm.checkpoint import read_card, shipped_checkpoint

    torch.set_num_threads(1)
    paths = [Path(s) for s in args.checkpoints.split(",") if s] or [shipped_checkpoint(args.task)]
    names = []
    for path in paths:
        card = read_card(path)
        step = card.get("pretraining", {}).get("steps")
        names.append(f"tabfm@{step}" if step is not None else f"tabfm:{path.name}")
    if len(set(names)) < len(names):
        names = [f"tabfm:{path}" for path in paths]
    regression = args.task == "regression"
    tabfm_cls = TabFMRegressor if regression else TabFMClassifier
    lgb_cls = lgb.LGBMRegressor if regression else lgb.LGBMClassifier

    t0 = time.time()
    records = []
    for i, (family, X, y) in enumerate(sample_tables(args.task, args.n, args.train_rows, args.test_rows, args.seed)):
        tr = slice(0, args.train_rows)
        te = slice(args.train_rows, None)
        row = {"table": i, "family": family, "n_features": X.shape[1], "n_train": args.train_rows, "n_test": args.test_rows}
        for name, path in zip(names, paths, strict=True):
            model = tabfm_cls(checkpoint=path, random_state=0, device="cpu").fit(X.iloc[tr], y[tr])
            row[name] = score(args.task, model, X.iloc[te], y[te])
        model = lgb_cls(n_jobs=1, random_state=0, verbose=-1).fit(X.iloc[tr], y[tr])
        row["lightgbm"] = score(args.task, model, X.iloc[te], y[te])
        records.append(row)
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    frame = pd.DataFrame(records)
    if args.csv:
        frame.to_csv(args.csv, index=False)

    _write_summary(frame, args, time.time() - t0)
    return 0


def _write_summary(frame: pd.DataFrame, args: argparse.Namespace, seconds: float) -> None:
    metric = "R²" if args.task == "regression" else "ROC-AUC"
    header = [
        f"# In-prior check ({args.task})",
        "",
        f"- Command: `{args.command}`",
        f"- {len(frame)} tables of the `default` prior (seed {args.seed}), {args.train_rows:,} training and "
        f"{args.test_rows:,} test rows, 2-30 features; {metric}; TabFM's default ensemble; LightGBM defaults; "
        "one thread" + ("" if math.isnan(seconds) else f"; {seconds:.0f} s")
        + (f"; scores read from `{args.from_csv}`" if args.from_csv else ""),
        "- `minus_lightgbm`: mean paired difference to LightGBM on the same tables, `se` its standard error, "
        "`won`: share of tables where the model scores higher",
        "",
    ]
    text = summary_text(frame, header)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
