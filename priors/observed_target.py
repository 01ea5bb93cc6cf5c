"""Targets computed from the observed columns: rule-like functions of category levels.

In the SCM families the target is a latent node and categorical columns are binned from latent
values afterwards, so a target is almost never a deterministic, interaction-heavy function of
nominal levels (tic-tac-toe endings, chess end games, board games). This mechanism closes that
gap: once the informative columns are observed (categorical ones as codes), it draws a random
function of them and returns the latent target that then goes through the usual class or
regression paths.

Inputs to the function: each numeric informative column standardised, each categorical one
mapped through a random per-level embedding (1 to a few normal values per level), so that level
effects are nominal: the code order carries no meaning. Functions: sums of random decision trees
(axis-aligned splits at thresholds between the values of two rows that reach the node: rules,
XOR-like interactions) or a small random MLP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from priors.common import standardize
from priors.recipe import ObservedTargetSection

FAMILIES = ("trees", "mlp")
ACTIVATIONS = ("tanh", "relu")


@dataclass(frozen=True)
class ObservedTargetConfig:
    """Concrete hyper-parameters of one observed-target function (from :class:`ObservedTargetSection`)."""

    family: str
    n_trees: int
    depth: int
    n_layers: int
    width: int
    activation: str
    embedding_dim: int
    column_fraction: float


def sample_config(rng: np.random.Generator, sec: ObservedTargetSection) -> ObservedTargetConfig:
    """Draw the hyper-parameters of one dataset's target function from the recipe section."""
    return ObservedTargetConfig(
        family=str(sec.family.sample(rng)),
        n_trees=int(sec.n_trees.sample(rng)),
        depth=int(sec.depth.sample(rng)),
        n_layers=int(sec.n_layers.sample(rng)),
        width=int(sec.width.sample(rng)),
        activation=str(sec.activation.sample(rng)),
        embedding_dim=int(sec.embedding_dim.sample(rng)),
        column_fraction=float(sec.column_fraction.sample(rng)),
    )


def embed_columns(
    rng: np.random.Generator, x: np.ndarray, categorical: np.ndarray, columns: np.ndarray,
    max_dim: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The function's inputs: standardised numeric columns and embedded categorical columns.

    Parameters
    ----------
    x : ndarray, shape (n_rows, n_features)
        Observed values; categorical columns hold integer codes 0..K-1.
    categorical : ndarray of bool, shape (n_features,)
    columns : ndarray of int
        The columns the function reads.
    max_dim : int
        Each categorical column draws 1..max_dim normal values per level.

    Returns
    -------
    z : ndarray, shape (n_rows, D)
        D = number of numeric columns + the embedding widths of the categorical ones.
    owner : ndarray of int, shape (D,)
        Position in ``columns`` of the column behind each input dimension.
    """
    parts, owner = [], []
    for i, j in enumerate(columns):
        v = x[:, j]
        if categorical[j]:
            codes = v.astype(np.int64)
            dim = int(rng.integers(1, max_dim + 1))
            table = rng.standard_normal((int(codes.max()) + 1, dim))  # (K, dim): one row per level
            parts.append(table[codes])
            owner.extend([i] * dim)
        else:
            parts.append(standardize(v[:, None]))
            owner.append(i)
    return np.concatenate(parts, axis=1), np.asarray(owner, dtype=np.int64)


def tree_ensemble(
    rng: np.random.Generator, z: np.ndarray, owner: np.ndarray, n_trees: int, depth: int,
    n_targets: int,
) -> np.ndarray:
    """Sum of ``n_trees`` random trees of depth ``depth`` on ``z`` -> (n_rows, n_targets).

    Each split picks a column uniformly (then one of its embedding dimensions), so wide
    embeddings do not dominate; its threshold lies between the values of two random rows that
    reach the node, so both children are populated whenever those values differ. The trees share
    their structure across the ``n_targets`` outputs, with separate normal leaf values.
    """
    n = z.shape[0]
    n_cols = int(owner.max()) + 1
    dims = np.bincount(owner, minlength=n_cols)  # (n_cols,) embedding width per column
    start = np.concatenate([[0], np.cumsum(dims)[:-1]])
    trees = np.arange(n_trees)
    rows = np.arange(n)[:, None]
    node = np.zeros((n, n_trees), dtype=np.int64)  # (n, T) node within the current level
    for level in range(depth):
        width = 2**level
        col = rng.integers(0, n_cols, (n_trees, width))
        feat = start[col] + (rng.random((n_trees, width)) * dims[col]).astype(np.int64)  # (T, W)
        frac = rng.uniform(0.05, 0.95, (n_trees, width))
        # Two random rows per (tree, node): stable sort of a row-shuffled key, first two of a group.
        perm = rng.permutation(n)
        key = (node[perm] * n_trees + trees).ravel()  # (n * T,) row-major: entry i is row perm[i // T]
        order = np.argsort(key, kind="stable")
        sk = key[order]
        first = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
        last = np.r_[first[1:], sk.size] - 1
        second = np.minimum(first + 1, last)
        g_node, g_tree = sk[first] // n_trees, sk[first] % n_trees
        g_feat = feat[g_tree, g_node]
        a = z[perm[order[first] // n_trees], g_feat]
        b = z[perm[order[second] // n_trees], g_feat]
        thr = np.zeros((n_trees, width))
        thr[g_tree, g_node] = a + frac[g_tree, g_node] * (b - a)
        go_right = z[rows, feat[trees, node]] > thr[trees, node]  # (n, T)
        node = 2 * node + go_right
    leaves = rng.standard_normal((n_trees, 2**depth, n_targets))
    return leaves[trees, node].sum(axis=1)  # (n, T, n_targets) -> (n, n_targets)


def random_mlp(
    rng: np.random.Generator, z: np.ndarray, n_layers: int, width: int, activation: str,
    n_targets: int,
) -> np.ndarray:
    """A random MLP on ``z`` -> (n_rows, n_targets); pre-activations are standardised per unit
    so that the non-linearities bend within the data's range."""
    h = z
    for _ in range(n_layers):
        w = rng.standard_normal((h.shape[1], width)) / np.sqrt(h.shape[1])
        pre = standardize(h @ w) + rng.normal(0.0, 0.5, width)  # (n, width)
        h = np.tanh(pre) if activation == "tanh" else np.maximum(pre, 0.0)
    w = rng.standard_normal((h.shape[1], n_targets)) / np.sqrt(h.shape[1])
    return h @ w


def observed_target(
    rng: np.random.Generator, x: np.ndarray, categorical: np.ndarray, informative: np.ndarray,
    n_targets: int, cfg: ObservedTargetConfig,
) -> tuple[np.ndarray, dict]:
    """A latent target drawn as a random function of observed informative columns.

    Parameters
    ----------
    rng : Generator
    x : ndarray, shape (n_rows, n_features)
        The observed table after categorisation and before units and missing cells: categorical
        columns hold codes 0..K-1, numeric columns are finite.
    categorical : ndarray of bool, shape (n_features,)
    informative : ndarray of int
        Columns the target may depend on (never the irrelevant or duplicated ones).
    n_targets : int
        Latent target columns (the number of classes for ``argmax`` classes, else 1).
    cfg : ObservedTargetConfig

    Returns
    -------
    t : ndarray, shape (n_rows, n_targets)
        Standardised per column. Rows with equal values in the informative columns get equal
        targets; the result does not depend on the other columns (nor on their values).
    info : dict
        The columns the function reads (JSON-serialisable), for the dataset's metadata.
    """
    if cfg.family not in FAMILIES:
        raise ValueError(f"observed_target family must be one of {FAMILIES}, got {cfg.family!r}")
    informative = np.asarray(informative, dtype=np.int64)
    if informative.size == 0:
        raise ValueError("observed_target needs at least one informative column, got none")
    n_inf = informative.size
    # Sparse rules are common: read a random subset of two to all informative columns.
    n_used = int(np.clip(np.ceil(cfg.column_fraction * n_inf), min(2, n_inf), n_inf))
    columns = np.sort(rng.choice(informative, n_used, replace=False))
    z, owner = embed_columns(rng, x, categorical, columns, cfg.embedding_dim)  # (n, D)
    if cfg.family == "trees":
        t = tree_ensemble(rng, z, owner, cfg.n_trees, cfg.depth, n_targets)
    else:
        t = random_mlp(rng, z, cfg.n_layers, cfg.width, cfg.activation, n_targets)
    return standardize(t), {"columns": [int(c) for c in columns]}
