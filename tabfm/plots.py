"""Plots of tabfm's own runs (matplotlib is imported lazily, with the file-only Agg backend)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def plot_pretraining(loss_log: Path, val_log: Path, out: Path, *, task: str, protocol: int | None = None) -> Path:
    """Training loss (smoothed) and real-data validation score against datasets seen.

    Validation logs of earlier protocols beside ``val_log`` (``val_log_v<N>.csv``) are drawn in
    grey: their scores are on other datasets or splits, so they are not joined to the current ones.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = pd.read_csv(loss_log)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    ax.plot(losses["datasets_seen"], losses["loss"], color="0.8", lw=0.6, label="loss (batch)")
    ax.plot(losses["datasets_seen"], losses["loss_ema"], color="C0", lw=1.6, label="loss (moving average)")
    ax.set_xlabel("synthetic datasets seen")
    ax.set_ylabel("test-row loss on the prior")
    # One early batch reached a loss of 4e12 (a near-constant target, since clipped); limits from
    # the 1st to 99th percentile keep such a spike from flattening the rest of the curve.
    low, high = losses["loss"].quantile([0.01, 0.99])
    if high > low:
        ax.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    metric = "mean ROC-AUC" if task == "classification" else "mean R²"
    archived = sorted(Path(val_log).parent.glob("val_log_v*.csv"))
    series = [(path, f"validation, protocol {path.stem.split('_')[-1]}", "0.55") for path in archived]
    current = f"real-data validation ({metric})" if protocol is None else f"validation, protocol v{protocol} ({metric})"
    series.append((Path(val_log), current, "C3"))
    right = None
    for path, label, color in series:
        val = pd.read_csv(path) if path.is_file() else None
        if val is None or not len(val):
            continue
        right = right or ax.twinx()
        right.plot(val["datasets_seen"], val["mean"], "o-", ms=3, color=color, label=label)
    if right is not None:
        right.set_ylabel(f"validation {metric}")
        h2, l2 = right.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="upper right", fontsize=8)
    ax.set_title(f"tabfm pretraining ({task})")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)
