"""Paired comparison of two pretraining runs that share a branch point, on the same batches.

    python -m benchmarks.pretrain_ab runs/classification runs/classification-muon [--from-step 13868] \
        [--window 200] [--plot ab.png]

Every step's batch is a pure function of ``(seed, step)``, so two runs branched from one state
(``tabfm pretrain --branch-from``) see the same tables at the same step. The loss logged at a step
(``loss_log.csv``, every ``log_every`` steps) is therefore a paired sample: the difference B - A at
common steps after the branch cancels most of the batch-to-batch noise. Printed per window of
steps: mean loss of each run, mean difference and its standard error; and the last validation score
of each run (``val_log.csv``) at or after the branch.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd


def paired_losses(run_a: Path, run_b: Path, from_step: int) -> pd.DataFrame:
    """``step, loss_a, loss_b, diff`` at the steps both runs logged after ``from_step``."""
    a = pd.read_csv(run_a / "loss_log.csv")[["step", "loss"]]
    b = pd.read_csv(run_b / "loss_log.csv")[["step", "loss"]]
    both = a.merge(b, on="step", suffixes=("_a", "_b"))
    both = both[both["step"] > from_step].reset_index(drop=True)
    both["diff"] = both["loss_b"] - both["loss_a"]
    return both


def summarise(both: pd.DataFrame, window: int) -> pd.DataFrame:
    rows = []
    start = int(both["step"].min()) if len(both) else 0
    for lo in range(start, int(both["step"].max()) + 1 if len(both) else 0, window):
        part = both[(both["step"] >= lo) & (both["step"] < lo + window)]
        if len(part) < 2:
            continue
        rows.append({
            "steps": f"{lo}-{lo + window - 1}", "n": len(part), "loss_a": part["loss_a"].mean(),
            "loss_b": part["loss_b"].mean(), "diff": part["diff"].mean(),
            "se": part["diff"].std(ddof=1) / math.sqrt(len(part)),
        })
    if len(both) >= 2:
        rows.append({
            "steps": "all", "n": len(both), "loss_a": both["loss_a"].mean(), "loss_b": both["loss_b"].mean(),
            "diff": both["diff"].mean(), "se": both["diff"].std(ddof=1) / math.sqrt(len(both)),
        })
    return pd.DataFrame(rows)


def last_validation(run: Path, from_step: int) -> str:
    path = run / "val_log.csv"
    if not path.is_file():
        return "none"
    val = pd.read_csv(path)
    val = val[val["step"] >= from_step]
    if val.empty:
        return "none"
    row = val.iloc[-1]
    return f"{row['mean']:.4f} at step {int(row['step'])}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--from-step", type=int, default=0, help="the branch point (steps after it are compared)")
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--plot", type=Path, help="PNG of the running mean of the paired difference")
    args = parser.parse_args(argv)

    both = paired_losses(args.run_a, args.run_b, args.from_step)
    if len(both) < 2:
        raise SystemExit(f"fewer than 2 common logged steps after step {args.from_step}: nothing to compare")
    table = summarise(both, args.window)
    print(f"A = {args.run_a}, B = {args.run_b}; training loss on the same batches after step {args.from_step}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"last validation: A {last_validation(args.run_a, args.from_step)}, B {last_validation(args.run_b, args.from_step)}")
    if args.plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot(both["step"], both["diff"].expanding().mean(), label="running mean of B - A")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss difference")
        ax.set_title(f"{args.run_b.name} - {args.run_a.name} on the same batches")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
