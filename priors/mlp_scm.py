"""Random-MLP structural causal models.

A dataset is a random layered network: root causes (normal, uniform or mixed), then layers
``h_{l+1} = act(h_l W_l + b_l) + noise`` with sparse random weights, an activation per node drawn
from a per-dataset mix, and Gaussian noise at every node. Features and target are randomly chosen
nodes, so some features are causes of the target, some effects and some unrelated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from priors.common import sample_roots, select_nodes, standardize
from priors.recipe import MLPSCMSection


@dataclass(frozen=True)
class MLPSCMConfig:
    """Concrete hyper-parameters of one random-MLP SCM (sampled from :class:`MLPSCMSection`)."""

    n_causes: int
    n_layers: int
    width: int
    activations: tuple[str, ...]
    sine_frequency: float
    weight_sparsity: float
    bias_std: float
    noise_std: float
    root: str
    target_last_layer_prob: float
    feature_relevance: float


def sample_config(rng: np.random.Generator, sec: MLPSCMSection) -> MLPSCMConfig:
    """Draw the hyper-parameters of one dataset from the recipe section."""
    names = list(sec.activations)
    w = np.array([sec.activations[n] for n in names])
    k = min(int(sec.n_activations.sample(rng)), int((w > 0).sum()))
    acts = tuple(names[i] for i in rng.choice(len(names), k, replace=False, p=w / w.sum()))
    return MLPSCMConfig(
        n_causes=int(sec.n_causes.sample(rng)),
        n_layers=int(sec.n_layers.sample(rng)),
        width=int(sec.width.sample(rng)),
        activations=acts,
        sine_frequency=float(sec.sine_frequency.sample(rng)),
        weight_sparsity=float(sec.weight_sparsity.sample(rng)),
        bias_std=float(sec.bias_std.sample(rng)),
        noise_std=float(sec.noise_std.sample(rng)),
        root=str(sec.root.sample(rng)),
        target_last_layer_prob=sec.target_last_layer_prob,
        feature_relevance=float(sec.feature_relevance.sample(rng)),
    )


def activate(name: str, z: np.ndarray, frequency: float) -> np.ndarray:
    """Apply the activation ``name`` elementwise (inputs are roughly standardised)."""
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "leaky_relu":
        return np.where(z > 0, z, 0.1 * z)
    if name == "identity":
        return z
    if name == "sine":
        return np.sin(frequency * z)
    if name == "step":
        return (z > 0).astype(z.dtype)
    if name == "rbf":
        return np.exp(-0.5 * z * z)
    if name == "abs":
        return np.abs(z)
    if name == "square":
        return z * z
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-2.0 * z))
    raise ValueError(f"unknown activation {name!r}")


def _layer(rng: np.random.Generator, h: np.ndarray, width: int, cfg: MLPSCMConfig) -> np.ndarray:
    n_in = h.shape[1]
    mask = rng.random((n_in, width)) >= cfg.weight_sparsity
    mask[rng.integers(0, n_in, width), np.arange(width)] = True  # every node has a parent
    w = rng.standard_normal((n_in, width)) * mask
    w /= np.sqrt(np.maximum(mask.sum(axis=0, keepdims=True), 1))
    z = h @ w + cfg.bias_std * rng.standard_normal(width)  # (n, width)
    which = rng.integers(0, len(cfg.activations), width)
    out = np.empty_like(z)
    for k, name in enumerate(cfg.activations):
        cols = which == k
        if cols.any():
            out[:, cols] = activate(name, z[:, cols], cfg.sine_frequency)
    out = standardize(out)
    return out + cfg.noise_std * rng.standard_normal(out.shape)


def generate(
    rng: np.random.Generator, cfg: MLPSCMConfig, n_rows: int, n_features: int, n_targets: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sample one dataset's latent features (n_rows, n_features) and targets (n_rows, n_targets)."""
    # Few root causes feed wider layers, so nodes are correlated, as columns of real tables are;
    # the layers are wide enough that the nodes outnumber the features and targets asked for.
    width = max(cfg.width, n_targets, math.ceil((n_features + n_targets + 1) / cfg.n_layers))
    h = sample_roots(rng, cfg.root, n_rows, cfg.n_causes)
    h = h + cfg.noise_std * rng.standard_normal(h.shape)
    layers = [h]
    for _ in range(cfg.n_layers):
        h = _layer(rng, h, width, cfg)
        layers.append(h)
    return select_nodes(rng, layers, n_features, n_targets, cfg.target_last_layer_prob,
                        cfg.feature_relevance)
