"""Random-tree structural causal models.

Like the random-MLP SCM, but every node of a layer is a small random forest of its parents:
axis-aligned splits at values taken from the data, constant leaves (piecewise-constant effects,
thresholds and interactions, as real tables are full of), plus an optional linear term and
Gaussian noise. All trees of a layer are evaluated together, one vectorised step per depth level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from priors.common import sample_roots, select_nodes, standardize
from priors.recipe import TreeSCMSection


@dataclass(frozen=True)
class TreeSCMConfig:
    """Concrete hyper-parameters of one random-tree SCM (sampled from :class:`TreeSCMSection`)."""

    n_causes: int
    n_layers: int
    width: int
    n_trees: int
    depth: int
    max_parents: int
    linear_weight: float
    noise_std: float
    root: str
    target_last_layer_prob: float
    feature_relevance: float


def sample_config(rng: np.random.Generator, sec: TreeSCMSection) -> TreeSCMConfig:
    """Draw the hyper-parameters of one dataset from the recipe section."""
    return TreeSCMConfig(
        n_causes=int(sec.n_causes.sample(rng)),
        n_layers=int(sec.n_layers.sample(rng)),
        width=int(sec.width.sample(rng)),
        n_trees=int(sec.n_trees.sample(rng)),
        depth=int(sec.depth.sample(rng)),
        max_parents=int(sec.max_parents.sample(rng)),
        linear_weight=float(sec.linear_weight.sample(rng)),
        noise_std=float(sec.noise_std.sample(rng)),
        root=str(sec.root.sample(rng)),
        target_last_layer_prob=sec.target_last_layer_prob,
        feature_relevance=float(sec.feature_relevance.sample(rng)),
    )


def forest_layer(
    rng: np.random.Generator, h: np.ndarray, width: int, cfg: TreeSCMConfig
) -> np.ndarray:
    """Evaluate ``width`` random forests of ``cfg.n_trees`` trees on ``h`` (n, n_in) -> (n, width)."""
    n, n_in = h.shape
    n_trees = width * cfg.n_trees
    n_internal = 2**cfg.depth - 1
    # Each output node reads a random subset of parents; its trees split only on those.
    n_par = rng.integers(1, min(cfg.max_parents, n_in) + 1, width)  # (width,)
    parents = np.argsort(rng.random((width, n_in)), axis=1)  # (width, n_in) random orders
    owner = np.repeat(np.arange(width), cfg.n_trees)  # (n_trees,)
    pick = (rng.random((n_trees, n_internal)) * n_par[owner, None]).astype(np.int64)
    feat = parents[owner[:, None], pick]  # (n_trees, n_internal)
    # Thresholds at values of random rows keep both branches populated.
    thr = h[rng.integers(0, n, (n_trees, n_internal)), feat]  # (n_trees, n_internal)
    leaves = rng.standard_normal((n_trees, 2**cfg.depth))
    tree = np.arange(n_trees)
    rows = np.arange(n)[:, None]
    node = np.zeros((n, n_trees), dtype=np.int64)  # (n, T) current node per row and tree
    for _ in range(cfg.depth):
        f = feat[tree, node]  # (n, T)
        go_right = h[rows, f] > thr[tree, node]
        node = 2 * node + 1 + go_right
    values = leaves[tree, node - n_internal]  # (n, T)
    out = values.reshape(n, width, cfg.n_trees).sum(axis=2)  # (n, width)
    if cfg.linear_weight > 0:
        w = rng.standard_normal((n_in, width)) / math.sqrt(n_in)
        out = standardize(out) + cfg.linear_weight * (h @ w)
    out = standardize(out)
    return out + cfg.noise_std * rng.standard_normal(out.shape)


def generate(
    rng: np.random.Generator, cfg: TreeSCMConfig, n_rows: int, n_features: int, n_targets: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sample one dataset's latent features (n_rows, n_features) and targets (n_rows, n_targets)."""
    # Few root causes feed wider layers, so nodes are correlated, as columns of real tables are;
    # the layers are wide enough that the nodes outnumber the features and targets asked for.
    width = max(cfg.width, n_targets, math.ceil((n_features + n_targets + 1) / cfg.n_layers))
    h = sample_roots(rng, cfg.root, n_rows, cfg.n_causes)
    layers = [h]
    for _ in range(cfg.n_layers):
        h = forest_layer(rng, h, width, cfg)
        layers.append(h)
    return select_nodes(rng, layers, n_features, n_targets, cfg.target_last_layer_prob,
                        cfg.feature_relevance)
