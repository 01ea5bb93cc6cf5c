"""Seconds per pretraining step (forward + backward, fp32) of the ICL network on this CPU.

Run from the repository root (under ``nice`` on a shared machine)::

    nice -n 10 python -m benchmarks.icl_step_speed [--threads 2] [--steps 3]

Prints the parameter count and, for 16 tables x 512 rows x 10 features and 8 x 1,024 x 20, the
median wall-clock and CPU seconds of one step with exact ("full") and inducing-point attention.
The load average is printed too: other processes on the machine inflate wall-clock times, and
with 2 threads on an oversubscribed machine every parallel region waits for whichever thread was
descheduled; ``--threads 1`` then gives the steadier figure (its CPU seconds are the work itself).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from models.attention import AttentionConfig
from models.icl import ICLConfig, ICLTransformer

SHAPES = [(16, 512, 10), (8, 1024, 20)]


def time_step(
    model: ICLTransformer, b: int, r: int, f: int, *, steps: int, train_fraction: float
) -> tuple[float, float]:
    """Median (wall, cpu) seconds of forward + backward on a random batch."""
    g = torch.Generator().manual_seed(0)
    n_train = int(r * train_fraction)
    x = torch.randn(b, r, f, generator=g)
    y = torch.randint(0, 4, (b, r), generator=g).float()
    walls, cpus = [], []
    for i in range(steps + 1):  # the first step warms up allocators and kernels
        w0, c0 = time.perf_counter(), time.process_time()
        logits = model(x, y[:, :n_train])
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), y[:, n_train:].reshape(-1).long()
        )
        loss.backward()
        model.zero_grad(set_to_none=True)
        if i:
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--train-fraction", type=float, default=0.75)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {args.threads} threads, load average {os.getloadavg()[0]:.2f} at start"
    )
    print(
        f"{'attention':<10} {'params':>9} {'batch (B x R x F)':>18} {'wall s/step':>12} {'cpu s/step':>11}"
    )
    for kind in ("full", "inducing"):
        model = ICLTransformer(ICLConfig(attention=AttentionConfig(kind=kind))).train()
        for b, r, f in SHAPES:
            wall, cpu = time_step(
                model, b, r, f, steps=args.steps, train_fraction=args.train_fraction
            )
            print(
                f"{kind:<10} {model.n_parameters():>9,} {f'{b} x {r} x {f}':>18} {wall:>12.2f} {cpu:>11.2f}",
                flush=True,
            )
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
