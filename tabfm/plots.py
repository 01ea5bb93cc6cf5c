"""Plots of tabfm's own runs (matplotlib is imported lazily, with the file-only Agg backend)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def plot_pretraining(loss_log: Path, val_log: Path, out: Path, *, task: str) -> Path:
    """Training loss (smoothed) and real-data validation score against datasets seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = pd.read_csv(loss_log)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    ax.plot(losses["datasets_seen"], losses["loss"], color="0.8", lw=0.6, label="loss (batch)")
    ax.plot(losses["datasets_seen"], losses["loss_ema"], color="C0", lw=1.6, label="loss (moving average)")
    ax.set_xlabel("synthetic datasets seen")
    ax.set_ylabel("test-row loss on the prior")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if Path(val_log).is_file():
        val = pd.read_csv(val_log)
        if len(val):
            right = ax.twinx()
            metric = "mean ROC-AUC" if task == "classification" else "mean R²"
            right.plot(val["datasets_seen"], val["mean"], "o-", color="C3", label=f"real-data validation ({metric})")
            right.set_ylabel(f"validation {metric}")
            h2, l2 = right.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="upper right", fontsize=8)
    ax.set_title(f"tabfm pretraining ({task})")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)
