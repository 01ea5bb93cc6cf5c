"""Load test of the prediction service: latency and throughput of predicts, per model kind.

Starts ``tabfm serve`` on 127.0.0.1 (a free port, a temporary store), creates one model of each
kind from the same synthetic table (TabFM with a 1,000-row context), then sends 1-row and
1,000-row JSON predicts at concurrency 1, 8 and 32 from keep-alive HTTP clients. Each cell is
bounded by a request count and a time budget. Writes a Markdown table.

    python -m benchmarks.api_load [--out benchmarks/results/api_load.md] [--seconds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("tabfm", "tabm", "tabr")
# Short training: the load test measures serving, and latency depends on the architecture, not epochs.
PARAMS = {"tabfm": {}, "tabm": {"max_epochs": 3, "random_state": 0}, "tabr": {"max_epochs": 3, "random_state": 0}}


def make_table(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"num{j}": rng.normal(size=n).round(4) for j in range(8)})
    frame["city"] = rng.choice(["paris", "lyon", "nice", "lille"], size=n)
    frame["plan"] = rng.choice(["free", "pro", "team"], size=n)
    score = frame["num0"] - 0.5 * frame["num1"] + (frame["plan"] == "pro") + rng.normal(scale=0.5, size=n)
    frame["churn"] = np.where(score > 0.3, "yes", "no")
    return frame


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(store: Path, port: int, env: dict[str, str]) -> subprocess.Popen:
    script = Path(sys.executable).with_name("tabfm")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "tabfm.cli"]
    process = subprocess.Popen(
        [*command, "serve", "--host", "127.0.0.1", "--port", str(port), "--store", str(store), "--log-level", "warning"],
        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tabfm serve exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.3)
    process.kill()
    raise TimeoutError("tabfm serve did not start in 120 s")


def create_models(http: httpx.Client, train: pd.DataFrame) -> dict[str, str]:
    ids = {}
    for kind in KINDS:
        r = http.post("/v1/models", params={"target": "churn", "kind": kind, "params": json.dumps(PARAMS[kind])},
                      content=train.to_csv(index=False), headers={"content-type": "text/csv"})
        r.raise_for_status()
        ids[kind] = r.json()["id"]
    for kind, model_id in ids.items():
        while (info := http.get(f"/v1/models/{model_id}").json())["status"] == "training":
            time.sleep(0.5)
        if info["status"] != "ready":
            raise RuntimeError(f"{kind} model failed: {info['error']}")
        print(f"{kind}: ready, runtime {info['runtime']}, fit {info['metrics']['fit_seconds']:.1f} s", flush=True)
    return ids


def run_cell(url: str, path: str, body: bytes, concurrency: int, max_requests: int, seconds: float) -> dict[str, Any]:
    """``concurrency`` threads with one keep-alive client each, until the count or time is spent."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    issued = 0
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        nonlocal issued, errors
        mine = 0
        with httpx.Client(base_url=url, timeout=600, headers={"content-type": "application/json"}) as client:
            while True:
                with lock:
                    # Every client sends at least one request, so slow cells still measure concurrency.
                    if issued >= max(max_requests, concurrency) or (time.perf_counter() > deadline and mine > 0):
                        return
                    issued += 1
                    mine += 1
                start = time.perf_counter()
                try:
                    ok = client.post(path, content=body).status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = time.perf_counter() - start
                with lock:
                    if ok:
                        latencies.append(elapsed)
                    else:
                        errors += 1

    with httpx.Client(base_url=url, timeout=600, headers={"content-type": "application/json"}) as client:
        client.post(path, content=body).raise_for_status()  # warm-up, not measured
    deadline = time.perf_counter() + seconds
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {
        "n": len(latencies), "errors": errors, "wall": wall,
        "p50": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p99": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/api_load.md"))
    parser.add_argument("--seconds", type=float, default=15.0, help="time budget of one cell")
    parser.add_argument("--requests", type=int, default=400, help="request budget of a 1-row cell (1,000-row: a tenth)")
    parser.add_argument("--ort-threads", type=int, default=0, help="onnxruntime threads per session (0: default)")
    parser.add_argument("--append", action="store_true", help="add this run as a section of --out instead of replacing it")
    args = parser.parse_args(argv)

    train = make_table(1000, seed=0)
    test = make_table(1000, seed=1).drop(columns="churn")
    bodies = {rows: test.head(rows).to_json(orient="records").encode() for rows in (1, 1000)}
    env = {"TABFM_DEVICE": "cpu", "TABFM_ORT_THREADS": str(args.ort_threads)}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = start_server(Path(tmp) / "store", port, env)
        url = f"http://127.0.0.1:{port}"
        try:
            load_before = os.getloadavg()[0]
            with httpx.Client(base_url=url, timeout=600) as http:
                ids = create_models(http, train)
            for kind in KINDS:
                for rows in (1, 1000):
                    for concurrency in (1, 8, 32):
                        budget = args.requests if rows == 1 else max(args.requests // 10, concurrency)
                        cell = run_cell(url, f"/v1/models/{ids[kind]}/predict", bodies[rows], concurrency, budget, args.seconds)
                        cell.update(kind=kind, rows=rows, concurrency=concurrency, rows_per_s=cell["n"] * rows / cell["wall"])
                        results.append(cell)
                        print(f"{kind:6s} rows={rows:5d} c={concurrency:2d} n={cell['n']:4d} p50={cell['p50']:8.2f} ms "
                              f"p99={cell['p99']:8.2f} ms rows/s={cell['rows_per_s']:9.0f} errors={cell['errors']}", flush=True)
            health = httpx.get(f"{url}/health", timeout=60).json()
            health["load"] = (load_before, os.getloadavg()[0])
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    write_report(Path(args.out), results, health, args)
    return 1 if any(r["errors"] for r in results) else 0


def write_report(path: Path, results: list[dict[str, Any]], health: dict[str, Any], args: argparse.Namespace) -> None:
    single = {r["kind"]: r["p50"] for r in results if r["rows"] == 1 and r["concurrency"] == 1}
    target = {"tabfm": 25.0, "tabm": 10.0, "tabr": 10.0}
    command = f"python -m benchmarks.api_load --seconds {args.seconds:g} --requests {args.requests}"
    command += f" --ort-threads {args.ort_threads}" if args.ort_threads else ""
    command += " --append" if args.append else ""
    lines = [
        f"## Run with onnxruntime threads = {args.ort_threads}" if args.append else "# Prediction service load test",
        "",
        f"`{command}` under `nice -n 10`, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Server: `tabfm serve` (uvicorn, one process) on "
        f"127.0.0.1; clients: keep-alive `httpx` threads in another process on the same machine "
        f"({os.cpu_count()} cores, {platform.processor() or platform.machine()}, shared with other jobs). "
        f"Runtime: {', '.join(f'{k} ({v} models)' for k, v in health['runtimes'].items())}; onnxruntime threads per "
        f"session: {args.ort_threads or 'default'}; graph runs at once: one per core. Load average of the machine "
        f"(other jobs included) {health['load'][0]:.1f} before and {health['load'][1]:.1f} after the run.",
        "",
        "Models: one per kind on the same synthetic classification table (1,000 training rows, 8 numeric and "
        "2 categorical features). TabFM uses the shipped checkpoint with all 1,000 rows as its context "
        "(default 4 ensemble members); TabM and TabR use their default architectures (3 epochs: training length "
        "does not change serving cost). Requests are JSON records; latency is measured by the client, request "
        "to full response.",
        "",
        "| kind | rows/request | concurrency | requests | p50 ms | p99 ms | rows/s | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r['kind']} | {r['rows']} | {r['concurrency']} | {r['n']} | {r['p50']:.2f} | {r['p99']:.2f} | "
                     f"{r['rows_per_s']:,.0f} | {r['errors']} |")
    lines += ["", "Single-row p50 at concurrency 1 against the targets:", ""]
    for kind in KINDS:
        verdict = "meets" if single.get(kind, float("inf")) <= target[kind] else "misses"
        lines.append(f"- {kind}: {single.get(kind, float('nan')):.2f} ms (target <= {target[kind]:g} ms: {verdict})")
    lines.append(f"- errors over all cells: {sum(r['errors'] for r in results)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    if args.append and path.exists():
        text = path.read_text() + "\n" + text
    path.write_text(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
