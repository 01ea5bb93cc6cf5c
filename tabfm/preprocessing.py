"""The one preprocessing path of tabfm: tables in (pandas, polars, pyarrow, numpy), arrays out.

Every estimator and the benchmark runner go through :class:`TablePreprocessor`, so the same table
gives the same encoding whatever its container. The encoding is deliberately model-agnostic:

* numeric columns become float32 with NaN for missing cells (each model decides how to use it);
* categorical columns become integer codes stored as float32: ``0`` = missing, ``1`` = a category
  not seen at fit, ``2..`` = the categories seen at fit, in a canonical order (numbers by value,
  then strings), so a column's codes do not depend on its dtype or container.

A column is categorical when its dtype says so (pandas ``category``/``string``/``object`` holding
strings/``bool``, Arrow ``dictionary``/``string``/``bool``, polars ``Categorical``/``Enum``/
``String``/``Boolean``) or when the user names it in ``categorical_features``.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from tabfm.errors import TabFMTypeError, TabFMValidationError

MISSING_CODE = 0
UNSEEN_CODE = 1
FIRST_CATEGORY_CODE = 2


# ---------------------------------------------------------------------------------------------
# Reading any supported container into columns
# ---------------------------------------------------------------------------------------------


@dataclass
class _Column:
    """One input column: its values and whether its dtype marks it as categorical."""

    values: np.ndarray  # float64 for numeric dtypes, object otherwise; missing as NaN / None
    categorical_dtype: bool


def _is_missing_scalar(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    # pandas.NA, pandas.NaT and numpy datetime NaT, without importing pandas here
    try:
        return bool(value != value)
    except (TypeError, ValueError):
        return type(value).__name__ in {"NAType", "NaTType"}


def _object_column(values: np.ndarray) -> _Column:
    """An object column is numeric when every present value is a real number (not bool)."""
    numeric = all(
        _is_missing_scalar(v) or (isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)))
        for v in values
    )
    if numeric:
        out = np.array([np.nan if _is_missing_scalar(v) else float(v) for v in values], dtype=np.float64)
        return _Column(out, categorical_dtype=False)
    return _Column(values.astype(object), categorical_dtype=True)


def _from_arrow_table(table: Any) -> tuple[list[str], list[_Column]]:
    import pyarrow as pa
    import pyarrow.types as pat

    names, columns = [], []
    for name, chunked in zip(table.column_names, table.columns, strict=True):
        arr = chunked.combine_chunks() if isinstance(chunked, pa.ChunkedArray) else chunked
        typ = arr.type
        if pat.is_dictionary(typ):
            arr = arr.dictionary_decode()
            typ = arr.type
        if pat.is_boolean(typ) or pat.is_string(typ) or pat.is_large_string(typ) or (
            hasattr(pat, "is_string_view") and pat.is_string_view(typ)
        ):
            columns.append(_Column(np.array(arr.to_pylist(), dtype=object), categorical_dtype=True))
        elif pat.is_integer(typ) or pat.is_floating(typ) or pat.is_decimal(typ):
            values = arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
            columns.append(_Column(np.asarray(values, dtype=np.float64), categorical_dtype=False))
        elif pat.is_null(typ):
            columns.append(_Column(np.full(len(arr), np.nan), categorical_dtype=False))
        else:
            raise TabFMTypeError(
                f"column {name!r} has Arrow type {typ}, which tabfm cannot read; "
                "convert it to numbers, strings or categories first"
            )
        names.append(str(name))
    return names, columns


def _from_pandas(frame: Any) -> tuple[list[Any], list[_Column]]:
    import pandas as pd

    names, columns = [], []
    for position, name in enumerate(frame.columns):
        series = frame.iloc[:, position]
        dtype = series.dtype
        if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(dtype):
            values = series.astype(object).to_numpy()
            columns.append(_Column(values, categorical_dtype=True))
        elif pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
            columns.append(_Column(series.astype(object).to_numpy(), categorical_dtype=True))
        elif pd.api.types.is_numeric_dtype(dtype):
            values = series.to_numpy(dtype=np.float64, na_value=np.nan)
            columns.append(_Column(values, categorical_dtype=False))
        elif pd.api.types.is_object_dtype(dtype):
            columns.append(_object_column(series.to_numpy()))
        else:
            raise TabFMTypeError(
                f"column {name!r} has dtype {dtype}, which tabfm cannot read; "
                "convert it to numbers, strings or categories first"
            )
        names.append(name)
    return names, columns


def _from_numpy(array: np.ndarray) -> tuple[None, list[_Column]]:
    if array.ndim == 1:
        raise TabFMValidationError(
            "Expected a 2D table, got a 1D array instead. Reshape your data with X.reshape(-1, 1) "
            "for a single feature or X.reshape(1, -1) for a single row"
        )
    if array.ndim != 2:
        raise TabFMValidationError(f"Expected a 2D table, however: X.ndim={array.ndim}")
    if array.dtype.kind in "biuf":
        categorical = array.dtype.kind == "b"
        data = array.astype(object if categorical else np.float64)
        return None, [_Column(data[:, j], categorical_dtype=categorical) for j in range(array.shape[1])]
    if array.dtype.kind in "USO":
        data = array.astype(object)
        return None, [_object_column(data[:, j]) for j in range(array.shape[1])]
    if array.dtype.kind == "c":
        raise TabFMValidationError("Complex data not supported: X has a complex dtype")
    raise TabFMTypeError(f"X has numpy dtype {array.dtype}, which tabfm cannot read")


def read_table(X: Any) -> tuple[list[Any] | None, list[_Column]]:
    """Split any supported table into ``(column names or None, columns)``."""
    module = type(X).__module__.split(".")[0]
    if hasattr(X, "toarray") and hasattr(X, "nnz"):
        raise TabFMTypeError(
            "sparse input is not supported: pass a dense table (X.toarray()) or a data frame"
        )
    if module == "pandas" and hasattr(X, "columns") and hasattr(X, "iloc"):
        return _from_pandas(X)
    if module == "polars" and hasattr(X, "to_arrow"):
        if hasattr(X, "collect") and not hasattr(X, "shape"):  # a LazyFrame
            X = X.collect()
        return _from_arrow_table(X.to_arrow())
    if module == "pyarrow" and hasattr(X, "column_names"):
        return _from_arrow_table(X)
    if isinstance(X, (str, bytes, dict)) or X is None:
        raise TabFMTypeError(
            f"X must be a table (pandas, polars, pyarrow or a 2D numpy array), however: type(X)={type(X).__name__}"
        )
    try:
        array = np.asarray(X)
    except Exception as exc:  # ragged lists and similar
        raise TabFMTypeError(f"X cannot be read as a table: {exc}") from exc
    if array.dtype == object and array.ndim == 0:
        raise TabFMTypeError(f"X must be a table, however: type(X)={type(X).__name__}")
    return _from_numpy(array)


def n_rows_of(X: Any) -> int:
    """Number of rows of any supported table or target, without converting it if it can."""
    if hasattr(X, "shape") and len(getattr(X, "shape", ())) >= 1:
        return int(X.shape[0])
    if hasattr(X, "num_rows"):
        return int(X.num_rows)
    try:
        return len(X)
    except TypeError:
        array = np.asarray(X)
        return int(array.shape[0]) if array.ndim else 0


# ---------------------------------------------------------------------------------------------
# Categorical keys: one canonical string per category, whatever its Python type
# ---------------------------------------------------------------------------------------------


def _category_key(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "True" if value else "False"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        as_float = float(value)
        return str(int(as_float)) if as_float.is_integer() else repr(as_float)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _sort_key(key: str) -> tuple[int, float, str]:
    try:
        return (0, float(key), key)
    except ValueError:
        return (1, 0.0, key)


def _categorical_keys(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (missing mask, canonical keys as an object array with '' where missing)."""
    import pandas as pd

    codes, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
    missing = codes < 0
    unique_keys = np.array([_category_key(u) for u in uniques] + [""], dtype=object)
    return missing, unique_keys[codes]  # code -1 picks the trailing ""


# ---------------------------------------------------------------------------------------------
# The preprocessor
# ---------------------------------------------------------------------------------------------


class TablePreprocessor:
    """Encode tables into float32 arrays, one encoding whatever the input container.

    Parameters
    ----------
    categorical_features : list of str or int, array of bool, or None
        Columns to treat as categorical in addition to those whose dtype says so. Names need a
        table with column names; integers are positions; a boolean mask has one entry a column.

    Attributes
    ----------
    n_features_in_ : int
    feature_names_in_ : ndarray of str, only when the table had string column names
    categorical_mask_ : ndarray of bool, shape (n_features_in_,)
    categories_ : list of (list of str or None)
        The canonical keys of each categorical column's categories (code ``2 + i`` for the i-th),
        None for numeric columns.
    cardinalities_ : ndarray of int, shape (n_features_in_,)
        Number of codes of each categorical column, missing and unseen included; 0 for numeric.
    """

    owner = "TablePreprocessor"  # the estimator's class name, for error messages

    def __init__(self, categorical_features: Any = None) -> None:
        self.categorical_features = categorical_features

    # -- fit ----------------------------------------------------------------------------------

    def fit(self, X: Any) -> TablePreprocessor:
        self.fit_transform(X)
        return self

    def fit_transform(self, X: Any) -> np.ndarray:
        names, columns = read_table(X)
        _check_not_empty(columns, n_rows_of(X))
        has_names = names is not None and all(isinstance(n, str) for n in names)
        if names is not None and not has_names and any(isinstance(n, str) for n in names):
            raise TabFMTypeError(
                "Feature names are only supported if all input features have string names, "
                f"however the column names have types {sorted({type(n).__name__ for n in names})}; "
                "convert them with X.columns = X.columns.astype(str)"
            )
        self.n_features_in_ = len(columns)
        if has_names:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        forced = self._resolve_categorical_features(names if has_names else None)
        self.categorical_mask_ = np.array(
            [col.categorical_dtype or j in forced for j, col in enumerate(columns)], dtype=bool
        )
        self.categories_: list[list[str] | None] = []
        for column in columns:
            if self.categorical_mask_[len(self.categories_)]:
                missing, keys = _categorical_keys(column.values)
                self.categories_.append(sorted(set(keys[~missing].tolist()), key=_sort_key))
            else:
                self.categories_.append(None)
        self.cardinalities_ = np.array(
            [0 if c is None else len(c) + FIRST_CATEGORY_CODE for c in self.categories_], dtype=np.int64
        )
        self._lookup = [None if c is None else {k: i + FIRST_CATEGORY_CODE for i, k in enumerate(c)} for c in self.categories_]
        return self._encode(columns, self._display_names(names))

    def _resolve_categorical_features(self, names: list[str] | None) -> set[int]:
        spec = self.categorical_features
        if spec is None or (isinstance(spec, str) and spec == "auto"):
            return set()
        spec_list = list(np.asarray(spec).tolist()) if not isinstance(spec, (list, tuple)) else list(spec)
        if spec_list and all(isinstance(v, (bool, np.bool_)) for v in spec_list):
            if len(spec_list) != self.n_features_in_:
                raise TabFMValidationError(
                    f"categorical_features as a boolean mask needs one entry per column ({self.n_features_in_}), "
                    f"however it has {len(spec_list)}"
                )
            return {j for j, flag in enumerate(spec_list) if flag}
        out = set()
        for item in spec_list:
            if isinstance(item, str):
                if names is None or item not in names:
                    raise TabFMValidationError(
                        f"categorical_features names column {item!r}, which is not a column of X"
                        + ("" if names is None else f" (columns: {list(names)[:20]})")
                    )
                out.add(names.index(item))
            elif isinstance(item, numbers.Integral) and -self.n_features_in_ <= int(item) < self.n_features_in_:
                out.add(int(item) % self.n_features_in_)
            else:
                raise TabFMValidationError(
                    f"categorical_features entries must be column names or positions in [0, {self.n_features_in_}), "
                    f"however: {item!r}"
                )
        return out

    # -- transform ----------------------------------------------------------------------------

    def transform(self, X: Any) -> np.ndarray:
        if not hasattr(self, "categorical_mask_"):
            raise TabFMValidationError("this TablePreprocessor is not fitted yet; call fit first")
        names, columns = read_table(X)
        _check_not_empty(columns, n_rows_of(X))
        columns, display = self._align(names, columns)
        return self._encode(columns, display)

    def _align(self, names: list[Any] | None, columns: list[_Column]) -> tuple[list[_Column], list[str]]:
        """Match the columns of X to those seen at fit: by name when both have names."""
        fitted_names = getattr(self, "feature_names_in_", None)
        has_names = names is not None and all(isinstance(n, str) for n in names)
        if fitted_names is not None and has_names:
            expected = list(fitted_names)
            missing = [n for n in expected if n not in names]
            extra = [n for n in names if n not in expected]
            if missing or extra:
                parts = []
                if missing:
                    parts.append(f"columns seen at fit but missing now: {missing}")
                if extra:
                    parts.append(f"columns not seen at fit: {extra}")
                raise TabFMValidationError(
                    "The feature names should match those that were passed during fit; " + "; ".join(parts)
                )
            if len(set(names)) != len(names):
                raise TabFMValidationError(f"X has duplicated column names: {names}")
            order = [names.index(n) for n in expected]
            return [columns[i] for i in order], expected
        if len(columns) != self.n_features_in_:
            raise TabFMValidationError(
                f"X has {len(columns)} features, but {self.owner} is expecting {self.n_features_in_} features as input."
            )
        if fitted_names is not None and not has_names:
            warnings.warn(
                f"X does not have valid feature names, but {self.owner} was fitted with feature names; "
                "columns are taken by position",
                UserWarning,
                stacklevel=4,
            )
            return columns, list(fitted_names)
        if fitted_names is None and has_names:
            warnings.warn(
                f"X has feature names, but {self.owner} was fitted without feature names; "
                "columns are taken by position",
                UserWarning,
                stacklevel=4,
            )
        return columns, self._display_names(None)

    def _display_names(self, names: list[Any] | None) -> list[str]:
        if names is not None:
            return [str(n) for n in names]
        fitted = getattr(self, "feature_names_in_", None)
        return list(fitted) if fitted is not None else [f"x{j}" for j in range(self.n_features_in_)]

    def _encode(self, columns: list[_Column], display: list[str]) -> np.ndarray:
        n_rows = len(columns[0].values)
        out = np.empty((n_rows, len(columns)), dtype=np.float32)
        for j, column in enumerate(columns):
            if self.categorical_mask_[j]:
                out[:, j] = self._encode_categorical(j, column)
            else:
                out[:, j] = _encode_numeric(column, display[j])
        return out

    def _encode_categorical(self, j: int, column: _Column) -> np.ndarray:
        missing, keys = _categorical_keys(column.values)
        lookup = self._lookup[j]
        codes = np.fromiter((lookup.get(k, UNSEEN_CODE) for k in keys), dtype=np.float32, count=len(keys))
        codes[missing] = MISSING_CODE
        return codes

    # -- serialisation ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (the categorical mapping is what clients in other languages need)."""
        names = getattr(self, "feature_names_in_", None)
        return {
            "n_features_in": int(self.n_features_in_),
            "feature_names_in": None if names is None else [str(n) for n in names],
            "categorical_mask": self.categorical_mask_.tolist(),
            "categories": self.categories_,
            "codes": {"missing": MISSING_CODE, "unseen": UNSEEN_CODE, "first_category": FIRST_CATEGORY_CODE},
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any], categorical_features: Any = None) -> TablePreprocessor:
        self = cls(categorical_features=categorical_features)
        self.n_features_in_ = int(state["n_features_in"])
        if state.get("feature_names_in") is not None:
            self.feature_names_in_ = np.asarray(state["feature_names_in"], dtype=object)
        self.categorical_mask_ = np.asarray(state["categorical_mask"], dtype=bool)
        self.categories_ = [None if c is None else list(c) for c in state["categories"]]
        self.cardinalities_ = np.array(
            [0 if c is None else len(c) + FIRST_CATEGORY_CODE for c in self.categories_], dtype=np.int64
        )
        self._lookup = [None if c is None else {k: i + FIRST_CATEGORY_CODE for i, k in enumerate(c)} for c in self.categories_]
        return self


def _check_not_empty(columns: list[_Column], n_rows: int) -> None:
    if not columns:
        raise TabFMValidationError(
            f"0 feature(s) (shape=({n_rows}, 0)) while a minimum of 1 is required. X has no columns"
        )
    if len(columns[0].values) == 0:
        raise TabFMValidationError(
            f"0 sample(s) (shape=(0, {len(columns)})) while a minimum of 1 is required. X has no rows"
        )


def _encode_numeric(column: _Column, name: str) -> np.ndarray:
    values = column.values
    if values.dtype == object:
        converted = np.empty(len(values), dtype=np.float64)
        for i, v in enumerate(values):
            if _is_missing_scalar(v):
                converted[i] = np.nan
            elif isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)):
                converted[i] = float(v)
            else:
                try:
                    converted[i] = float(v)
                except (TypeError, ValueError):
                    raise TabFMValidationError(
                        f"column {name!r} is numeric (it was at fit) but row {i} holds {v!r}; "
                        "fix the value or declare the column in categorical_features"
                    ) from None
        values = converted
    with np.errstate(over="ignore"):
        out = values.astype(np.float32)
    bad = np.isinf(out)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise TabFMValidationError(
            f"Input contains infinity or a value too large for dtype('float32'): column {name!r}, "
            f"row {row} holds {values[row]!r} ({int(bad.sum())} such cell(s)); replace it with NaN "
            "to treat it as missing"
        )
    return out


# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------


def _target_to_numpy(y: Any) -> np.ndarray:
    module = type(y).__module__.split(".")[0]
    if module == "pandas":
        if getattr(y, "ndim", 1) == 2:
            if y.shape[1] != 1:
                raise TabFMValidationError(f"y must be one column, however: y.shape={y.shape}")
            y = y.iloc[:, 0]
        return y.astype(object).to_numpy() if not _pandas_numeric(y) else y.to_numpy(dtype=np.float64, na_value=np.nan)
    if module == "polars":
        y = y.to_arrow() if hasattr(y, "to_arrow") else y
        module = "pyarrow"
    if module == "pyarrow":
        import pyarrow as pa

        if isinstance(y, (pa.Table, pa.RecordBatch)):
            if y.num_columns != 1:
                raise TabFMValidationError(f"y must be one column, however it has {y.num_columns}")
            y = y.column(0)
        if isinstance(y, pa.ChunkedArray):
            y = y.combine_chunks()
        if pa.types.is_dictionary(y.type):
            y = y.dictionary_decode()
        if pa.types.is_integer(y.type) or pa.types.is_floating(y.type):
            return np.asarray(y.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
        return np.array(y.to_pylist(), dtype=object)
    # lists keep their element types (np.asarray(["a", 1]) would silently make "1" a string)
    array = np.array(y, dtype=object) if isinstance(y, (list, tuple)) else np.asarray(y)
    if array.ndim == 2 and array.shape[1] == 1:
        from sklearn.exceptions import DataConversionWarning

        warnings.warn(
            "A column-vector y was passed when a 1d array was expected; it is flattened",
            DataConversionWarning,
            stacklevel=4,
        )
        array = array.ravel()
    if array.ndim != 1:
        raise TabFMValidationError(f"y must be one-dimensional, however: y.shape={array.shape}")
    return array


def _pandas_numeric(series: Any) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)


def _missing_rows(y: np.ndarray) -> np.ndarray:
    if y.dtype.kind == "f":
        return np.flatnonzero(np.isnan(y))
    if y.dtype == object:
        return np.flatnonzero([_is_missing_scalar(v) for v in y])
    return np.array([], dtype=np.int64)


def _read_target(y: Any) -> np.ndarray:
    """The target as a 1-D array, rejecting empty targets and missing values with the row at fault."""
    array = _target_to_numpy(y)
    if len(array) == 0:
        raise TabFMValidationError("y is empty")
    missing = _missing_rows(array)
    if len(missing):
        raise TabFMValidationError(
            f"y has {len(missing)} missing value(s) (NaN/None), first at row {int(missing[0])}; "
            "drop those rows or fill the target"
        )
    return array


def encode_classification_target(y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(codes, classes)``: int64 codes into the sorted array of class labels."""
    from sklearn.utils.multiclass import check_classification_targets

    array = _read_target(y)
    if array.dtype == object:
        kinds = {type(v).__name__ for v in array}
        if len({("str" if isinstance(v, str) else "number") for v in array}) > 1:
            raise TabFMValidationError(f"y mixes strings and numbers ({sorted(kinds)}); use one type of label")
        if all(isinstance(v, (bool, np.bool_)) for v in array):
            array = array.astype(bool)
        elif all(isinstance(v, numbers.Number) for v in array):
            array = array.astype(np.float64)
        elif all(isinstance(v, str) for v in array):
            array = array.astype(str)
    if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(np.mod(array, 1) == 0):
        array = array.astype(np.int64)
    check_classification_targets(array)
    classes, codes = np.unique(array, return_inverse=True)
    if len(classes) < 2:
        raise TabFMValidationError(
            f"y has a single class ({classes[0]!r}); a classifier needs at least 2 classes"
        )
    return codes.astype(np.int64), classes


def encode_regression_target(y: Any) -> np.ndarray:
    """Return the target as float64, rejecting missing and infinite values with the row at fault."""
    array = _read_target(y)
    try:
        values = array.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise TabFMValidationError(f"a regression target must be numeric: {exc}") from None
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise TabFMValidationError(f"y has infinite value(s), first at row {int(bad[0])}")
    return values


# ---------------------------------------------------------------------------------------------
# Numeric scaling shared by the per-dataset models
# ---------------------------------------------------------------------------------------------


def _middle_levels(x: np.ndarray, knots: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Levels of ``x`` by piecewise-linear interpolation between non-decreasing ``knots``; the
    forward and backward interpolations are averaged, so that values tied with several knots map
    to the middle of their levels."""
    return 0.5 * (np.interp(x, knots, levels) - np.interp(-x, -knots[::-1], -levels[::-1]))


def column_quantiles(X: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``(len(q), F)`` quantiles of each column ignoring NaN: ``np.nanquantile(X, q, axis=0)``
    (linear interpolation, NaN for an all-NaN column) from one sort of the whole array, where
    numpy sorts and interpolates column by column (23x faster for 1,000 levels of 2,246 x 46:
    ``python -m benchmarks.quantile_speed``)."""
    X = np.sort(np.asarray(X, dtype=np.float64), axis=0)  # NaN last
    q = np.asarray(q, dtype=np.float64)
    n = (~np.isnan(X)).sum(axis=0)  # (F,)
    position = q[:, None] * np.maximum(n - 1, 0)[None, :]  # (Q, F)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, np.maximum(n - 1, 0)[None, :])
    t = position - below
    a = np.take_along_axis(X, below, axis=0)
    b = np.take_along_axis(X, above, axis=0)
    # numpy's lerp: from the nearer end, so that the end points are exact.
    out = np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t)
    out[:, n == 0] = np.nan
    return out


class NumericScaler:
    """Fit-on-train scaling of the numeric columns of an encoded table; NaN stays NaN.

    ``method="standard"`` centres and scales each column; ``method="quantile"`` maps each column
    through its training quantiles to a standard normal (robust to skew and outliers). State is
    plain arrays (``loc_``/``scale_`` or ``quantiles_``) so that it can be saved and exported.
    """

    def __init__(self, method: str = "quantile", n_quantiles: int = 1000) -> None:
        self.method = method
        self.n_quantiles = n_quantiles

    def fit(self, X: np.ndarray) -> NumericScaler:
        X = np.asarray(X, dtype=np.float64)
        if self.method == "standard":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
                loc = np.nanmean(X, axis=0)
                scale = np.nanstd(X, axis=0)
            self.loc_ = np.nan_to_num(loc, nan=0.0)
            self.scale_ = np.where(np.isfinite(scale) & (scale > 1e-12), scale, 1.0)
        elif self.method == "quantile":
            n_q = int(max(2, min(self.n_quantiles, X.shape[0])))
            self.references_ = np.linspace(0.0, 1.0, n_q)
            q = column_quantiles(X, self.references_)  # (n_q, F)
            self.quantiles_ = np.nan_to_num(q, nan=0.0)
        else:
            raise TabFMValidationError(f"method must be 'standard' or 'quantile', however: method={self.method!r}")
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if self.method == "standard":
            return ((X - self.loc_) / self.scale_).astype(np.float32)
        from scipy.special import ndtri

        out = np.empty_like(X)
        eps = 1e-7
        for j in range(X.shape[1]):
            out[:, j] = ndtri(np.clip(_middle_levels(X[:, j], self.quantiles_[:, j], self.references_), eps, 1 - eps))
        out[np.isnan(X)] = np.nan
        return out.astype(np.float32)


class TargetQuantiles:
    """Quantile-normal map of a regression target, and its inverse (plain arrays: saved as JSON).

    Training targets are mapped through their own quantiles to a standard normal, so that a
    skewed or heavy-tailed target spreads over the bins of a bar distribution instead of crowding
    a few of them. The knots are up to ``n_quantiles`` order statistics at their plotting
    positions ``(rank + 0.5) / n``: the extreme training targets land at ``±Φ⁻¹(1 - 0.5 / n)``
    (±3.3 for 1,000 rows), not at a clipping bound. The inverse is piecewise linear between the
    training quantiles and constant beyond them (like a tree, it never predicts outside the
    training range).
    """

    def __init__(self, n_quantiles: int = 1000) -> None:
        self.n_quantiles = n_quantiles

    def fit(self, y: np.ndarray) -> TargetQuantiles:
        y = np.sort(np.asarray(y, dtype=np.float64))
        # Knots at evenly spaced order statistics, the smallest and largest included, each at its
        # rank's plotting position.
        ranks = np.unique(np.round(np.linspace(0, len(y) - 1, max(2, self.n_quantiles))).astype(np.int64))
        self.quantiles_ = y[ranks]
        self.references_ = (ranks + 0.5) / len(y)
        return self

    def transform(self, y: np.ndarray) -> np.ndarray:
        from scipy.special import ndtri

        return ndtri(_middle_levels(np.asarray(y, dtype=np.float64), self.quantiles_, self.references_))

    def inverse(self, z: np.ndarray) -> np.ndarray:
        from scipy.special import ndtr

        return np.interp(ndtr(np.asarray(z, dtype=np.float64)), self.references_, self.quantiles_)
