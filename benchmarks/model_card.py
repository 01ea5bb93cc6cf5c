"""Write the model card of the shipped checkpoints (tabfm/checkpoints/MODEL_CARD.md).

    python -m benchmarks.model_card

Everything in it is read from files the code in this repository wrote: the JSON card beside each
checkpoint (written by ``tabfm pretrain`` when it ships), the pretraining logs committed under
``checkpoints/pretrain/<task>/`` and, when present, the benchmark summary
``benchmarks/results/tabfm_benchmark.md`` (``python -m benchmarks.run ... --summary``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "tabfm" / "checkpoints"
STATE = ROOT / "checkpoints" / "pretrain"
BENCHMARK = ROOT / "benchmarks" / "results" / "tabfm_benchmark.md"


def _task_section(task: str) -> list[str]:
    card_file = CHECKPOINTS / f"tabfm-{task}.json"
    if not card_file.is_file():
        return [f"## {task}", "", "No checkpoint shipped yet.", ""]
    card = json.loads(card_file.read_text())
    p, v = card["pretraining"], card["validation"]
    lines = [
        f"## {task}: `tabfm-{task}.safetensors`",
        "",
        f"- parameters: {card['parameters']:,}; prior recipe: `{card['recipe']}`",
        f"- pretraining when shipped: {p['steps']:,} steps, {p['datasets_seen']:,} synthetic datasets, "
        f"{p['cpu_hours']:.2f} CPU hours of the training process ({p['wall_hours']:.2f} wall hours), "
        f"loss (moving average) {p['loss_ema']}",
        f"- shipped: {card['date']}",
        f"- validation ({v['metric']}, {v['protocol']}): mean **{v['mean']:.4f}**",
        "",
        "| dataset | " + v["metric"] + " |",
        "|---|---|",
        *[f"| {name} | {score:.4f} |" for name, score in v["datasets"].items()],
        "",
    ]
    state = STATE / task
    if (state / "progress.json").is_file():
        progress = json.loads((state / "progress.json").read_text())
        lines += [
            f"Pretraining state committed for resuming: step {progress['step']:,}, "
            f"{progress['datasets_seen']:,} datasets, {progress['cpu_hours']:.2f} CPU hours "
            f"(`checkpoints/pretrain/{task}/`).",
            "",
        ]
    if (state / "val_log.csv").is_file():
        val = pd.read_csv(state / "val_log.csv")
        lines += ["Validation over the campaign (learning curve):", "", "| step | datasets seen | mean |", "|---|---|---|"]
        lines += [f"| {r.step:,} | {r.datasets_seen:,} | {r.mean:.4f} |" for r in val.itertuples()]
        lines += [""]
    if (state / "HISTORY.md").is_file():
        lines += ["Changes over the campaign:", "", (state / "HISTORY.md").read_text().strip(), ""]
    if (state / "loss_curve.png").is_file():
        lines += [f"![loss curve](../../checkpoints/pretrain/{task}/loss_curve.png)", ""]
    return lines


def main() -> int:
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
        lines += _task_section(task)
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
