"""The one preprocessing path: format equivalence, encodings and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tabfm.errors import TabFMTypeError, TabFMValidationError
from tabfm.preprocessing import (
    MISSING_CODE,
    UNSEEN_CODE,
    NumericScaler,
    TablePreprocessor,
    TargetQuantiles,
    column_quantiles,
    encode_classification_target,
    encode_regression_target,
)

LEVELS = ["red", "green", "blue", "ünïcode", "10", "2"]


@st.composite
def tables(draw: st.DrawFn) -> pd.DataFrame:
    n_rows = draw(st.integers(1, 12))
    n_num = draw(st.integers(0, 3))
    n_cat = draw(st.integers(0 if n_num else 1, 3))
    data = {}
    for j in range(n_num):
        values = draw(
            st.lists(
                st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False, width=32)),
                min_size=n_rows,
                max_size=n_rows,
            )
        )
        data[f"num{j}"] = pd.array(values, dtype="Float64").astype("float64")
    for j in range(n_cat):
        values = draw(st.lists(st.one_of(st.none(), st.sampled_from(LEVELS)), min_size=n_rows, max_size=n_rows))
        data[f"cat{j}"] = pd.Series(values, dtype=object)
    return pd.DataFrame(data)


def _as_formats(frame: pd.DataFrame) -> dict[str, object]:
    """The same table as pandas (object and category), polars, pyarrow and numpy."""
    cat_cols = [c for c in frame.columns if c.startswith("cat")]
    as_category = frame.copy()
    for c in cat_cols:
        as_category[c] = as_category[c].astype("category")
    arrow = pa.Table.from_pandas(frame, preserve_index=False)
    return {
        "pandas-object": frame,
        "pandas-category": as_category,
        "polars": pl.from_arrow(arrow),
        "pyarrow": arrow,
        "pyarrow-batch": arrow.to_batches()[0] if arrow.num_rows else arrow,
        "pyarrow-dictionary": pa.Table.from_pandas(as_category, preserve_index=False),
        "numpy": frame.to_numpy(dtype=object),
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test__formats__equivalent_tables__identical_encodings(frame: pd.DataFrame) -> None:
    encodings = {}
    cat_positions = [j for j, c in enumerate(frame.columns) if c.startswith("cat")]
    for name, table in _as_formats(frame).items():
        # numpy has no dtypes per column: a categorical column of None only is named explicitly
        pre = TablePreprocessor(categorical_features=cat_positions)
        encodings[name] = pre.fit_transform(table)
        assert pre.categorical_mask_.tolist() == [c.startswith("cat") for c in frame.columns]
    reference = encodings.pop("pandas-object")
    for name, encoded in encodings.items():
        np.testing.assert_array_equal(encoded, reference, err_msg=name)


def test__categorical__codes__missing_unseen_and_known() -> None:
    pre = TablePreprocessor()
    train = pd.DataFrame({"c": ["b", "a", None, "b"]})
    np.testing.assert_array_equal(pre.fit_transform(train)[:, 0], [3, 2, MISSING_CODE, 3])
    assert pre.categories_ == [["a", "b"]]
    assert pre.cardinalities_.tolist() == [4]
    np.testing.assert_array_equal(pre.transform(pd.DataFrame({"c": ["z", "a", np.nan]}))[:, 0], [UNSEEN_CODE, 2, MISSING_CODE])


def test__categorical__numbers_named_by_user__canonical_numeric_order() -> None:
    pre = TablePreprocessor(categorical_features=["k"])
    pre.fit(pd.DataFrame({"k": [10, 2, 2, 1]}))
    assert pre.categories_ == [["1", "2", "10"]]
    # an int at fit and the same value as float or string at predict map to the same code
    codes = pre.transform(pd.DataFrame({"k": ["10", 2.0, 1]}))[:, 0]
    np.testing.assert_array_equal(codes, [4, 3, 2])


def test__dtypes__bool_and_string__categorical_numeric_object__numeric() -> None:
    frame = pd.DataFrame(
        {
            "flag": [True, False, True],
            "text": pd.array(["x", "y", None], dtype="string"),
            "numbers_as_objects": pd.Series([1, 2.5, None], dtype=object),
            "ints": [1, 2, 3],
        }
    )
    pre = TablePreprocessor()
    encoded = pre.fit_transform(frame)
    assert pre.categorical_mask_.tolist() == [True, True, False, False]
    assert np.isnan(encoded[2, 2])


def test__columns__reordered_by_name__same_encoding() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]})
    pre = TablePreprocessor()
    encoded = pre.fit_transform(frame)
    np.testing.assert_array_equal(pre.transform(frame[["b", "a"]]), encoded)


@pytest.mark.parametrize(
    ("predict_frame", "fragment"),
    [
        (pd.DataFrame({"a": [1.0]}), "missing now: ['b']"),
        (pd.DataFrame({"a": [1.0], "b": ["x"], "c": [0]}), "not seen at fit: ['c']"),
    ],
)
def test__columns__missing_or_extra__error_names_them(predict_frame: pd.DataFrame, fragment: str) -> None:
    pre = TablePreprocessor().fit(pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]}))
    with pytest.raises(TabFMValidationError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        pre.transform(predict_frame)


def test__numpy__wrong_width__error_gives_both_counts() -> None:
    pre = TablePreprocessor().fit(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"X has 3 features, but .* expecting 4 features"):
        pre.transform(np.zeros((2, 3)))


def test__numeric_column__string_at_predict__error_names_column_and_row() -> None:
    pre = TablePreprocessor().fit(pd.DataFrame({"age": [30.0, 40.0]}))
    with pytest.raises(TabFMValidationError, match=r"column 'age' .* row 1 holds 'forty'"):
        pre.transform(pd.DataFrame({"age": pd.Series([31.0, "forty"], dtype=object)}))


@pytest.mark.parametrize("bad", [np.inf, -np.inf, 1e300])
def test__numeric__infinite_or_too_large__error_names_column_and_row(bad: float) -> None:
    frame = pd.DataFrame({"ok": [1.0, 2.0, 3.0], "income": [1.0, bad, 2.0]})
    with pytest.raises(TabFMValidationError, match=r"column 'income', row 1"):
        TablePreprocessor().fit(frame)


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        (pd.DataFrame({"a": []}), "no rows"),
        (pd.DataFrame(index=range(3)), "no columns"),
        (np.zeros((0, 2)), "no rows"),
        (np.zeros((3, 0)), "no columns"),
    ],
)
def test__empty_input__clear_error(table: object, fragment: str) -> None:
    with pytest.raises(TabFMValidationError, match=fragment):
        TablePreprocessor().fit(table)


def test__sparse_and_scalars__type_errors() -> None:
    import scipy.sparse as sp

    with pytest.raises(TabFMTypeError, match="sparse"):
        TablePreprocessor().fit(sp.csr_matrix(np.eye(3)))
    with pytest.raises(TabFMTypeError):
        TablePreprocessor().fit("a,b\n1,2")


def test__categorical_features__unknown_name__error_names_it() -> None:
    with pytest.raises(TabFMValidationError, match="'zip'"):
        TablePreprocessor(categorical_features=["zip"]).fit(pd.DataFrame({"a": [1, 2]}))


def test__state__to_dict_from_dict__same_encoding() -> None:
    frame = pd.DataFrame({"a": [1.0, None, 3.0], "b": ["x", "y", None]})
    pre = TablePreprocessor()
    encoded = pre.fit_transform(frame)
    import json

    restored = TablePreprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    np.testing.assert_array_equal(restored.transform(frame), encoded)


# -- targets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("y", "classes"),
    [
        (["b", "a", "b"], ["a", "b"]),
        ([True, False, True], [False, True]),
        ([3, 1, 3], [1, 3]),
        (pd.Series([2.0, 1.0, 2.0]), [1, 2]),
        (pl.Series(["y", "x", "y"]), ["x", "y"]),
        (pa.array(["y", "x", "y"]).dictionary_encode(), ["x", "y"]),
    ],
)
def test__classification_target__types__sorted_classes(y: object, classes: list) -> None:
    codes, found = encode_classification_target(y)
    assert found.tolist() == classes
    assert codes.dtype == np.int64 and codes.max() == len(classes) - 1


@pytest.mark.parametrize(
    ("y", "fragment"),
    [
        ([1.0, np.nan, 2.0], "missing value.*row 1"),
        (["a", None, "b"], "missing value.*row 1"),
        (["a", "a", "a"], "single class"),
        ([0.5, 1.5, 2.25], "Unknown label type"),
        (["a", 1, "b"], "mixes strings and numbers"),
    ],
)
def test__classification_target__bad__clear_error(y: list, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        encode_classification_target(y)


def test__regression_target__nan_and_inf__error_names_row() -> None:
    with pytest.raises(TabFMValidationError, match="row 2"):
        encode_regression_target([1.0, 2.0, np.nan])
    with pytest.raises(TabFMValidationError, match=r"infinite.*row 0"):
        encode_regression_target(np.array([np.inf, 1.0]))


# -- numeric scaling ---------------------------------------------------------------------------


def test__numeric_scaler__quantile__monotone_normal_and_keeps_nan() -> None:
    rng = np.random.default_rng(0)
    X = rng.lognormal(size=(2000, 2))
    scaler = NumericScaler("quantile").fit(X)
    out = scaler.transform(X)
    assert abs(np.median(out[:, 0])) < 0.05 and 0.9 < out[:, 0].std() < 1.1
    order = np.argsort(X[:, 1])
    assert np.all(np.diff(out[order, 1]) >= 0)
    assert np.isnan(scaler.transform(np.array([[np.nan, 1.0]]))[0, 0])


def test__numeric_scaler__standard__zero_mean_unit_std() -> None:
    X = np.random.default_rng(1).normal(5.0, 3.0, size=(500, 3))
    out = NumericScaler("standard").fit(X).transform(X)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=0), 1.0, atol=1e-4)


def test__target_quantiles__normal_scores_ties_and_bounded_inverse() -> None:
    rng = np.random.default_rng(0)
    y = np.concatenate([np.exp(rng.normal(size=500)), np.zeros(100)])  # skewed, with a tied atom at 0
    tq = TargetQuantiles().fit(y)
    z = tq.transform(y)
    assert abs(z.mean()) < 0.1 and 0.8 < z.std() < 1.1  # a skewed target spreads like a normal one
    assert np.all(np.diff(z[np.argsort(y, kind="stable")]) >= 0)  # monotone
    assert np.unique(z[y == 0]).size == 1  # tied targets share one score, the middle of their ranks
    np.testing.assert_allclose(tq.inverse(z[:500]), y[:500], rtol=1e-3)  # round trip inside the range
    assert np.all(np.isfinite(tq.transform([-1e9, 1e9])))
    np.testing.assert_allclose(tq.inverse([-40.0, 40.0]), [y.min(), y.max()])  # never beyond the training range


@pytest.mark.parametrize("seed", range(4))
def test__column_quantiles__numpys_nanquantile_bit_for_bit(seed: int) -> None:
    """Ties, missing cells, an all-missing column, a single value, and the quantile map's 1,000 levels."""
    import warnings

    rng = np.random.default_rng(seed)
    X = np.round(rng.normal(size=(300, 5)) * 10 ** rng.uniform(-3, 4), 1)
    X[rng.random(X.shape) < 0.3] = np.nan
    X[:, 3] = np.nan
    X[1:, 4] = np.nan
    for q in (np.linspace(0.0, 1.0, 1000), np.array([0.005, 0.995])):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the all-NaN column
            expected = np.nanquantile(X, q, axis=0)
        np.testing.assert_array_equal(column_quantiles(X, q), expected)


def test__quantile_speed_benchmark__prints_both_timings(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.quantile_speed import main

    assert main(["--repeats", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "missing" in line]
    assert len(rows) == 4 and all(line.endswith("x |") for line in rows)
