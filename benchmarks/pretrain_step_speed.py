"""CPU seconds of one pretraining step on prior batches, whole against width-grouped micro-batches.

    nice -n 10 python -m benchmarks.pretrain_step_speed [--task regression] \\
        [--shapes 16x512x20,16x1024x40] [--micro-batch-sizes 16,8,4,2] [--steps 2]
        [--attention-kinds full,inducing] [--out results.md]

A prior batch pads every table to the widest one's feature count. ``tabfm pretrain`` runs a batch
as micro-batches of ``--micro-batch-size`` tables grouped by feature count and cut of their padding
(:meth:`priors.PriorBatch.by_width`), which gives the whole batch's gradients (to float rounding).
This prints, per batch shape, the median CPU seconds of forward + backward for each micro-batch
size (the batch size itself being the whole padded batch), on one thread, so that other processes
on the machine do not change the figures; the peak resident memory of the process, each case
running in a fresh process; and the gradient's relative L2 difference to the whole batch's. The
network is the shipped checkpoint's architecture, initialised from the same seed in every case;
``--attention-kinds`` also times it with other kinds of in-context attention (``inducing``: the
in-context blocks read ``n_inducing`` learned summaries instead of every training row), each
against the same whole-batch reference of its own kind.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from models.icl import ICLConfig, ICLTransformer
from priors import make_batch
from tabfm.checkpoint import shipped_architecture
from tabfm.pretrain import accumulate_gradients


def _parse_shapes(text: str) -> list[tuple[int, int, int]]:
    try:
        shapes = [tuple(int(v) for v in item.split("x")) for item in text.split(",")]
    except ValueError:
        raise SystemExit(f"--shapes takes TABLESxROWSxFEATURES items, got {text!r}") from None
    if any(len(s) != 3 or min(s) < 1 for s in shapes):
        raise SystemExit(f"--shapes takes TABLESxROWSxFEATURES items of positive integers, got {text!r}")
    return shapes  # type: ignore[return-value]


def measure(task: str, shape: tuple[int, int, int], micro: int, steps: int, seed: int, kind: str | None = None) -> tuple[float, np.ndarray, float]:
    """Median CPU seconds of one step, the last step's gradient (flattened) and the peak resident
    memory in GB. Run in a fresh process per case, so that the peak is this case's own."""
    torch.set_num_threads(1)
    tables, rows, features = shape
    batch = make_batch("default", task, batch_size=tables, n_rows=rows, max_features=features, seed=seed)
    torch.manual_seed(seed)
    model = ICLTransformer(ICLConfig(**_architecture(task, kind))).train()
    seconds = []
    for i in range(steps + 1):  # the first step warms up allocators and kernels
        model.zero_grad(set_to_none=True)
        start = time.process_time()
        accumulate_gradients(model, batch, torch.device("cpu"), micro)
        if i:
            seconds.append(time.process_time() - start)
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).numpy()
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kilobytes on Linux
    return statistics.median(seconds), grad, peak_gb


def _architecture(task: str, kind: str | None = None) -> dict:
    """The shipped network's configuration, with in-context attention of ``kind`` if given."""
    return shipped_architecture(task, None if kind is None else {"attention": {"kind": kind}})


def _in_fresh_process(*args: object) -> tuple[float, np.ndarray, float]:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["classification", "regression"], default="regression")
    parser.add_argument("--shapes", default="16x512x20,16x1024x40", help="TABLESxROWSxFEATURES, comma-separated")
    parser.add_argument("--micro-batch-sizes", default="16,8,4,2")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--attention-kinds", help="comma-separated in-context attention kinds to time (default: the shipped one)")
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    args = parser.parse_args(argv)
    shapes = _parse_shapes(args.shapes)
    try:
        micros = [int(v) for v in args.micro_batch_sizes.split(",")]
    except ValueError:
        parser.error(f"--micro-batch-sizes takes comma-separated integers, got {args.micro_batch_sizes!r}")
    if min(micros) < 1 or args.steps < 1:
        parser.error("--micro-batch-sizes and --steps must be positive")
    shipped_kind = _architecture(args.task).get("attention", {}).get("kind", "inducing")
    kinds = [k.strip() for k in (args.attention_kinds or shipped_kind).split(",") if k.strip()]
    if not kinds or any(k not in ("full", "inducing") for k in kinds):
        parser.error(f"--attention-kinds takes full and/or inducing, got {args.attention_kinds!r}")
    n_parameters = ICLTransformer(ICLConfig(**_architecture(args.task))).n_parameters()
    lines = [
        f"# Pretraining step on prior batches ({args.task})",
        "",
        f"- Command: `python -m benchmarks.pretrain_step_speed --task {args.task} --shapes {args.shapes} "
        f"--micro-batch-sizes {args.micro_batch_sizes} --steps {args.steps}"
        + (f" --attention-kinds {args.attention_kinds}`" if args.attention_kinds else "`"),
        f"- Network: the shipped checkpoint's architecture ({n_parameters:,} parameters, {shipped_kind} "
        "in-context attention; `attention` names the kind timed), fp32, "
        "one thread; CPU seconds of forward + backward, median of the steps after a warm-up step; "
        "peak resident memory of a fresh process running the case (network and imports included)",
        "- `grad diff`: relative L2 difference of the gradient to the whole padded batch's",
        "",
        "| tables × rows × max features | mean features | attention | micro-batch | CPU s | × whole batch | peak memory GB | grad diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for shape in shapes:
        tables, rows, features = shape
        batch = make_batch("default", args.task, batch_size=tables, n_rows=rows, max_features=features, seed=args.seed)
        mean_features = float(batch.feature_mask.sum(dim=1).float().mean())
        for kind in kinds:
            whole = _in_fresh_process(args.task, shape, tables, args.steps, args.seed, kind)
            for micro in micros:
                seconds, grad, peak = whole if micro >= tables else _in_fresh_process(args.task, shape, micro, args.steps, args.seed, kind)
                diff = float(np.linalg.norm(grad - whole[1]) / np.linalg.norm(whole[1]))
                label = "whole batch" if micro >= tables else str(micro)
                line = (f"| {tables} × {rows} × {features} | {mean_features:.1f} | {kind} | {label} | {seconds:.2f} | "
                        f"{seconds / whole[0]:.2f} | {peak:.2f} | {diff:.1e} |")
                lines.append(line)
                print(line, flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
