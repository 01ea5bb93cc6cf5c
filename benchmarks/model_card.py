"""Write the model card of the shipped checkpoints (tabfm/checkpoints/MODEL_CARD.md).

    python -m benchmarks.model_card

Everything in it is read from files the code in this repository wrote: the JSON card beside each
checkpoint (written by ``tabfm pretrain`` when it ships), the pretraining logs committed under
``checkpoints/pretrain/<task>/`` (or the card's ``state_dir``) and, when present, the benchmark summary
``benchmarks/results/tabfm_benchmark.md`` (``python -m benchmarks.run ... --summary``) and the
in-prior scores ``benchmarks/results/in_prior_<task>.csv`` (``python -m benchmarks.in_prior``). When the
real datasets are at hand (``--data-dir``), LightGBM with default parameters is scored on the
validation splits too, beside the checkpoint's scores, so the gap is read off one table.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from tabfm.checkpoint import SHIPPED_VARIANTS
from tabfm.validation import PROTOCOL_VERSION

# LightGBM's OpenMP threads spin while waiting by default, which on a busy machine made its fits
# 20-50x slower; set before lightgbm is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "tabfm" / "checkpoints"
STATE = ROOT / "checkpoints" / "pretrain"
BENCHMARK = ROOT / "benchmarks" / "results" / "tabfm_benchmark.md"


def _lightgbm_reference(task: str, data_dir: Path | None) -> dict[str, float] | None:
    if data_dir is None or not data_dir.is_dir():
        return None
    from benchmarks.models import make_model
    from tabfm.validation import score_estimator

    return score_estimator(lambda: make_model("lightgbm", task, 0), task, data_dir)


def _task_section(task: str, data_dir: Path | None = None, variant: str | None = None) -> list[str]:
    name = f"tabfm-{task}" + (f"-{variant}" if variant else "")
    card_file = CHECKPOINTS / f"{name}.json"
    if not card_file.is_file():
        return [] if variant else [f"## {task}", "", "No checkpoint shipped yet.", ""]
    card = json.loads(card_file.read_text())
    p, v = card["pretraining"], card["validation"]
    lines = [
        f"## {task}{f' ({variant}, `checkpoint={variant!r}`)' if variant else ''}: `{name}.safetensors`",
        "",
        f"- parameters: {card['parameters']:,}; prior recipe: `{card['recipe']}`",
        f"- pretraining when shipped: {p['steps']:,} steps, {p['datasets_seen']:,} synthetic datasets, "
        f"{p['cpu_hours']:.2f} CPU hours of the training process ({p['wall_hours']:.2f} wall hours), "
        f"loss (moving average) {p['loss_ema']}",
        f"- shipped: {card['date']}",
        f"- validation ({v['metric']}, {v['protocol']}): mean **{v['mean']:.4f}**",
        "",
    ]
    # LightGBM is scored now, under the current protocol: beside a card scored under an earlier
    # one (other datasets or row caps) its figures would compare different splits.
    current = v["protocol"].startswith(f"v{PROTOCOL_VERSION}:")
    reference = _lightgbm_reference(task, data_dir) if current else None
    if not current:
        lines += [f"Scored under an earlier validation protocol than the current v{PROTOCOL_VERSION}; "
                  "the LightGBM reference returns when a checkpoint ships under the current one.", ""]
    if reference is None:
        lines += ["| dataset | " + v["metric"] + " |", "|---|---|"]
        lines += [f"| {name} | {score:.4f} |" for name, score in v["datasets"].items()]
    else:
        lines += [f"| dataset | tabfm {v['metric']} | LightGBM (defaults, same split) |", "|---|---|---|"]
        lines += [f"| {name} | {score:.4f} | {reference[name]:.4f} |" for name, score in v["datasets"].items()]
        lines += [f"| **mean** | **{v['mean']:.4f}** | **{np.mean([reference[n] for n in v['datasets']]):.4f}** |"]
    lines += [""]
    # The run that wrote the shipped weights keeps its logs where its card says (older cards: by task).
    state = ROOT / card["state_dir"] if card.get("state_dir") else STATE / task
    state_name = state.relative_to(ROOT).as_posix()
    if (state / "progress.json").is_file():
        progress = json.loads((state / "progress.json").read_text())
        lines += [
            f"Pretraining state committed for resuming: step {progress['step']:,}, "
            f"{progress['datasets_seen']:,} datasets, {progress['cpu_hours']:.2f} CPU hours "
            f"(`{state_name}/`).",
            "",
        ]
    logs = [(path.stem.split("_")[-1], path) for path in sorted(state.glob("val_log_v*.csv"))]
    # A state not resumed since the protocol changed still holds its old log (progress.json says which).
    protocol = json.loads((state / "progress.json").read_text()).get("val_protocol", 1) if (state / "progress.json").is_file() else PROTOCOL_VERSION
    logs.append((f"v{protocol}", state / "val_log.csv"))
    rows = [(protocol, r) for protocol, path in logs if path.is_file() for r in pd.read_csv(path).itertuples()]
    if rows:
        lines += [
            "Validation over the campaign (learning curve; scores under different protocols are not comparable):",
            "", "| protocol | step | datasets seen | mean |", "|---|---|---|---|",
        ]
        lines += [f"| {protocol} | {r.step:,} | {r.datasets_seen:,} | {r.mean:.4f} |" for protocol, r in rows]
        lines += [""]
    in_prior = ROOT / "benchmarks" / "results" / f"in_prior_{task}.csv"
    if in_prior.is_file():  # python -m benchmarks.in_prior ... --csv benchmarks/results/in_prior_TASK.csv
        from benchmarks.in_prior import lightgbm_table

        lines += [
            "How far the network is from its own prior (fresh prior tables, paired with LightGBM; per family "
            f"and per feature count in `benchmarks/results/in_prior_{task}.md`):",
            "",
            lightgbm_table(pd.read_csv(in_prior)),
            "",
        ]
    if (state / "HISTORY.md").is_file():
        lines += ["Changes over the campaign:", "", (state / "HISTORY.md").read_text().strip(), ""]
    if (state / "loss_curve.png").is_file():
        lines += [f"![loss curve](../../{state_name}/loss_curve.png)", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "datasets",
                        help="real datasets for the LightGBM reference (skipped when absent)")
    args = parser.parse_args(argv)
    lines = [
        "# Model card: tabfm pretrained in-context models",
        "",
        "Written by `python -m benchmarks.model_card` from the checkpoints' JSON cards, the committed "
        "pretraining logs and the benchmark summary. The networks learned only from synthetic datasets "
        "drawn from `priors/` (no real rows); the real datasets below served for validation "
        "(checkpoint selection) and benchmarking only. The validation datasets also appear in the "
        "benchmark, which makes the benchmark slightly optimistic for them.",
        "",
    ]
    for task in ("classification", "regression"):
        lines += _task_section(task, args.data_dir)
        for variant in SHIPPED_VARIANTS:
            lines += _task_section(task, args.data_dir, variant)
    lines += ["## Benchmark against gradient-boosted trees", ""]
    if BENCHMARK.is_file():
        lines += [BENCHMARK.read_text().strip(), ""]
    else:
        lines += ["Not run yet for these checkpoints.", ""]
    out = CHECKPOINTS / "MODEL_CARD.md"
    out.write_text("\n".join(lines))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
