"""``tabfm prior``: sample synthetic datasets from a prior recipe, or draw a few of them.

``tabfm prior sample`` writes Parquet files and a ``catalogue.csv`` that the benchmark runner reads
like a folder of real datasets (or, with ``--format shards``, pretraining batches for
``priors.BatchStream.from_shards``); ``tabfm prior show`` draws a grid of sampled datasets.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``tabfm prior sample`` and ``tabfm prior show``."""
    parser = subparsers.add_parser(
        "prior", help="sample or draw synthetic datasets from a prior recipe",
        description=__doc__.split("\n")[0],
    )
    sub = parser.add_subparsers(dest="prior_command", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser, rows: int, features: int) -> None:
        p.add_argument("--recipe", default="default",
                       help="recipe TOML file or shipped recipe name (default: default)")
        p.add_argument("--task", choices=["classification", "regression"], default="classification")
        p.add_argument("--rows", type=int, default=rows, help=f"rows per dataset (default: {rows})")
        p.add_argument("--features", type=int, default=features,
                       help="largest feature count; each dataset draws its own from the recipe "
                            f"(default: {features})")
        p.add_argument("--fixed-features", action="store_true",
                       help="give every dataset exactly --features features")
        p.add_argument("--seed", type=int, default=0, help="seed of the whole sample (default: 0)")

    s = sub.add_parser("sample", help="write synthetic datasets (Parquet + catalogue.csv, or shards)")
    common(s, 500, 10)
    s.add_argument("--n", type=int, required=True, help="number of datasets")
    s.add_argument("--out", type=Path, required=True, help="output directory")
    s.add_argument("--format", choices=["parquet", "shards"], default="parquet",
                   help="parquet: one file per dataset; shards: PriorBatch safetensors files")
    s.add_argument("--batch-size", type=int, default=16,
                   help="datasets per shard with --format shards (default: 16)")
    s.set_defaults(func=run_sample)

    w = sub.add_parser("show", help="draw a grid of a few sampled datasets to a PNG")
    common(w, 300, 8)
    w.add_argument("--n", type=int, default=6, help="datasets to draw (default: 6)")
    w.add_argument("--out", type=Path, required=True, help="PNG file to write")
    w.set_defaults(func=run_show)


def _recipe(arg: str) -> Any:
    from priors import load_recipe
    from tabfm.errors import TabFMValidationError

    try:
        return load_recipe(arg)
    except ValueError as exc:
        raise TabFMValidationError(f"--recipe: {exc}") from exc


def _check_positive(**values: int) -> None:
    from tabfm.errors import TabFMValidationError

    for name, v in values.items():
        if v < 1:
            raise TabFMValidationError(f"--{name.replace('_', '-')} must be >= 1, got {v}")


def _draw(recipe: Any, task: str, *, n: int, rows: int, features: int, seed: int,
          fixed: bool = False) -> list[tuple]:
    """``n`` datasets with their own feature counts (as in a batch, unless ``fixed``) from one seed."""
    from priors import sample_dataset
    from priors.common import derive_seed

    rng = np.random.default_rng(derive_seed(seed, 4))
    out = []
    for i in range(n):
        frac = recipe.shape.feature_fraction.sample(rng)
        f = int(np.clip(round(frac * features), min(recipe.shape.min_features, features), features))
        f = features if fixed else f
        x, y, cat, meta = sample_dataset(recipe, task, n_rows=rows, n_features=f,
                                         seed=derive_seed(seed, 5, i))
        out.append((x, y, cat, meta))
    return out


def _frame(x: np.ndarray, y: np.ndarray, cat: np.ndarray) -> Any:
    import pandas as pd

    cols: dict[str, Any] = {}
    for j in range(x.shape[1]):
        v = x[:, j]
        if cat[j]:
            codes = np.where(np.isnan(v), -1, v).astype(np.int64)
            levels = [str(k) for k in range(int(codes.max()) + 1)] if (codes >= 0).any() else ["0"]
            cols[f"f{j}"] = pd.Categorical.from_codes(codes, categories=levels)
        else:
            cols[f"f{j}"] = v.astype(np.float64)
    cols["target"] = y.astype(np.int64) if y.dtype.kind == "i" else y.astype(np.float64)
    return pd.DataFrame(cols)


def run_sample(args: argparse.Namespace) -> int:
    """Write ``--n`` datasets to ``--out``."""
    import pandas as pd

    _check_positive(n=args.n, rows=args.rows, features=args.features, batch_size=args.batch_size)
    recipe = _recipe(args.recipe)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.format == "shards":
        from priors import write_shards

        n_batches = math.ceil(args.n / args.batch_size)
        write_shards(out, recipe, args.task, n_batches=n_batches, batch_size=args.batch_size,
                     n_rows=args.rows, max_features=args.features, seed=args.seed,
                     progress=lambda i: logger.debug("shard %d/%d written", i + 1, n_batches))
        logger.info("wrote %d shards of %d datasets (%d x <=%d) to %s", n_batches,
                    args.batch_size, args.rows, args.features, out)
        return 0
    rows = []
    for i, (x, y, cat, meta) in enumerate(
        _draw(recipe, args.task, n=args.n, rows=args.rows, features=args.features, seed=args.seed,
              fixed=args.fixed_features)
    ):
        name = f"prior_{args.seed}_{i:05d}"
        _frame(x, y, cat).to_parquet(out / f"{name}.parquet", index=False)
        n_classes = int(meta["n_classes"])
        task = "regression" if args.task == "regression" else ("binary" if n_classes == 2 else "multiclass")
        rows.append({
            "name": name, "task": task, "n_rows": x.shape[0], "n_features": x.shape[1],
            "n_classes": n_classes, "n_categorical": int(cat.sum()),
            "has_missing": bool(np.isnan(x).any()),
            "min_class_count": int(np.bincount(y).min()) if n_classes else "",
            "family": meta["family"], "recipe": recipe.name, "source": "tabfm prior sample",
        })
    pd.DataFrame(rows).to_csv(out / "catalogue.csv", index=False)
    logger.info("wrote %d datasets and catalogue.csv to %s", len(rows), out)
    return 0


def _pick_features(x: np.ndarray, y: np.ndarray, k: int) -> list[int]:
    """The ``k`` columns most correlated (by rank) with the target, so the scatter shows structure."""
    from scipy.stats import spearmanr

    scores = []
    for j in range(x.shape[1]):
        ok = ~np.isnan(x[:, j])
        r = spearmanr(x[ok, j], y[ok]).statistic if ok.sum() > 3 and np.ptp(x[ok, j]) > 0 else 0.0
        scores.append(0.0 if np.isnan(r) else abs(r))
    order = list(np.argsort(scores)[::-1])
    return (order * k)[:k]


def run_show(args: argparse.Namespace) -> int:
    """Draw ``--n`` sampled datasets to ``--out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _check_positive(n=args.n, rows=args.rows, features=args.features)
    recipe = _recipe(args.recipe)
    data = _draw(recipe, args.task, n=args.n, rows=args.rows, features=args.features, seed=args.seed,
                 fixed=args.fixed_features)
    fig, axes = plt.subplots(args.n, 4, figsize=(15, 3.0 * args.n), squeeze=False)
    classif = args.task == "classification"
    for i, (x, y, cat, meta) in enumerate(data):
        a, b, c = _pick_features(x, y, 3)
        colour = dict(c=y, cmap="tab10" if classif else "viridis", s=7, alpha=0.75, linewidths=0)
        if classif:
            colour.update(vmin=0, vmax=9)
        for ax, (u, v) in zip(axes[i, :2], [(a, b), (a, c)], strict=True):
            ax.scatter(x[:, u], x[:, v], **colour)
            ax.set_xlabel(f"f{u}" + (" (cat)" if cat[u] else ""), fontsize=8)
            ax.set_ylabel(f"f{v}" + (" (cat)" if cat[v] else ""), fontsize=8)
        ax = axes[i, 2]
        ok = ~np.isnan(x[:, a])
        if classif:  # stacked by class: how the most related feature separates the classes
            ks = np.unique(y)
            ax.hist([x[ok & (y == k), a] for k in ks], bins=30, stacked=True,
                    color=plt.get_cmap("tab10")(ks))
        else:
            ax.hist(x[ok, a], bins=30, color="tab:gray")
        ax.set_title(f"histogram of f{a}" + (" (cat)" if cat[a] else "")
                     + (" by class" if classif else ""), fontsize=8)
        ax = axes[i, 3]
        if classif:
            counts = np.bincount(y)
            ax.bar(np.arange(counts.size), counts, color=plt.get_cmap("tab10")(np.arange(counts.size)))
            ax.set_xticks(np.arange(counts.size))
            ax.set_title("rows per class", fontsize=8)
        else:
            ax.hist(y, bins=30, color="tab:purple")
            ax.set_title("target histogram", fontsize=8)
        missing = np.isnan(x).mean()
        axes[i, 0].set_title(
            f"#{i} {meta['family']}: {x.shape[1]} features ({int(cat.sum())} cat), "
            f"{meta['n_classes'] or 'regression'}{' classes' if classif else ''}, "
            f"{missing:.0%} missing", fontsize=8, loc="left")
        for ax in axes[i]:
            ax.tick_params(labelsize=7)
    fig.suptitle(f"tabfm prior: recipe {recipe.name!r}, {args.task}, {args.rows} rows, seed {args.seed}"
                 " (scatter: the features most rank-correlated with the target)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    plt.close(fig)
    logger.info("wrote %s", args.out)
    return 0
