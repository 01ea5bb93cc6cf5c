"""Benchmark runner: every model on the same seeded splits of every dataset, one CSV row per fit.

Run from the repository root::

    python -m benchmarks.run --data-dir ../shared/datasets \\
        --models linear,lightgbm,xgboost,catboost --seeds 3 --max-train-rows 10000 --out results.csv

Protocol: for each seed a 70/30 split (stratified for classification; unstratified, with a logged
note, when a class is too small), training rows capped at ``--max-train-rows`` by a seeded
subsample, the same split for every model. ROC-AUC is one-vs-rest macro over the classes present
in the test split; RMSE and R² for regression. A failing model records ``Type: message`` in the
``error`` column and the run goes on; the CSV is appended row by row and ``--resume`` skips the
(dataset, model, seed) rows already in it. ``--first-seed S`` takes seeds ``S..S+N-1``: more splits
for a file, or (with ``--summary-only``) the summary of some of its seeds.
"""

from __future__ import annotations

import os

# OpenMP threads that spin while waiting turn a busy machine's LightGBM / XGBoost fits from
# seconds into minutes; sleeping waiters cost little when idle. Set before any OpenMP runtime
# loads; an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import csv
import logging
import math
import multiprocessing
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, log_loss, mean_squared_error, r2_score, roc_auc_score
from tqdm.auto import tqdm

from benchmarks import data as bdata
from benchmarks import report
from benchmarks.models import MODELS, make_model, parse_model_spec

logger = logging.getLogger("benchmarks.run")

COLUMNS = [
    "dataset", "task", "model", "seed", "n_train", "n_test", "n_features",
    "roc_auc", "accuracy", "log_loss", "rmse", "r2", "fit_s", "predict_s", "error",
]  # fmt: skip


def macro_ovr_auc(y: np.ndarray, proba: np.ndarray) -> float:
    """One-vs-rest ROC-AUC averaged over the classes that have positives and negatives in ``y``.

    Classes absent from the test split are left out instead of failing the whole score; NaN when
    no class qualifies (a single class in the test split).
    """
    if proba.shape[1] == 2:
        return float(roc_auc_score(y, proba[:, 1])) if len(np.unique(y)) == 2 else math.nan
    scores = [
        roc_auc_score(y == k, proba[:, k])
        for k in range(proba.shape[1])
        if 0 < np.sum(y == k) < len(y)
    ]
    return float(np.mean(scores)) if scores else math.nan


def classification_metrics(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """``y`` holds class indices ``0..K-1``; ``proba`` is ``(n, K)``."""
    p = np.clip(proba, 1e-15, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    return {
        "roc_auc": macro_ovr_auc(y, p),
        "accuracy": float(accuracy_score(y, p.argmax(axis=1))),
        "log_loss": float(log_loss(y, p, labels=np.arange(p.shape[1]))),
    }


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return {
        "rmse": float(math.sqrt(mean_squared_error(y, pred))),
        "r2": float(r2_score(y, pred)),
    }


def evaluate(
    model_name: str,
    task: str,
    seed: int,
    split: bdata.Split,
    n_classes: int,
    torch_threads: int | None = None,
) -> dict:
    """Fit one model on ``split`` and score it; raises whatever the model raises.

    ``torch_threads`` caps torch's intra-op threads (the neural models) for this process; the
    GBDTs keep their own thread settings.

    For classification, ``split.y_*`` hold class indices ``0..n_classes-1``. The model is fitted on
    the classes present in the training rows relabelled ``0..k-1`` (XGBoost requires contiguous
    labels) and its probabilities are put back into the dataset's ``n_classes`` columns.
    """
    if torch_threads is not None:
        import torch

        torch.set_num_threads(torch_threads)
    model = make_model(model_name, task, seed)
    if task == "regression":
        t0 = time.perf_counter()
        model.fit(split.X_train, split.y_train)
        t1 = time.perf_counter()
        pred = np.asarray(model.predict(split.X_test), dtype=np.float64).reshape(-1)
        t2 = time.perf_counter()
        metrics = regression_metrics(split.y_test, pred)
    else:
        present, y_fit = np.unique(split.y_train, return_inverse=True)
        if len(present) < 2:
            raise ValueError(f"the training split holds a single class ({present[0]})")
        t0 = time.perf_counter()
        model.fit(split.X_train, y_fit)
        t1 = time.perf_counter()
        proba_fit = np.asarray(model.predict_proba(split.X_test), dtype=np.float64)
        t2 = time.perf_counter()
        proba = np.zeros((len(split.y_test), n_classes))
        proba[:, present] = proba_fit  # (R, K): classes absent from training get probability 0
        metrics = classification_metrics(split.y_test, proba)
    return {**metrics, "fit_s": t1 - t0, "predict_s": t2 - t1}


class WorkerError(Exception):
    """An error raised in the timeout worker, already formatted as ``Type: message``."""


def _evaluate_in_child(conn, *args) -> None:
    try:
        conn.send(("ok", evaluate(*args)))
    except BaseException as exc:  # sent back to the parent and recorded there
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def evaluate_with_timeout(timeout_s: float, *args) -> dict:
    """Run ``evaluate`` in a fresh process and kill it after ``timeout_s`` seconds.

    A spawned (not forked) process, because the GBDT libraries' thread pools do not survive fork.
    """
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_evaluate_in_child, args=(child, *args), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout_s):
            raise TimeoutError(f"fit + predict took longer than --timeout-s {timeout_s:g}")
        status, payload = parent.recv()
    except EOFError:
        raise RuntimeError(f"the worker process died (exit code {proc.exitcode})") from None
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
    if status == "error":
        raise WorkerError(payload)
    return payload


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


class CsvLog:
    """The results CSV, appended and flushed one row at a time."""

    def __init__(self, path: Path, resume: bool):
        self.path = path
        self.done: set[tuple[str, str, int]] = set()
        if resume and path.is_file() and path.stat().st_size > 0:
            old = pd.read_csv(path, dtype={"dataset": str, "model": str}, keep_default_na=False)
            if list(old.columns) != COLUMNS:
                raise ValueError(
                    f"--resume: {path} has columns {list(old.columns)}, expected {COLUMNS}"
                )
            self.done = {
                (d, m, int(s)) for d, m, s in zip(old.dataset, old.model, old.seed, strict=True)
            }
        else:
            if path.is_file() and path.stat().st_size > 0:
                logger.warning("overwriting %s (pass --resume to keep its rows)", path)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="") as f:
                csv.writer(f).writerow(COLUMNS)

    def append(self, row: dict) -> None:
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([_format(row.get(c)) for c in COLUMNS])
            f.flush()
        self.done.add((row["dataset"], row["model"], int(row["seed"])))


def _error_text(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, WorkerError) else f"{type(exc).__name__}: {exc}"
    return text.replace("\n", " ").strip()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data-dir", type=Path, help="folder with *.parquet and catalogue.csv")
    src.add_argument("--suite", help="an OpenML study or suite, as openml:ID (needs network)")
    p.add_argument(
        "--cache-dir", type=Path, default=None, help="OpenML cache folder (with --suite)"
    )
    p.add_argument("--models", default="linear,lightgbm,xgboost,catboost",
                   help=f"comma-separated names from the registry: {', '.join(MODELS)}; parameters "
                        "as NAME[key=value; ...], e.g. tabfm[n_estimators=2]")  # fmt: skip
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (splits): 0..N-1")
    p.add_argument("--first-seed", type=int, default=0,
                   help="start the seeds here: S..S+N-1 (another set of splits, or a part of a file's)")  # fmt: skip
    p.add_argument("--max-train-rows", type=int, default=10_000)
    p.add_argument("--max-test-rows", type=int, default=None)
    p.add_argument("--datasets", default=None, help="comma-separated dataset names (default: all)")
    p.add_argument("--out", type=Path, required=True, help="results CSV (appended row by row)")
    p.add_argument("--resume", action="store_true", help="skip rows already in --out")
    p.add_argument("--summary", type=Path, default=None, help="write the summary as markdown")
    p.add_argument("--plot", type=Path, default=None, help="draw the summary to a PNG")
    p.add_argument("--timeout-s", type=float, default=None,
                   help="kill a fit + predict after this many seconds (runs each in a subprocess)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch threads for the neural models (default: torch's own choice)")  # fmt: skip
    p.add_argument("--summary-only", action="store_true",
                   help="fit nothing: summarise (and plot) the rows already in --out")  # fmt: skip
    p.add_argument("--tabfm-checkpoints", type=Path, default=None,
                   help="folder with tabfm-<task>.safetensors for the tabfm model (default: the "
                   "shipped ones); a frozen copy keeps a run on one checkpoint while pretraining "
                   "ships new ones")  # fmt: skip
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.first_seed < 0:
        p.error(f"--first-seed must be >= 0, got {args.first_seed}")
    if args.torch_threads is not None and args.torch_threads < 1:
        p.error(f"--torch-threads must be >= 1, got {args.torch_threads}")
    if args.max_train_rows is not None and args.max_train_rows < 2:
        p.error(f"--max-train-rows must be >= 2, got {args.max_train_rows}")
    if args.tabfm_checkpoints is not None and not any(args.tabfm_checkpoints.glob("tabfm-*.safetensors")):
        p.error(f"--tabfm-checkpoints: no tabfm-<task>.safetensors in {args.tabfm_checkpoints}")
    return args


def tabfm_checkpoint_lines() -> list[str]:
    """Which ICL checkpoints the tabfm rows of this invocation use (step, validation, file hash)."""
    import hashlib

    from tabfm.checkpoint import read_card, shipped_checkpoint

    parts = []
    for task in ("classification", "regression"):
        path = shipped_checkpoint(task)
        if not path.is_file():
            continue
        card = read_card(path)
        steps = card.get("pretraining", {}).get("steps")
        val = card.get("validation", {})
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        step_text = f"step {steps:,}" if isinstance(steps, int) else "step unknown"
        val_text = f", validation {val['metric']} {val['mean']:.4f}" if "mean" in val else ""
        parts.append(f"{task} {step_text}{val_text} (`{path.name}` sha256 {digest})")
    return [f"- TabFM checkpoints of this invocation: {'; '.join(parts)}"] if parts else []


def _split_list(text: str | None) -> list[str]:
    """Comma-separated items; commas inside ``[...]`` (model parameters) do not split."""
    return [t.strip() for t in re.split(r",(?![^\[]*\])", text or "") if t.strip()]


def list_datasets(args: argparse.Namespace) -> list[bdata.DatasetEntry]:
    names = _split_list(args.datasets) or None
    if args.suite:
        return bdata.openml_datasets(args.suite, args.cache_dir, names)
    return bdata.local_datasets(args.data_dir, names)


def run(args: argparse.Namespace) -> pd.DataFrame:
    """Run every dataset × seed × model not yet in the CSV; return the summary table."""
    models = _split_list(args.models)
    if not models:
        raise ValueError("--models is empty")
    # A malformed spec stops the run here; an unknown name is recorded per row like any failing model.
    model_names = {parse_model_spec(m)[0] for m in models}
    if args.tabfm_checkpoints is not None:  # read by tabfm (and by spawned workers, which inherit it)
        os.environ["TABFM_CHECKPOINT_DIR"] = str(args.tabfm_checkpoints.resolve())
    entries = list_datasets(args)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    if args.summary_only and not args.out.is_file():
        raise FileNotFoundError(f"--summary-only: no results at {args.out}")
    log = CsvLog(args.out, args.resume or args.summary_only)
    notes: dict[str, str] = {}
    started = time.perf_counter()
    total = len(entries) * len(seeds) * len(models)
    todo = sum((e.name, m, s) not in log.done for e in entries for m in models for s in seeds)
    listed = entries
    if args.summary_only:
        entries, todo = [], 0
    bar = tqdm(
        total=total, initial=total - todo, disable=args.no_progress, unit="fit", file=sys.stderr
    )
    for entry in entries:
        pending = [(s, m) for s in seeds for m in models if (entry.name, m, s) not in log.done]
        if not pending:
            continue
        base = {"dataset": entry.name, "task": entry.task}
        try:
            dataset = entry.load()
        except Exception as exc:
            logger.error("%s: cannot load: %s", entry.name, exc)
            for s, m in pending:
                log.append({**base, "model": m, "seed": s, "error": "load " + _error_text(exc)})
                bar.update()
            continue
        classes = np.unique(dataset.y) if entry.task != "regression" else None
        if classes is not None:
            dataset = bdata.Dataset(
                dataset.name, dataset.task, dataset.X, np.searchsorted(classes, dataset.y)
            )
        for seed in seeds:
            split = bdata.make_split(
                dataset, seed, max_train_rows=args.max_train_rows, max_test_rows=args.max_test_rows
            )
            if split.note:
                notes[entry.name] = split.note
                logger.info("%s seed %d: %s", entry.name, seed, split.note)
            sizes = {"n_train": len(split.y_train), "n_test": len(split.y_test),
                     "n_features": split.X_train.shape[1]}  # fmt: skip
            for model in models:
                if (entry.name, model, seed) in log.done:
                    continue
                bar.set_postfix_str(f"{entry.name} {model} s{seed}", refresh=False)
                row = {**base, "model": model, "seed": seed, **sizes}
                eval_args = (
                    model,
                    entry.task,
                    seed,
                    split,
                    len(classes) if classes is not None else 0,
                    args.torch_threads,
                )
                try:
                    if args.timeout_s:
                        row.update(evaluate_with_timeout(args.timeout_s, *eval_args))
                    else:
                        row.update(evaluate(*eval_args))
                except Exception as exc:
                    row["error"] = _error_text(exc)
                    logger.debug("%s %s seed %d failed", entry.name, model, seed, exc_info=True)
                log.append(row)
                bar.update()
    bar.close()
    elapsed = time.perf_counter() - started
    results = pd.read_csv(args.out, dtype={"dataset": str, "model": str, "error": str})
    names = {e.name for e in listed}
    results = results[results.dataset.isin(names) & results.model.isin(models)]
    results = results[results.seed.isin(seeds)]
    summary = report.summarise(results, models)
    print(report.format_summary(summary, results))
    print(
        f"\n{len(results)} rows in {args.out}; this invocation ran {todo} fits in {elapsed:.0f} s"
    )
    command = report.command_line("benchmarks.run", args.argv)
    if args.summary:
        header = tabfm_checkpoint_lines() if "tabfm" in model_names else []
        report.write_markdown(args.summary, summary, results, command=command, notes=notes, header=header)
        print(f"summary written to {args.summary}")
    if args.plot:
        report.plot(results, models, args.plot)
        print(f"plot written to {args.plot}")
    return summary


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        run(args)
    except (ConnectionError, FileNotFoundError, ImportError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
