"""Post-processing shared by all prior families.

The families produce standardised latent features and targets; these functions turn them into
tables that look like real ones: class labels from thresholds, irrelevant and duplicated columns,
warped and outlying values, categorical codes, per-column units (scale, shift, integers) and
missing cells. Every function is vectorised over rows and takes the dataset's ``Generator``.
"""

from __future__ import annotations

import numpy as np

from priors.common import sample_roots, standardize
from priors.recipe import Dist


def stochastic_round(rng: np.random.Generator, value: float) -> int:
    """Round ``value`` up with probability equal to its fractional part (unbiased)."""
    base = int(np.floor(value))
    return base + int(rng.random() < value - base)


# --- features --------------------------------------------------------------------------------


def add_irrelevant_and_duplicates(
    rng: np.random.Generator, x: np.ndarray, n_irrelevant: int, n_duplicate: int
) -> tuple[np.ndarray, np.ndarray]:
    """Append pure-noise columns and noisy copies of existing columns, then shuffle the columns.

    Returns
    -------
    x : ndarray, shape (n_rows, n_informative + n_irrelevant + n_duplicate)
    kind : ndarray of int, 0 informative, 1 irrelevant, 2 duplicate, per output column
    """
    n, f = x.shape
    parts, kind = [x], [np.zeros(f, int)]
    if n_irrelevant:
        parts.append(sample_roots(rng, "mixed", n, n_irrelevant))
        kind.append(np.ones(n_irrelevant, int))
    if n_duplicate and f:
        src = rng.integers(0, f, n_duplicate)
        noise = rng.choice([0.0, 0.05, 0.3], n_duplicate)  # exact, near and loose copies
        dup = x[:, src] + noise * rng.standard_normal((n, n_duplicate))
        parts.append(dup)
        kind.append(np.full(n_duplicate, 2))
    out = np.concatenate(parts, axis=1)
    order = rng.permutation(out.shape[1])
    return out[:, order], np.concatenate(kind)[order]


def warp_features(rng: np.random.Generator, x: np.ndarray, prob: float) -> np.ndarray:
    """Warp each column with probability ``prob``: power, log or Kumaraswamy CDF of its min-max scale."""
    x = x.copy()
    cols = np.flatnonzero(rng.random(x.shape[1]) < prob)
    for j in cols:
        v = x[:, j]
        lo, hi = v.min(), v.max()
        if hi - lo < 1e-12:
            continue
        u = (v - lo) / (hi - lo)  # in [0, 1]
        kind = rng.integers(0, 3)
        if kind == 0:
            w = u ** np.exp(rng.uniform(np.log(0.2), np.log(5.0)))
        elif kind == 1:
            w = np.log(u + np.exp(rng.uniform(np.log(1e-3), 0.0)))
        else:
            a, b = np.exp(rng.uniform(np.log(0.3), np.log(3.0), 2))
            w = 1.0 - (1.0 - u**a) ** b
        x[:, j] = standardize(w[:, None])[:, 0]
    return x


def add_outliers(rng: np.random.Generator, x: np.ndarray, rate: float) -> np.ndarray:
    """Push a fraction ``rate`` of the cells 4 to 20 standard deviations out."""
    mask = rng.random(x.shape) < rate
    shift = rng.uniform(4.0, 20.0, x.shape) * rng.choice([-1.0, 1.0], x.shape)
    return np.where(mask, x + shift, x)


def categorize(
    rng: np.random.Generator, v: np.ndarray, n_levels: int, ordered: bool
) -> np.ndarray:
    """Quantise one column into integer codes ``0..n_levels-1`` (as floats).

    Bin sizes are random (a Dirichlet draw), so some levels are rare, as in real data; with
    ``ordered=False`` the codes are shuffled so they carry no order.
    """
    n_levels = int(min(n_levels, max(2, v.size // 2)))
    props = rng.dirichlet(np.full(n_levels, rng.uniform(0.5, 3.0)))
    cuts = np.quantile(v, np.cumsum(props)[:-1])
    codes = np.searchsorted(cuts, v, side="right")
    _, codes = np.unique(codes, return_inverse=True)  # drop empty bins: codes stay 0..K-1
    if not ordered:
        codes = rng.permutation(codes.max() + 1)[codes]
    return codes.astype(np.float64)


def scale_numeric(
    rng: np.random.Generator, v: np.ndarray, *, scale: float, shift: float, positive: bool,
    integer: bool,
) -> np.ndarray:
    """Give a standardised column real-world units: a scale, a shift, positivity, integer values."""
    if positive:
        v = v - v.min()
    if integer:
        # Integer columns with a handful to a few hundred distinct values (counts, ages, scores).
        v = np.round(v * np.exp(rng.uniform(0.0, np.log(30.0))))
        return v + np.round(shift) if not positive else v
    return v * scale + (0.0 if positive else shift * scale)


def add_missing(
    rng: np.random.Generator, x: np.ndarray, rate: float, value_dependent: bool
) -> np.ndarray:
    """Set about a fraction ``rate`` of the cells to NaN.

    The rate varies between columns (a few columns hold most of the missing cells, as in real
    tables). Value-dependent missingness makes a cell more likely missing when its own value (MNAR)
    or another column's value (MAR) is high or low; the mean rate stays ``rate``.
    """
    n, f = x.shape
    if rate <= 0 or f == 0:
        return x
    col_rate = np.minimum(rate * rng.exponential(1.0, f) / 1.0, 0.9)  # (f,) mean ~ rate
    if value_dependent:
        src = np.where(rng.random(f) < 0.5, np.arange(f), rng.integers(0, f, f))
        z = standardize(np.nan_to_num(x[:, src]))
        slope = rng.uniform(1.0, 3.0, f) * rng.choice([-1.0, 1.0], f)
        score = 1.0 / (1.0 + np.exp(-slope * z))  # (n, f)
        p = np.minimum(col_rate * score / score.mean(axis=0), 0.95)
    else:
        p = np.broadcast_to(col_rate, (n, f))
    mask = rng.random((n, f)) < p
    empty = np.flatnonzero(mask.all(axis=0))  # keep one observed cell in every column
    mask[rng.integers(0, n, empty.size), empty] = False
    out = x.copy()
    out[mask] = np.nan
    return out


# --- targets ---------------------------------------------------------------------------------


def make_classes(
    rng: np.random.Generator, t: np.ndarray, n_classes: int, mode: str, imbalance: float,
    label_noise: float,
) -> np.ndarray:
    """Turn a latent target (n, 1), or (n, n_classes) for ``argmax``, into labels 0..n_classes-1.

    ``quantile`` cuts at quantiles with Dirichlet(``imbalance``) class proportions (small values
    give imbalanced classes); ``value`` cuts at the values of random rows; ``argmax`` takes the
    largest of ``n_classes`` latent nodes after random offsets. Then a fraction ``label_noise`` of
    rows get a random label, and the class order is shuffled.
    """
    n = t.shape[0]
    if mode == "argmax" and t.shape[1] >= n_classes:
        offsets = 0.5 * rng.standard_normal(n_classes) / np.sqrt(imbalance)
        y = np.argmax(t[:, :n_classes] + offsets, axis=1)
    else:
        v = t[:, 0]
        if mode == "value":
            cuts = np.sort(v[rng.choice(n, n_classes - 1, replace=False)])
        else:
            props = rng.dirichlet(np.full(n_classes, imbalance))
            cuts = np.quantile(v, np.cumsum(props)[:-1])
        y = np.searchsorted(cuts, v, side="right")
    flip = rng.random(n) < label_noise
    y = np.where(flip, rng.integers(0, n_classes, n), y)
    return rng.permutation(n_classes)[y]


def clean_classes(rng: np.random.Generator, y: np.ndarray, min_count: int) -> np.ndarray | None:
    """Merge classes with fewer than ``min_count`` rows into others and relabel 0..C-1 in random order.

    Returns None when fewer than two classes are left (the caller draws a new dataset).
    """
    y = y.copy()
    while True:
        labels, counts = np.unique(y, return_counts=True)
        if labels.size < 2:
            return None
        small = counts < min_count
        if not small.any():
            break
        worst = labels[np.argmin(counts)]
        others = labels[labels != worst]
        y[y == worst] = others[rng.integers(0, others.size)]
    _, y = np.unique(y, return_inverse=True)
    return rng.permutation(labels.size)[y]


def classes_into_train(rng: np.random.Generator, y: np.ndarray, n_train: int) -> np.ndarray:
    """A row permutation after which every class occurs in the first ``n_train`` rows.

    Rows of missing classes are swapped in from the test part with train rows of classes that
    occur more than once there; the rows are otherwise left in place (they are exchangeable).
    """
    perm = np.arange(y.size)
    yy = y.copy()
    n_classes = int(y.max()) + 1
    for c in range(n_classes):
        if (yy[:n_train] == c).any():
            continue
        i = n_train + int(np.flatnonzero(yy[n_train:] == c)[0])
        counts = np.bincount(yy[:n_train], minlength=n_classes)
        donors = np.flatnonzero(counts[yy[:n_train]] > 1)
        j = int(donors[rng.integers(0, donors.size)])
        perm[[i, j]] = perm[[j, i]]
        yy[[i, j]] = yy[[j, i]]
    return perm


def regression_target(
    rng: np.random.Generator, t: np.ndarray, *, noise_std: float, warp: bool, scale: float,
    shift: float,
) -> np.ndarray:
    """A raw regression target: latent + noise, sometimes skewed (log-normal-like), in random units."""
    y = t[:, 0] + noise_std * rng.standard_normal(t.shape[0])
    y = standardize(y[:, None])[:, 0]
    if warp:
        # Positive and right-skewed, like prices, counts and durations.
        y = np.exp(rng.uniform(0.3, 1.2) * y)
        y = y / y.std()
        return y * scale
    return y * scale + shift * scale


def sample_dist(rng: np.random.Generator, d: Dist, size: int) -> np.ndarray:
    """``size`` independent draws of ``d``."""
    return np.array([d.sample(rng) for _ in range(size)], dtype=float)
