"""The mixture sampler: one whole dataset from a recipe and a seed.

A dataset is drawn in three steps: a family by the recipe's mixture weights and its
hyper-configuration from the family's section; latent features and target(s) from the family;
then the shared post-processing (see :mod:`priors.postprocess`). With probability
``postprocess.observed_target_prob`` the latent target is replaced by a random function of the
observed informative columns, categorised first (see :mod:`priors.observed_target`): rule-like
targets of nominal levels, which latent SCM targets almost never are. Degenerate draws (one class
left, a constant target, non-finite values) are redrawn from the same generator, so the result is
still a pure function of the seed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from priors import mlp_scm, observed_target, smooth, tree_scm
from priors import postprocess as pp
from priors.recipe import PostprocessSection, Recipe, load_recipe

FAMILY_MODULES = {"mlp_scm": mlp_scm, "tree_scm": tree_scm, "smooth": smooth}
TASKS = ("classification", "regression")
_MAX_TRIES = 20


def check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")


def choose_family(rng: np.random.Generator, recipe: Recipe) -> str:
    names = list(recipe.mixture)
    w = np.array([recipe.mixture[n] for n in names])
    return names[int(rng.choice(len(names), p=w / w.sum()))]


def sample_dataset(
    recipe: Recipe | str, task: str, *, n_rows: int, n_features: int, seed: int,
    n_train: int | None = None, family: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Sample one synthetic dataset.

    Parameters
    ----------
    recipe : Recipe or str
        The prior, or a path / shipped name for :func:`priors.load_recipe`.
    task : {"classification", "regression"}
    n_rows, n_features : int
        Exact table shape.
    seed : int
        The dataset is a pure function of the arguments.
    n_train : int, optional
        If given (classification), every class occurs among the first ``n_train`` rows.
    family : str, optional
        Force one family (``mlp_scm``, ``tree_scm``, ``smooth``) instead of the mixture.

    Returns
    -------
    X : ndarray of float32, shape (n_rows, n_features)
        NaN marks a missing cell; categorical columns hold codes 0..K-1.
    y : ndarray
        int64 class labels 0..C-1 (every class has at least ``min_class_count`` rows), or float32
        regression targets in raw units.
    categorical : ndarray of bool, shape (n_features,)
    meta : dict
        The family, its configuration and the post-processing choices (JSON-serialisable).
    """
    check_task(task)
    recipe = load_recipe(recipe)
    if n_rows < 4:
        raise ValueError(f"n_rows must be >= 4, got {n_rows}")
    if n_features < 1:
        raise ValueError(f"n_features must be >= 1, got {n_features}")
    if family is not None and family not in FAMILY_MODULES:
        raise ValueError(f"family must be one of {sorted(FAMILY_MODULES)}, got {family!r}")
    rng = np.random.default_rng(seed)
    for attempt in range(_MAX_TRIES):
        out = _sample_once(rng, recipe, task, n_rows, n_features, n_train, family)
        if out is not None:
            out[3]["attempts"] = attempt + 1
            return out
    raise RuntimeError(  # an internal error: the recipe's checks should make this impossible
        f"internal error in priors: {_MAX_TRIES} degenerate draws in a row (seed={seed}, task={task})"
    )


def _choose_categorical(
    rng: np.random.Generator, post: PostprocessSection, n_features: int,
    all_prob: float | None = None,
) -> np.ndarray:
    """Which columns are categorical; with ``all_prob`` (observed targets) every column may be."""
    categorical = np.zeros(n_features, bool)
    if rng.random() < post.categorical_prob:
        if all_prob is not None and rng.random() < all_prob:
            categorical[:] = True
            return categorical
        n_cat = pp.stochastic_round(rng, post.categorical_fraction.sample(rng) * n_features)
        categorical[rng.choice(n_features, min(n_cat, n_features), replace=False)] = True
    return categorical


def _categorize(rng: np.random.Generator, post: PostprocessSection, v: np.ndarray) -> np.ndarray:
    return pp.categorize(rng, v, int(post.categorical_levels.sample(rng)),
                         bool(rng.random() < post.categorical_ordered_prob))


def _sample_once(
    rng: np.random.Generator, recipe: Recipe, task: str, n_rows: int, n_features: int,
    n_train: int | None, family: str | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]] | None:
    post, cls = recipe.postprocess, recipe.classification
    family = family or choose_family(rng, recipe)
    module = FAMILY_MODULES[family]
    cfg = module.sample_config(rng, getattr(recipe, family))
    # No draw at probability 0: recipes without observed targets keep their exact random stream.
    observed = post.observed_target_prob > 0 and bool(rng.random() < post.observed_target_prob)

    # Column plan: informative columns from the family, plus noise columns and copies.
    n_irr = min(pp.stochastic_round(rng, post.irrelevant_fraction.sample(rng) * n_features),
                n_features - 1)
    n_dup = min(pp.stochastic_round(rng, post.duplicate_fraction.sample(rng) * n_features),
                n_features - 1 - n_irr)
    n_inf = n_features - n_irr - n_dup

    meta: dict[str, Any] = {"family": family, "config": dataclasses.asdict(cfg)}
    if task == "classification":
        room = (n_train if n_train is not None else n_rows) // cls.min_class_count
        n_classes = int(max(2, min(cls.n_classes.sample(rng), cls.max_classes, room)))
        mode = str(cls.threshold_mode.sample(rng))
        n_targets = n_classes if mode == "argmax" else 1
    else:
        n_targets = 1
    x, t = module.generate(rng, cfg, n_rows, n_inf, n_targets)
    x, kind = pp.add_irrelevant_and_duplicates(rng, x, n_irr, n_dup)
    x = pp.warp_features(rng, x, float(post.warp_prob.sample(rng)))
    outlier_rate = float(post.outlier_rate.sample(rng)) if rng.random() < post.outlier_prob else 0.0
    if outlier_rate > 0:
        x = pp.add_outliers(rng, x, outlier_rate)

    if observed:
        # Categorical columns first, then the target as a function of the observed columns.
        categorical = _choose_categorical(rng, post, n_features,
                                          recipe.observed_target.all_categorical_prob)
        for j in np.flatnonzero(categorical):
            x[:, j] = _categorize(rng, post, x[:, j])
        ocfg = observed_target.sample_config(rng, recipe.observed_target)
        t, info = observed_target.observed_target(rng, x, categorical, np.flatnonzero(kind == 0),
                                                  n_targets, ocfg)
        meta.update(target_from="observed",
                    observed_target={**dataclasses.asdict(ocfg), **info})
    else:
        meta["target_from"] = "scm"

    if task == "classification":
        imbalance = float(cls.imbalance.sample(rng))
        label_noise = float(cls.label_noise.sample(rng))
        y = pp.make_classes(rng, t, n_classes, mode, imbalance, label_noise)
        y = pp.clean_classes(rng, y, cls.min_class_count)
        if y is None:
            return None
        meta.update(threshold_mode=mode, imbalance=imbalance, label_noise=label_noise,
                    n_classes=int(y.max()) + 1)
    else:
        reg = recipe.regression
        y = pp.regression_target(
            rng, t, noise_std=float(reg.noise_std.sample(rng)),
            warp=bool(rng.random() < reg.warp_prob), scale=float(reg.scale.sample(rng)),
            shift=float(reg.shift.sample(rng)),
        )
        if not np.isfinite(y).all() or y.std() <= 1e-6 * (np.abs(y).mean() + 1e-12):
            return None
        meta["n_classes"] = 0

    # Categorical columns (already coded when the target was read from them), then units for the
    # numeric ones, then missing cells.
    if not observed:
        categorical = _choose_categorical(rng, post, n_features)
    integer_prob = float(post.integer_prob.sample(rng))
    for j in range(n_features):
        if categorical[j]:
            if not observed:
                x[:, j] = _categorize(rng, post, x[:, j])
        else:
            x[:, j] = pp.scale_numeric(
                rng, x[:, j], scale=float(post.scale.sample(rng)), shift=float(post.shift.sample(rng)),
                positive=bool(rng.random() < post.positive_prob),
                integer=bool(rng.random() < integer_prob),
            )
    missing_rate = float(post.missing_rate.sample(rng)) if rng.random() < post.missing_prob else 0.0
    mnar = bool(rng.random() < post.missing_mnar_prob)
    if missing_rate > 0:
        x = pp.add_missing(rng, x, missing_rate, mnar)

    x = x.astype(np.float32)
    if np.isinf(x).any():
        return None
    if task == "classification":
        if n_train is not None:
            perm = pp.classes_into_train(rng, y, n_train)
            x, y = x[perm], y[perm]
        y = y.astype(np.int64)
    else:
        y = y.astype(np.float32)
        if y.std() <= 0:
            return None
    meta.update(
        n_rows=n_rows, n_features=n_features, n_informative=n_inf, n_irrelevant=n_irr,
        n_duplicate=n_dup, n_categorical=int(categorical.sum()), missing_rate=missing_rate,
        missing_value_dependent=mnar, outlier_rate=outlier_rate,
    )
    return x, y, categorical, meta
