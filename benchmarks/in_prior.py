"""How well the ICL network has learnt its own prior: TabFM against LightGBM on fresh prior tables.

    python -m benchmarks.in_prior --task regression [--n 60] [--train-rows 1000[,2000...]] [--test-rows 1000] \\
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
smooth). Models run on one thread, TabFM with its default ensemble. Several ``--train-rows`` give
the same count of tables at each size and a first table of the margin against the size: a
network that has learnt its prior keeps its margin as the tables grow.
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


def undefined_r2(y_train: np.ndarray, y_test: np.ndarray) -> bool:
    """Whether the test target is constant up to rounding, relative to the training target's scale."""
    scale = max(float(np.std(y_train)), float(np.abs(y_train).mean()), 1e-12)
    return float(np.std(y_test)) <= 1e-6 * scale


def paired_table(scores: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per model: mean, mean difference to ``reference`` with its standard error, share won."""
    rows = []
    for model in scores.columns:
        diff = scores[model] - scores[reference]
        rows.append({
            "model": model, "tables": int(scores[model].notna().sum()), "mean": scores[model].mean(),
            f"minus_{reference}": diff.mean(), "se": diff.std(ddof=1) / math.sqrt(max(1, diff.notna().sum())),
            # R² has no floor: one table where a model extrapolates badly (-8) can carry the mean.
            "median_diff": diff.median(),
            "won": (diff[diff.notna()] > 0).mean() if model != reference else float("nan"),
        })
    return pd.DataFrame(rows).set_index("model")


FEATURE_BINS = [(2, 5), (6, 12), (13, 30)]


def lightgbm_table(frame: pd.DataFrame) -> str:
    """Markdown of :func:`paired_table` against LightGBM for the per-table scores in ``frame``."""
    models = [c for c in frame.columns if c.startswith("tabfm")] + ["lightgbm"]
    fmt = {"mean": ".4f", "minus_lightgbm": "+.4f", "se": ".4f", "median_diff": "+.4f", "won": ".2f"}
    return markdown_table(paired_table(frame[models], "lightgbm"), fmt)


def summary_text(frame: pd.DataFrame, header: list[str]) -> str:
    """Markdown: all tables, then per prior family and per feature count, paired with LightGBM."""
    sizes = sorted(frame["n_train"].unique())
    if len(sizes) > 1:
        lines = [*header, "## By training rows", ""]
        for size in sizes:
            lines += [f"### {size:,} training rows", "", lightgbm_table(frame[frame["n_train"] == size]), ""]
        for size in sizes:
            lines += [f"# {size:,} training rows", "", summary_text(frame[frame["n_train"] == size], []), ""]
        return "\n".join(lines)
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
    p.add_argument("--train-rows", default="1000", help="training rows per table; several, comma-separated, run one set of tables each")
    p.add_argument("--test-rows", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoints", default="", help="comma-separated checkpoint files (default: the shipped one)")
    p.add_argument("--out", type=Path, help="write the summary (Markdown) here")
    p.add_argument("--csv", type=Path, help="write the per-table scores here")
    p.add_argument("--from-csv", type=Path, help="only summarise the per-table scores of an earlier run")
    args = p.parse_args(argv)
    args.command = command_line("benchmarks.in_prior", argv)
    try:
        args.sizes = [int(v) for v in str(args.train_rows).split(",")]
    except ValueError:
        p.error(f"--train-rows takes comma-separated integers, got {args.train_rows!r}")
    if min(args.sizes) < 2:
        p.error(f"--train-rows must be at least 2, got {args.train_rows!r}")
    if args.from_csv:
        frame = pd.read_csv(args.from_csv)
        args.sizes, args.test_rows = sorted(int(v) for v in frame["n_train"].unique()), int(frame["n_test"].iloc[0])
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
    tables = ((size, i, family, X, y) for size in args.sizes
              for i, (family, X, y) in enumerate(sample_tables(args.task, args.n, size, args.test_rows, args.seed)))
    for size, i, family, X, y in tables:
        tr = slice(0, size)
        te = slice(size, None)
        row = {"table": i, "family": family, "n_features": X.shape[1], "n_train": size, "n_test": args.test_rows}
        if regression and undefined_r2(y[tr], y[te]):
            # A prior table can draw a target that is constant on its test rows; R² there is a
            # ratio of rounding errors (it printed -2e30) and would swamp every mean.
            records.append({**row, **{name: float("nan") for name in [*names, "lightgbm"]}})
            print(f"table={i} n_train={size}: test target without spread, R² undefined; left out", flush=True)
            continue
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
        f"- {len(frame) // len(args.sizes)} tables of the `default` prior (seed {args.seed}), {' or '.join(f'{v:,}' for v in args.sizes)} training and "
        f"{args.test_rows:,} test rows, 2-30 features; {metric}; TabFM's default ensemble; LightGBM defaults; "
        "one thread" + ("" if math.isnan(seconds) else f"; {seconds:.0f} s")
        + (f"; scores read from `{args.from_csv}`" if args.from_csv else ""),
        "- `minus_lightgbm`: mean paired difference to LightGBM on the same tables, `se` its standard error, "
        "`median_diff`: the median paired difference, `won`: share of tables where the model scores higher",
        "",
    ]
    left_out = int(frame["lightgbm"].isna().sum())
    if left_out:
        header.insert(-2, f"- {left_out} of the tables left out: their test target has no spread (R² undefined)")
    text = summary_text(frame.dropna(subset=["lightgbm"]), header)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
