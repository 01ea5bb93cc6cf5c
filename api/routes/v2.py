"""The Open Inference Protocol (v2, as spoken by KServe, Triton and MLServer).

A model takes either one input tensor per feature column (named as the column; FP32/FP64/INT64
for numeric columns, BYTES for categorical strings) or one FP32 matrix of shape (rows, features)
with categorical columns as codes (0 missing, 1 unseen, 2 + i the i-th category of the schema).
Outputs are ``predictions`` and, for classifiers, ``probabilities`` (FP64, columns as the
``classes`` parameter). Triton's binary tensor extension (``Inference-Header-Content-Length``)
works both ways, so ``tritonclient[http]`` runs unchanged.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse

import tabfm
from api.deps import BodyDep, CacheDep, MetricsDep, RecordDep, StoreDep, require_key
from api.runtime import Prediction, ServedModel
from api.schemas import (
    ErrorResponse,
    V2InferRequest,
    V2InferResponse,
    V2Live,
    V2Metadata,
    V2ModelReady,
    V2Ready,
    V2Tensor,
    inline_schema,
)
from api.settings import Settings
from api.store import ModelRecord
from api.tables import check_rows, json_value
from tabfm.errors import TabFMValidationError

router = APIRouter(prefix="/v2", tags=["open inference protocol v2"])
_keyed = [Depends(require_key)]
HEADER_LENGTH = "Inference-Header-Content-Length"
MATRIX_INPUT = "X"

_DTYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}, 409: {"model": ErrorResponse},
    413: {"model": ErrorResponse}, 422: {"model": ErrorResponse},
}


@router.get("", tags=["open inference protocol v2"])
def server_metadata() -> dict[str, Any]:
    """Server name, version and protocol extensions."""
    return {"name": "tabfm", "version": tabfm.__version__, "extensions": ["binary_tensor_data"]}


@router.get("/health/live", response_model=V2Live)
def live() -> V2Live:
    """The process answers."""
    return V2Live(live=True)


@router.get("/health/ready", response_model=V2Ready, responses={503: {"model": V2Ready}})
def ready(store: StoreDep) -> Response:
    """The store answers (models can be created and served)."""
    ok = store.healthy()
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


def _served(record: ModelRecord, cache: Any) -> ServedModel:
    if record.status != "ready":
        detail = "still training" if record.status == "training" else f"failed: {record.error}"
        raise HTTPException(status_code=409, detail=f"model {record.id!r} is {detail}")
    return cache.get(record)


def _prediction_datatype(record: ModelRecord) -> str:
    if record.task == "regression":
        return "FP64"
    classes = record.info.get("classes") or []
    if all(isinstance(c, bool) for c in classes):
        return "BOOL"
    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return "INT64"
    if all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in classes):
        return "FP64"
    return "BYTES"


@router.get("/models/{model_id}", response_model=V2Metadata, dependencies=_keyed, responses=_ERRORS)
@router.get("/models/{model_id}/versions/{version}", response_model=V2Metadata, dependencies=_keyed, responses=_ERRORS,
            include_in_schema=False)
def metadata(record: RecordDep) -> V2Metadata:
    """Inputs (one per feature column, with names, datatypes and shapes) and outputs of a model."""
    schema = record.info.get("schema") or []
    inputs = [V2Tensor(name=c["name"], datatype="BYTES" if c["kind"] == "categorical" else "FP32", shape=[-1, 1]) for c in schema]
    outputs = [V2Tensor(name="predictions", datatype=_prediction_datatype(record), shape=[-1])]
    classes = record.info.get("classes")
    if record.task == "classification":
        outputs.append(V2Tensor(name="probabilities", datatype="FP64", shape=[-1, len(classes or [])]))
    return V2Metadata(
        name=record.id,
        versions=["1"],
        platform="tabfm_onnx",
        inputs=inputs,
        outputs=outputs,
        parameters={
            "kind": record.kind, "task": record.task, "status": record.status, "classes": classes,
            "matrix_input": {"name": MATRIX_INPUT, "datatype": "FP32", "shape": [-1, len(schema)],
                             "categorical_codes": {"missing": 0, "unseen": 1, "first_category": 2}},
            "categories": {c["name"]: c["categories"] for c in schema if c["kind"] == "categorical"},
        },
    )


@router.get("/models/{model_id}/ready", response_model=V2ModelReady, dependencies=_keyed, responses=_ERRORS)
@router.get("/models/{model_id}/versions/{version}/ready", response_model=V2ModelReady, dependencies=_keyed,
            responses=_ERRORS, include_in_schema=False)
def model_ready(record: RecordDep) -> Response:
    """200 with ready=true once the model can predict; 400 with ready=false while it cannot."""
    ok = record.status == "ready"
    return JSONResponse({"name": record.id, "ready": ok}, status_code=200 if ok else 400)


_INFER_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": inline_schema(V2InferRequest)},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                     "description": f"JSON header of {HEADER_LENGTH} bytes, then binary tensors"},
    },
}


@router.post("/models/{model_id}/infer", response_model=V2InferResponse, dependencies=_keyed, responses=_ERRORS,
             openapi_extra={"requestBody": _INFER_BODY})
@router.post("/models/{model_id}/versions/{version}/infer", response_model=V2InferResponse, dependencies=_keyed,
             responses=_ERRORS, include_in_schema=False)
def infer(record: RecordDep, body: BodyDep, request: Request, cache: CacheDep, metrics: MetricsDep) -> Response:
    """Predict for input tensors: one per feature column, or one FP32 matrix named ``X``."""
    settings: Settings = request.app.state.settings
    header_length = request.headers.get(HEADER_LENGTH.lower())
    data = body.data
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise TabFMValidationError(f"{HEADER_LENGTH} must be an integer, however: {header_length[:40]!r}") from None
        if not 0 < n <= len(data):
            raise TabFMValidationError(f"{HEADER_LENGTH}={n} but the body has {len(data)} bytes")
        header, binary = data[:n], data[n:]
    else:
        header, binary = data, b""
    infer_request = V2InferRequest.model_validate_json(header or b"null")
    model = _served(record, cache)
    tensors = _decode_inputs(infer_request, binary)
    names = list(tensors)
    if all(name in model.feature_names for name in names) and names:
        table = model.table_from_columns({k: v.reshape(-1) if v.ndim <= 1 or v.shape[-1] == 1 else _flat_error(k, v) for k, v in tensors.items()})
    elif len(tensors) == 1 and next(iter(tensors.values())).ndim == 2:
        matrix = next(iter(tensors.values()))
        if matrix.dtype.kind not in "fiub":
            raise TabFMValidationError(f"input {names[0]!r}: the feature matrix must be numeric, however its datatype is BYTES")
        table = model.table_from_matrix(matrix.astype(np.float64))
    else:
        raise TabFMValidationError(
            f"inputs must be one tensor per feature column {model.feature_names[:50]} or one (rows, "
            f"{len(model.feature_names)}) FP32 matrix, however the inputs are {names}"
        )
    check_rows(table, settings.max_rows, "the rows to predict")
    prediction = model.predict(table)
    metrics.add_rows(table.num_rows)
    return _encode_outputs(record, prediction, infer_request)


def _flat_error(name: str, value: np.ndarray) -> np.ndarray:
    raise TabFMValidationError(f"input {name!r} must have shape [rows] or [rows, 1], however: shape={list(value.shape)}")


def _decode_inputs(request: V2InferRequest, binary: bytes) -> dict[str, np.ndarray]:
    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for item in request.inputs:
        if item.name in tensors:
            raise TabFMValidationError(f"input {item.name!r} appears twice")
        if any(d < 0 for d in item.shape) or len(item.shape) > 2:
            raise TabFMValidationError(f"input {item.name!r}: shape must be 1 or 2 non-negative dims, however: {item.shape}")
        count = int(np.prod(item.shape)) if item.shape else 1
        datatype = item.datatype.upper()
        if datatype != "BYTES" and datatype not in _DTYPES:
            raise TabFMValidationError(f"input {item.name!r}: datatype {item.datatype!r} is not one of {[*_DTYPES, 'BYTES']}")
        size = (item.parameters or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise TabFMValidationError(f"input {item.name!r}: binary_data_size={size!r} runs past the body")
            chunk = binary[offset : offset + size]
            offset += size
            values = _bytes_tensor(chunk, item.name) if datatype == "BYTES" else _numeric_buffer(chunk, datatype, item.name)
        elif item.data is not None:
            values = _json_tensor(item.data, datatype, item.name)
        else:
            raise TabFMValidationError(f"input {item.name!r} has neither data nor binary_data_size")
        if values.size != count:
            raise TabFMValidationError(f"input {item.name!r}: shape {item.shape} needs {count} values, however it has {values.size}")
        tensors[item.name] = values.reshape(item.shape)
    return tensors


def _numeric_buffer(chunk: bytes, datatype: str, name: str) -> np.ndarray:
    dtype = np.dtype(_DTYPES[datatype]).newbyteorder("<")
    if len(chunk) % dtype.itemsize:
        raise TabFMValidationError(f"input {name!r}: {len(chunk)} bytes is not a whole number of {datatype} values")
    return np.frombuffer(chunk, dtype=dtype).astype(_DTYPES[datatype])


def _bytes_tensor(chunk: bytes, name: str) -> np.ndarray:
    values, offset = [], 0
    while offset < len(chunk):
        if offset + 4 > len(chunk):
            raise TabFMValidationError(f"input {name!r}: truncated BYTES element at byte {offset}")
        (length,) = struct.unpack_from("<I", chunk, offset)
        offset += 4
        if offset + length > len(chunk):
            raise TabFMValidationError(f"input {name!r}: BYTES element of {length} bytes runs past the data")
        values.append(chunk[offset : offset + length].decode("utf-8", errors="replace"))
        offset += length
    return np.array(values, dtype=object)


def _flatten(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _json_tensor(data: list[Any], datatype: str, name: str) -> np.ndarray:
    flat = _flatten(data)
    if datatype == "BYTES":
        if not all(v is None or isinstance(v, str) for v in flat):
            raise TabFMValidationError(f"input {name!r}: BYTES data must be strings")
        return np.array(flat, dtype=object)
    if not all(isinstance(v, (int, float, bool)) or v is None for v in flat):
        raise TabFMValidationError(f"input {name!r}: {datatype} data must be numbers")
    try:
        if datatype.startswith("FP"):
            return np.array([np.nan if v is None else v for v in flat], dtype=_DTYPES[datatype])
        if any(v is None for v in flat):
            raise TabFMValidationError(f"input {name!r}: {datatype} data cannot hold null; use FP32 with NaN")
        return np.array(flat, dtype=_DTYPES[datatype])
    except (OverflowError, ValueError, TypeError) as error:
        raise TabFMValidationError(f"input {name!r}: cannot read {datatype} data: {error}") from None


def _serialize_bytes(values: np.ndarray) -> bytes:
    parts = []
    for v in values.reshape(-1).tolist():
        raw = v if isinstance(v, bytes) else str(v).encode()
        parts.append(struct.pack("<I", len(raw)) + raw)
    return b"".join(parts)


def _encode_outputs(record: ModelRecord, prediction: Prediction, request: V2InferRequest) -> Response:
    datatype = _prediction_datatype(record)
    available: dict[str, tuple[np.ndarray, str]] = {"predictions": (prediction.predictions, datatype)}
    if prediction.probabilities is not None:
        available["probabilities"] = (prediction.probabilities.astype(np.float64), "FP64")
    default_binary = bool((request.parameters or {}).get("binary_data_output", False))
    if request.outputs:
        unknown = [o.name for o in request.outputs if o.name not in available]
        if unknown:
            raise TabFMValidationError(f"outputs {unknown} do not exist; this model has {list(available)}")
        wanted = [(o.name, bool((o.parameters or {}).get("binary_data", default_binary))) for o in request.outputs]
    else:
        wanted = [(name, default_binary) for name in available]
    outputs, buffers = [], []
    for name, binary in wanted:
        values, dtype = available[name]
        entry: dict[str, Any] = {"name": name, "datatype": dtype, "shape": list(values.shape)}
        if binary:
            raw = _serialize_bytes(values) if dtype == "BYTES" else np.ascontiguousarray(values.astype(np.dtype(_DTYPES[dtype]).newbyteorder("<"))).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            buffers.append(raw)
        else:
            entry["data"] = [json_value(v) for v in values.reshape(-1).tolist()]
        outputs.append(entry)
    document = {"model_name": record.id, "model_version": "1", "outputs": outputs}
    if request.id is not None:
        document["id"] = request.id
    if not buffers:
        return JSONResponse(document)
    header = json.dumps(document).encode()
    return Response(header + b"".join(buffers), media_type="application/octet-stream", headers={HEADER_LENGTH: str(len(header))})
