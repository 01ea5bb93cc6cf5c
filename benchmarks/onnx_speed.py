"""onnxruntime (CPU) against torch eager (CPU) for every model family, side by side.

Run from the repository root (under ``nice`` on a shared machine)::

    nice -n 10 python -m benchmarks.onnx_speed [--threads 1] [--out benchmarks/results/onnx_speed.md]

For each family (TabFM, TabM, TabR classifiers, fitted on the same synthetic table with numeric,
categorical and missing values) it prints the latency of a 1-row ``predict_proba`` (p50 and p99 of
200 calls) and the throughput on 10,000 rows, for the torch estimator and for
:class:`tabfm.OnnxPredictor` on the file written by ``est.to_onnx``. Latency is measured twice:
end to end from a one-row pandas frame (both paths share the same ``TablePreprocessor``), and on
the already encoded row (the model alone: ``_predict_proba_encoded`` against ``run_encoded``).
TabFM's single-row latency is measured with a 1,000-row and a ``--big-context-rows`` context
(10,000 by default). TabFM uses the shipped checkpoint when it is installed, else a default-size
network with random weights (speed does not depend on the weights). With exact attention over the
context rows (the shipped checkpoints) the exported graph holds every context row's keys and
values, so its size and a row's latency grow with the context; with inducing-point attention they
hold a fixed-size summary.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmarks.report import command_line

N_LATENCY = 200
N_WARMUP = 100  # the first calls of a process run slower (allocators, caches)
N_THROUGHPUT = 10_000
N_FEATURES_NUMERIC = 7
CATEGORIES = {"colour": ["red", "green", "blue", "black"], "city": [f"c{i}" for i in range(12)], "flag": ["y", "n"]}


def make_table(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A classification table: 7 numeric columns (10% missing), 3 categorical, 3 classes."""
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(n, N_FEATURES_NUMERIC))
    frame = pd.DataFrame(numeric, columns=[f"x{j}" for j in range(N_FEATURES_NUMERIC)])
    for name, values in CATEGORIES.items():
        frame[name] = pd.Categorical(rng.choice(values, size=n), categories=values)
    score = numeric[:, 0] + 0.5 * numeric[:, 1] * numeric[:, 2] + (frame["colour"] == "red").to_numpy()
    y = np.digitize(score + 0.3 * rng.normal(size=n), [-0.5, 0.7])
    frame = frame.mask(rng.random(frame.shape) < 0.1 * np.array([1] * N_FEATURES_NUMERIC + [0] * len(CATEGORIES)))
    return frame, y


def latency(fn: Callable[[], Any], n: int = N_LATENCY) -> dict[str, float]:
    """Milliseconds of ``n`` calls after a warm-up: wall-clock p50 and p99, and CPU-time p50.

    The CPU time of this process is the steadier figure on a shared machine: waiting while other
    processes hold the cores counts in wall-clock time but not in it.
    """
    for _ in range(N_WARMUP):
        fn()
    walls, cpus = [], []
    for _ in range(n):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    wall_ms, cpu_ms = np.asarray(walls) * 1e3, np.asarray(cpus) * 1e3
    return {"p50": float(np.percentile(wall_ms, 50)), "p99": float(np.percentile(wall_ms, 99)),
            "cpu50": float(np.percentile(cpu_ms, 50))}


def throughput(fn: Callable[[], Any], n_rows: int, repeats: int = 3) -> tuple[float, float]:
    """Rows per second of wall-clock and of this process's CPU time: best of ``repeats`` calls.

    On a shared machine the CPU-time figure is the steadier one (other processes do not count).
    """
    fn()
    walls, cpus = zip(*(_timed(fn) for _ in range(repeats)), strict=True)
    return n_rows / min(walls), n_rows / min(cpus)


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def tabfm_checkpoint(directory: Path) -> tuple[Path, str]:
    from models.icl import ICLConfig, ICLTransformer
    from tabfm.checkpoint import save_checkpoint, shipped_checkpoint

    shipped = shipped_checkpoint("classification")
    if shipped.exists():
        return shipped, f"shipped checkpoint {shipped.name}"
    torch.manual_seed(0)
    network = ICLTransformer(ICLConfig(task="classification"))
    path = save_checkpoint(directory / "random-default.safetensors", network, dtype=torch.float32)
    return path, f"default-size ICLConfig() network with random weights ({network.n_parameters():,} parameters; no shipped checkpoint installed)"


def measure(name: str, est: Any, path: Path, X_one: pd.DataFrame, X_many: pd.DataFrame, threads: int,
            with_throughput: bool = True) -> dict[str, Any]:
    from tabfm.onnx_predictor import OnnxPredictor

    predictor = OnnxPredictor(path, providers=["CPUExecutionProvider"], intra_op_num_threads=threads)
    enc_one = est.preprocessor_.transform(X_one)
    row: dict[str, Any] = {"model": name, "onnx_mb": path.stat().st_size / 1e6}
    for key, fn in {
        "torch": lambda: est.predict_proba(X_one),
        "ort": lambda: predictor.predict_proba(X_one),
        "torch_enc": lambda: est._predict_proba_encoded(enc_one),
        "ort_enc": lambda: predictor.run_encoded(enc_one),
    }.items():
        for stat, value in latency(fn).items():
            row[f"{key}_{stat}"] = value
    if with_throughput:
        row["torch_rows_s"], row["torch_rows_cpu_s"] = throughput(lambda: est.predict_proba(X_many), len(X_many))
        row["ort_rows_s"], row["ort_rows_cpu_s"] = throughput(lambda: predictor.predict_proba(X_many), len(X_many))
        gap = np.abs(predictor.predict_proba(X_many) - est.predict_proba(X_many)).max()
        row["max_abs_diff"] = float(gap)
    return row


def fmt_table(rows: list[dict[str, Any]]) -> str:
    header = (
        "| model | 1-row torch ms: p50 / p99 (CPU p50) | 1-row onnxruntime ms: p50 / p99 (CPU p50) | "
        "speed-up p50 (CPU) | encoded row, CPU p50 ms: torch / onnxruntime (speed-up) | "
        "10k rows/s torch (per CPU s) | 10k rows/s onnxruntime (per CPU s) | max abs diff (10k) | .onnx MB |"
    )
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for r in rows:
        tp_t = f"{r['torch_rows_s']:,.0f} ({r['torch_rows_cpu_s']:,.0f})" if "torch_rows_s" in r else "-"
        tp_o = f"{r['ort_rows_s']:,.0f} ({r['ort_rows_cpu_s']:,.0f})" if "ort_rows_s" in r else "-"
        diff = f"{r['max_abs_diff']:.1e}" if "max_abs_diff" in r else "-"
        lines.append(
            f"| {r['model']} | {r['torch_p50']:.2f} / {r['torch_p99']:.2f} ({r['torch_cpu50']:.2f}) | "
            f"{r['ort_p50']:.2f} / {r['ort_p99']:.2f} ({r['ort_cpu50']:.2f}) | "
            f"{r['torch_p50'] / r['ort_p50']:.1f}x ({r['torch_cpu50'] / r['ort_cpu50']:.1f}x) | "
            f"{r['torch_enc_cpu50']:.2f} / {r['ort_enc_cpu50']:.2f} ({r['torch_enc_cpu50'] / r['ort_enc_cpu50']:.1f}x) | "
            f"{tp_t} | {tp_o} | {diff} | {r['onnx_mb']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="threads for both torch and onnxruntime (default 1: one core)")
    parser.add_argument("--families", default="tabfm,tabm,tabr")
    parser.add_argument("--train-rows", type=int, default=1000)
    parser.add_argument("--big-context-rows", type=int, default=10_000, help="TabFM's second context size (0: skip)")
    parser.add_argument("--max-epochs", type=int, default=3, help="TabM/TabR epochs (speed does not depend on them)")
    parser.add_argument("--out", type=Path, help="write the tables as Markdown here")
    args = parser.parse_args(argv)

    from tabfm.icl import TabFMClassifier
    from tabfm.tabm import TabMClassifier
    from tabfm.tabr import TabRClassifier

    torch.set_num_threads(args.threads)
    families = args.families.split(",")
    X, y = make_table(args.train_rows, seed=0)
    X_many, _ = make_table(N_THROUGHPUT, seed=1)
    X_one = X_many.iloc[:1]
    rows, notes = [], []
    tmp = Path(tempfile.mkdtemp(prefix="onnx_speed."))
    per_dataset = {"max_epochs": args.max_epochs, "random_state": 0, "device": "cpu"}
    builders: dict[str, Callable[[], Any]] = {
        "tabm": lambda: TabMClassifier(**per_dataset),
        "tabr": lambda: TabRClassifier(**per_dataset),
    }
    if "tabfm" in families:
        checkpoint, description = tabfm_checkpoint(tmp)
        notes.append(f"TabFM network: {description}; n_estimators=4 (default).")
        builders["tabfm"] = lambda: TabFMClassifier(checkpoint=checkpoint, device="cpu")
    for family in families:
        start = time.perf_counter()
        est = builders[family]().fit(X, y)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        path = est.to_onnx(tmp / f"{family}.onnx")
        export_s = time.perf_counter() - start
        label = {"tabfm": "TabFM", "tabm": "TabM", "tabr": "TabR"}[family]
        if family == "tabfm":
            label += f" ({args.train_rows:,}-row context)"
        rows.append(measure(label, est, path, X_one, X_many, args.threads))
        notes.append(f"{label}: fit {fit_s:.1f} s, export {export_s:.1f} s.")
        print(fmt_table(rows[-1:]), flush=True)
        if family == "tabfm" and args.big_context_rows:
            X_big, y_big = make_table(args.big_context_rows, seed=2)
            start = time.perf_counter()
            big = TabFMClassifier(checkpoint=checkpoint, device="cpu", max_context_rows=None).fit(X_big, y_big)
            fit_s = time.perf_counter() - start
            path = big.to_onnx(tmp / "tabfm-big.onnx")
            label = f"TabFM ({args.big_context_rows:,}-row context)"
            rows.append(measure(label, big, path, X_one, X_many, args.threads, with_throughput=False))
            notes.append(f"{label}: fit (context encoding) {fit_s:.1f} s.")
            print(fmt_table(rows[-1:]), flush=True)
            del big
    load = os.getloadavg()
    environment = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, load average "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min) at the end; torch {torch.__version__}, "
        f"onnxruntime {__import__('onnxruntime').__version__}; {args.threads} thread(s) for both."
    )
    table = fmt_table(rows)
    print()
    print(table)
    print()
    for note in [*notes, environment]:
        print("-", note)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            "# onnxruntime vs torch eager on the CPU\n\n"
            f"Command: `nice -n 10 {command_line('benchmarks.onnx_speed', argv)}`"
            " (from the repository root).\n\n"
            f"Data: synthetic, {N_FEATURES_NUMERIC} numeric columns (10% missing) and {len(CATEGORIES)} categorical, "
            f"3 classes; {args.train_rows:,} training rows; the 1-row and 10,000-row test tables are drawn separately.\n\n"
            + table + "\n\n" + "\n".join(f"- {n}" for n in [*notes, environment]) + "\n"
        )


if __name__ == "__main__":
    main()
