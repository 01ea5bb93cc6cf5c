"""A ridge regression of the target on the whole table, as extra input columns for the ICL members.

The pretrained network reads a table through per-column summaries and a compressed row vector: it
finds thresholds, interactions and local structure well, but adds up many weak linear effects
poorly (food_deliveries, whose delivery time sums the items' preparation times: R² 0.82 against
LightGBM's 0.89). A ridge regression does exactly that, in closed form. Its prediction enters each
member as one more numeric column (one per class for a classifier), and the network learns how far
to trust it from the training rows.

The training rows get the ridge's *leave-one-out* predictions, which carry the same error as the
test rows' predictions do; the in-sample fit would look better on the training rows than it is and
teach the network to copy it. Both come from one thin SVD of the design matrix, exactly, and the
same SVD scores every penalty of the grid by its leave-one-out error (Allen's PRESS).

Design columns: numeric columns twice, standardised after clipping to their 0.5-99.5% training
range and through their quantile-normal map (a linear effect of either shape), missing values at
the column mean with an indicator column; categorical columns one 0/1 column per known level
(missing and unseen levels in none). Nothing here is learned by gradient descent.
"""

from __future__ import annotations

import warnings
from functools import cache, wraps

import numpy as np
from threadpoolctl import ThreadpoolController

from tabfm.preprocessing import FIRST_CATEGORY_CODE, NumericScaler, column_quantiles

# Penalties, in units of the row count (the design's columns have unit variance).
ALPHAS = np.logspace(-5, 1, 13)
MAX_LEVELS = 64  # categorical columns with more known levels are left out of the design
CLIP = (0.5, 99.5)  # percentiles at which raw numeric values are clipped before standardising
# Knots of the hinge columns, on a numeric column's quantile-normal scale (about its 7th, 23rd,
# 50th, 77th and 93rd percentiles).
HINGE_KNOTS = np.array([-1.5, -0.75, 0.0, 0.75, 1.5])
BASES = ("linear", "hinge", "auto")


@cache
def _blas_pools() -> ThreadpoolController:
    # Found once: the search walks every loaded library, which took ~3 ms per call, as long as
    # the ridge fit it limited (fit + predict of 1,000 rows).
    return ThreadpoolController()


def _one_blas_thread(method):
    """Run ``method`` with one BLAS thread: the products here are small, and BLAS threads that
    spin-wait after a call take CPU from the network's forward pass that follows."""

    @wraps(method)
    def call(*args, **kwargs):
        with _blas_pools().limit(limits=1, user_api="blas"):
            return method(*args, **kwargs)

    return call


class RidgeFeature:
    """Closed-form ridge regression of ``Y (n, t)`` on an encoded table, with leave-one-out
    predictions for the training rows.

    ``basis``: ``"linear"`` (a line per numeric column), ``"hinge"`` (a piecewise-linear curve per
    numeric column) or ``"auto"`` (whichever has the smaller leave-one-out error).

    After ``fit``: ``train_predictions_ (n, t)`` (leave-one-out), ``alpha_`` (the chosen penalty,
    in units of ``n``), ``hinge_`` (whether the hinge columns were kept), and :meth:`predict` for
    new rows of the same encoding.
    """

    def __init__(self, categorical_mask: np.ndarray, cardinalities: np.ndarray, basis: str = "auto") -> None:
        if basis not in BASES:
            raise ValueError(f"basis must be one of {', '.join(map(repr, BASES))}, however: basis={basis!r}")
        self.categorical_mask = np.asarray(categorical_mask, dtype=bool)
        self.cardinalities = np.asarray(cardinalities, dtype=np.int64)
        self.basis = basis

    # -- design matrix --------------------------------------------------------------------------

    def _fit_design(self, X: np.ndarray) -> None:
        numeric = ~self.categorical_mask
        Xn = X[:, numeric].astype(np.float64)
        bounds = column_quantiles(Xn, np.array(CLIP) / 100) if Xn.shape[1] else np.zeros((2, 0))
        self.low_, self.high_ = np.nan_to_num(bounds[0]), np.nan_to_num(bounds[1])
        self.quantile_ = NumericScaler("quantile").fit(Xn) if Xn.shape[1] else None
        self.has_missing_ = np.isnan(Xn).any(axis=0)
        self.levels_ = [
            int(c) - FIRST_CATEGORY_CODE if 1 <= int(c) - FIRST_CATEGORY_CODE <= MAX_LEVELS else 0
            for c in self.cardinalities[self.categorical_mask]
        ]

    def _design(self, X: np.ndarray, hinge: bool) -> np.ndarray:
        """Unscaled design columns of encoded rows (the scaling is fitted in :meth:`fit`); with
        ``hinge``, also ``max(0, q - knot)`` of each numeric column's quantile-normal value ``q``:
        the ridge then fits a piecewise-linear curve per column (an additive model), not a line."""
        numeric = ~self.categorical_mask
        Xn = X[:, numeric].astype(np.float64)
        blocks = []
        if Xn.shape[1]:
            missing = np.isnan(Xn)
            raw = np.clip(Xn, self.low_, self.high_)
            quantile = self.quantile_.transform(Xn).astype(np.float64)
            blocks += [raw, quantile, missing[:, self.has_missing_].astype(np.float64)]
        codes = X[:, self.categorical_mask]
        for k, levels in enumerate(self.levels_):
            if levels:
                blocks.append((codes[:, k : k + 1] == FIRST_CATEGORY_CODE + np.arange(levels)).astype(np.float64))
        if hinge and Xn.shape[1]:  # last, so that the linear design is a prefix of this one
            blocks.append(np.maximum(quantile[:, :, None] - HINGE_KNOTS, 0.0).reshape(len(X), -1))  # NaN: missing
        if not blocks:
            return np.zeros((len(X), 0))
        return np.concatenate(blocks, axis=1)

    def _n_hinges(self) -> int:
        return int((~self.categorical_mask).sum()) * len(HINGE_KNOTS) if self.hinge_ else 0

    def _standardised(self, D: np.ndarray) -> np.ndarray:
        """Design columns standardised with the training statistics, the constant ones dropped."""
        return np.nan_to_num((D - self.loc_) / self.scale_, nan=0.0)[:, self.keep_]  # missing: the column mean

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        return self._standardised(self._design(X, self.hinge_))

    # -- fit / predict --------------------------------------------------------------------------

    @staticmethod
    def _press_fit(D: np.ndarray, Yc: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
        """The penalty of the grid with the least leave-one-out error, from one thin SVD of the
        standardised design ``D``: ``(press, alpha, loo residuals, coef)``."""
        n = len(D)
        U, s, Vt = np.linalg.svd(D, full_matrices=False)
        UtY = U.T @ Yc  # (r, t)
        U2 = U**2
        best = None
        for alpha in ALPHAS * n:
            shrink = s**2 / (s**2 + alpha)  # (r,)
            fitted = U @ (shrink[:, None] * UtY)
            leverage = U2 @ shrink + 1.0 / n  # the intercept's share included
            residual = (Yc - fitted) / (1.0 - leverage)[:, None]
            press = float(np.mean(residual**2))
            if best is None or press < best[0]:
                best = (press, alpha, residual)
        press, alpha, residual = best
        return press, alpha, residual, Vt.T @ ((s / (s**2 + alpha))[:, None] * UtY)

    @_one_blas_thread
    def fit(self, X: np.ndarray, Y: np.ndarray) -> RidgeFeature:
        Y = np.asarray(Y, dtype=np.float64).reshape(len(X), -1)
        n = len(X)
        self._fit_design(X)
        # The hinge design is the linear one with more columns at the end, so one standardisation
        # serves both.
        self.hinge_ = self.basis != "linear"
        D = self._design(X, self.hinge_)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
            self.loc_ = np.nan_to_num(np.nanmean(D, axis=0))
            scale = np.nanstd(D, axis=0)
        self.keep_ = np.isfinite(scale) & (scale > 1e-9)
        self.scale_ = np.where(self.keep_, scale, 1.0)
        D = self._standardised(D)
        self.y_mean_ = Y.mean(axis=0)
        Yc = Y - self.y_mean_
        if D.shape[1] == 0:  # nothing to regress on: the mean for every row
            self.coef_ = np.zeros((0, Y.shape[1]))
            self.alpha_ = float("inf")
            self.train_predictions_ = np.broadcast_to(self.y_mean_, Y.shape) - Yc / max(n - 1, 1)
            return self
        n_linear = int(self.keep_[: len(self.keep_) - self._n_hinges()].sum())  # kept linear columns
        widths = {"linear": [n_linear], "hinge": [D.shape[1]], "auto": sorted({n_linear, D.shape[1]})}[self.basis]
        # "auto" keeps the design with the smaller leave-one-out error: an honest choice, from the
        # training rows alone.
        fits = [(self._press_fit(D[:, :width], Yc), width) for width in widths]
        (_, alpha, residual, coef), width = min(fits, key=lambda fit: fit[0][0])
        if width < D.shape[1]:  # the linear design won: drop the hinge columns
            n_design = len(self.keep_) - self._n_hinges()
            self.keep_, self.loc_, self.scale_ = self.keep_[:n_design], self.loc_[:n_design], self.scale_[:n_design]
            self.hinge_ = False
        self.alpha_ = float(alpha / n)
        self.coef_ = coef  # (p, t)
        self.train_predictions_ = Y - residual
        return self

    @_one_blas_thread
    def predict(self, X: np.ndarray) -> np.ndarray:
        """``(n, t)`` predictions for encoded rows."""
        if self.coef_.shape[0] == 0:
            return np.broadcast_to(self.y_mean_, (len(X), len(self.y_mean_))).copy()
        # A sum per row rather than a matrix product: a row's value must not depend on the other
        # rows of the batch (BLAS kernels block rows differently by batch size).
        return np.einsum("ij,jk->ik", self._scaled(X), self.coef_, optimize=False) + self.y_mean_


def class_targets(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Ridge targets of a class label: one 0/1 column per class, one column for a binary target."""
    onehot = (np.asarray(y)[:, None] == np.arange(n_classes)).astype(np.float64)
    return onehot[:, 1:] if n_classes == 2 else onehot


def table_ridge_columns(
    x: np.ndarray, categorical: np.ndarray, targets: np.ndarray, split: int, basis: str = "linear"
) -> np.ndarray:
    """``(R, t)`` ridge columns of a synthetic table, as an estimator would build them.

    ``x (R, F)`` holds a prior table's cells (categorical codes 0..K-1, NaN when missing) and
    ``targets (split, t)`` the ridge targets of its training rows ``[0, split)``. Those rows get
    their leave-one-out predictions, the test rows ``[split, R)`` the full fit: what
    :class:`~tabfm.icl.TabFMRegressor` and :class:`~tabfm.icl.TabFMClassifier` give the network,
    so that pretraining can teach it how far to trust the columns. Pretraining has used the
    ``"linear"`` basis (one SVD per table, where ``"auto"`` takes two of a wider design).
    """
    categorical = np.asarray(categorical, dtype=bool)
    X = x.astype(np.float64, copy=True)
    cardinalities = np.zeros(X.shape[1], dtype=np.int64)
    for j in np.flatnonzero(categorical):
        # The estimators' encoding: known levels from FIRST_CATEGORY_CODE, levels unseen in
        # training rows beyond the cardinality (they fall in no one-hot column, as unseen ones do).
        cardinalities[j] = FIRST_CATEGORY_CODE + int(np.nanmax(X[:split, j], initial=-1)) + 1
        X[:, j] += FIRST_CATEGORY_CODE
    ridge = RidgeFeature(categorical, cardinalities, basis).fit(X[:split], targets)
    return np.concatenate([ridge.train_predictions_, ridge.predict(X[split:])]).astype(np.float32)
