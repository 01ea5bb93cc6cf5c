"""How realistic is the prior? Compare sampled classification datasets with real ones.

For each dataset (rows capped at 2000 by a seeded subsample), on one stratified 70/30 split:

- ``gbdt_minus_linear``: LightGBM accuracy minus logistic-regression accuracy (near 0 everywhere
  means an all-linear prior; large everywhere means no linear structure at all);
- ``gbdt_over_majority``: LightGBM accuracy minus the majority-class rate (near 0 = pure noise);
- ``minority_fraction``: the smallest class's share of the rows;
- ``categorical_fraction``: share of categorical features; ``missing_fraction``: share of NaN cells.

Run from the repository root::

    nice -n 10 python -m benchmarks.prior_realism --n 200 --data-dir ../shared/datasets \\
        --out benchmarks/results/prior_realism.md benchmarks/results/prior_realism.png
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

METRICS = ["gbdt_minus_linear", "gbdt_over_majority", "minority_fraction", "categorical_fraction",
           "missing_fraction"]
QUANTILES = [0.1, 0.25, 0.5, 0.75, 0.9]
MAX_ROWS = 2000


def _frame(x: np.ndarray, cat: np.ndarray) -> pd.DataFrame:
    cols = {}
    for j in range(x.shape[1]):
        if cat[j]:
            cols[f"f{j}"] = pd.Categorical(np.where(np.isnan(x[:, j]), None, x[:, j].astype(str)))
        else:
            cols[f"f{j}"] = x[:, j].astype(np.float64)
    return pd.DataFrame(cols)


def evaluate(X: pd.DataFrame, y: np.ndarray, seed: int = 0) -> dict[str, float]:
    """The metrics of one dataset (features as a DataFrame with category dtypes, labels)."""
    import lightgbm as lgb
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(seed)
    if len(X) > MAX_ROWS:
        keep = np.sort(rng.choice(len(X), MAX_ROWS, replace=False))
        X, y = X.iloc[keep].reset_index(drop=True), y[keep]
    cat_cols = [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)
                or X[c].dtype == object]
    for c in cat_cols:
        X[c] = X[c].astype("category")
    num_cols = [c for c in X.columns if c not in cat_cols]
    X[num_cols] = X[num_cols].astype(np.float64)
    _, y = np.unique(y, return_inverse=True)
    try:
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=seed, stratify=y)
    except ValueError:  # a class with a single row
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=seed)
    gbdt = lgb.LGBMClassifier(n_jobs=1, verbose=-1, random_state=seed)
    gbdt.fit(Xtr, ytr)
    acc_gbdt = float((gbdt.predict(Xte) == yte).mean())
    pre = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True),
                              StandardScaler()), num_cols),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent", keep_empty_features=True),
                              OneHotEncoder(handle_unknown="ignore")), cat_cols),
    ])
    linear = make_pipeline(pre, LogisticRegression(max_iter=1000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        linear.fit(Xtr, ytr)
    acc_lin = float((linear.predict(Xte) == yte).mean())
    counts = np.bincount(y)
    return {
        "gbdt_minus_linear": acc_gbdt - acc_lin,
        "gbdt_over_majority": acc_gbdt - float((yte == np.bincount(ytr).argmax()).mean()),
        "minority_fraction": float(counts[counts > 0].min() / counts.sum()),
        "categorical_fraction": len(cat_cols) / X.shape[1],
        "missing_fraction": float(X.isna().to_numpy().mean()),
        "n_classes": int((counts > 0).sum()),
        "n_rows": len(X),
        "n_features": X.shape[1],
    }


def real_rows(data_dir: Path) -> list[dict]:
    catalogue = pd.read_csv(data_dir / "catalogue.csv")
    rows = []
    for rec in catalogue[catalogue.task.isin(["binary", "multiclass"])].itertuples():
        df = pd.read_parquet(data_dir / f"{rec.name}.parquet")
        y = df.pop("target").to_numpy()
        for c in df.columns:
            if df[c].dtype == bool:
                df[c] = df[c].astype(np.float64)
        rows.append({"source": "real", "name": rec.name, **evaluate(df, y)})
    return rows


def prior_rows(recipe_name: str, n: int, seed: int) -> list[dict]:
    from priors import load_recipe, sample_dataset
    from priors.common import derive_seed

    recipe = load_recipe(recipe_name)
    rng = np.random.default_rng(derive_seed(seed, 99))
    rows = []
    for i in range(n):
        n_rows = int(recipe.shape.n_rows.sample(rng))
        max_f = int(recipe.shape.max_features.sample(rng))
        f = int(np.clip(round(recipe.shape.feature_fraction.sample(rng) * max_f),
                        recipe.shape.min_features, max_f))
        x, y, cat, meta = sample_dataset(recipe, "classification", n_rows=n_rows, n_features=f,
                                         seed=derive_seed(seed, 100, i))
        rows.append({"source": "prior", "name": f"prior_{i}", "family": meta["family"],
                     **evaluate(_frame(x, cat), y)})
    return rows


def table(df: pd.DataFrame, group: str) -> str:
    lines = [f"| {group} | metric | n | mean | " + " | ".join(f"q{int(q * 100)}" for q in QUANTILES) + " |",
             "|---|---|---|---|" + "---|" * len(QUANTILES)]
    for key, sub in df.groupby(group, sort=False):
        for m in METRICS:
            v = sub[m].to_numpy()
            qs = " | ".join(f"{x:.3f}" for x in np.quantile(v, QUANTILES))
            lines.append(f"| {key} | {m} | {len(v)} | {v.mean():.3f} | {qs} |")
    return "\n".join(lines)


def plot(df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    for ax, m in zip(axes.flat, [*METRICS, "n_classes"], strict=True):
        allv = df[m].to_numpy(dtype=float)
        bins = np.linspace(allv.min(), allv.max() + 1e-9, 26) if m != "n_classes" else np.arange(1.5, 27.5)
        for src, colour in (("prior", "tab:blue"), ("real", "tab:orange")):
            v = df.loc[df.source == src, m].to_numpy(dtype=float)
            ax.hist(v, bins=bins, density=True, alpha=0.55, color=colour,
                    label=f"{src} (n={len(v)}, median {np.median(v):.3f})")
        ax.set_title(m, fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle("Prior vs real classification datasets (density histograms)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="sampled prior datasets")
    parser.add_argument("--recipe", default="default")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", nargs="+", type=Path,
                        default=[Path("benchmarks/results/prior_realism.md"),
                                 Path("benchmarks/results/prior_realism.png")],
                        help="output .md and/or .png paths")
    parser.add_argument("--csv", type=Path, help="also write the per-dataset metrics to this CSV")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    df = pd.DataFrame(prior_rows(args.recipe, args.n, args.seed) + real_rows(args.data_dir))
    elapsed = time.perf_counter() - t0
    n_real = int((df.source == "real").sum())
    md = [
        "# Prior realism: sampled vs real classification datasets",
        "",
        f"Recipe `{args.recipe}`, {args.n} sampled datasets (seed {args.seed}), {n_real} real "
        f"classification datasets from `{args.data_dir}`; rows capped at {MAX_ROWS}; one stratified "
        "70/30 split; LightGBM defaults (1 thread) vs logistic regression (median imputation, "
        f"scaling, one-hot). {elapsed:.0f} s.",
        "",
        "Command: `nice -n 10 python -m benchmarks.prior_realism --n "
        f"{args.n} --recipe {args.recipe} --data-dir {args.data_dir} --out "
        "benchmarks/results/prior_realism.md benchmarks/results/prior_realism.png`",
        "",
        "## By source",
        "",
        table(df, "source"),
        "",
        "## Prior by family",
        "",
        table(df[df.source == "prior"], "family"),
        "",
    ]
    text = "\n".join(md)
    print(text)
    for path in args.out:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".png":
            plot(df, path)
        else:
            path.write_text(text)
    if args.csv:
        df.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
