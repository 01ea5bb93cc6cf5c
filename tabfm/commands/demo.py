"""``tabfm demo``: fit and predict on datasets bundled with scikit-learn, offline, and compare.

Prints one table per dataset with the scores and the fit / predict times of LightGBM, XGBoost, a
linear baseline and, when its shipped checkpoint is installed, TabFM, all on the same split.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

N_THREADS = 2


@dataclass(frozen=True)
class DemoDataset:
    """A dataset bundled with scikit-learn (no download)."""

    name: str
    task: str  # "classification" or "regression"
    loader: str  # function name in sklearn.datasets
    description: str


DATASETS = {
    "breast_cancer": DemoDataset(
        "breast_cancer",
        "classification",
        "load_breast_cancer",
        "569 tumours, 30 features, 2 classes",
    ),
    "diabetes": DemoDataset(
        "diabetes", "regression", "load_diabetes", "442 patients, 10 features, disease progression"
    ),
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``tabfm demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="compare TabFM with LightGBM, XGBoost and a linear model on bundled datasets",
        description=__doc__.split("\n")[0],
    )
    parser.add_argument(
        "--dataset",
        choices=[*DATASETS, "all"],
        default="all",
        help="which bundled dataset to use (default: all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the models")
    parser.add_argument(
        "--test-size", type=float, default=0.3, help="fraction of rows held out (default: 0.3)"
    )
    parser.set_defaults(func=run)


def _models(task: str, seed: int) -> list[tuple[str, Callable[[], object]]]:
    """The demo's model list: (display name, factory). Imports stay inside for a fast CLI."""
    import lightgbm as lgb
    import xgboost as xgb
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if task == "classification":
        return [
            (
                "LightGBM",
                lambda: lgb.LGBMClassifier(n_jobs=N_THREADS, random_state=seed, verbose=-1),
            ),
            ("XGBoost", lambda: xgb.XGBClassifier(n_jobs=N_THREADS, random_state=seed)),
            (
                "linear (logistic)",
                lambda: make_pipeline(
                    StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed)
                ),
            ),
        ]
    return [
        ("LightGBM", lambda: lgb.LGBMRegressor(n_jobs=N_THREADS, random_state=seed, verbose=-1)),
        ("XGBoost", lambda: xgb.XGBRegressor(n_jobs=N_THREADS, random_state=seed)),
        ("linear (ridge)", lambda: make_pipeline(StandardScaler(), Ridge(alpha=1.0))),
    ]


def _tabfm_factory(task: str, seed: int) -> tuple[Callable[[], object] | None, str]:
    """TabFM's estimator factory, or None and the reason it is not available."""
    name = "TabFMClassifier" if task == "classification" else "TabFMRegressor"
    try:
        import tabfm

        cls = getattr(tabfm, name)
    except (ImportError, AttributeError) as exc:
        return None, f"{name} is not available in this install ({type(exc).__name__}: {exc})"
    return (lambda: cls(random_state=seed)), ""


def _score(task: str, model, X_test, y_test) -> tuple[dict[str, float], float]:
    from sklearn.metrics import (
        accuracy_score,
        log_loss,
        mean_squared_error,
        r2_score,
        roc_auc_score,
    )

    t0 = time.perf_counter()
    if task == "classification":
        proba = np.asarray(model.predict_proba(X_test))
        elapsed = time.perf_counter() - t0
        pred = np.asarray(model.classes_)[proba.argmax(axis=1)]
        scores = {
            "ROC-AUC": roc_auc_score(y_test, proba[:, 1]),
            "accuracy": accuracy_score(y_test, pred),
            "log-loss": log_loss(y_test, proba, labels=model.classes_),
        }
    else:
        pred = np.asarray(model.predict(X_test), dtype=np.float64)
        elapsed = time.perf_counter() - t0
        scores = {"R²": r2_score(y_test, pred), "RMSE": math.sqrt(mean_squared_error(y_test, pred))}
    return scores, elapsed


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        cells = zip(row, widths, strict=True)
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells))

    return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *map(fmt, rows)])


def run_dataset(spec: DemoDataset, seed: int, test_size: float) -> str:
    """Fit every model on one bundled dataset; return the printable table."""
    import sklearn.datasets
    from sklearn.model_selection import train_test_split

    X, y = getattr(sklearn.datasets, spec.loader)(return_X_y=True, as_frame=True)
    stratify = y if spec.task == "classification" else None
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_size, random_state=seed, stratify=stratify
    )
    models = _models(spec.task, seed)
    tabfm_factory, tabfm_note = _tabfm_factory(spec.task, seed)
    if tabfm_factory is not None:
        models.insert(0, ("TabFM", tabfm_factory))
    metric_names = (
        ["ROC-AUC", "accuracy", "log-loss"] if spec.task == "classification" else ["R²", "RMSE"]
    )
    rows = []
    for name, factory in models:
        try:
            model = factory()
            t0 = time.perf_counter()
            model.fit(X_train, y_train)
            fit_s = time.perf_counter() - t0
            scores, predict_s = _score(spec.task, model, X_test, y_test)
        except (ImportError, FileNotFoundError) as exc:
            if name != "TabFM":
                raise
            tabfm_note = (
                f"TabFM skipped: its checkpoint is not installed ({type(exc).__name__}: {exc})"
            )
            continue
        rows.append(
            [name, *(f"{scores[m]:.4f}" for m in metric_names), f"{fit_s:.3f}", f"{predict_s:.3f}"]
        )
    title = (
        f"{spec.name} ({spec.task}; {spec.description}): "
        f"{len(X_train)} train / {len(X_test)} test rows, seed {seed}"
    )
    parts = [title, _table(["model", *metric_names, "fit s", "predict s"], rows)]
    if tabfm_note:
        parts.append(f"note: {tabfm_note}")
    return "\n".join(parts)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``tabfm demo``."""
    # Spinning OpenMP waiters make LightGBM / XGBoost fits many times slower on a busy machine;
    # this only takes effect if no OpenMP runtime is loaded yet, and an explicit setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    names = list(DATASETS) if args.dataset == "all" else [args.dataset]
    blocks = [run_dataset(DATASETS[n], args.seed, args.test_size) for n in names]
    # The demo's output is its purpose, so it goes to stdout rather than the log.
    print("\n\n".join(blocks))  # noqa: T201
    return 0
