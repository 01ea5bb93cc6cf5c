"""Stored models in memory: the onnxruntime predictor of each, loaded once and shared by requests.

A model is served by its ONNX file through :class:`tabfm.OnnxPredictor`. When a model has no ONNX
file (its export failed, which its metadata records) the saved estimator serves it instead, and
``/health`` and the model's description say so.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from api.store import ESTIMATOR_DIR, ONNX_FILE, ModelRecord, ModelStore
from tabfm.errors import TabFMValidationError

logger = logging.getLogger(__name__)

UNSEEN_CATEGORY = "\x00unseen"  # a category no model has seen: encodes to the "unseen" code


def onnx_available() -> bool:
    """Whether this tabfm has the ONNX predictor."""
    try:
        from tabfm.onnx_predictor import OnnxPredictor  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class Prediction:
    """What a predict returns: labels or values, and class probabilities for classifiers."""

    predictions: np.ndarray
    probabilities: np.ndarray | None
    classes: np.ndarray | None


class ServedModel:
    """One stored model ready to predict.

    Parameters
    ----------
    directory : Path
        The model's directory in the store.
    record : ModelRecord
        Its index row (schema, task, classes).
    ort_threads : int
        onnxruntime intra-op threads (0: its default).
    device : str
        Torch device when the estimator serves the model.
    slots : Semaphore, optional
        Shared by all models: bounds the graph runs at once, so that concurrent requests queue
        instead of oversubscribing the cores (default: one slot per core).
    """

    def __init__(
        self,
        directory: Path,
        record: ModelRecord,
        *,
        ort_threads: int = 0,
        device: str = "auto",
        slots: threading.Semaphore | None = None,
    ) -> None:
        self.id = record.id
        self.slots = slots or threading.Semaphore(os.cpu_count() or 1)
        self.task = record.task
        self.schema: list[dict[str, Any]] = record.info["schema"]
        self.feature_names = [c["name"] for c in self.schema]
        onnx_path = directory / ONNX_FILE
        self.predictor: Any
        if onnx_path.is_file() and onnx_available():
            from tabfm.onnx_predictor import OnnxPredictor

            try:
                self.predictor = _make_onnx_predictor(OnnxPredictor, onnx_path, ort_threads)
                self.runtime = "onnxruntime"
                self.provider = str(getattr(self.predictor, "provider", "CPUExecutionProvider"))
            except Exception:  # a file this onnxruntime cannot run: the estimator still can
                logger.exception("model %s: onnxruntime cannot load %s; serving the estimator", record.id, onnx_path)
                self._load_estimator(directory, device)
        else:
            self._load_estimator(directory, device)
        classes = getattr(self.predictor, "classes_", None)
        self.classes = None if classes is None or self.task != "classification" else np.asarray(classes)

    def _load_estimator(self, directory: Path, device: str) -> None:
        from tabfm import load

        self.predictor = load(directory / ESTIMATOR_DIR, device=device)
        self.runtime = "torch"
        self.provider = f"torch:{self.predictor.device_}"

    def predict(self, X: Any) -> Prediction:
        """Predict for a table (pyarrow, pandas, polars or numpy)."""
        with self.slots:
            if self.task == "classification":
                proba = np.asarray(self.predictor.predict_proba(X), dtype=np.float64)
                return Prediction(self.classes[np.argmax(proba, axis=1)], proba, self.classes)
            return Prediction(np.asarray(self.predictor.predict(X), dtype=np.float64), None, None)

    def table_from_columns(self, columns: dict[str, np.ndarray]) -> pa.Table:
        """A table from one array per feature (names as in the schema); 422 on missing/extra names."""
        missing = [n for n in self.feature_names if n not in columns]
        extra = [n for n in columns if n not in self.feature_names]
        if missing or extra:
            raise TabFMValidationError(
                f"inputs must be the model's feature columns; missing: {missing}, not features: {extra}"
            )
        lengths = {n: len(v) for n, v in columns.items()}
        if len(set(lengths.values())) > 1:
            raise TabFMValidationError(f"inputs must all have the same number of rows, however: {lengths}")
        return pa.table({n: _arrow_column(columns[n], spec) for n, spec in zip(self.feature_names, self.schema, strict=True)})

    def table_from_matrix(self, matrix: np.ndarray) -> pa.Table:
        """A table from an encoded (rows, features) float matrix: numbers, or category codes.

        Category codes are those of the schema: 0 missing, 1 unseen, ``2 + i`` the i-th category.
        """
        if matrix.ndim != 2 or matrix.shape[1] != len(self.schema):
            raise TabFMValidationError(
                f"the input matrix must have shape (rows, {len(self.schema)}), however: shape={list(matrix.shape)}"
            )
        columns = {}
        for j, spec in enumerate(self.schema):
            values = matrix[:, j].astype(np.float64)
            if spec["kind"] == "categorical":
                categories = spec["categories"] or []
                decoded = []
                for i, v in enumerate(values):
                    if np.isnan(v) or v == 0:
                        decoded.append(None)
                    elif v == 1:
                        decoded.append(UNSEEN_CATEGORY)
                    elif v == int(v) and 2 <= v < 2 + len(categories):
                        decoded.append(categories[int(v) - 2])
                    else:
                        raise TabFMValidationError(
                            f"column {spec['name']!r} is categorical with codes 0..{1 + len(categories)}, "
                            f"however row {i} holds {v!r}"
                        )
                columns[spec["name"]] = pa.array(decoded, type=pa.string())
            else:
                columns[spec["name"]] = pa.array(values)
        return pa.table(columns)


def _arrow_column(values: np.ndarray, spec: dict[str, Any]) -> pa.Array:
    if spec["kind"] == "categorical":
        if values.dtype.kind in "SO":
            return pa.array([None if v is None else (v.decode() if isinstance(v, bytes) else str(v)) for v in values.tolist()], type=pa.string())
        return pa.array(values)
    if values.dtype.kind in "SOU":
        raise TabFMValidationError(f"column {spec['name']!r} is numeric; send FP32/FP64/INT64 data, not strings")
    return pa.array(values.astype(np.float64))


def _make_onnx_predictor(cls: Any, path: Path, threads: int) -> Any:
    try:
        return cls(path, intra_op_num_threads=threads) if threads else cls(path)
    except TypeError:  # a predictor without a threads argument
        return cls(path)


class ModelCache:
    """Served models by id, loaded on first use (or at start-up) and shared across requests."""

    def __init__(self, store: ModelStore, *, ort_threads: int = 0, device: str = "auto", max_concurrent: int = 0) -> None:
        self.store = store
        self.slots = threading.Semaphore(max_concurrent or os.cpu_count() or 1)
        self.ort_threads = ort_threads
        self.device = device
        self._models: dict[str, ServedModel] = {}
        self._lock = threading.Lock()

    def get(self, record: ModelRecord) -> ServedModel:
        """The served model of a ready record (loaded once)."""
        model = self._models.get(record.id)
        if model is not None:
            return model
        with self._lock:
            model = self._models.get(record.id)
            if model is None:
                model = ServedModel(
                    self.store.model_dir(record.id), record, ort_threads=self.ort_threads, device=self.device, slots=self.slots
                )
                self._models[record.id] = model
        return model

    def evict(self, model_id: str) -> None:
        with self._lock:
            self._models.pop(model_id, None)

    def loaded(self) -> list[ServedModel]:
        return list(self._models.values())

    def warm(self) -> int:
        """Load every ready model and run one row through it; the number loaded."""
        n = 0
        for record in self.store.list():
            if record.status != "ready":
                continue
            try:
                model = self.get(record)
                model.predict(model.table_from_matrix(np.zeros((1, len(model.schema)))))
                n += 1
            except Exception:
                logger.exception("model %s could not be loaded at start-up", record.id)
        return n
