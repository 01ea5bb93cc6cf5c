"""The training loop shared by the per-dataset deep models (TabM, TabR).

Estimators describe one optimisation step's loss and the validation score; this module owns
everything else: shuffled mini-batches, AdamW, gradient clipping, early stopping on the
validation score with patience (the best weights are restored at the end), ``max_epochs``, a
wall-clock ``time_limit`` and a tqdm progress bar behind ``verbose``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from tabfm.errors import TabFMValidationError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation settings of :func:`train`.

    ``max_epochs=None`` trains until early stopping (or the time limit); ``time_limit`` is in
    seconds of wall-clock time for the whole loop, checked after every step.
    """

    lr: float = 2e-3
    weight_decay: float = 3e-4
    batch_size: int = 256
    max_epochs: int | None = None
    patience: int = 16
    time_limit: float | None = None
    grad_clip: float | None = 1.0
    verbose: bool = False

    def __post_init__(self) -> None:
        checks = {
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "batch_size": self.batch_size >= 1,
            "max_epochs": self.max_epochs is None or self.max_epochs >= 1,
            "patience": self.patience >= 1,
            "time_limit": self.time_limit is None or self.time_limit > 0,
            "grad_clip": self.grad_clip is None or self.grad_clip > 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise TabFMValidationError(
                    f"{name} must be {'positive' if name != 'weight_decay' else 'non-negative'}"
                    f"{' or None' if name in ('max_epochs', 'time_limit', 'grad_clip') else ''}, "
                    f"however: {name}={getattr(self, name)!r}"
                )


@dataclass
class TrainingResult:
    """What happened during :func:`train` (kept on the estimator as ``training_``)."""

    n_epochs: int = 0
    best_epoch: int = -1
    best_score: float = -math.inf
    stopped_by: str = "max_epochs"  # "max_epochs" | "patience" | "time_limit"
    fit_seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "n_epochs": self.n_epochs,
            "best_epoch": self.best_epoch,
            "best_score": self.best_score,
            "stopped_by": self.stopped_by,
            "fit_seconds": self.fit_seconds,
        }


def make_optimizer(
    model: nn.Module, config: TrainingConfig, *, no_decay: Callable[[str], bool] | None = None
) -> torch.optim.AdamW:
    """AdamW; parameters for which ``no_decay(name)`` holds get no weight decay."""
    decay, plain = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (plain if no_decay is not None and no_decay(name) else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}]
    if plain:
        groups.append({"params": plain, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=config.lr)


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterable[Tensor]:
    return torch.randperm(n, generator=generator).split(batch_size)


def train(
    model: nn.Module,
    *,
    n_train: int,
    batch_loss: Callable[[Tensor], Tensor],
    validation_score: Callable[[], float],
    config: TrainingConfig,
    generator: torch.Generator,
    no_decay: Callable[[str], bool] | None = None,
    description: str = "training",
) -> TrainingResult:
    """Train ``model`` in place and restore the weights of its best validation epoch.

    Parameters
    ----------
    model : nn.Module
        The network; put in train mode for steps and eval mode (under ``torch.inference_mode``) for
        ``validation_score``.
    n_train : int
        Number of training rows; batches are index tensors into ``range(n_train)``.
    batch_loss : callable
        ``batch_loss(idx) -> scalar loss`` for the training rows ``idx`` (int64, CPU).
    validation_score : callable
        Score of the current model on the validation rows, higher is better.
    config : TrainingConfig
    generator : torch.Generator
        Source of the batch order (seed it for reproducibility).
    no_decay : callable, optional
        Parameter names that get no weight decay.
    """
    optimizer = make_optimizer(model, config, no_decay=no_decay)
    result = TrainingResult()
    best_state = {name: t.detach().clone() for name, t in model.state_dict().items()}
    start = time.perf_counter()
    bad_epochs = 0
    epochs = range(config.max_epochs) if config.max_epochs is not None else _count()
    progress = tqdm(
        epochs,
        total=config.max_epochs,
        desc=description,
        unit="epoch",
        disable=not config.verbose,
        leave=False,
    )
    for epoch in progress:
        model.train()
        losses = []
        out_of_time = False
        for idx in _batches(n_train, config.batch_size, generator):
            optimizer.zero_grad(set_to_none=True)
            loss = batch_loss(idx)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"the training loss became {loss.item()} at epoch {epoch}; "
                    "try a smaller lr or check the input for extreme values"
                )
            loss.backward()
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            losses.append(loss.detach())
            if config.time_limit is not None and time.perf_counter() - start > config.time_limit:
                out_of_time = True
                break
        model.eval()
        with torch.inference_mode():
            score = float(validation_score())
        mean_loss = float(torch.stack(losses).mean())
        result.n_epochs = epoch + 1
        result.history.append({"epoch": epoch, "loss": mean_loss, "val_score": score})
        if score > result.best_score:
            result.best_score, result.best_epoch, bad_epochs = score, epoch, 0
            best_state = {name: t.detach().clone() for name, t in model.state_dict().items()}
        else:
            bad_epochs += 1
        progress.set_postfix(loss=f"{mean_loss:.4f}", val=f"{score:.4f}", best=result.best_epoch)
        logger.debug("epoch %d loss %.5f val %.5f", epoch, mean_loss, score)
        if out_of_time:
            result.stopped_by = "time_limit"
            break
        if bad_epochs >= config.patience:
            result.stopped_by = "patience"
            break
    progress.close()
    model.load_state_dict(best_state)
    model.eval()
    result.fit_seconds = time.perf_counter() - start
    return result


def _count() -> Iterable[int]:
    epoch = 0
    while True:
        yield epoch
        epoch += 1


# ---------------------------------------------------------------------------------------------
# Data helpers shared by the per-dataset estimators
# ---------------------------------------------------------------------------------------------


def split_validation(
    y: np.ndarray, *, fraction: float, rng: np.random.Generator, stratify: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, validation)`` of a seeded hold-out split for early stopping.

    Classification splits per class (each class with at least two rows keeps one in training and
    sends about ``fraction`` of its rows to validation). With fewer than 4 rows there is nothing
    to hold out: both sets are all rows.
    """
    n = len(y)
    if not 0.0 < fraction < 1.0:
        raise TabFMValidationError(f"validation_fraction must be in (0, 1), however: {fraction!r}")
    if n < 4:
        everything = np.arange(n)
        return everything, everything
    if stratify:
        val_parts = []
        for cls in np.unique(y):
            rows = rng.permutation(np.flatnonzero(y == cls))
            n_val = min(len(rows) - 1, round(fraction * len(rows)))
            val_parts.append(rows[:n_val])
        val = np.sort(np.concatenate(val_parts))
        if len(val) == 0:
            val = np.sort(rng.permutation(n)[: max(1, round(fraction * n))])
    else:
        val = np.sort(rng.permutation(n)[: max(1, round(fraction * n))])
    train_rows = np.setdiff1d(np.arange(n), val)
    return train_rows, val


class FeatureEncoder:
    """Numeric and categorical inputs of a per-dataset network, from a ``TablePreprocessor`` array.

    Numeric columns go through a quantile map to a standard normal (fitted on the training rows);
    a numeric column with missing values at fit time gets a 0/1 missingness indicator appended
    to the numeric inputs, and missing values become 0 (the median). Categorical codes pass
    through as int64, clipped to their cardinality.
    """

    def __init__(self, categorical_mask: np.ndarray, cardinalities: np.ndarray) -> None:
        self.categorical_mask = np.asarray(categorical_mask, dtype=bool)
        self.cardinalities = np.asarray(cardinalities, dtype=np.int64)
        self.num_idx = np.flatnonzero(~self.categorical_mask)
        self.cat_idx = np.flatnonzero(self.categorical_mask)

    @property
    def cat_cardinalities(self) -> tuple[int, ...]:
        return tuple(int(c) for c in self.cardinalities[self.cat_idx])

    @property
    def n_num_inputs(self) -> int:
        return len(self.num_idx) + len(self.indicator_idx_)

    def fit(self, X_enc: np.ndarray) -> FeatureEncoder:
        from tabfm.preprocessing import NumericScaler

        X_num = X_enc[:, self.num_idx]
        # The TabM reference recipe: about one quantile per 30 rows, between 10 and 1000.
        n_quantiles = max(min(len(X_enc) // 30, 1000), 10)
        self.scaler_ = NumericScaler(method="quantile", n_quantiles=n_quantiles).fit(X_num)
        self.indicator_idx_ = np.flatnonzero(np.isnan(X_num).any(axis=0))
        return self

    def transform(self, X_enc: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(x_num float32 (n, n_num_inputs) or None, x_cat int64 (n, n_cat) or None)``."""
        x_num = x_cat = None
        if self.n_num_inputs > 0:
            raw = X_enc[:, self.num_idx]
            scaled = np.nan_to_num(self.scaler_.transform(raw), nan=0.0)
            indicators = np.isnan(raw[:, self.indicator_idx_]).astype(np.float32)
            x_num = np.concatenate([scaled, indicators], axis=1).astype(np.float32)
        if len(self.cat_idx) > 0:
            codes = np.nan_to_num(X_enc[:, self.cat_idx], nan=0.0).astype(np.int64)
            x_cat = np.clip(codes, 0, self.cardinalities[self.cat_idx] - 1)
        return x_num, x_cat

    def get_state(self) -> dict[str, Tensor]:
        return {
            "features.quantiles": torch.as_tensor(self.scaler_.quantiles_),
            "features.references": torch.as_tensor(self.scaler_.references_),
            "features.indicator_idx": torch.as_tensor(self.indicator_idx_, dtype=torch.int64),
        }

    def set_state(self, tensors: dict[str, Tensor]) -> FeatureEncoder:
        from tabfm.preprocessing import NumericScaler

        self.scaler_ = NumericScaler(method="quantile")
        self.scaler_.quantiles_ = tensors["features.quantiles"].cpu().double().numpy()
        self.scaler_.references_ = tensors["features.references"].cpu().double().numpy()
        self.indicator_idx_ = tensors["features.indicator_idx"].cpu().numpy()
        return self


def to_tensors(
    x_num: np.ndarray | None, x_cat: np.ndarray | None, device: torch.device
) -> tuple[Tensor | None, Tensor | None]:
    return (
        None if x_num is None else torch.as_tensor(x_num, device=device),
        None if x_cat is None else torch.as_tensor(x_cat, device=device),
    )


def take(x: Tensor | None, idx: Tensor | slice) -> Tensor | None:
    """Rows ``idx`` of an optional tensor."""
    return None if x is None else x[idx]


def network_state(
    model: torch.nn.Module, config: Any, bins: list[torch.Tensor] | None, features: FeatureEncoder, training: dict
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Save-state shared by the per-dataset networks: weights, feature encoder, PLE bins, config."""
    tensors = {f"model.{name}": t for name, t in model.state_dict().items()}
    tensors.update(features.get_state())
    for i, edges in enumerate(bins or []):
        tensors[f"bins.{i}"] = edges
    meta = {"config": asdict(config), "n_bins_tensors": len(bins or []), "training": training}
    return meta, tensors


def restore_network(
    meta: dict[str, Any], tensors: dict[str, torch.Tensor], config_cls: type, build: Any, preprocessor: Any, device: torch.device
) -> tuple[Any, list[torch.Tensor] | None, FeatureEncoder, dict, torch.nn.Module]:
    """Inverse of :func:`network_state`: ``(config, bins, features, training, model)``; ``build(config, bins)`` makes the network."""
    config = dict(meta["config"])
    config["cat_cardinalities"] = tuple(config["cat_cardinalities"])
    config = config_cls(**config)
    bins = [tensors[f"bins.{i}"].cpu() for i in range(meta["n_bins_tensors"])] or None
    features = FeatureEncoder(preprocessor.categorical_mask_, preprocessor.cardinalities_)
    features.set_state(tensors)
    model = build(config, bins)
    model.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
    return config, bins, features, meta.get("training", {}), model.to(device).eval()
