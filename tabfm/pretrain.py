"""Pretraining of the in-context model on the synthetic prior: a campaign across many sessions.

The loop trains :class:`models.icl.ICLTransformer` on batches from :class:`priors.BatchStream`
(AdamW, linear warmup then cosine decay over ``total_steps``, gradient clipping, an exponential
moving average of the weights, bf16 autocast on CUDA), optionally distilling from a teacher
checkpoint (``PretrainConfig.teacher``), and keeps three kinds of files:

``OUT/`` (the run directory, not committed)
    ``state/`` the full state with the optimizer, to resume within a machine's life;
    ``loss_log.csv``, ``val_log.csv``, ``loss_curve.png``.
``--state-dir`` (committed)
    the compact state that lets the next session resume anywhere: the EMA weights in float16
    (``ema.safetensors``) and ``progress.json``, plus the logs and the curve. Optimizer moments
    are not kept there (they would be several MB a session); a resumed run warms them up again.
``--ship-dir`` (committed when it improves)
    ``tabfm-<task>.safetensors`` + model card, replaced only when the EMA weights beat the
    shipped checkpoint's validation score on the fixed real datasets.

Each step's batch is a pure function of ``(seed, step)``, so a resumed run sees exactly the batches
it would have seen without the interruption.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from models.icl import ICLConfig, ICLTransformer
from priors import BatchStream, PriorBatch
from tabfm.checkpoint import card_path, load_checkpoint, resolve_checkpoint, save_checkpoint
from tabfm.device import resolve_device
from tabfm.ridge_feature import class_targets, table_ridge_columns
from tabfm.validation import PROTOCOL as VALIDATION_PROTOCOL
from tabfm.validation import PROTOCOL_VERSION as VALIDATION_PROTOCOL_VERSION
from tabfm.validation import VALIDATION_DATASETS, evaluate_on_real_data

logger = logging.getLogger(__name__)

TARGET_CLIP = 10.0  # standardised regression targets are clipped here for the loss

LOSS_FIELDS = [
    "step", "datasets_seen", "loss", "loss_ema", "lr", "grad_norm", "n_rows", "max_features",
    "step_s", "wait_s", "datasets_per_s", "wall_h", "cpu_h",
]


@dataclass
class PretrainConfig:
    """Everything that defines a pretraining run (printed at start, stored in progress.json)."""

    task: str = "classification"
    recipe: str = "default"
    seed: int = 0
    batch_size: int = 16
    # Datasets per forward and backward pass. A batch runs as micro-batches grouped by feature
    # count and cut of padded columns: the batch's gradients (to float rounding, <4e-6 relative) in
    # 0.66-0.76x the CPU time and 30-48% of the peak memory (8.7 GB -> 2.6 GB on 16 x 2,048 x <=50)
    # on prior batches of 16 tables (benchmarks/results/pretrain_step_speed_*.md).
    micro_batch_size: int = 4
    lr: float = 4e-4
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio at total_steps
    warmup_steps: int = 500
    rewarmup_steps: int = 100  # after resuming without optimizer moments
    total_steps: int = 200_000  # horizon of the cosine: the campaign, not one session
    # A cooldown branch (warmup-stable-decay): from cooldown_start, the learning rate falls from the
    # schedule's value to zero over cooldown_steps (1 - sqrt), then the run stops. Fork the run
    # directory first (``tabfm pretrain --branch-from``): the main run goes on at its high rate.
    cooldown_steps: int = 0
    cooldown_start: int | None = None  # set to the resumed step when the branch starts
    weight_decay: float = 0.01
    # "adamw", or "muon": Muon (orthogonalised momentum, its update scaled to AdamW's RMS so the
    # same lr applies) on the hidden weight matrices, AdamW on everything else.
    optimizer: str = "adamw"
    grad_clip: float = 1.0
    ema_decay: float = 0.998
    # Curriculum: rows and features grow from small to the recipe's range over curriculum_steps.
    curriculum_steps: int = 20_000
    rows_start: tuple[int, int] = (128, 384)
    rows_end: tuple[int, int] = (256, 1024)
    features_start: tuple[int, int] = (3, 12)
    features_end: tuple[int, int] = (3, 40)
    num_workers: int = 1
    log_every: int = 10
    save_every_minutes: float = 10.0
    eval_every_minutes: float = 30.0
    threads: int = 0  # 0: torch's default
    # Probability that a table carries the estimators' ridge columns (tabfm/ridge_feature.py):
    # leave-one-out predictions on its training rows, the full fit on its test rows, so that the
    # network learns how far to trust them rather than reading them zero-shot.
    ridge_columns: float = 0.0
    # Distillation: a tabfm checkpoint of the same task (e.g. "exact", the shipped exact-attention network
    # teaching a cheaper one) whose predictions on each table's test rows are a second target. A
    # sampled label is one draw from the prior's posterior, the teacher's prediction an estimate of
    # the whole of it: the loss is (1 - distill_weight) * the loss on the labels + distill_weight *
    # KL(teacher || network). "" trains on the labels alone.
    teacher: str = ""
    distill_weight: float = 0.5
    model: dict[str, Any] = field(default_factory=dict)  # overrides of ICLConfig

    def __post_init__(self) -> None:
        if not 0.0 <= self.ridge_columns <= 1.0:
            raise ValueError(f"ridge_columns is a probability in [0, 1], got {self.ridge_columns!r}")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ValueError(f"distill_weight is a weight in [0, 1], got {self.distill_weight!r}")

    def model_config(self) -> ICLConfig:
        n_outputs = self.model.get("n_outputs", 10 if self.task == "classification" else 64)
        return ICLConfig(**{**self.model, "task": self.task, "n_outputs": n_outputs})


# ---------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------


def learning_rate(config: PretrainConfig, step: int, resumed_at: int | None = None) -> float:
    """Warmup then cosine; after a resume without optimizer state, a short warmup again; in a
    cooldown branch, a decay to zero from the rate at the branch point."""
    start = config.cooldown_start
    if config.cooldown_steps and start is not None and step >= start:
        # The branch point's rate without any re-warmup: a branch that starts without optimizer
        # moments re-warms from the decaying rate below, not from a rate cut at its first step.
        done = min(1.0, (step - start) / config.cooldown_steps)
        lr = learning_rate(replace(config, cooldown_steps=0), start) * (1 - math.sqrt(done))
    else:
        base = config.lr * min(1.0, (step + 1) / max(1, config.warmup_steps))
        progress = min(1.0, step / max(1, config.total_steps))
        lr = base * (config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    if resumed_at is not None and step >= resumed_at:
        lr *= min(1.0, (step - resumed_at + 1) / max(1, config.rewarmup_steps))
    return lr


def curriculum(config: PretrainConfig):
    """``step -> (n_rows, max_features)``: log-uniform draws whose range widens with the step."""

    def shape(step: int) -> tuple[int, int]:
        t = min(1.0, step / max(1, config.curriculum_steps))
        rng = np.random.default_rng([config.seed, 7, step])

        def draw(start: tuple[int, int], end: tuple[int, int]) -> int:
            low = start[0] + t * (end[0] - start[0])
            high = start[1] + t * (end[1] - start[1])
            return round(math.exp(rng.uniform(math.log(low), math.log(high))))

        return draw(config.rows_start, config.rows_end), draw(config.features_start, config.features_end)

    return shape


# ---------------------------------------------------------------------------------------------
# Ridge columns
# ---------------------------------------------------------------------------------------------


def add_ridge_columns(batch: PriorBatch, prob: float, rng: np.random.Generator) -> PriorBatch:
    """The batch with, for each table drawn with probability ``prob``, its ridge columns
    (:func:`tabfm.ridge_feature.table_ridge_columns`) as numeric features after its own ones:
    one column for a regression or binary target, one per class otherwise, as the estimators
    append them. The batch widens to the widest table."""
    chosen = np.flatnonzero(rng.random(batch.x.shape[0]) < prob)
    if len(chosen) == 0:
        return batch
    split = batch.split
    widths = batch.feature_mask.sum(dim=1).numpy()
    columns = {}
    for b in chosen:
        f = int(widths[b])
        y = batch.y[b, :split].numpy().astype(np.float64)
        if batch.task == "regression":
            targets = ((y - y.mean()) / (y.std() or 1.0))[:, None]  # the regressor's standardised target
        else:
            targets = class_targets(y.astype(np.int64), int(batch.n_classes[b]))
        columns[b] = table_ridge_columns(batch.x[b, :, :f].numpy(), batch.categorical[b, :f].numpy(), targets, split)
    B, R, F = batch.x.shape
    width = max(F, *(int(widths[b]) + c.shape[1] for b, c in columns.items()))
    x = torch.zeros(B, R, width)
    x[:, :, :F] = batch.x
    feature_mask = torch.zeros(B, width, dtype=torch.bool)
    feature_mask[:, :F] = batch.feature_mask
    categorical = torch.zeros(B, width, dtype=torch.bool)
    categorical[:, :F] = batch.categorical
    for b, c in columns.items():
        f = int(widths[b])
        x[b, :, f : f + c.shape[1]] = torch.from_numpy(c)
        feature_mask[b, f : f + c.shape[1]] = True
    return replace(batch, x=x, feature_mask=feature_mask, categorical=categorical)


# ---------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------


def _test_row_logits(model: ICLTransformer, batch: PriorBatch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's float32 logits on a batch's test rows, ``(B, R_test, K)``, and their targets:
    class indices (classes a table does not have get logit -inf), or standardised values."""
    x = batch.x.to(device)
    y = batch.y.to(device)
    split = batch.split
    feature_mask = batch.feature_mask.to(device)
    categorical = batch.categorical.to(device)
    if batch.task == "classification":
        logits = model(x, y[:, :split], feature_mask=feature_mask, categorical=categorical)  # (B, R_test, K)
        n_classes = batch.n_classes.to(device)
        absent = torch.arange(logits.shape[-1], device=device)[None, :] >= n_classes[:, None]  # (B, K)
        return logits.float().masked_fill(absent[:, None, :], float("-inf")), y[:, split:].long()
    # Regression: standardise each dataset's target with its training rows only.
    y_train = y[:, :split]
    mean = y_train.mean(dim=1, keepdim=True)
    std = y_train.std(dim=1, keepdim=True).clamp_min(1e-6)
    # A near-constant training target would put test rows millions of standard deviations out
    # (a loss of 1e12 seen in practice); beyond the bar borders the tails still learn "far out".
    y_std = ((y - mean) / std).clamp(-TARGET_CLIP, TARGET_CLIP)
    logits = model(x, y_std[:, :split], feature_mask=feature_mask, categorical=categorical)
    return logits.float(), y_std[:, split:]


def _label_loss(model: ICLTransformer, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if model.config.task == "classification":
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    return model.bar_distribution.nll(logits, targets).mean()


def _kl(teacher_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of KL(teacher || network) between the outputs' softmaxes (classes, or bars)."""
    # Absent classes (-inf in both) have probability 0 in the teacher: a finite floor keeps their
    # terms at 0 instead of 0 * (inf - inf).
    log_p = torch.log_softmax(teacher_logits.clamp_min(-1e4), dim=-1)
    log_q = torch.log_softmax(logits.clamp_min(-1e4), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()


def batch_losses(model: ICLTransformer, batch: PriorBatch, device: torch.device,
                 teacher: ICLTransformer | None = None, distill_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The training objective over a batch's test rows and, within it, the mean loss on the labels
    (cross-entropy, or bar-distribution NLL): the same number without a ``teacher``."""
    logits, targets = _test_row_logits(model, batch, device)
    label = _label_loss(model, logits, targets)
    if teacher is None or distill_weight == 0.0:
        return label, label
    with torch.no_grad():
        teacher_logits, _ = _test_row_logits(teacher, batch, device)
    return (1.0 - distill_weight) * label + distill_weight * _kl(teacher_logits, logits), label


def batch_loss(model: ICLTransformer, batch: PriorBatch, device: torch.device) -> torch.Tensor:
    """Mean loss over the test rows of a batch (cross-entropy, or bar-distribution NLL)."""
    return batch_losses(model, batch, device)[0]


def accumulate_gradients(model: ICLTransformer, batch: PriorBatch, device: torch.device, micro_batch_size: int,
                         autocast: Any = None, teacher: ICLTransformer | None = None, distill_weight: float = 0.0) -> float:
    """Backpropagate the batch's mean test-row objective through micro-batches; returns its loss
    on the labels (the loss log's number, comparable with and without a teacher).

    Every dataset of a batch has the same number of test rows, so the batch mean is the mean of the
    micro-batches' means weighted by their share of the datasets.
    """
    total = 0.0
    n_datasets = batch.x.shape[0]
    for part in batch.by_width(micro_batch_size):
        share = part.x.shape[0] / n_datasets
        with autocast if autocast is not None else _null_context():
            objective, label = batch_losses(model, part, device, teacher, distill_weight)
        (objective * share).backward()
        total += label.item() * share
    return total


# ---------------------------------------------------------------------------------------------
# State on disk
# ---------------------------------------------------------------------------------------------


@dataclass
class Progress:
    """Counters that survive across sessions (stored as progress.json)."""

    step: int = 0
    datasets_seen: int = 0
    wall_hours: float = 0.0
    cpu_hours: float = 0.0
    loss_ema: float | None = None
    best_val: float | None = None
    best_val_step: int | None = None
    sessions: int = 0
    # The validation protocol best_val was scored under (1: states written before versions).
    val_protocol: int = 1


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    return {k: t.float() if t.is_floating_point() else t for k, t in load_file(str(path)).items()}


def _block_indices(weights: dict[str, torch.Tensor], prefix: str) -> list[int]:
    return sorted({int(k[len(prefix) :].split(".")[0]) for k in weights if k.startswith(prefix)})


def _keep_blocks(weights: dict[str, torch.Tensor], prefix: str, keep: list[int]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The weights with only blocks ``keep`` under ``prefix``, renumbered 0, 1, ... in that order;
    also returns the renamed keys."""
    out, renamed = {}, []
    for key, value in weights.items():
        if key.startswith(prefix):
            index, rest = key[len(prefix) :].split(".", 1)
            if int(index) not in keep:
                continue
            key = f"{prefix}{keep.index(int(index))}.{rest}"
            renamed.append(key)
        out[key] = value
    return out, renamed


def _keep_last_row_blocks(weights: dict[str, torch.Tensor], n_blocks: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Weights of a network with more row-interaction blocks than ``n_blocks``, cut to its last
    ``n_blocks``: the last block is the one whose CLS tokens become the row vector, so a cheaper
    branch keeps it and drops the first ones. Returns the weights and the renamed keys."""
    prefix = "row_encoder.blocks."
    have = _block_indices(weights, prefix)
    if len(have) <= n_blocks:
        return weights, []
    logger.warning("row interaction: the state's first %d of %d blocks are dropped", len(have) - n_blocks, len(have))
    return _keep_blocks(weights, prefix, have[len(have) - n_blocks :])


def _drop_middle_icl_blocks(weights: dict[str, torch.Tensor], n_blocks: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Weights of a network with more in-context blocks than ``n_blocks``, cut to ``n_blocks`` by
    dropping the middle ones: the first ``n_blocks // 2`` and the last ``n_blocks - n_blocks // 2``
    stay (the last block, exact in a hybrid network, stays last). Before any training, the 6-block
    hybrid at step 22,336 validated at 0.8952 as blocks 0, 1, 4, 5, against 0.8947 (0, 2, 4, 5),
    0.8944 (0, 3, 4, 5), 0.8910 (1, 2, 4, 5) and 0.8834 (0, 1, 2, 5); all six: 0.8987. Returns the
    weights and the renamed keys (a cheaper student, distilled from there)."""
    prefix = "blocks."
    have = _block_indices(weights, prefix)
    if len(have) <= n_blocks:
        return weights, []
    front = n_blocks // 2
    keep = have[:front] + have[len(have) - (n_blocks - front) :]
    logger.warning("in-context blocks: the state's blocks %s of %d are kept", keep, len(have))
    return _keep_blocks(weights, prefix, keep)


def _load_grown(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> list[str]:
    """Load committed weights into a network that may have gained parameters since (a new option in
    the resumed run's ``--model``): the new ones keep their initialisation, which every such option
    chooses so that the network starts out computing what the old one did. A network with fewer
    row-interaction blocks keeps the state's last ones; one with fewer in-context blocks drops the
    state's middle ones. Other weights the network lacks, or of the
    wrong shape, are an error. Returns the names of the parameters whose optimizer moments no
    longer apply (new, moved or left behind)."""
    weights, moved = _keep_last_row_blocks(weights, model.config.n_row_blocks)
    weights, shifted = _drop_middle_icl_blocks(weights, model.config.n_icl_blocks)
    moved += shifted
    own = model.state_dict()
    # Switching a run from inducing to exact in-context attention keeps every projection; only the
    # learned inducing queries, which exact attention has no use for, are left behind.
    dropped = [k for k in weights if k.endswith(".inducing") and k not in own]
    if dropped:
        logger.warning("exact attention: the state's inducing queries are not used: %s", ", ".join(dropped))
        weights = {k: v for k, v in weights.items() if k not in dropped}
    result = model.load_state_dict(weights, strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"the state holds weights this network lacks: {result.unexpected_keys[:5]}")
    if result.missing_keys:
        logger.warning("new parameters, initialised afresh: %s", ", ".join(result.missing_keys))
    return list(result.missing_keys) + moved + dropped


def _append_csv(path: Path, fields: list[str], row: dict[str, Any]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)


def run_logs(directory: Path) -> list[str]:
    """Names of a run's logs in ``directory``: loss, validation, and validation logs of earlier
    protocols (``val_log_v<N>.csv``, kept when the protocol changed)."""
    archived = sorted(path.name for path in Path(directory).glob("val_log_v*.csv"))
    return [name for name in ("loss_log.csv", "val_log.csv", *archived) if (Path(directory) / name).is_file()]


def _truncate_log(path: Path, step: int) -> None:
    """Drop rows logged after ``step`` (the state being resumed never saw them)."""
    if not path.is_file():
        return
    with path.open(newline="") as handle:  # keep the csv writer's line endings as they are
        lines = handle.read().splitlines(keepends=True)
    kept = [lines[0]] + [line for line in lines[1:] if int(line.split(",", 1)[0]) <= step]
    if len(kept) != len(lines):
        with path.open("w", newline="") as handle:
            handle.write("".join(kept))


# Linear layers that keep AdamW under "muon": those reading raw inputs (cell features, position
# sinusoids) and the one writing the logits, as in Muon's recipe (hidden matrices only).
MUON_EXCLUDED = ("column_embedding.lift.0", "row_encoder.identity", "head.fc2")


def make_optimizers(model: torch.nn.Module, config: PretrainConfig) -> list[torch.optim.Optimizer]:
    """AdamW over all parameters, or (``optimizer="muon"``) Muon over the hidden matrices + AdamW."""
    if config.optimizer not in ("adamw", "muon"):
        raise ValueError(f"PretrainConfig.optimizer must be 'adamw' or 'muon', got {config.optimizer!r}")
    modules = dict(model.named_modules())
    hidden_ids = set()
    if config.optimizer == "muon":
        missing = [name for name in MUON_EXCLUDED if name not in modules]
        if missing:
            raise ValueError(f"MUON_EXCLUDED names modules the network no longer has: {missing}")
        hidden_ids = {
            id(m.weight) for name, m in modules.items() if isinstance(m, torch.nn.Linear) and name not in MUON_EXCLUDED
        }
    hidden, decay, no_decay = [], [], []
    for name, p in model.named_parameters():
        if id(p) in hidden_ids:
            hidden.append(p)
        elif p.ndim < 2 or "embedding" in name or "thinking" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": group, "weight_decay": wd} for group, wd in ((decay, config.weight_decay), (no_decay, 0.0)) if group]
    optimizers: list[torch.optim.Optimizer] = [torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98))]
    if hidden:
        optimizers.append(torch.optim.Muon(hidden, lr=config.lr, weight_decay=config.weight_decay, adjust_lr_fn="match_rms_adamw"))
    return optimizers


class Pretrainer:
    """Owns the model, optimizer, EMA, data stream and files of one pretraining run."""

    def __init__(
        self,
        config: PretrainConfig,
        out: str | Path,
        *,
        device: str = "auto",
        resume: bool = False,
        state_dir: str | Path | None = None,
        ship_dir: str | Path | None = None,
        ship_always: bool = False,
        val_data_dir: str | Path | None = None,
    ) -> None:
        self.config = config
        self.out = Path(out)
        self.state_dir = Path(state_dir) if state_dir else None
        self.ship_dir = Path(ship_dir) if ship_dir else None
        # Ship at every validation, better or not: for a network chosen on the benchmark rather
        # than on validation (a cheaper architecture replacing the shipped one).
        self.ship_always = ship_always
        self.val_data_dir = Path(val_data_dir) if val_data_dir else None
        self.device = resolve_device(device)
        if config.threads:
            torch.set_num_threads(config.threads)
        self.progress = Progress()
        self.resumed_at: int | None = None
        self._shipped_score: tuple[str, float] | None = None  # (sha256 of the shipped file, its score)
        self.model = ICLTransformer(config.model_config()).to(self.device)
        self.ema = ICLTransformer(config.model_config()).to(self.device)
        self.ema.load_state_dict(self.model.state_dict())
        self.ema.requires_grad_(False)
        self.optimizers = make_optimizers(self.model, config)
        self.teacher = self._load_teacher() if config.teacher else None
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            self._resume()
        self._adopt_validation_protocol()
        if config.cooldown_steps and config.cooldown_start is None:
            self.config = replace(config, cooldown_start=self.progress.step)
            logger.info("cooldown branch: learning rate to zero over steps %d-%d", self.progress.step, self.progress.step + config.cooldown_steps)

    def _load_teacher(self) -> ICLTransformer:
        """The distillation teacher: the checkpoint at ``config.teacher`` ("shipped": the package's
        default; a name of :data:`tabfm.checkpoint.SHIPPED_VARIANTS`, such as "exact": that one)."""
        c = self.config
        path = resolve_checkpoint(c.task, None if c.teacher == "shipped" else c.teacher)
        teacher = load_checkpoint(path, device=self.device).requires_grad_(False)
        student = c.model_config()
        if (teacher.config.task, teacher.config.n_outputs) != (student.task, student.n_outputs):
            raise ValueError(
                f"teacher {path} predicts {teacher.config.n_outputs} outputs for {teacher.config.task}, "
                f"the network {student.n_outputs} for {student.task}: distillation needs the same outputs"
            )
        logger.info("distilling from %s (sha256 %s), weight %.2f", path, hashlib.sha256(path.read_bytes()).hexdigest()[:12], c.distill_weight)
        return teacher

    # -- resume -------------------------------------------------------------------------------

    def _resume(self) -> None:
        full = self.out / "state"
        if (full / "progress.json").is_file():
            new = _load_grown(self.model, _load_weights(full / "model.safetensors"))
            _load_grown(self.ema, _load_weights(full / "ema.safetensors"))
            self.progress = Progress(**json.loads((full / "progress.json").read_text()))
            saved = None if new else torch.load(full / "optimizer.pt", map_location=self.device, weights_only=True)
            if saved is not None and "kind" not in saved:  # written before the optimizer was a choice
                saved = {"kind": "adamw", "states": [saved]}
            if saved is None or saved["kind"] != self.config.optimizer:
                # The moments no longer match the parameters or the optimizer: warm them up again.
                self.resumed_at = self.progress.step
            else:
                for optimizer, state in zip(self.optimizers, saved["states"], strict=True):
                    optimizer.load_state_dict(state)
            logger.info("resumed the full state of %s at step %d", self.out, self.progress.step)
        elif self.state_dir is not None and (self.state_dir / "progress.json").is_file():
            weights = _load_weights(self.state_dir / "ema.safetensors")
            _load_grown(self.model, weights)
            _load_grown(self.ema, weights)
            self.progress = Progress(**json.loads((self.state_dir / "progress.json").read_text()))
            self.resumed_at = self.progress.step
            for name in run_logs(self.state_dir):
                if not (self.out / name).exists():
                    shutil.copy(self.state_dir / name, self.out / name)
            logger.info("resumed the committed state %s at step %d (optimizer warms up again)", self.state_dir, self.progress.step)
        else:
            logger.info("no state to resume from: starting at step 0")
        for name in ("loss_log.csv", "val_log.csv"):
            _truncate_log(self.out / name, self.progress.step)
        self.progress.sessions += 1

    def _adopt_validation_protocol(self) -> None:
        """Start a new validation log when the protocol changed since the state was written.

        Scores under two protocols are not comparable, so the best score starts afresh and the old
        log is kept beside the new one as ``val_log_v<N>.csv`` (the loss curve shows both).
        """
        old = self.progress.val_protocol
        if old == VALIDATION_PROTOCOL_VERSION:
            return
        log = self.out / "val_log.csv"
        if log.is_file():
            log.rename(self.out / f"val_log_v{old}.csv")
            logger.info("validation protocol v%d -> v%d: earlier scores kept in val_log_v%d.csv", old, VALIDATION_PROTOCOL_VERSION, old)
        self.progress.val_protocol = VALIDATION_PROTOCOL_VERSION
        self.progress.best_val = self.progress.best_val_step = None

    # -- saving -------------------------------------------------------------------------------

    def save(self) -> None:
        full = self.out / "state"
        tmp = self.out / "state.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}, str(tmp / "model.safetensors"))
        save_file({k: v.detach().cpu().contiguous() for k, v in self.ema.state_dict().items()}, str(tmp / "ema.safetensors"))
        torch.save({"kind": self.config.optimizer, "states": [o.state_dict() for o in self.optimizers]}, tmp / "optimizer.pt")
        (tmp / "progress.json").write_text(json.dumps(asdict(self.progress), indent=1))
        (tmp / "config.json").write_text(json.dumps(asdict(self.config), indent=1))
        shutil.rmtree(full, ignore_errors=True)
        tmp.rename(full)
        self.plot()
        if self.state_dir is not None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            save_checkpoint(self.state_dir / "ema.safetensors", self.ema)
            (self.state_dir / "progress.json").write_text(json.dumps(asdict(self.progress), indent=1) + "\n")
            (self.state_dir / "config.json").write_text(json.dumps(asdict(self.config), indent=1) + "\n")
            for name in [*run_logs(self.out), "loss_curve.png"]:
                if (self.out / name).is_file():
                    shutil.copy(self.out / name, self.state_dir / name)

    def plot(self) -> None:
        """Loss (smoothed) and validation score against datasets seen, as loss_curve.png."""
        from tabfm.plots import plot_pretraining

        loss_log = self.out / "loss_log.csv"
        if loss_log.is_file():
            plot_pretraining(loss_log, self.out / "val_log.csv", self.out / "loss_curve.png", task=self.config.task,
                             protocol=VALIDATION_PROTOCOL_VERSION)

    # -- validation ---------------------------------------------------------------------------

    def validate(self) -> float | None:
        """Score the EMA weights on the fixed real datasets; ship them when they beat the shipped ones.

        The weights are written as they would ship (float16) and scored as loaded back from that
        file, exactly as the shipped file is scored, so a score in the log is the score of the
        file that would ship, and equal weights can never look like an improvement.
        """
        if self.val_data_dir is None:
            return None
        candidate_file = save_checkpoint(self.out / "candidate.safetensors", self.ema)
        candidate = load_checkpoint(candidate_file, device=self.device)
        scores = evaluate_on_real_data(candidate, self.config.task, self.val_data_dir)
        mean = float(np.mean(list(scores.values())))
        row = {"step": self.progress.step, "datasets_seen": self.progress.datasets_seen, "mean": round(mean, 5)}
        row.update({k: round(v, 5) for k, v in scores.items()})
        # A resumed run scores its first step again (the code may have changed): the new score
        # replaces the one logged for that step, so the learning curve has one point per step.
        _truncate_log(self.out / "val_log.csv", self.progress.step - 1)
        _append_csv(self.out / "val_log.csv", ["step", "datasets_seen", "mean", *VALIDATION_DATASETS[self.config.task]], row)
        logger.info("validation at step %d: mean %s = %.4f", self.progress.step, _metric(self.config.task), mean)
        if self.progress.best_val is None or mean > self.progress.best_val:
            self.progress.best_val, self.progress.best_val_step = mean, self.progress.step
        if self.ship_dir is not None:
            target = self.ship_dir / f"tabfm-{self.config.task}.safetensors"
            shipped = None
            if target.is_file():
                # Scored by this process rather than read from its card: the inference code may
                # have changed since it was shipped, and only the same code makes the two
                # comparable. Scored once per file content, as the code does not change under a run.
                digest = hashlib.sha256(target.read_bytes()).hexdigest()
                if self._shipped_score is None or self._shipped_score[0] != digest:
                    shipped_scores = evaluate_on_real_data(load_checkpoint(target), self.config.task, self.val_data_dir)
                    self._shipped_score = (digest, float(np.mean(list(shipped_scores.values()))))
                shipped = self._shipped_score[1]
            if shipped is None or mean > shipped or self.ship_always:
                save_checkpoint(target, candidate, card=self.model_card(scores, mean))
                logger.info("shipped %s (validation %.5f; the shipped file's %s)", target, mean, "none" if shipped is None else f"{shipped:.5f}")
            else:
                logger.info("kept the shipped %s (validation %.5f <= its %.5f)", target, mean, shipped)
        return mean

    def model_card(self, scores: dict[str, float], mean: float) -> dict[str, Any]:
        p = self.progress
        return {
            "model": f"tabfm-{self.config.task}",
            "architecture": self.ema.config.to_dict(),
            "parameters": sum(p.numel() for p in self.ema.parameters()),
            "recipe": self.config.recipe,
            # Where the run's compact state and logs are committed (the model card's learning curve).
            "state_dir": None if self.state_dir is None else self.state_dir.as_posix(),
            "pretraining": {
                "steps": p.step,
                "datasets_seen": p.datasets_seen,
                "cpu_hours": round(p.cpu_hours, 3),
                "wall_hours": round(p.wall_hours, 3),
                "sessions": p.sessions,
                "loss_ema": None if p.loss_ema is None else round(p.loss_ema, 5),
                "config": asdict(self.config),
                "weights": "exponential moving average of the trained weights, stored in float16",
            },
            "validation": {
                "metric": _metric(self.config.task),
                "protocol": VALIDATION_PROTOCOL,
                "datasets": {k: round(v, 5) for k, v in scores.items()},
                "mean": round(mean, 5),
            },
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }

    # -- the loop -----------------------------------------------------------------------------

    def train(self, *, max_steps: int | None = None, max_minutes: float | None = None, progress_bar: bool = True) -> Progress:
        from tqdm.auto import tqdm

        c = self.config
        start_wall, start_cpu = time.time(), time.process_time()
        last_save = last_eval = time.time()
        first_step = self.progress.step
        stop_step = first_step + max_steps if max_steps is not None else c.total_steps
        if c.cooldown_steps and c.cooldown_start is not None:
            stop_step = min(stop_step, c.cooldown_start + c.cooldown_steps)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else _null_context()
        logger.info("pretraining %s from step %d: %s parameters, config %s", c.task, first_step, f"{self.model.n_parameters():,}", json.dumps(asdict(c)))
        # A fresh run, a warm restart, or a state with no score under the current protocol.
        if first_step == 0 or self.resumed_at is not None or self.progress.best_val is None:
            self.validate()
        stream = BatchStream(
            c.recipe, c.task, batch_size=c.batch_size, seed=c.seed, start_step=first_step,
            num_workers=c.num_workers, shape_schedule=curriculum(c),
        )
        bar = tqdm(total=stop_step - first_step, disable=not progress_bar, desc=f"pretrain {c.task}", unit="step")
        self.model.train()
        stop = _StopRequest()
        wall_mark, cpu_mark = start_wall, start_cpu
        try:
            t_wait = time.time()
            for step, batch in stream:
                if stop.requested or step >= stop_step or (max_minutes is not None and time.time() - start_wall > 60 * max_minutes):
                    break
                t0 = time.time()
                wait_s = t0 - t_wait
                lr = learning_rate(c, step, self.resumed_at)
                for optimizer in self.optimizers:
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                for optimizer in self.optimizers:
                    optimizer.zero_grad(set_to_none=True)
                if c.ridge_columns > 0:
                    batch = add_ridge_columns(batch, c.ridge_columns, np.random.default_rng([c.seed, 13, step]))
                loss_value = accumulate_gradients(self.model, batch, self.device, c.micro_batch_size, autocast,
                                                  self.teacher, c.distill_weight)
                grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip))
                if not math.isfinite(grad_norm):
                    logger.warning("non-finite gradient at step %d: step skipped", step)
                    t_wait = time.time()
                    continue
                for optimizer in self.optimizers:
                    optimizer.step()
                self._update_ema()
                p = self.progress
                p.step = step + 1
                p.datasets_seen += batch.x.shape[0]
                p.loss_ema = loss_value if p.loss_ema is None else 0.98 * p.loss_ema + 0.02 * loss_value
                now, cpu_now = time.time(), time.process_time()
                p.wall_hours += (now - wall_mark) / 3600
                p.cpu_hours += (cpu_now - cpu_mark) / 3600
                wall_mark, cpu_mark = now, cpu_now
                step_s = now - t0
                if step % c.log_every == 0:
                    _append_csv(self.out / "loss_log.csv", LOSS_FIELDS, {
                        "step": p.step, "datasets_seen": p.datasets_seen, "loss": round(loss_value, 5),
                        "loss_ema": round(p.loss_ema, 5), "lr": f"{lr:.3g}", "grad_norm": round(grad_norm, 4),
                        "n_rows": batch.x.shape[1], "max_features": batch.x.shape[2], "step_s": round(step_s, 3),
                        "wait_s": round(wait_s, 3), "datasets_per_s": round(batch.x.shape[0] / max(step_s + wait_s, 1e-9), 2),
                        "wall_h": round(p.wall_hours, 4), "cpu_h": round(p.cpu_hours, 4),
                    })
                bar.update(1)
                bar.set_postfix(loss=f"{p.loss_ema:.4f}", lr=f"{lr:.2e}", rows=batch.x.shape[1])
                if time.time() - last_eval > 60 * c.eval_every_minutes:
                    self.validate()
                    self.model.train()
                    last_eval = time.time()
                if time.time() - last_save > 60 * c.save_every_minutes:
                    self.save()
                    last_save = time.time()
                t_wait = time.time()
        finally:
            stream.close()
            bar.close()
            stop.restore()
        self.validate()
        self.save()
        return self.progress

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.config.ema_decay, (1 + self.progress.step) / (10 + self.progress.step))
        for ema_p, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1 - decay)


class _StopRequest:
    """SIGINT/SIGTERM end the loop after the current step, so the run validates and saves."""

    def __init__(self) -> None:
        import signal
        import threading

        self.requested = False
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        logger.info("signal %d: stopping after this step, then validating and saving", signum)
        self.requested = True

    def restore(self) -> None:
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _null_context:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _metric(task: str) -> str:
    return "roc_auc" if task == "classification" else "r2"


def config_from_args(task: str, recipe: str, overrides: dict[str, Any] | None = None) -> PretrainConfig:
    """A PretrainConfig for ``task`` with keyword overrides (``model`` merges into ICLConfig fields)."""
    return replace(PretrainConfig(task=task, recipe=recipe), **(overrides or {}))


__all__ = ["PretrainConfig", "Pretrainer", "accumulate_gradients", "add_ridge_columns", "batch_loss", "batch_losses", "card_path", "curriculum", "learning_rate", "make_optimizers"]
