"""``tabfm pretrain``: train the in-context model on the synthetic prior (resumable)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain",
        help="pretrain the in-context model on synthetic data",
        description="Pretrain the ICL transformer on the synthetic prior. Every stretch of CPU time "
        "adds to the same run: --resume continues from OUT/state, or from --state-dir when OUT is new.",
    )
    p.add_argument("--recipe", default="default", help="prior recipe: a TOML path or a shipped name (default: default)")
    p.add_argument("--task", choices=["classification", "regression"], required=True)
    p.add_argument("--out", required=True, type=Path, help="run directory (full state with optimizer, logs)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    p.add_argument("--resume", action="store_true", help="continue from OUT/state or --state-dir")
    p.add_argument("--state-dir", type=Path, help="compact resumable state to keep in the repository")
    p.add_argument("--ship-dir", type=Path, help="write tabfm-TASK.safetensors here when validation improves")
    p.add_argument("--ship-always", action="store_true",
                   help="with --ship-dir: ship at every validation, better or not (a network chosen on the benchmark)")
    p.add_argument("--val-data-dir", type=Path, help="folder of the real validation datasets (Parquet)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (default: the schedule's end)")
    p.add_argument("--max-minutes", type=float, help="stop after this many minutes")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--micro-batch-size", type=int,
                   help="datasets per forward/backward pass, grouped by feature count (default 4; same gradients)")
    p.add_argument("--lr", type=float)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--num-workers", type=int, help="prior generator processes (default 1)")
    p.add_argument("--threads", type=int, help="torch threads of the training process")
    p.add_argument("--eval-every-minutes", type=float)
    p.add_argument("--save-every-minutes", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--model", type=json.loads, help='JSON overrides of the network config, e.g. \'{"n_icl_blocks": 4}\'')
    p.add_argument("--optimizer", choices=["adamw", "muon"],
                   help="adamw (default), or muon: Muon on the hidden weight matrices, AdamW on the rest")
    p.add_argument("--branch-from", type=Path, metavar="RUN_DIR",
                   help="start OUT as a copy of another run's full state and logs (for a cooldown branch)")
    p.add_argument("--cooldown-steps", type=int,
                   help="decay the learning rate to zero over this many steps from the resumed one, then stop")
    p.add_argument("--features-end", type=int, nargs=2, metavar=("LOW", "HIGH"),
                   help="range of a step's feature columns once the curriculum is over (default 3 40)")
    p.add_argument("--rows-end", type=int, nargs=2, metavar=("LOW", "HIGH"),
                   help="range of a step's rows per table once the curriculum is over (default 256 1024)")
    p.add_argument("--ridge-columns", type=float, metavar="PROB",
                   help="probability that a synthetic table carries the estimators' ridge columns (default 0)")
    p.add_argument("--teacher", metavar="CHECKPOINT",
                   help='distil from this checkpoint of the same task ("shipped": the package\'s default, '
                        '"exact": its exact-attention network; "": none)')
    p.add_argument("--distill-weight", type=float, metavar="W",
                   help="weight of KL(teacher || network) in the loss, the labels' loss weighing 1 - W (default 0.5)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from tabfm.pretrain import PretrainConfig, Pretrainer

    _return_freed_memory()
    overrides = {
        key: value
        for key, value in {
            "batch_size": args.batch_size, "micro_batch_size": args.micro_batch_size, "lr": args.lr, "warmup_steps": args.warmup_steps, "num_workers": args.num_workers,
            "threads": args.threads, "eval_every_minutes": args.eval_every_minutes,
            "save_every_minutes": args.save_every_minutes, "seed": args.seed, "model": args.model,
            "cooldown_steps": args.cooldown_steps, "optimizer": args.optimizer, "ridge_columns": args.ridge_columns,
            "teacher": args.teacher, "distill_weight": args.distill_weight,
            "features_end": tuple(args.features_end) if args.features_end else None,
            "rows_end": tuple(args.rows_end) if args.rows_end else None,
        }.items()
        if value is not None
    }
    if args.branch_from is not None:
        _branch(args.branch_from, args.out)
        args.resume = True
    config = PretrainConfig(task=args.task, recipe=args.recipe, **overrides)
    if args.resume:
        for candidate in (args.out / "state" / "config.json", args.state_dir / "config.json" if args.state_dir else None):
            if candidate is not None and candidate.is_file():
                # A resumed run keeps its recorded configuration; flags given now override it.
                recorded = json.loads(candidate.read_text())
                recorded = {k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items()}
                if "model" in overrides:  # network options given now add to the recorded ones
                    overrides["model"] = {**recorded.get("model", {}), **overrides["model"]}
                config = PretrainConfig(**{**recorded, **overrides})
                break
    trainer = Pretrainer(
        config, args.out, device=args.device, resume=args.resume, state_dir=args.state_dir,
        ship_dir=args.ship_dir, ship_always=args.ship_always, val_data_dir=args.val_data_dir,
    )
    progress = trainer.train(max_steps=args.max_steps, max_minutes=args.max_minutes, progress_bar=not args.no_progress)
    logger.info("stopped at step %d after %d datasets: %s", progress.step, progress.datasets_seen, json.dumps(asdict(progress)))
    return 0


def _branch(source: Path, out: Path) -> None:
    """Copy a run's full state and logs into a new run directory (kept if OUT already has a state)."""
    import shutil

    from tabfm.pretrain import run_logs

    if (out / "state" / "progress.json").is_file():
        logger.info("%s already holds a state: the branch resumes it", out)
        return
    if not (source / "state" / "progress.json").is_file():
        raise SystemExit(f"--branch-from {source}: no full state there (expected {source / 'state' / 'progress.json'})")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source / "state", out / "state")
    for name in run_logs(source):
        shutil.copy(source / name, out / name)
    logger.info("branched %s from %s", out, source)


MMAP_THRESHOLD_MB = 64


def _return_freed_memory() -> None:
    """Hand only large freed blocks (above 64 MB) back to the OS: a fixed glibc mmap threshold.

    A step on the largest tables holds several GB of activations. With glibc's own (dynamic)
    threshold a run kept that freed memory, 7-9 GB of RSS after its first large step, and a third
    run beside two others on 24 GB got killed for memory, so the threshold was fixed at 1 MB. But
    then every block above 1 MB is a fresh ``mmap`` whose pages fault in again at each step: 15
    steps from step 21,907 of the classification run, one run alone on 2 threads, took 145 s of
    wall time with 1 MB (90 s of it ``sys``, 38.6M minor faults, 2.1 GB peak RSS), 103 s with
    glibc's dynamic threshold (17 s, 2.6M, 3.6 GB) and 98.5 s with 64 MB (11 s, 1.7M, 3.8 GB), the
    same losses in all three. Over the next hour of that run, 303 steps per CPU hour against 191
    before (its ``loss_log.csv``), while its resident size rose to ~10 GB, where it levelled off:
    room enough for one run on 24 GB. To run several side by side, set
    ``TABFM_MMAP_THRESHOLD_MB=1`` (``0``: glibc's dynamic threshold); rerun the comparison with
    ``--max-steps 15`` from copies of one state.
    """
    import ctypes
    import os
    import sys

    text = os.environ.get("TABFM_MMAP_THRESHOLD_MB", str(MMAP_THRESHOLD_MB))
    try:
        megabytes = int(text)
    except ValueError:
        raise SystemExit(f"TABFM_MMAP_THRESHOLD_MB must be a whole number of MB (0: glibc's own), got {text!r}") from None
    if megabytes <= 0 or not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, megabytes << 20)  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc (e.g. musl): leave the allocator as it is
        logger.debug("mallopt unavailable: freed memory stays with the process")
