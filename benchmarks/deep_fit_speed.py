"""Seconds per epoch and a whole fit of TabM or TabR on one benchmark dataset, on one core.

    nice -n 10 python -m benchmarks.deep_fit_speed --data-dir ../shared/datasets \\
        --dataset magic --model tabr [--max-epochs 3] [--set time_limit=600] [--profile]

The split is the benchmark runner's (seed 0, training rows capped at ``--max-train-rows``).
One line of results: epochs run, why training stopped, seconds per epoch (fit time over epochs,
validation passes included), fit and predict seconds and the test score. ``--profile`` prints
the functions with the most cumulative time (cProfile) after the fit.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import numpy as np


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"None": None, "True": True, "False": False}.get(text, text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--model", choices=["tabm", "tabr"], required=True)
    p.add_argument("--max-train-rows", type=int, default=10_000)
    p.add_argument("--max-epochs", type=int, default=None, help="default: the estimator's")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="another estimator parameter (repeatable)")  # fmt: skip
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    import tabfm
    from benchmarks import data as bdata
    from benchmarks.run import classification_metrics, regression_metrics

    entry = bdata.local_datasets(args.data_dir, [args.dataset])[0]
    dataset = entry.load()
    split = bdata.make_split(dataset, 0, max_train_rows=args.max_train_rows)
    regression = entry.task == "regression"
    name = {"tabm": "TabM", "tabr": "TabR"}[args.model]
    cls = getattr(tabfm, name + ("Regressor" if regression else "Classifier"))
    params = dict(random_state=0)
    if args.max_epochs is not None:
        params["max_epochs"] = args.max_epochs
    params.update({k: _value(v) for k, v in (s.split("=", 1) for s in args.set)})
    model = cls(**params)
    y_train, y_test = split.y_train, split.y_test
    if not regression:
        classes, y_train = np.unique(y_train, return_inverse=True)
        y_test = np.searchsorted(classes, y_test)
    profiler = cProfile.Profile() if args.profile else None
    t0 = time.perf_counter()
    if profiler:
        profiler.enable()
    model.fit(split.X_train, y_train)
    if profiler:
        profiler.disable()
    t1 = time.perf_counter()
    if regression:
        score = regression_metrics(y_test, model.predict(split.X_test))["r2"]
    else:
        score = classification_metrics(y_test, model.predict_proba(split.X_test))["roc_auc"]
    t2 = time.perf_counter()
    tr = model.training_
    print(
        f"{args.dataset} {args.model} n_train={len(y_train)} threads={args.threads} {params}: "
        f"epochs={tr['n_epochs']} best={tr['best_epoch']} stopped_by={tr['stopped_by']} "
        f"s/epoch={tr['fit_seconds'] / tr['n_epochs']:.2f} fit_s={t1 - t0:.1f} "
        f"predict_s={t2 - t1:.2f} {'r2' if regression else 'roc_auc'}={score:.4f}"
    )
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
