"""Summaries of a benchmark CSV: per-model table (printed or markdown) and a plot.

Per dataset, a model's score is its metric averaged over the seeds that succeeded (ROC-AUC for
classification, R² for regression). Ranks (1 = best, ties averaged), wins and min-max normalised
scores compare the models on the datasets where every model has a score, so a model that skips or
fails a dataset is neither rewarded nor punished on it; its failures are counted separately.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd

CLASSIFICATION = ("binary", "multiclass")


def _metric_name(task: str) -> str:
    return "r2" if task == "regression" else "roc_auc"


def dataset_scores(results: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """Mean metric over seeds, one row per dataset, one column per model (NaN: no score)."""
    ok = results[results["error"].isna() | (results["error"].astype(str) == "")].copy()
    ok["score"] = np.where(ok["task"] == "regression", ok["r2"], ok["roc_auc"])
    table = ok.pivot_table(index="dataset", columns="model", values="score", aggfunc="mean")
    tasks = results.groupby("dataset")["task"].first()
    table = table.reindex(index=tasks.index, columns=models)
    table.insert(0, "task", tasks)
    return table


def _active(scores: pd.DataFrame) -> list[str]:
    """Models with at least one score: a model that failed everywhere does not empty the comparison."""
    return [m for m in scores.columns if scores[m].notna().any()]


def _normalise(scores: pd.DataFrame) -> pd.DataFrame:
    lo, hi = scores.min(axis=1), scores.max(axis=1)
    span = (hi - lo).replace(0, np.nan)
    norm = scores.sub(lo, axis=0).div(span, axis=0)
    tied = span.isna().to_numpy()[:, None] & np.ones((1, scores.shape[1]), dtype=bool)
    return norm.mask(tied, 1.0)  # all models tied: all score 1


def summarise(results: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """The per-model summary table (index: model)."""
    per_dataset = dataset_scores(results, models)
    scores = per_dataset[models]
    complete = scores[_active(scores)].dropna()
    tasks = per_dataset.loc[complete.index, "task"]
    ranks = complete.rank(axis=1, ascending=False, method="average")  # 1 = best
    norm = _normalise(complete)
    is_cls = tasks.isin(CLASSIFICATION).to_numpy()
    wins = ranks.eq(ranks.min(axis=1), axis=0).sum()
    errors = results["error"].notna() & (results["error"].astype(str) != "")
    ok = results[~errors]
    summary = pd.DataFrame(
        {
            "datasets": scores.notna().sum(),
            "mean_rank": ranks.mean(),
            "norm_score_cls": norm[is_cls].mean() if is_cls.any() else np.nan,
            "norm_score_reg": norm[~is_cls].mean() if (~is_cls).any() else np.nan,
            "mean_roc_auc": complete[is_cls].mean() if is_cls.any() else np.nan,
            "mean_r2": complete[~is_cls].mean() if (~is_cls).any() else np.nan,
            "wins": wins,
            "median_fit_s": ok.groupby("model")["fit_s"].median(),
            "median_predict_s": ok.groupby("model")["predict_s"].median(),
            "total_fit_s": ok.groupby("model")["fit_s"].sum(),
            "errors": results[errors].groupby("model").size(),
        }
    ).reindex(models)
    summary["errors"] = summary["errors"].fillna(0).astype(int)
    summary["datasets"] = summary["datasets"].fillna(0).astype(int)
    summary.attrs["n_compared"] = len(complete)
    summary.attrs["n_cls"] = int(is_cls.sum())
    summary.attrs["n_reg"] = int((~is_cls).sum())
    summary.attrs["n_datasets"] = len(per_dataset)
    return summary


def command_line(module: str, argv: list[str] | None) -> str:
    """``python -m MODULE ARGS`` as it was run: ``argv`` when ``main(argv)`` was called, else the process's."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python", "-m", module, *(shlex.quote(str(a)) for a in args)])


def markdown_table(frame: pd.DataFrame, floatfmt: dict[str, str] | None = None) -> str:
    floatfmt = floatfmt or {}
    cols = list(frame.columns)
    lines = ["| " + " | ".join([frame.index.name or "", *cols]) + " |"]
    lines.append("|" + "---|" * (len(cols) + 1))
    for i, idx in enumerate(frame.index):
        cells = []
        for c in cols:
            v = frame[c].iloc[i]
            if isinstance(v, (float, np.floating)):
                cells.append("" if np.isnan(v) else format(v, floatfmt.get(c, ".3f")))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join([str(idx), *cells]) + " |")
    return "\n".join(lines)


_SUMMARY_FORMAT = {
    "mean_rank": ".2f", "norm_score_cls": ".3f", "norm_score_reg": ".3f", "mean_roc_auc": ".4f", "mean_r2": ".4f",
    "median_fit_s": ".3g", "median_predict_s": ".3g", "total_fit_s": ".1f",
}  # fmt: skip


def format_summary(summary: pd.DataFrame, results: pd.DataFrame) -> str:
    """The summary as a markdown table with one line saying what was compared."""
    head = (
        f"Compared on {summary.attrs['n_compared']} of {summary.attrs['n_datasets']} datasets "
        f"where every model that ran has a score ({summary.attrs['n_cls']} classification: ROC-AUC, "
        f"{summary.attrs['n_reg']} regression: R²); mean over seeds, then rank / min-max per dataset."
    )
    table = summary.rename_axis("model")
    return head + "\n\n" + markdown_table(table, _SUMMARY_FORMAT)


def machine_description() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    # XGBoost's CPU-only wheel is distributed as xgboost-cpu; either name is the same library.
    for name, dists in (("scikit-learn", ("scikit-learn",)), ("lightgbm", ("lightgbm",)),
                        ("xgboost", ("xgboost", "xgboost-cpu")), ("catboost", ("catboost",))):
        for dist in dists:
            try:
                out.append(f"{name} {version(dist)}")
                break
            except PackageNotFoundError:
                continue
    return ", ".join(out)


def _full_coverage_section(results: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    """When some model skipped datasets, the comparison of the models that scored everywhere."""
    if summary.attrs["n_compared"] == summary.attrs["n_datasets"]:
        return []
    full = [m for m in summary.index if summary.loc[m, "datasets"] == summary.attrs["n_datasets"]]
    if len(full) < 2:
        return []
    sub = summarise(results[results["model"].isin(full)], full)
    return [
        f"## Per model, on all {summary.attrs['n_datasets']} datasets "
        "(only the models with a score on every dataset)",
        "",
        format_summary(sub, results),
        "",
    ]


def _busy_time(results: pd.DataFrame) -> str:
    per_model = (
        (results["fit_s"].fillna(0) + results["predict_s"].fillna(0))
        .groupby(results["model"])
        .sum()
    )
    parts = ", ".join(f"{m} {v / 60:.1f} min" for m, v in per_model.items())
    return f"{per_model.sum() / 60:.1f} min ({parts})"


def write_markdown(
    path: Path,
    summary: pd.DataFrame,
    results: pd.DataFrame,
    *,
    command: str,
    notes: dict[str, str],
    header: list[str] | None = None,
) -> None:
    """Write the summary, the per-dataset scores and the failures as a markdown page."""
    models = list(summary.index)
    per_dataset = dataset_scores(results, models)
    errors = results[results["error"].notna() & (results["error"].astype(str) != "")]
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# Benchmark summary",
        "",
        f"- Command: `{command}`",
        f"- Machine: {machine_description()}",
        f"- Libraries: {_versions()}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '')}",
        f"- Date: {date}",
        f"- Rows: {len(results)} (dataset × model × seed), {len(errors)} with an error or skip",
        f"- Fit + predict time summed over rows: {_busy_time(results)}",
        *(header or []),
        "",
        "## Per model",
        "",
        format_summary(summary, results),
        "",
        "`datasets`: datasets with a score; `mean_roc_auc`, `mean_r2`: the plain mean of the "
        "per-dataset scores over the compared datasets; `errors`: rows that failed or were skipped; "
        "times are medians over successful rows (seconds, wall clock).",
        "",
        *_full_coverage_section(results, summary),
        "## Per dataset (ROC-AUC for classification, R² for regression; mean over seeds)",
        "",
        markdown_table(per_dataset.rename_axis("dataset"), {m: ".4f" for m in models}),
    ]
    if len(errors):
        grouped = errors.groupby(["model", "dataset"])["error"].agg(
            lambda s: f"{len(s)}× {s.iloc[0]}"
        )
        parts += ["", "## Errors and skips", ""]
        parts += [f"- {m} on {d}: {e}" for (m, d), e in grouped.items()]
    if notes:
        parts += ["", "## Split notes", ""]
        parts += [f"- {d}: {n}" for d, n in sorted(notes.items())]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n")


def plot(results: pd.DataFrame, models: list[str], path: Path) -> None:
    """Per-dataset normalised scores per model (strip plot), mean rank and median fit time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_dataset = dataset_scores(results, models)
    active = _active(per_dataset[models])
    complete = per_dataset.dropna(subset=active)
    norm = _normalise(complete[active]).reindex(columns=models)
    is_cls = complete["task"].isin(CLASSIFICATION).to_numpy()
    summary = summarise(results, models)
    x = np.arange(len(models))

    fig, axes = plt.subplots(
        1, 3, figsize=(4 + 2.2 * len(models), 4.8), gridspec_kw={"width_ratios": [2.2, 1, 1]}
    )
    ax = axes[0]
    rng = np.random.default_rng(0)
    for flag, colour, label in (
        (True, "tab:blue", "classification (ROC-AUC)"),
        (False, "tab:orange", "regression (R²)"),
    ):
        sub = norm[is_cls == flag]
        if sub.empty:
            continue
        offset = -0.17 if flag else 0.17
        for i, m in enumerate(models):
            values = sub[m].dropna()
            if values.empty:
                continue
            ax.boxplot(values, positions=[x[i] + offset], widths=0.3, showfliers=False,
                       patch_artist=True, manage_ticks=False,
                       boxprops={"facecolor": colour, "alpha": 0.18, "edgecolor": colour},
                       medianprops={"color": colour}, whiskerprops={"color": colour},
                       capprops={"color": colour})  # fmt: skip
            jitter = rng.uniform(-0.09, 0.09, len(sub))
            ax.scatter(x[i] + offset + jitter, sub[m], s=12, alpha=0.55, color=colour,
                       label=label if i == 0 else None)  # fmt: skip
            ax.hlines(
                sub[m].mean(), x[i] + offset - 0.14, x[i] + offset + 0.14, color="black", lw=2
            )
    long_names = max(map(len, models)) > 10  # e.g. tabfm[n_estimators=8]: slant them apart
    ax.set_xticks(x, models, rotation=20 if long_names else 0, ha="right" if long_names else "center")
    ax.set_ylabel("normalised score per dataset (1 = best model)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(
        f"Per-dataset scores, min-max over models\n(box: quartiles, black bar: mean; {len(complete)} datasets)"
    )
    below = -0.3 if long_names else -0.07  # under the slanted names
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, below), ncol=2, fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)

    ax = axes[1]
    ax.bar(x, summary["mean_rank"], color="tab:green")
    for i, v in enumerate(summary["mean_rank"]):
        if np.isnan(v):
            ax.text(x[i], 0, "no score", ha="center", va="bottom", fontsize=8, rotation=90)
            continue
        ax.text(x[i], v, f"{v:.2f}", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(x, models, rotation=30, ha="right")
    ax.set_ylabel("mean rank (lower is better)")
    ax.set_title("Mean rank over datasets")

    ax = axes[2]
    ax.bar(x, summary["median_fit_s"], color="tab:gray", label="fit")
    ax.bar(x, summary["median_predict_s"], color="tab:red", alpha=0.8, width=0.4, label="predict")
    ax.set_yscale("log")
    ax.set_xticks(x, models, rotation=30, ha="right")
    ax.set_ylabel("median seconds per dataset × seed")
    ax.set_title("Median fit / predict time")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
