"""Padded batches of synthetic datasets for pretraining.

Shape
-----
B datasets (tables) × R rows × F feature columns. All datasets of a batch share R and the
train/test split position; each has its own feature count (real features first, then zero padding
marked False in ``feature_mask``) and its own number of classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from priors.common import derive_seed
from priors.recipe import Recipe, load_recipe
from priors.sampler import check_task, sample_dataset


@dataclass
class PriorBatch:
    """A batch of B synthetic datasets, padded to a common shape.

    Attributes
    ----------
    x : Tensor, shape (B, R, F), float32
        Feature values; NaN marks a missing cell; padded feature columns are 0.0.
    y : Tensor, shape (B, R), float32
        Classification: class index 0..C_b-1 as float. Regression: the raw target (not standardised).
    feature_mask : Tensor, shape (B, F), bool
        True for a dataset's real features (they come first).
    categorical : Tensor, shape (B, F), bool
        True for categorical features, whose cells hold integer codes 0..K-1 (NaN when missing).
    n_classes : Tensor, shape (B,), int64
        Number of classes per dataset; 0 for regression.
    split : int
        Rows [0, split) are the training context, rows [split, R) the test rows.
    task : str
        ``"classification"`` or ``"regression"``.
    """

    x: torch.Tensor
    y: torch.Tensor
    feature_mask: torch.Tensor
    categorical: torch.Tensor
    n_classes: torch.Tensor
    split: int
    task: str

    def to_numpy(self) -> dict[str, Any]:
        """The batch as numpy arrays plus ``split`` and ``task`` (for pickling and shards)."""
        return {
            "x": self.x.numpy(), "y": self.y.numpy(), "feature_mask": self.feature_mask.numpy(),
            "categorical": self.categorical.numpy(), "n_classes": self.n_classes.numpy(),
            "split": self.split, "task": self.task,
        }

    @classmethod
    def from_numpy(cls, d: dict[str, Any]) -> PriorBatch:
        """Inverse of :meth:`to_numpy` (shares memory with the arrays)."""
        return cls(
            x=torch.from_numpy(np.ascontiguousarray(d["x"], dtype=np.float32)),
            y=torch.from_numpy(np.ascontiguousarray(d["y"], dtype=np.float32)),
            feature_mask=torch.from_numpy(np.ascontiguousarray(d["feature_mask"], dtype=bool)),
            categorical=torch.from_numpy(np.ascontiguousarray(d["categorical"], dtype=bool)),
            n_classes=torch.from_numpy(np.ascontiguousarray(d["n_classes"], dtype=np.int64)),
            split=int(d["split"]), task=str(d["task"]),
        )

    def narrow(self, index: torch.Tensor) -> PriorBatch:
        """The datasets at ``index``, their feature columns cut to the widest of them (the padding
        beyond it holds no real feature of any of them)."""
        width = max(1, int(self.feature_mask[index].sum(dim=1).max()))
        return PriorBatch(
            x=self.x[index, :, :width], y=self.y[index], feature_mask=self.feature_mask[index, :width],
            categorical=self.categorical[index, :width], n_classes=self.n_classes[index],
            split=self.split, task=self.task,
        )

    def by_width(self, size: int) -> list[PriorBatch]:
        """The batch as micro-batches of at most ``size`` datasets of similar feature counts, each
        cut to its widest dataset, so that little compute goes to padded columns."""
        if size < 1:
            raise ValueError(f"micro-batch size must be >= 1, got {size}")
        order = torch.argsort(self.feature_mask.sum(dim=1), stable=True)
        return [self.narrow(chunk) for chunk in order.split(size)]


def check_shape(n_rows: int, max_features: int, batch_size: int, recipe: Recipe, task: str) -> None:
    check_task(task)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(max_features, int) or max_features < 1:
        raise ValueError(f"max_features must be a positive integer, got {max_features!r}")
    need = 2 * recipe.classification.min_class_count + 1 if task == "classification" else 4
    if not isinstance(n_rows, int) or n_rows < max(need, 4):
        raise ValueError(f"n_rows must be an integer >= {max(need, 4)} for {task}, got {n_rows!r}")


def make_batch_arrays(
    recipe: Recipe, task: str, *, batch_size: int, n_rows: int, max_features: int, seed: int
) -> dict[str, Any]:
    """:func:`make_batch` as numpy arrays (what worker processes send back)."""
    check_shape(n_rows, max_features, batch_size, recipe, task)
    shape = recipe.shape
    rng = np.random.default_rng(derive_seed(seed, 0))
    low = 2 * recipe.classification.min_class_count if task == "classification" else 2
    split = int(np.clip(round(shape.split_fraction.sample(rng) * n_rows), low, n_rows - 1))
    x = np.zeros((batch_size, n_rows, max_features), np.float32)  # (B, R, F)
    y = np.zeros((batch_size, n_rows), np.float32)  # (B, R)
    feature_mask = np.zeros((batch_size, max_features), bool)  # (B, F)
    categorical = np.zeros((batch_size, max_features), bool)  # (B, F)
    n_classes = np.zeros(batch_size, np.int64)  # (B,)
    min_f = min(shape.min_features, max_features)
    for b in range(batch_size):
        f = int(np.clip(round(shape.feature_fraction.sample(rng) * max_features), min_f, max_features))
        xb, yb, cb, meta = sample_dataset(
            recipe, task, n_rows=n_rows, n_features=f, seed=derive_seed(seed, 1, b),
            n_train=split if task == "classification" else None,
        )
        x[b, :, :f] = xb
        y[b] = yb
        feature_mask[b, :f] = True
        categorical[b, :f] = cb
        n_classes[b] = meta["n_classes"]
    return {"x": x, "y": y, "feature_mask": feature_mask, "categorical": categorical,
            "n_classes": n_classes, "split": split, "task": task}


def make_batch(
    recipe: Recipe | str, task: str, *, batch_size: int, n_rows: int, max_features: int, seed: int
) -> PriorBatch:
    """Sample a padded batch of ``batch_size`` datasets with ``n_rows`` rows each.

    A pure function of its arguments: the same seed gives identical tensors. Each dataset draws
    its own feature count (``shape.feature_fraction`` × ``max_features``, at least
    ``shape.min_features``) and, for classification, its own number of classes (2 to
    ``classification.max_classes``). The split is ``shape.split_fraction`` × ``n_rows``.

    Guarantees: no NaN in ``y``; regression targets are not constant; for classification every
    class of a dataset occurs in the training rows ``[0, split)`` and there are at least 2.

    Parameters
    ----------
    recipe : Recipe or str
        A recipe, or a path / shipped name passed to :func:`priors.load_recipe`.
    task : {"classification", "regression"}
    batch_size, n_rows, max_features : int
    seed : int

    Returns
    -------
    PriorBatch
    """
    recipe = load_recipe(recipe)
    return PriorBatch.from_numpy(make_batch_arrays(
        recipe, task, batch_size=batch_size, n_rows=n_rows, max_features=max_features, seed=seed))
