"""Make, fit, save and export a model: what both the request path and the training worker run."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from api.schemas import PARAMS
from api.settings import Settings
from api.store import ESTIMATOR_DIR, ONNX_FILE, ModelStore
from tabfm.errors import TabFMUserError, TabFMValidationError

logger = logging.getLogger(__name__)

_CLASSES = {
    ("tabfm", "classification"): ("tabfm.icl", "TabFMClassifier"),
    ("tabfm", "regression"): ("tabfm.icl", "TabFMRegressor"),
    ("tabm", "classification"): ("tabfm.tabm", "TabMClassifier"),
    ("tabm", "regression"): ("tabfm.tabm", "TabMRegressor"),
    ("tabr", "classification"): ("tabfm.tabr", "TabRClassifier"),
    ("tabr", "regression"): ("tabfm.tabr", "TabRRegressor"),
}


class CheckpointMissing(Exception):
    """The server has no TabFM checkpoint for a task (a server configuration problem: 503)."""


def parse_params(kind: str, params: Any) -> dict[str, Any]:
    """Validate client parameters for ``kind``; only the ones the client set are returned."""
    if params is None or params == "":
        return {}
    if isinstance(params, str):
        import json

        try:
            params = json.loads(params)
        except ValueError:
            raise TabFMValidationError(f"params must be a JSON object, however: {params[:100]!r}") from None
    if not isinstance(params, dict):
        raise TabFMValidationError(f"params must be a JSON object, however it is a {type(params).__name__}")
    return PARAMS[kind].model_validate(params).model_dump(exclude_unset=True)


def make_estimator(kind: str, task: str, params: dict[str, Any], settings: Settings) -> Any:
    """A fresh estimator of ``kind`` for ``task`` with the client's (validated) parameters."""
    import importlib

    module, name = _CLASSES[(kind, task)]
    cls = getattr(importlib.import_module(module), name)
    params = dict(params)
    if kind == "tabfm":
        checkpoint = settings.checkpoint_for(task)
        if checkpoint is None:
            from tabfm.checkpoint import shipped_checkpoint

            checkpoint = shipped_checkpoint(task)
        if not Path(checkpoint).is_file():
            raise CheckpointMissing(f"the server has no TabFM {task} checkpoint ({checkpoint}); ask its operator")
        params["checkpoint"] = str(checkpoint)
        if task == "regression" and "local_rows_min" in params:
            raise TabFMValidationError("local_rows_min applies to classification only; leave it out for regression")
        # The schema's defaults, not the library's, for the rows a test row reads: global contexts,
        # which onnxruntime serves, where the library's estimators default to members that read each
        # test row's neighbours (torch only).
        for name in ("context", "local_anchor_rows"):
            params.setdefault(name, PARAMS[kind].model_fields[name].default)
        for name in ("linear_basis", "local_metric"):
            if params.get(name, "") is None:  # null: the library's default for the task
                del params[name]
    else:
        params["max_epochs"] = min(int(params.get("max_epochs", 100)), settings.max_epochs)
        limit = params.get("time_limit")
        params["time_limit"] = settings.max_training_seconds if limit is None else min(limit, settings.max_training_seconds)
        params = {k: v for k, v in params.items() if v is not None or k == "random_state"}
    return cls(**params, device=settings.device)


def target_array(y: pa.ChunkedArray, task: str) -> np.ndarray:
    """The target column as the estimators read it."""
    if task == "regression":
        if not (pa.types.is_integer(y.type) or pa.types.is_floating(y.type) or pa.types.is_decimal(y.type)):
            raise TabFMValidationError(f"task 'regression' needs a numeric target, however the target has type {y.type}")
        return np.asarray(y.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    return y.combine_chunks().to_numpy(zero_copy_only=False)


def schema_of(estimator: Any) -> list[dict[str, Any]]:
    """The input schema of a fitted estimator: names, kinds, categories."""
    state = estimator.preprocessor_.to_dict()
    names = state["feature_names_in"] or [f"x{j}" for j in range(state["n_features_in"])]
    return [
        {"name": n, "kind": "categorical" if cat else "numeric", "categories": cats}
        for n, cat, cats in zip(names, state["categorical_mask"], state["categories"], strict=True)
    ]


def fit_and_store(
    store: ModelStore,
    model_id: str,
    estimator: Any,
    X: pa.Table,
    y: np.ndarray,
    info: dict[str, Any],
) -> dict[str, Any]:
    """Fit, then write estimator + ONNX file + metadata into the store atomically; the model's info."""
    start = time.perf_counter()
    estimator.fit(X, y)
    fit_s = time.perf_counter() - start

    def write(directory: Path) -> dict[str, Any]:
        estimator.save(directory / ESTIMATOR_DIR)
        t0 = time.perf_counter()
        runtime, onnx_error = "onnxruntime", None
        try:
            estimator.to_onnx(directory / ONNX_FILE)
        except Exception as error:  # the estimator still serves the model
            logger.warning("model %s: ONNX export failed (%s); serving the estimator", model_id, error)
            (directory / ONNX_FILE).unlink(missing_ok=True)
            runtime, onnx_error = "torch", f"{type(error).__name__}: {error}"[:500]
        metrics: dict[str, Any] = {
            "n_train_rows": int(X.num_rows),
            "n_features": int(X.num_columns),
            "fit_seconds": round(fit_s, 4),
            "export_seconds": round(time.perf_counter() - t0, 4),
        }
        training = getattr(estimator, "training_", None)
        if isinstance(training, dict):
            metrics["training"] = {k: v for k, v in training.items() if isinstance(v, (int, float, str, bool)) or v is None}
        classes = getattr(estimator, "classes_", None)
        return {
            **info,
            "schema": schema_of(estimator),
            "classes": None if classes is None else [_scalar(c) for c in classes],
            "metrics": metrics,
            "runtime": runtime,
            "onnx_error": onnx_error,
        }

    return store.write(model_id, write)


def failure_reason(error: BaseException) -> str:
    """What a client is told when training fails."""
    if isinstance(error, (TabFMUserError, ValueError)):
        return str(error)
    return f"internal error ({type(error).__name__}); see the server log"


def _scalar(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
