"""Request bodies to Arrow tables, chosen by Content-Type, and Arrow IPC out.

Every format ends as a ``pyarrow.Table`` that the estimators' one preprocessing path reads, so a
model trained from CSV predicts the same for the same rows sent as JSON, Parquet or Arrow.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np
import pyarrow as pa

from tabfm.errors import TabFMValidationError

CSV = "text/csv"
JSON = "application/json"
PARQUET = "application/vnd.apache.parquet"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
ARROW_FILE = "application/vnd.apache.arrow.file"
MULTIPART = "multipart/form-data"

TABLE_TYPES = (CSV, JSON, PARQUET, ARROW_STREAM)
_ALIASES = {
    "application/csv": CSV,
    "text/plain": CSV,
    "application/parquet": PARQUET,
    "application/x-parquet": PARQUET,
    "application/vnd.apache.arrow": ARROW_STREAM,
    "application/x-arrow": ARROW_STREAM,
    ARROW_FILE: ARROW_FILE,
}
_EXTENSIONS = {".csv": CSV, ".json": JSON, ".parquet": PARQUET, ".pq": PARQUET, ".arrows": ARROW_STREAM, ".arrow": ARROW_FILE}


class UnsupportedMediaType(TabFMValidationError):
    """The body's Content-Type is not a table format the service reads (415)."""


class TooLarge(TabFMValidationError):
    """The request holds more rows or bytes than the service accepts (413)."""


def media_type(content_type: str | None) -> str:
    """The bare media type of a Content-Type header, lower case, aliases resolved."""
    bare = (content_type or "").split(";", 1)[0].strip().lower()
    return _ALIASES.get(bare, bare)


def media_type_of_file(content_type: str | None, filename: str | None) -> str:
    """The format of a multipart file part: its own Content-Type, else its file name's extension."""
    bare = media_type(content_type)
    if bare in (*TABLE_TYPES, ARROW_FILE):
        return bare
    name = (filename or "").lower()
    for ext, kind in _EXTENSIONS.items():
        if name.endswith(ext):
            return kind
    raise UnsupportedMediaType(
        f"file part {filename!r} has Content-Type {content_type!r}; send one of {list(TABLE_TYPES)} "
        "or name the file *.csv, *.json, *.parquet or *.arrows"
    )


def read_table(data: bytes, content_type: str | None, *, what: str = "body") -> pa.Table:
    """Parse ``data`` as a table of the format named by ``content_type``.

    Raises
    ------
    UnsupportedMediaType
        For a Content-Type that is not a table format.
    TabFMValidationError
        For a body that does not parse, an empty table or a column of an unsupported type.
    """
    kind = media_type(content_type)
    if kind not in (*TABLE_TYPES, ARROW_FILE):
        raise UnsupportedMediaType(
            f"Content-Type {content_type!r} is not a table format; send one of {list(TABLE_TYPES)} "
            f"or {MULTIPART}"
        )
    if not data.strip():
        raise TabFMValidationError(f"{what} is empty: send a table with a header and at least one row")
    try:
        if kind == CSV:
            table = _read_csv(data)
        elif kind == JSON:
            table = records_to_table(json.loads(data), what=what)
        elif kind == PARQUET:
            import pyarrow.parquet as pq

            table = pq.read_table(io.BytesIO(data))
        elif kind == ARROW_FILE:
            table = pa.ipc.open_file(io.BytesIO(data)).read_all()
        else:
            table = pa.ipc.open_stream(io.BytesIO(data)).read_all()
    except TabFMValidationError:
        raise
    except (pa.ArrowException, ValueError, OverflowError, TypeError, UnicodeDecodeError, OSError) as error:
        raise TabFMValidationError(f"{what} is not a valid {kind} table: {_short(error)}") from None
    return normalise(table, what=what)


def _read_csv(data: bytes) -> pa.Table:
    import pyarrow.csv as pcsv

    # Empty cells and the usual spellings are missing values; strings stay strings (categorical).
    convert = pcsv.ConvertOptions(null_values=["", "NA", "NaN", "nan", "null", "None"], strings_can_be_null=True)
    return pcsv.read_csv(io.BytesIO(data), convert_options=convert)


def records_to_table(records: Any, *, what: str = "body") -> pa.Table:
    """A table from JSON records (a list of objects); keys missing in a record are missing values."""
    if not isinstance(records, list):
        raise TabFMValidationError(
            f"{what} must be a JSON list of records (objects mapping column to value), however it is a "
            f"{type(records).__name__}"
        )
    names: dict[str, None] = {}
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise TabFMValidationError(f"{what}[{i}] must be an object mapping column to value, however it is {record!r:.80}")
        names.update(dict.fromkeys(record))
    columns = {}
    for name in names:
        values = [record.get(name) for record in records]
        for i, v in enumerate(values):
            if v is not None and not isinstance(v, (str, int, float, bool)):
                raise TabFMValidationError(
                    f"column {name!r}, row {i}: values must be numbers, strings, booleans or null, however: {v!r:.80}"
                )
        if any(isinstance(v, str) for v in values) and any(isinstance(v, (int, float)) for v in values):
            raise TabFMValidationError(
                f"column {name!r} mixes numbers and strings; send one type per column (null for missing)"
            )
        if any(isinstance(v, float) for v in values):
            values = [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in values]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowException, OverflowError) as error:
            raise TabFMValidationError(f"column {name!r} cannot be read: {_short(error)}") from None
    return pa.table(columns) if columns else pa.table({})


def normalise(table: pa.Table, *, what: str = "body") -> pa.Table:
    """Check the columns and cast them to the types the preprocessing path reads."""
    names = table.column_names
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TabFMValidationError(f"{what} has duplicated column names: {duplicates}")
    if table.num_columns == 0:
        raise TabFMValidationError(f"{what} has no columns")
    if table.num_rows == 0:
        raise TabFMValidationError(f"{what} has no rows (columns: {names[:20]})")
    arrays = []
    for name, column in zip(names, table.columns, strict=True):
        t = column.type
        if pa.types.is_dictionary(t):
            column = column.cast(t.value_type) if _plain(t.value_type) else column
            t = column.type
        if pa.types.is_null(t):
            column = column.cast(pa.float64())
        elif pa.types.is_decimal(t) or pa.types.is_float16(t):
            column = column.cast(pa.float64())
        elif pa.types.is_large_string(t):
            column = column.cast(pa.string())
        elif not _plain(t):
            raise TabFMValidationError(
                f"column {name!r} has type {t}, which tabfm does not read; send numbers, strings or booleans"
            )
        arrays.append(column)
    return pa.table(arrays, names=names)


def _plain(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
        or pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)
        or pa.types.is_decimal(t)
    )


def split_target(table: pa.Table, target: str) -> tuple[pa.Table, pa.ChunkedArray]:
    """``(features, target column)``; 422 naming the column when it is absent or the only one."""
    if target not in table.column_names:
        raise TabFMValidationError(
            f"target column {target!r} is not in the table (columns: {table.column_names[:20]})"
        )
    if table.num_columns < 2:
        raise TabFMValidationError(f"the table has only the target column {target!r}; add feature columns")
    y = table.column(target)
    if y.null_count:
        raise TabFMValidationError(f"target column {target!r} has {y.null_count} missing value(s); drop those rows")
    return table.drop_columns([target]), y


def check_rows(table: pa.Table, limit: int, what: str) -> None:
    """413 when ``table`` has more rows than ``limit``."""
    if table.num_rows > limit:
        raise TooLarge(f"{what} has {table.num_rows} rows, more than the limit of {limit} rows per request")


def infer_task(y: pa.ChunkedArray, max_classes: int = 20) -> str:
    """Classification for non-numeric targets and integer-valued ones with few distinct values."""
    t = y.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)):
        return "classification"
    values = np.asarray(y.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    finite = values[np.isfinite(values)]
    integral = bool(np.all(np.mod(finite, 1) == 0))
    n_unique = len(np.unique(finite))
    if pa.types.is_integer(t) or integral:
        return "classification" if n_unique <= max_classes else "regression"
    return "regression"


def to_arrow_ipc(columns: dict[str, Any]) -> bytes:
    """An Arrow IPC stream holding ``columns`` (name -> 1-d array)."""
    table = pa.table({k: pa.array(v) for k, v in columns.items()})
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def json_value(v: Any) -> Any:
    """A numpy scalar as a JSON value (NaN as null)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]
