"""Prior batches on disk: one safetensors file per :class:`PriorBatch` plus ``index.json``.

Shard ``i`` written with seed ``s`` holds exactly the batch that ``BatchStream(seed=s)`` yields at
step ``i`` for the same shape, so pretraining can read a fixed pool of batches or generate them on
the fly and see the same data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from priors.batch import PriorBatch, make_batch
from priors.recipe import Recipe

FORMAT_VERSION = 1
INDEX = "index.json"
_TENSORS = ("x", "y", "feature_mask", "categorical", "n_classes")


def step_seed(seed: int, step: int) -> int:
    """The seed of the batch at ``step`` of a stream (and of shard ``step``) seeded with ``seed``."""
    from priors.common import derive_seed

    return derive_seed(seed, 2, step)


def save_batch(batch: PriorBatch, path: str | Path) -> None:
    """Write one batch as a safetensors file (``split`` and ``task`` in its metadata)."""
    from safetensors.torch import save_file

    tensors = {name: getattr(batch, name).contiguous() for name in _TENSORS}
    tmp = Path(f"{path}.tmp")
    save_file(tensors, str(tmp), metadata={"split": str(batch.split), "task": batch.task,
                                            "format_version": str(FORMAT_VERSION)})
    os.replace(tmp, path)


def load_batch(path: str | Path) -> PriorBatch:
    """Read a batch written by :func:`save_batch`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {name: f.get_tensor(name) for name in _TENSORS}
    if "split" not in meta or "task" not in meta:
        raise ValueError(f"shard {str(path)!r} lacks 'split'/'task' metadata: not a prior shard")
    return PriorBatch(**tensors, split=int(meta["split"]), task=meta["task"])


def write_shards(
    out_dir: str | Path, recipe: Recipe, task: str, *, n_batches: int, batch_size: int,
    n_rows: int, max_features: int, seed: int, progress: Any = None,
) -> list[Path]:
    """Write ``n_batches`` batches to ``out_dir`` (``shard_00000.safetensors``, ...) and ``index.json``.

    ``progress`` is an optional callable ``progress(i)`` called after each shard.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_batches):
        batch = make_batch(recipe, task, batch_size=batch_size, n_rows=n_rows,
                           max_features=max_features, seed=step_seed(seed, i))
        path = out / f"shard_{i:05d}.safetensors"
        save_batch(batch, path)
        paths.append(path)
        if progress is not None:
            progress(i)
    index = {
        "format_version": FORMAT_VERSION, "task": task, "recipe": recipe.name, "seed": seed,
        "batch_size": batch_size, "n_rows": n_rows, "max_features": max_features,
        "shards": [p.name for p in paths], "recipe_fields": recipe.to_dict(),
    }
    (out / INDEX).write_text(json.dumps(index, indent=1))
    return paths


def read_index(directory: str | Path) -> dict[str, Any]:
    """The ``index.json`` of a shard directory (raises a ``ValueError`` naming the path if absent)."""
    path = Path(directory) / INDEX
    if not path.is_file():
        raise ValueError(f"{str(directory)!r} is not a prior shard directory: {INDEX} not found "
                         "(write one with `tabfm prior sample --format shards`)")
    index = json.loads(path.read_text())
    if index.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{str(path)!r}: format_version {index.get('format_version')!r} is not "
                         f"supported (expected {FORMAT_VERSION})")
    return index

