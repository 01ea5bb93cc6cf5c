"""Synthetic-prior generator: whole tabular datasets sampled from random structural causal models.

Three families (random-MLP SCMs, random-tree SCMs, smooth random functions) mixed by a TOML recipe,
with shared post-processing (class thresholds, categorical codes, missing cells, warps, outliers,
irrelevant and duplicated columns, real-world units). Public surface:

- :func:`load_recipe` / :class:`Recipe`: the prior's hyper-distributions (``priors/recipes/*.toml``).
- :func:`sample_dataset`: one dataset as numpy arrays.
- :func:`make_batch` / :class:`PriorBatch`: a padded batch of datasets as tensors.
- :class:`BatchStream`: the endless, reproducible stream of batches for pretraining (in-process,
  worker processes, or shards on disk).
"""

from priors.batch import PriorBatch, make_batch
from priors.recipe import Recipe, load_recipe, recipe_from_dict
from priors.sampler import sample_dataset
from priors.shards import load_batch, save_batch, write_shards
from priors.stream import BatchStream

__all__ = [
    "BatchStream",
    "PriorBatch",
    "Recipe",
    "load_batch",
    "load_recipe",
    "make_batch",
    "recipe_from_dict",
    "sample_dataset",
    "save_batch",
    "write_shards",
]
