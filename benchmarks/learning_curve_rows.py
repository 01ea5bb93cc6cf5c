"""Score against training rows: does each model gain from more rows as the GBDTs do?

    python -m benchmarks.learning_curve_rows --datasets 574_house_16H,537_houses,magic \\
        [--rows 500,1000,2000,3000] [--models tabfm,lightgbm] [--seeds 0,1] \\
        [--out results.md] [--plot results.png]

For each dataset and seed, the benchmark's split (70/30, at most 1,000 test rows) is made once;
every model is then fitted on seeded subsamples of its training rows of each size (stratified for
classification) and scored on the same test rows. The figure of interest is the gain from the
smallest to the largest size: an in-context model whose pretraining never rewarded longer tables
gains less from them than a model trained on the rows, which the paired table shows at a glance.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd
import torch

from benchmarks import data as bdata
from benchmarks.icl_attention_options import _score
from benchmarks.models import make_model
from benchmarks.run import tabfm_checkpoint_lines


def curve_rows(entry: bdata.DatasetEntry, sizes: list[int], models: list[str], seed: int) -> list[dict]:
    """One row per (model, size): the score on a fixed test split of a ``size``-row fit."""
    split = bdata.make_split(entry.load(), seed, max_train_rows=max(sizes), max_test_rows=1000)
    task = "regression" if entry.task == "regression" else "classification"
    stratify = split.y_train if task == "classification" else None
    rows = []
    for size in sizes:
        if size > len(split.y_train):
            continue
        keep, _ = bdata.seeded_subset(np.arange(len(split.y_train)), size, stratify, seed)
        for spec in models:
            start = time.perf_counter()
            model = make_model(spec, entry.task, seed).fit(split.X_train.iloc[keep], split.y_train[keep])
            score = _score(model, task, split.X_test, split.y_test)
            rows.append({"dataset": entry.name, "task": task, "seed": seed, "model": spec, "rows": size,
                         "score": score, "seconds": time.perf_counter() - start})
    return rows


def gain_table(frame: pd.DataFrame) -> str:
    """Per dataset and model: the mean score over seeds at each size, and the gain over the range."""
    mean = frame.groupby(["dataset", "task", "model", "rows"]).score.mean().unstack("rows")
    sizes = list(mean.columns)
    mean["gain"] = mean[sizes[-1]] - mean[sizes[0]]
    header = "| dataset | metric | model | " + " | ".join(f"{s:,} rows" for s in sizes) + f" | gain {sizes[0]:,} → {sizes[-1]:,} |"
    lines = [header, "|" + "---|" * (len(sizes) + 4)]
    for (dataset, task, model), r in mean.iterrows():
        metric = "R²" if task == "regression" else "ROC-AUC"
        cells = " | ".join("" if pd.isna(r[s]) else f"{r[s]:.4f}" for s in sizes)
        gain = "" if pd.isna(r["gain"]) else f"{r['gain']:+.4f}"
        lines.append(f"| {dataset} | {metric} | {model} | {cells} | {gain} |")
    by_model = mean.groupby(level="model")["gain"].agg(["mean", "count"])
    lines += ["", f"Mean gain over the datasets with at least {sizes[-1]:,} training rows: " + "; ".join(
        f"{model} {r['mean']:+.4f} ({int(r['count'])} of {mean.loc[(slice(None), slice(None), model), :].shape[0]})"
        for model, r in by_model.iterrows() if r["count"]) + "."]
    return "\n".join(lines)


def plot(frame: pd.DataFrame, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(frame["dataset"]))
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), dpi=110, squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        part = frame[frame["dataset"] == name]
        for i, (model, curve) in enumerate(part.groupby("model", sort=False)):
            mean = curve.groupby("rows").score.mean()
            ax.plot(mean.index, mean.values, "o-", ms=3, color=f"C{i}", label=model)
        ax.set_xscale("log")
        sizes = sorted(part["rows"].unique())
        ax.set_xticks(sizes, [f"{size:,}" for size in sizes])
        ax.minorticks_off()
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("R²" if part["task"].iloc[0] == "regression" else "ROC-AUC", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.supxlabel("training rows (log scale)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--datasets", required=True)
    parser.add_argument("--rows", default="500,1000,2000,3000", help="training-row sizes, comma-separated")
    parser.add_argument("--models", default="tabfm,lightgbm", help="runner model specs, comma-separated")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--csv", type=Path, help="write the per-fit rows here")
    parser.add_argument("--out", type=Path, help="write the markdown summary here (printed anyway)")
    parser.add_argument("--plot", type=Path, help="write a PNG of score against rows per dataset")
    args = parser.parse_args(argv)
    try:
        sizes = sorted({int(s) for s in args.rows.split(",")})
    except ValueError:
        parser.error(f"--rows must be comma-separated integers, got {args.rows!r}")
    if len(sizes) < 2 or sizes[0] < 2:
        parser.error(f"--rows needs two or more sizes of at least 2 rows, got {args.rows!r}")
    models = [m for m in args.models.split(",") if m]
    torch.set_num_threads(args.threads)
    rows: list[dict] = []
    for entry in bdata.local_datasets(args.data_dir, args.datasets.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            rows += curve_rows(entry, sizes, models, seed)
            print(f"{entry.name} seed {seed}: " + ", ".join(
                f"{r['model']}@{r['rows']} {r['score']:.4f}" for r in rows if r["dataset"] == entry.name and r["seed"] == seed), flush=True)
    frame = pd.DataFrame(rows)
    if args.csv:
        frame.to_csv(args.csv, index=False)
    command = "python -m benchmarks.learning_curve_rows " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in [("datasets", args.datasets), ("rows", args.rows),
                                                    ("models", args.models), ("seeds", args.seeds),
                                                    ("threads", args.threads)])
    summary = "\n".join([
        "# Score against training rows",
        "",
        f"- Command: `{command}`",
        "- The benchmark's split per seed (at most 1,000 test rows); each size a seeded subsample of "
        "its training rows (stratified for classification); mean over seeds.",
        *(tabfm_checkpoint_lines() if any(m.startswith("tabfm") for m in models) else []),
        "",
        gain_table(frame),
        "",
    ])
    print("\n" + summary)
    if args.out:
        args.out.write_text(summary)
    if args.plot:
        print(f"plot written to {plot(frame, args.plot)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
