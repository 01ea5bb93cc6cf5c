"""``/v1/models``: create a model from a training table, list, describe and delete models."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse

from api.builder import failure_reason, fit_and_store, make_estimator, parse_params, target_array
from api.deps import BodyDep, CacheDep, RecordDep, SettingsDep, StoreDep, WorkerDep, require_key
from api.jobs import TrainingJob
from api.schemas import PARAMS, ErrorResponse, ModelInfo, ModelList, Task
from api.store import ModelRecord
from api.tables import ARROW_STREAM, CSV, JSON, PARQUET, check_rows, infer_task, split_target
from tabfm.errors import TabFMValidationError

router = APIRouter(prefix="/v1/models", tags=["models"], dependencies=[Depends(require_key)])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "missing or wrong key"},
    404: {"model": ErrorResponse, "description": "unknown model"},
    413: {"model": ErrorResponse, "description": "body or table over the limits"},
    415: {"model": ErrorResponse, "description": "body is not a table format"},
    422: {"model": ErrorResponse, "description": "invalid table, column, parameter or field"},
}

_BINARY = {"schema": {"type": "string", "format": "binary"}}
TABLE_BODY: dict[str, Any] = {
    "required": True,
    "description": "a table: CSV, JSON records, Parquet or Arrow IPC stream, by Content-Type",
    "content": {
        CSV: {"schema": {"type": "string"}},
        JSON: {"schema": {"type": "array", "items": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean", "null"]}}}},
        PARQUET: _BINARY,
        ARROW_STREAM: _BINARY,
    },
}
TRAIN_BODY: dict[str, Any] = {
    **TABLE_BODY,
    "content": {
        **TABLE_BODY["content"],
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "file": {"type": "string", "format": "binary", "description": "the training table"},
                    "target": {"type": "string"},
                    "kind": {"type": "string", "enum": list(PARAMS)},
                    "name": {"type": "string"},
                    "task": {"type": "string", "enum": ["classification", "regression"]},
                    "params": {"type": "string", "description": "JSON object of estimator parameters"},
                },
                "required": ["file"],
            }
        },
    },
}


def model_info(record: ModelRecord) -> ModelInfo:
    """The public description of a stored model."""
    info = record.info
    return ModelInfo(
        id=record.id, name=record.name, kind=record.kind, task=record.task, status=record.status,  # type: ignore[arg-type]
        error=record.error, created=record.created, updated=record.updated, target=info.get("target"),
        schema=info.get("schema"), classes=info.get("classes"), metrics=info.get("metrics", {}),
        params=info.get("params", {}), runtime=info.get("runtime"),
    )


def _info_response(record: ModelRecord, status: int) -> JSONResponse:
    return JSONResponse(model_info(record).model_dump(mode="json", by_alias=True), status_code=status)


@router.post(
    "",
    status_code=201,
    response_model=ModelInfo,
    responses={202: {"model": ModelInfo, "description": "accepted: TabM/TabR train in the background"},
               429: {"model": ErrorResponse, "description": "training queue full"},
               503: {"model": ErrorResponse, "description": "no TabFM checkpoint on the server"}, **_ERRORS},
    openapi_extra={"requestBody": TRAIN_BODY},
)
def create_model(
    body: BodyDep,
    store: StoreDep,
    worker: WorkerDep,
    settings: SettingsDep,
    target: Annotated[str | None, Query(max_length=256, description="the target column")] = None,
    kind: Annotated[str | None, Query(description="tabfm (ready at once), tabm or tabr (trained in the background)")] = None,
    name: Annotated[str | None, Query(max_length=200)] = None,
    task: Annotated[Task | None, Query(description="default: inferred from the target")] = None,
    params: Annotated[str | None, Query(max_length=10_000, description="JSON object of estimator parameters")] = None,
) -> Response:
    """Create a model from a training table; TabFM answers 201 ready, TabM/TabR 202 training."""
    kind = body.field("kind", kind)
    target = body.field("target", target)
    name = body.field("name", name)
    task = body.field("task", task)
    if kind not in PARAMS:
        raise TabFMValidationError(f"kind must be one of {list(PARAMS)}, however: kind={kind!r}")
    if not target:
        raise TabFMValidationError("target: the name of the target column is required (query or form field 'target')")
    if task is not None and task not in ("classification", "regression"):
        raise TabFMValidationError(f"task must be 'classification' or 'regression', however: task={task!r}")
    if name is not None and len(name) > 200:
        raise TabFMValidationError(f"name must be at most 200 characters, however it has {len(name)}")
    est_params = parse_params(kind, body.field("params", params))
    table = body.table("file", what="the training table")
    check_rows(table, settings.max_training_rows, "the training table")
    X, y_column = split_target(table, target)
    task = task or infer_task(y_column)
    y = target_array(y_column, task)
    estimator = make_estimator(kind, task, est_params, settings)
    now = time.time()
    model_id = store.new_id()
    record = ModelRecord(
        id=model_id, name=name or f"{kind}-{model_id[:6]}", kind=kind, task=task, status="training", error=None,
        created=now, updated=now, info={"target": target, "params": est_params},
    )
    if kind == "tabfm":
        store.add(record)
        try:
            fit_and_store(store, model_id, estimator, X, y, record.info)
        except BaseException:
            store.delete(model_id)
            raise
        return _info_response(store.get(model_id), 201)  # type: ignore[arg-type]
    _check_trainable(estimator, X, y, task)
    store.add(record)

    def run() -> None:
        fit_and_store(store, model_id, estimator, X, y, record.info)

    def fail(error: BaseException) -> None:
        store.set_failed(model_id, failure_reason(error))

    try:
        worker.submit(TrainingJob(model_id, run, fail))
    except BaseException:
        store.delete(model_id)
        raise
    return _info_response(record, 202)


def _check_trainable(estimator: Any, X: Any, y: Any, task: str) -> None:
    """Reject in the request what would only fail later in the worker: columns and target."""
    from tabfm.preprocessing import (
        TablePreprocessor,
        encode_classification_target,
        encode_regression_target,
    )

    TablePreprocessor(categorical_features=estimator.categorical_features).fit(X)
    if task == "classification":
        encode_classification_target(y)
    else:
        encode_regression_target(y)
    if len(y) < 4:
        raise TabFMValidationError(f"the training table has {len(y)} rows; TabM and TabR need at least 4")


@router.get("", response_model=ModelList, responses={401: _ERRORS[401]})
def list_models(store: StoreDep) -> ModelList:
    """Every stored model, oldest first."""
    return ModelList(models=[model_info(r) for r in store.list()])


@router.get("/{model_id}", response_model=ModelInfo, response_model_by_alias=True, responses={401: _ERRORS[401], 404: _ERRORS[404]})
def get_model(record: RecordDep) -> ModelInfo:
    """A model's status ("training", "ready", "failed" with the reason), schema, kind and metrics."""
    return model_info(record)


@router.delete("/{model_id}", status_code=204, responses={401: _ERRORS[401], 404: _ERRORS[404]})
def delete_model(record: RecordDep, store: StoreDep, cache: CacheDep) -> Response:
    """Delete a model and its files."""
    cache.evict(record.id)
    store.delete(record.id)
    return Response(status_code=204)
