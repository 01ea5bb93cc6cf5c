"""Smooth random functions: a Gaussian-process-like draw by random Fourier features.

The features are the inputs (normal, uniform or mixed); each target is
``sqrt(2/K) * cos(X W + b) a + linear term + noise`` with ``W`` drawn at per-feature length
scales (automatic relevance: only a fraction of the inputs has a short length scale, the others
barely matter), which approximates a sample of a GP with an anisotropic RBF kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from priors.common import sample_roots, standardize
from priors.recipe import SmoothSection


@dataclass(frozen=True)
class SmoothConfig:
    """Concrete hyper-parameters of one smooth random function (from :class:`SmoothSection`)."""

    n_components: int
    lengthscale: float
    relevant_fraction: float
    linear_weight: float
    noise_std: float
    root: str


def sample_config(rng: np.random.Generator, sec: SmoothSection) -> SmoothConfig:
    """Draw the hyper-parameters of one dataset from the recipe section."""
    return SmoothConfig(
        n_components=int(sec.n_components.sample(rng)),
        lengthscale=float(sec.lengthscale.sample(rng)),
        relevant_fraction=float(sec.relevant_fraction.sample(rng)),
        linear_weight=float(sec.linear_weight.sample(rng)),
        noise_std=float(sec.noise_std.sample(rng)),
        root=str(sec.root.sample(rng)),
    )


def generate(
    rng: np.random.Generator, cfg: SmoothConfig, n_rows: int, n_features: int, n_targets: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sample one dataset's features (n_rows, n_features) and targets (n_rows, n_targets)."""
    x = sample_roots(rng, cfg.root, n_rows, n_features)
    n_relevant = max(1, round(cfg.relevant_fraction * n_features))
    relevant = rng.permutation(n_features) < n_relevant
    # Irrelevant inputs get a length scale 30x longer: nearly flat along them. The phase of a
    # component is a sum over the relevant inputs, so the scale grows with sqrt(n_relevant) to keep
    # the function's wiggliness independent of the dimension.
    scales = (cfg.lengthscale * np.sqrt(n_relevant) * np.where(relevant, 1.0, 30.0)
              * np.exp(0.3 * rng.standard_normal(n_features)))
    k = cfg.n_components
    w = rng.standard_normal((n_features, k)) / scales[:, None]  # (f, K)
    b = rng.uniform(0, 2 * math.pi, k)
    phi = math.sqrt(2.0 / k) * np.cos(x @ w + b)  # (n, K)
    t = standardize(phi @ rng.standard_normal((k, n_targets)))  # (n, n_targets)
    if cfg.linear_weight > 0:
        lin = x @ (rng.standard_normal((n_features, n_targets)) * relevant[:, None])
        t = t + cfg.linear_weight * standardize(lin)
    t = standardize(t)
    return x, t + cfg.noise_std * rng.standard_normal(t.shape)
