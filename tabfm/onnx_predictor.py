"""Predict with an exported tabfm model on onnxruntime, without torch or the training code.

The ONNX file carries everything: the graph takes the encoded rows (see :mod:`tabfm.onnx_export`)
and its ``metadata_props`` hold the categorical mapping, the task and the class labels.
:class:`OnnxPredictor` reads tables in the same formats as the estimators, encodes them with the
stored :class:`~tabfm.preprocessing.TablePreprocessor` state and runs the graph.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tabfm.errors import TabFMValidationError
from tabfm.preprocessing import TablePreprocessor

logger = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DEFAULT_BATCH_ROWS = 2048  # rows per run: bounds the graph's intermediate tensors

__all__ = ["OnnxPredictor", "choose_providers"]


def choose_providers(available: Sequence[str], requested: Sequence[str] | None = None) -> list[str]:
    """The execution providers to ask onnxruntime for, best first.

    Parameters
    ----------
    available : sequence of str
        ``onnxruntime.get_available_providers()``.
    requested : sequence of str, optional
        Providers the caller wants, in order of preference. Default: CUDA when it is available,
        then the CPU.

    Returns
    -------
    list of str
        The requested providers that are available, in order, always ending with the CPU provider
        (the fallback onnxruntime needs for operators a GPU provider does not cover).

    Raises
    ------
    TabFMValidationError
        When providers were requested and none of them is available.
    """
    available = list(available)
    if requested is None:
        chosen = [CUDA] if CUDA in available else []
    else:
        requested = [requested] if isinstance(requested, str) else list(requested)
        chosen = [p for p in requested if p in available and p != CPU]
        if not chosen and CPU not in requested:
            raise TabFMValidationError(
                f"none of the requested onnxruntime providers {requested} is available; "
                f"available providers: {available}"
            )
    return [*chosen, CPU]


class OnnxPredictor:
    """Predictions of an exported tabfm model with onnxruntime.

    Parameters
    ----------
    path : str or Path
        A file written by ``est.to_onnx(path)`` or ``tabfm export``.
    providers : sequence of str, optional
        onnxruntime execution providers in order of preference; by default CUDA when onnxruntime
        has it (``onnxruntime-gpu`` with a visible GPU), else the CPU.
    intra_op_num_threads : int, optional
        Threads of one run (onnxruntime's default: one per physical core).
    batch_rows : int, default 2048
        Rows per graph run in :meth:`predict` and :meth:`predict_proba`.

    Attributes
    ----------
    provider : str
        The execution provider that runs the graph.
    task : {"classification", "regression"}
    family : {"tabfm", "tabm", "tabr"}
    classes_ : ndarray or None
        Class labels (classifiers), in the order of the probability columns.
    feature_names_in_ : list of str or None
    n_features_in_ : int
    input_schema : list of dict
        One entry per input column: ``{"name", "kind": "numeric" | "categorical", "categories"}``.
    metadata : dict of str to str
        The raw ``metadata_props`` of the file.

    Examples
    --------
    >>> predictor = OnnxPredictor("model.onnx")  # doctest: +SKIP
    >>> predictor.predict_proba(frame)  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | Path,
        *,
        providers: Sequence[str] | None = None,
        intra_op_num_threads: int | None = None,
        batch_rows: int = DEFAULT_BATCH_ROWS,
    ) -> None:
        import onnxruntime as ort

        from tabfm.onnx_export import (
            FORMAT_VERSION,
            INPUT_NAME,
            META_CLASSES,
            META_FAMILY,
            META_FORMAT_VERSION,
            META_OUTPUTS,
            META_PREPROCESSOR,
            META_TASK,
        )
        from tabfm.serialization import _decode_classes

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no ONNX model at {self.path}")
        if not (isinstance(batch_rows, int) and batch_rows >= 1):
            raise TabFMValidationError(f"batch_rows must be a positive integer, however: batch_rows={batch_rows!r}")
        self.batch_rows = batch_rows
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_num_threads is not None:
            options.intra_op_num_threads = int(intra_op_num_threads)
        chosen = choose_providers(ort.get_available_providers(), providers)
        self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=chosen)
        self.provider = self.session.get_providers()[0]
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        self.metadata = meta
        version = meta.get(META_FORMAT_VERSION)
        if version is None or META_PREPROCESSOR not in meta:
            raise TabFMValidationError(f"{self.path} is not a tabfm ONNX model (no tabfm metadata)")
        if int(version) > FORMAT_VERSION:
            raise TabFMValidationError(
                f"{self.path} has tabfm ONNX format version {version}, newer than this tabfm reads "
                f"({FORMAT_VERSION}); upgrade tabfm"
            )
        self.task = meta[META_TASK]
        self.family = meta.get(META_FAMILY)
        self.preprocessor = TablePreprocessor.from_dict(json.loads(meta[META_PREPROCESSOR]))
        self.preprocessor.owner = f"OnnxPredictor({self.path.name})"
        classes = json.loads(meta.get(META_CLASSES, "null"))
        self.classes_ = None if classes is None else _decode_classes(classes)
        self.n_features_in_ = int(self.preprocessor.n_features_in_)
        names = getattr(self.preprocessor, "feature_names_in_", None)
        self.feature_names_in_ = None if names is None else [str(n) for n in names]
        self._input_name = INPUT_NAME
        self._output_names = json.loads(meta.get(META_OUTPUTS, "[]")) or [o.name for o in self.session.get_outputs()]
        logger.debug("loaded %s (%s, %s) on %s", self.path, self.family, self.task, self.provider)

    # -- description ----------------------------------------------------------------------------

    @property
    def input_schema(self) -> list[dict[str, Any]]:
        """The columns a table must have: name, kind and, for categorical ones, the known categories."""
        names = self.feature_names_in_ or [f"x{j}" for j in range(self.n_features_in_)]
        return [
            {
                "name": name,
                "kind": "categorical" if is_cat else "numeric",
                "categories": None if categories is None else list(categories),
            }
            for name, is_cat, categories in zip(
                names, self.preprocessor.categorical_mask_, self.preprocessor.categories_, strict=True
            )
        ]

    def __repr__(self) -> str:
        return f"OnnxPredictor({str(self.path)!r}, family={self.family!r}, task={self.task!r}, provider={self.provider!r})"

    # -- prediction -----------------------------------------------------------------------------

    def encode(self, X: Any) -> np.ndarray:
        """The graph input for a table: float32 ``(n_rows, n_features_in_)``."""
        return self.preprocessor.transform(X)

    def run_encoded(self, X_enc: np.ndarray) -> dict[str, np.ndarray]:
        """Raw graph outputs (``probabilities`` or ``prediction``) for already encoded rows."""
        X_enc = np.ascontiguousarray(X_enc, dtype=np.float32)
        if X_enc.ndim != 2 or X_enc.shape[1] != self.n_features_in_:
            raise TabFMValidationError(
                f"encoded rows must have shape (n_rows, {self.n_features_in_}), however: shape={X_enc.shape}"
            )
        names = self._output_names
        parts = [
            self.session.run(names, {self._input_name: X_enc[start : start + self.batch_rows]})
            for start in range(0, len(X_enc), self.batch_rows)
        ]
        if not parts:
            raise TabFMValidationError("X has no rows")
        return {name: np.concatenate([p[i] for p in parts], axis=0) for i, name in enumerate(names)}

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(n_rows, n_classes)``, columns in the order of ``classes_``."""
        if self.task != "classification":
            raise TabFMValidationError(f"predict_proba needs a classifier, but {self.path.name} is a {self.task} model")
        proba = self.run_encoded(self.encode(X))["probabilities"].astype(np.float64)
        proba = np.clip(proba, 0.0, None)
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """Class labels (classifiers) or values (regressors), one per row."""
        if self.task == "classification":
            return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
        return self.run_encoded(self.encode(X))["prediction"].astype(np.float64)
