"""Helpers shared by the prior families: seeds, root causes, standardisation, node selection."""

from __future__ import annotations

import numpy as np


def derive_seed(seed: int, *keys: int) -> int:
    """A well-mixed 63-bit seed for the sub-stream ``keys`` of ``seed`` (stable across runs)."""
    state = np.random.SeedSequence([int(seed) & (2**63 - 1), *[int(k) for k in keys]])
    return int(state.generate_state(1, np.uint64)[0] >> np.uint64(1))


def sample_roots(rng: np.random.Generator, kind: str, n_rows: int, n_cols: int) -> np.ndarray:
    """Root causes of an SCM, shape (n_rows, n_cols), roughly zero mean and unit variance.

    ``kind`` is ``normal``, ``uniform`` or ``mixed``; ``mixed`` draws each column from one of
    normal, uniform, a skewed (log-normal), a heavy-tailed (Student t) or a discrete distribution.
    """
    if kind == "normal":
        return rng.standard_normal((n_rows, n_cols))
    if kind == "uniform":
        return rng.uniform(-np.sqrt(3), np.sqrt(3), (n_rows, n_cols))
    out = np.empty((n_rows, n_cols))
    which = rng.integers(0, 5, n_cols)
    for k in range(5):
        cols = np.flatnonzero(which == k)
        if cols.size == 0:
            continue
        shape = (n_rows, cols.size)
        if k == 0:
            v = rng.standard_normal(shape)
        elif k == 1:
            v = rng.uniform(-np.sqrt(3), np.sqrt(3), shape)
        elif k == 2:
            v = rng.lognormal(0.0, 0.75, shape)
        elif k == 3:
            v = rng.standard_t(3.0, shape)
        else:  # a few equally likely values: count-like or coded causes
            v = rng.integers(0, rng.integers(2, 8, cols.size), shape).astype(float)
        out[:, cols] = v
    return standardize(out)


def standardize(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per column; constant columns become 0."""
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return (x - mean) / np.where(std > 1e-12, std, 1.0)


def select_nodes(
    rng: np.random.Generator,
    layers: list[np.ndarray],
    n_features: int,
    n_targets: int,
    target_last_layer_prob: float,
    relevance: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Pick target and feature nodes of a layered SCM.

    The targets come from one layer (the last with probability ``target_last_layer_prob``, else a
    random non-root layer); the features are a random sample of all other nodes (roots included),
    so that some are causes of the target, some effects, some unrelated. With ``relevance > 0``
    the sample favours nodes correlated with the target (weight ``(|corr| + 0.05) ** relevance``):
    the columns people put in real tables are mostly chosen because they matter.

    Returns
    -------
    features : ndarray, shape (n_rows, n_features)
    targets : ndarray, shape (n_rows, n_targets)
    """
    widths = [layer.shape[1] for layer in layers]
    offsets = np.cumsum([0, *widths])
    candidates = [i for i in range(1, len(layers)) if widths[i] >= n_targets] or [len(layers) - 1]
    if rng.random() < target_last_layer_prob and widths[-1] >= n_targets:
        t_layer = len(layers) - 1
    else:
        t_layer = int(rng.choice(candidates))
    t_idx = offsets[t_layer] + rng.choice(widths[t_layer], n_targets, replace=False)
    nodes = np.concatenate(layers, axis=1)  # (n, total nodes)
    rest = np.setdiff1d(np.arange(nodes.shape[1]), t_idx)
    p = None
    if relevance > 0:
        z = standardize(nodes)
        corr = np.abs(z[:, rest].T @ z[:, t_idx]).mean(axis=1) / nodes.shape[0]  # (n_rest,)
        w = (corr + 0.05) ** relevance
        p = w / w.sum()
    f_idx = rng.choice(rest, min(n_features, rest.size), replace=False, p=p)
    return nodes[:, f_idx], nodes[:, t_idx]
