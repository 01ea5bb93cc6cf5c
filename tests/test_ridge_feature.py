"""The ridge feature: exact leave-one-out predictions, the design's encoding, degenerate tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge

from tabfm import TabFMRegressor
from tabfm.preprocessing import FIRST_CATEGORY_CODE
from tabfm.ridge_feature import HINGE_KNOTS, RidgeFeature, class_targets, table_ridge_columns


def _table(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Encoded rows: two numeric columns (one with missing values) and a 3-level categorical one."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = np.where(rng.random(n) < 0.2, np.nan, rng.exponential(size=n))
    codes = FIRST_CATEGORY_CODE + rng.integers(0, 3, size=n).astype(np.float64)
    X = np.column_stack([x1, x2, codes])
    y = 2 * x1 + np.nan_to_num(x2) + (codes == FIRST_CATEGORY_CODE) + 0.3 * rng.normal(size=n)
    return X, y, np.array([False, False, True]), np.array([0, 0, FIRST_CATEGORY_CODE + 3])


@pytest.mark.parametrize("basis", ["linear", "hinge"])
def test__ridge_feature__leave_one_out__equals_refitting_without_each_row(basis: str) -> None:
    X, y, categorical, cardinalities = _table()
    ridge = RidgeFeature(categorical, cardinalities, basis).fit(X, y)
    assert ridge.hinge_ == (basis == "hinge")
    D, alpha = ridge._scaled(X), ridge.alpha_ * len(X)
    for i in range(len(X)):
        keep = np.arange(len(X)) != i
        refit = Ridge(alpha=alpha).fit(D[keep], y[keep]).predict(D[i : i + 1])[0]
        assert ridge.train_predictions_[i, 0] == pytest.approx(refit, abs=1e-9)


def test__ridge_feature__predict__equals_the_full_fit_and_tracks_the_target() -> None:
    X, y, categorical, cardinalities = _table()
    ridge = RidgeFeature(categorical, cardinalities).fit(X, y)
    full = Ridge(alpha=ridge.alpha_ * len(X)).fit(ridge._scaled(X), y).predict(ridge._scaled(X))
    np.testing.assert_allclose(ridge.predict(X)[:, 0], full, atol=1e-9)
    assert np.corrcoef(ridge.train_predictions_[:, 0], y)[0, 1] > 0.9
    # Out-of-sample errors are larger than in-sample ones: the training rows' column is honest.
    assert np.mean((ridge.train_predictions_[:, 0] - y) ** 2) > np.mean((full - y) ** 2)


def test__ridge_feature__design__missing_unseen_and_wide_categoricals() -> None:
    X, y, categorical, cardinalities = _table()
    wide = FIRST_CATEGORY_CODE + np.arange(len(X)) % 80  # 80 known levels: left out of the design
    X4 = np.column_stack([X, wide])
    ridge = RidgeFeature(np.r_[categorical, True], np.r_[cardinalities, FIRST_CATEGORY_CODE + 80]).fit(X4, y)
    # raw + quantile for 2 numeric columns, one missing indicator, 3 levels, none for the wide column
    assert ridge._design(X4, hinge=False).shape[1] == 2 * 2 + 1 + 3
    # hinges: one per knot and numeric column, NaN where the value is missing (the column mean)
    hinged = ridge._design(X4, hinge=True)
    assert hinged.shape[1] == 2 * 2 + 1 + 3 + 2 * len(HINGE_KNOTS)
    assert np.isnan(hinged[np.isnan(X[:, 1]), -len(HINGE_KNOTS):]).all()
    new = np.array([[0.0, np.nan, 1.0, 2.0], [0.0, 1.0, 0.0, 2.0]])  # missing x2, unseen code, missing code
    assert np.all(np.isfinite(ridge.predict(new)))


def test__ridge_feature__auto_basis__the_design_with_the_smaller_leave_one_out_error() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 3))
    categorical, cardinalities = np.zeros(3, dtype=bool), np.zeros(3, dtype=np.int64)
    curved = np.abs(X[:, 0]) + np.maximum(X[:, 1], 0) + 0.1 * rng.normal(size=200)  # no line fits it
    for y in (curved, X @ [1.0, -2.0, 0.5] + rng.normal(size=200)):
        fits = {b: RidgeFeature(categorical, cardinalities, b).fit(X, y) for b in ("linear", "hinge", "auto")}
        loo = {b: np.mean((r.train_predictions_[:, 0] - y) ** 2) for b, r in fits.items()}
        assert loo["auto"] == min(loo["linear"], loo["hinge"])
        assert fits["auto"].hinge_ == (loo["hinge"] < loo["linear"])
        # the kept design alone makes the predictions: the refit equals them
        np.testing.assert_allclose(fits["auto"].predict(X[:5]), fits["hinge" if fits["auto"].hinge_ else "linear"].predict(X[:5]))
    curved_fits = {b: RidgeFeature(categorical, cardinalities, b).fit(X, curved) for b in ("linear", "auto")}
    assert curved_fits["auto"].hinge_
    assert np.mean((curved_fits["auto"].train_predictions_[:, 0] - curved) ** 2) < 0.5 * np.mean(
        (curved_fits["linear"].train_predictions_[:, 0] - curved) ** 2
    )


def test__ridge_feature__unknown_basis__names_it() -> None:
    with pytest.raises(ValueError, match="basis must be one of 'linear', 'hinge', 'auto'"):
        RidgeFeature(np.array([False]), np.array([0]), "spline")


def test__ridge_feature__nothing_to_regress_on__leave_one_out_mean() -> None:
    y = np.array([1.0, 2.0, 6.0])
    ridge = RidgeFeature(np.array([False]), np.array([0])).fit(np.ones((3, 1)), y)  # a constant column
    np.testing.assert_allclose(ridge.train_predictions_[:, 0], [4.0, 3.5, 1.5])
    np.testing.assert_allclose(ridge.predict(np.zeros((2, 1)))[:, 0], [3.0, 3.0])


def test__ridge_feature__several_targets__one_column_each() -> None:
    X, y, categorical, cardinalities = _table()
    Y = np.column_stack([y, -y, y > 0])
    ridge = RidgeFeature(categorical, cardinalities).fit(X, Y)
    assert ridge.train_predictions_.shape == (len(X), 3) and ridge.predict(X[:5]).shape == (5, 3)
    np.testing.assert_allclose(ridge.predict(X)[:, 0], -ridge.predict(X)[:, 1], atol=1e-9)


def test__table_ridge_columns__a_prior_table__the_columns_the_regressor_builds() -> None:
    """Pretraining's ridge columns of a synthetic table (codes 0..K-1, NaN missing) are those the
    regressor builds from the same table as a user's frame: leave-one-out on the training rows,
    the full fit on the others, a level unseen in training in no one-hot column."""
    rng = np.random.default_rng(1)
    n, split = 90, 60
    x = np.column_stack([rng.normal(size=n), np.where(rng.random(n) < 0.2, np.nan, rng.exponential(size=n)),
                         rng.integers(0, 3, size=n).astype(np.float64)])
    x[split, 2] = 3.0  # a level only a test row has
    x[split + 1, 2] = np.nan
    y = 2 * x[:, 0] + np.nan_to_num(x[:, 1]) + (x[:, 2] == 1) + 0.3 * rng.normal(size=n)
    targets = ((y[:split] - y[:split].mean()) / y[:split].std())[:, None]
    columns = table_ridge_columns(x, np.array([False, False, True]), targets, split)

    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": pd.Series(x[:, 2]).map({0: "p", 1: "q", 2: "r", 3: "s"})})
    reg = TabFMRegressor(n_estimators=1, context="global", linear_feature="all", linear_basis="linear").fit(frame[:split], y[:split])
    X_enc = reg.preprocessor_.transform(frame)
    np.testing.assert_allclose(columns[:split, 0], reg._train_ridge_columns()[:, 0], rtol=1e-5, atol=1e-5)
    # The test rows include the unseen level and the missing one.
    np.testing.assert_allclose(columns[split:, 0], reg._ridge_columns(X_enc[split:])[:, 0], rtol=1e-5, atol=1e-5)


def test__class_targets__binary_one_column__multiclass_one_per_class() -> None:
    np.testing.assert_array_equal(class_targets(np.array([0, 1, 1]), 2), [[0.0], [1.0], [1.0]])
    np.testing.assert_array_equal(class_targets(np.array([2, 0]), 3), [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
