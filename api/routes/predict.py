"""``POST /v1/models/{id}/predict`` (a stored model) and ``POST /v1/predict`` (one-shot, nothing stored)."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from api.builder import make_estimator, parse_params, target_array
from api.deps import BodyDep, CacheDep, MetricsDep, ReadyRecordDep, SettingsDep, require_key
from api.routes.models import _ERRORS, TABLE_BODY
from api.runtime import Prediction
from api.schemas import ErrorResponse, OneShotRequest, PredictResponse, inline_schema
from api.tables import (
    ARROW_STREAM,
    JSON,
    check_rows,
    infer_task,
    json_value,
    media_type,
    normalise,
    records_to_table,
    split_target,
    to_arrow_ipc,
)
from tabfm.errors import TabFMValidationError

router = APIRouter(prefix="/v1", tags=["predict"], dependencies=[Depends(require_key)])

_PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}}},
          "description": "JSON, or an Arrow IPC stream (columns prediction, proba_<class>) when Accept asks for it"},
    409: {"model": ErrorResponse, "description": "the model is training or failed"},
    **_ERRORS,
}


def prediction_response(prediction: Prediction, request: Request) -> Response:
    """JSON by default; an Arrow IPC stream when the Accept header asks for it."""
    if ARROW_STREAM in request.headers.get("accept", ""):
        columns: dict[str, Any] = {"prediction": prediction.predictions}
        if prediction.probabilities is not None:
            for j, c in enumerate(prediction.classes):
                columns[f"proba_{c}"] = prediction.probabilities[:, j]
        return Response(to_arrow_ipc(columns), media_type=ARROW_STREAM)
    content: dict[str, Any] = {"predictions": [json_value(v) for v in prediction.predictions.tolist()]}
    if prediction.probabilities is not None:
        content["probabilities"] = np.nan_to_num(prediction.probabilities).tolist()
        content["classes"] = [json_value(c) for c in prediction.classes.tolist()]
    return JSONResponse(content)


@router.post(
    "/models/{model_id}/predict",
    response_model=PredictResponse,
    responses=_PREDICT_RESPONSES,
    openapi_extra={"requestBody": {**TABLE_BODY, "content": {**TABLE_BODY["content"], "multipart/form-data": {
        "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}, "required": ["file"]}}}}},
)
def predict(record: ReadyRecordDep, body: BodyDep, request: Request, cache: CacheDep, settings: SettingsDep, metrics: MetricsDep) -> Response:
    """Predict the rows in the body (same formats as training) with the model's ONNX file."""
    table = body.table("file", what="the rows to predict")
    check_rows(table, settings.max_rows, "the rows to predict")
    prediction = cache.get(record).predict(table)
    metrics.add_rows(table.num_rows)
    return prediction_response(prediction, request)


ONE_SHOT_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        JSON: {"schema": inline_schema(OneShotRequest)},
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "train": {"type": "string", "format": "binary"}, "test": {"type": "string", "format": "binary"},
            "target": {"type": "string"}, "task": {"type": "string", "enum": ["classification", "regression"]},
            "params": {"type": "string"}}, "required": ["train", "test", "target"]}},
    },
}


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses={k: v for k, v in _PREDICT_RESPONSES.items() if k not in (404, 409)}
    | {503: {"model": ErrorResponse, "description": "no TabFM checkpoint on the server"}},
    openapi_extra={"requestBody": ONE_SHOT_BODY},
)
def predict_one_shot(body: BodyDep, request: Request, settings: SettingsDep, metrics: MetricsDep) -> Response:
    """In-context prediction in one request: TabFM reads the training rows and predicts the test rows."""
    if body.multipart:
        target, task = body.field("target"), body.field("task")
        params = parse_params("tabfm", body.field("params"))
        train, test = body.table("train", what="file 'train'"), body.table("test", what="file 'test'")
    elif media_type(body.content_type) == JSON:
        request_model = OneShotRequest.model_validate_json(body.data or b"null")
        target, task = request_model.target, request_model.task
        params = {} if request_model.params is None else request_model.params.model_dump(exclude_unset=True)
        train = normalise(records_to_table(request_model.train, what="train"), what="train")
        test = normalise(records_to_table(request_model.test, what="test"), what="test")
    else:
        from api.tables import UnsupportedMediaType

        raise UnsupportedMediaType(f"send JSON {{train, test, target}} or a multipart form, not {body.content_type!r}")
    if not target:
        raise TabFMValidationError("target: the name of the target column is required")
    if task is not None and task not in ("classification", "regression"):
        raise TabFMValidationError(f"task must be 'classification' or 'regression', however: task={task!r}")
    check_rows(train, settings.max_training_rows, "the training rows")
    check_rows(test, settings.max_rows, "the test rows")
    X, y_column = split_target(train, target)
    if target in test.column_names:
        test = test.drop_columns([target])
    task = task or infer_task(y_column)
    estimator = make_estimator("tabfm", task, params, settings)
    estimator.fit(X, target_array(y_column, task))
    if task == "classification":
        proba = estimator.predict_proba(test)
        prediction = Prediction(estimator.classes_[np.argmax(proba, axis=1)], proba, estimator.classes_)
    else:
        prediction = Prediction(np.asarray(estimator.predict(test), dtype=np.float64), None, None)
    metrics.add_rows(test.num_rows)
    return prediction_response(prediction, request)
