"""Inference cost of the ICL network against the training-context size, exact vs inducing attention.

Run from the repository root (under ``nice`` on a shared machine)::

    nice -n 10 python -m benchmarks.icl_context_scaling --out benchmarks/results/icl_context_scaling

For contexts of 1k, 10k and 100k training rows x 20 features, each case runs in a fresh
subprocess: ``encode_context`` on the training rows, then ``predict_from_context`` for 1,000 test
rows (no gradients, fp32, ``--threads`` threads, default 2; the default ~0.9M-parameter network
with random weights: cost does not depend on the weights). On an oversubscribed machine use
``--threads 1``: with 2 threads every parallel region waits for whichever thread was descheduled,
which measured 10-15x slower in wall time at a load average of ~10 on 2 cores. Reported: wall-clock seconds of the two calls, the peak
resident memory of the process (``resource.getrusage``) and that peak minus the resident memory
just before the calls (the working memory of inference). Writes ``OUT.md`` (table), ``OUT.png``
(log-log time and memory) and ``OUT.json`` (the records; ``--only KIND:N`` reruns single cases). Exact attention is skipped where its cost, extrapolated quadratically
from the previous size, would exceed the time or memory limits; the table says so.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

SIZES = [1_000, 10_000, 100_000]
N_FEATURES = 20
N_TEST = 1_000


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(kind: str, n_train: int, threads: int) -> dict:
    """Measure one case in this process; returns a JSON-serialisable record."""
    import torch

    from models.attention import AttentionConfig
    from models.icl import ICLConfig, ICLTransformer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = ICLTransformer(ICLConfig(attention=AttentionConfig(kind=kind))).eval()
    g = torch.Generator().manual_seed(0)
    x_train = torch.randn(1, n_train, N_FEATURES, generator=g)
    y_train = torch.randint(0, 3, (1, n_train), generator=g).float()
    x_test = torch.randn(1, N_TEST, N_FEATURES, generator=g)
    with torch.no_grad():  # warm up kernels on a tiny table so the timing is of the work itself
        model(torch.randn(1, 20, N_FEATURES), torch.zeros(1, 10))
    base_mb = _rss_mb()
    with torch.no_grad():
        c0, t0 = time.process_time(), time.perf_counter()
        context = model.encode_context(x_train, y_train)
        t1 = time.perf_counter()
        logits = model.predict_from_context(context, x_test)
        t2, c2 = time.perf_counter(), time.process_time()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert logits.shape == (1, N_TEST, 10) and bool(torch.isfinite(logits).all())
    return {
        "kind": kind,
        "n_train": n_train,
        "encode_s": t1 - t0,
        "predict_s": t2 - t1,
        "total_s": t2 - t0,
        "cpu_s": c2 - c0,
        "peak_rss_mb": peak_mb,
        "working_mb": peak_mb - base_mb,
        "load_avg": os.getloadavg()[0],
    }


def run_case(kind: str, n_train: int, threads: int, timeout_s: float) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.icl_context_scaling",
        "--worker",
        kind,
        str(n_train),
        "--threads",
        str(threads),
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=True)
    except subprocess.TimeoutExpired:
        return {"kind": kind, "n_train": n_train, "skipped": f"timed out after {timeout_s:.0f} s"}
    except subprocess.CalledProcessError as err:
        tail = (err.stderr or "").strip().splitlines()[-1:] or ["no message"]
        return {"kind": kind, "n_train": n_train, "skipped": f"failed: {tail[0]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_outputs(records: list[dict], out: Path, threads: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [
        f"# ICL inference against context size ({N_FEATURES} features, {N_TEST:,} test rows, {threads} thread(s), fp32)",
        "",
        "Command: `nice -n 10 python -m benchmarks.icl_context_scaling --out benchmarks/results/icl_context_scaling`",
        "(single cases rerun with `--only KIND:N`).",
        "Each case runs in a fresh process; time = `encode_context` + `predict_from_context`; peak RSS from",
        "`resource.getrusage` (includes ~0.3-0.4 GB of Python + torch); working = peak minus RSS just before the calls.",
        "The machine is shared: the load average during each case is shown, wall-clock times are inflated by it;",
        "CPU s (process CPU time, all threads) is less sensitive to other processes.",
        "",
        "| attention | train rows | encode s | predict s | total s | CPU s | peak RSS MB | working MB | load avg | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in records:
        if "skipped" in r:
            lines.append(f"| {r['kind']} | {r['n_train']:,} | | | | | | | | {r['skipped']} |")
        else:
            lines.append(
                f"| {r['kind']} | {r['n_train']:,} | {r['encode_s']:.2f} | {r['predict_s']:.2f} | {r['total_s']:.2f} "
                f"| {r.get('cpu_s', float('nan')):.2f} | {r['peak_rss_mb']:.0f} | {r['working_mb']:.0f} "
                f"| {r['load_avg']:.1f} | |"
            )
    lines += ["", "Growth per 10x training rows (total time; working memory):", ""]
    for kind in ("inducing", "full"):
        done = [r for r in records if r["kind"] == kind and "skipped" not in r]
        for a, b in itertools.pairwise(done):
            cpu = (
                f", CPU time x{b['cpu_s'] / a['cpu_s']:.1f}"
                if "cpu_s" in a and "cpu_s" in b
                else ""
            )
            lines.append(
                f"- {kind}, {a['n_train']:,} -> {b['n_train']:,}: time x{b['total_s'] / a['total_s']:.1f}{cpu}, "
                f"working memory x{b['working_mb'] / max(a['working_mb'], 1.0):.1f}, "
                f"peak RSS x{b['peak_rss_mb'] / a['peak_rss_mb']:.1f}"
            )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for kind, marker in (("full", "s"), ("inducing", "o")):
        done = [r for r in records if r["kind"] == kind and "skipped" not in r]
        n = [r["n_train"] for r in done]
        axes[0].plot(n, [r["total_s"] for r in done], marker=marker, label=kind)
        axes[1].plot(n, [r["peak_rss_mb"] for r in done], marker=marker, label=f"{kind} peak RSS")
        axes[1].plot(
            n,
            [max(r["working_mb"], 1.0) for r in done],
            marker=marker,
            linestyle="--",
            label=f"{kind} working",
        )
    ref = [SIZES[0], SIZES[-1]]
    for ax, ylabel in ((axes[0], "seconds (encode + predict 1k rows)"), (axes[1], "MB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training rows (20 features)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    first = next((r for r in records if r["kind"] == "inducing" and "skipped" not in r), None)
    if first:
        axes[0].plot(
            ref,
            [first["total_s"], first["total_s"] * 100],
            color="grey",
            linestyle=":",
            label="linear from inducing 1k",
        )
        axes[0].legend(fontsize=8)
    fig.suptitle("ICL inference cost against context size")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)


def _estimate_exact_s(previous: dict, n: int, records: list[dict]) -> float:
    """Seconds exact attention would take at ``n`` rows, from its run at a smaller size.

    The part beyond the inducing run at the same size is taken as the quadratic attention and
    scaled by the square of the size ratio; the rest scales like the inducing run (measured at
    ``n`` when available). Without an inducing run the whole encode time is scaled quadratically.
    """
    ratio = n / previous["n_train"]
    inducing = {r["n_train"]: r for r in records if r["kind"] == "inducing" and "skipped" not in r}
    same = inducing.get(previous["n_train"])
    if same is None:
        return previous["encode_s"] * ratio**2 + previous["predict_s"] * ratio
    quadratic = max(previous["encode_s"] - same["encode_s"], 0.0) * ratio**2
    linear = inducing[n]["encode_s"] if n in inducing else same["encode_s"] * ratio
    return quadratic + linear + previous["predict_s"] * ratio


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/icl_context_scaling"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--max-seconds", type=float, default=600.0, help="skip or stop a case beyond this"
    )
    parser.add_argument(
        "--max-gb", type=float, default=16.0, help="skip a case whose memory would exceed this"
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="KIND:N",
        help="rerun only these cases (repeatable), keeping the others from OUT.json",
    )
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "N_TRAIN"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.threads)))
        return
    stored_path = args.out.with_suffix(".json")
    stored = json.loads(stored_path.read_text()) if args.only and stored_path.exists() else []
    stored = {(r["kind"], r["n_train"]): r for r in stored}
    records: list[dict] = []
    for kind in ("inducing", "full"):
        previous = None
        for n in SIZES:
            if args.only and f"{kind}:{n}" not in args.only and (kind, n) in stored:
                records.append(stored[(kind, n)])
                previous = records[-1]
                continue
            if kind == "full" and previous is not None and "skipped" not in previous:
                est_s = _estimate_exact_s(previous, n, records)
                if est_s > args.max_seconds:
                    records.append(
                        {
                            "kind": kind,
                            "n_train": n,
                            "skipped": (
                                f"skipped: exact self-attention over the training rows is quadratic; estimated "
                                f"{est_s / 60:.0f} min from {previous['n_train']:,} rows (limit {args.max_seconds / 60:.0f} min)"
                            ),
                        }
                    )
                    print(records[-1], flush=True)
                    previous = records[-1]
                    continue
            if previous is not None and "skipped" in previous and kind == "full":
                records.append(
                    {
                        "kind": kind,
                        "n_train": n,
                        "skipped": "skipped: smaller context already over the limit",
                    }
                )
                continue
            record = run_case(kind, n, args.threads, timeout_s=args.max_seconds * 1.5)
            if "skipped" not in record and record["peak_rss_mb"] > args.max_gb * 1024:
                record["note"] = "over the memory limit"
            records.append(record)
            previous = record
            print(record, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    stored_path.write_text(json.dumps(records, indent=1) + "\n")
    write_outputs(records, args.out, args.threads)
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
