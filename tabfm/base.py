"""The estimator base shared by every tabfm model family.

The base owns everything that is not model-specific: input validation, the one preprocessing path,
target encoding, seeding, device choice, the scikit-learn contract and saving. A family implements
only::

    _fit_encoded(X_enc, y_enc, rng)          # X_enc from TablePreprocessor, y_enc codes or floats
    _predict_proba_encoded(X_enc)            # classifiers: (n, n_classes_)
    _predict_encoded(X_enc)                  # regressors: (n,)
    _get_state() / _set_state(meta, tensors) # for save/load without pickle
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state

from tabfm.device import resolve_device
from tabfm.errors import NotFittedError, TabFMValidationError
from tabfm.preprocessing import (
    TablePreprocessor,
    encode_classification_target,
    encode_regression_target,
    n_rows_of,
)


class TabularEstimator(BaseEstimator):
    """Base of all tabfm estimators (not used directly).

    Subclasses list their hyper-parameters in ``__init__`` (stored unchanged, as scikit-learn
    requires) and must include ``categorical_features``, ``device`` and ``random_state``.
    """

    _task: ClassVar[str] = ""
    _max_classes: ClassVar[int | None] = None  # None: any number of classes

    # -- the scikit-learn contract --------------------------------------------------------------

    def fit(self, X: Any, y: Any) -> TabularEstimator:
        """Fit on a table ``X`` (pandas, polars, pyarrow or numpy) and target ``y``."""
        if y is None:
            raise TabFMValidationError(
                f"{type(self).__name__} requires y to be passed, but the target y is None"
            )
        n_x, n_y = n_rows_of(X), n_rows_of(y)
        if n_x != n_y:
            raise TabFMValidationError(
                f"X and y have different numbers of rows: X has {n_x}, y has {n_y}"
            )
        if n_x < 2:
            raise TabFMValidationError(
                f"n_samples={n_x}: {type(self).__name__} needs at least 2 rows to fit"
            )
        preprocessor = TablePreprocessor(categorical_features=self.categorical_features)
        preprocessor.owner = type(self).__name__
        X_enc = preprocessor.fit_transform(X)
        y_enc = self._encode_target(y)
        self.preprocessor_ = preprocessor
        self.n_features_in_ = preprocessor.n_features_in_
        if hasattr(preprocessor, "feature_names_in_"):
            self.feature_names_in_ = preprocessor.feature_names_in_
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.device_ = resolve_device(self.device)
        seed = _seed_from(self.random_state)
        # Fork the global torch RNG so that fitting neither depends on nor disturbs the user's state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self._fit_encoded(X_enc, y_enc, np.random.default_rng(seed))
        self.is_fitted_ = True
        return self

    def _encode_target(self, y: Any) -> np.ndarray:
        raise NotImplementedError

    def _transform(self, X: Any) -> np.ndarray:
        """Validate and encode ``X`` for a fitted estimator."""
        if not getattr(self, "is_fitted_", False):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator."
            )
        return self.preprocessor_.transform(X)

    def __sklearn_is_fitted__(self) -> bool:
        return bool(getattr(self, "is_fitted_", False))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.categorical = True
        tags.input_tags.string = True
        return tags

    # -- model-specific hooks ----------------------------------------------------------------------

    def _fit_encoded(self, X_enc: np.ndarray, y_enc: np.ndarray, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def _get_state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        raise NotImplementedError(f"{type(self).__name__} cannot be saved yet")

    def _set_state(self, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot be loaded yet")

    # -- persistence ---------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the fitted estimator to the directory ``path`` (JSON + safetensors, no pickle)."""
        from tabfm.serialization import save_estimator

        return save_estimator(self, path)

    def to_onnx(self, path: str | Path) -> Path:
        """Write the fitted estimator to one self-contained ONNX file (see :mod:`tabfm.onnx_export`)."""
        from tabfm.onnx_export import export_estimator

        return export_estimator(self, path)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> TabularEstimator:
        """Read an estimator written by :meth:`save`; it must be an instance of ``cls``."""
        from tabfm.serialization import load_estimator

        estimator = load_estimator(path, device=device)
        if not isinstance(estimator, cls):
            raise TabFMValidationError(
                f"{path} holds a {type(estimator).__name__}, not a {cls.__name__}"
            )
        return estimator


class TabularClassifier(ClassifierMixin, TabularEstimator):
    """Classifier side of the base: class encoding, ``predict_proba``, ``predict``."""

    _task: ClassVar[str] = "classification"

    def _encode_target(self, y: Any) -> np.ndarray:
        codes, classes = encode_classification_target(y)
        if self._max_classes is not None and len(classes) > self._max_classes:
            raise TabFMValidationError(
                f"y has {len(classes)} classes but {type(self).__name__} supports at most {self._max_classes}"
            )
        self.classes_ = classes
        self.n_classes_ = len(classes)
        return codes

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n_rows, n_classes), columns ordered as ``classes_``."""
        proba = np.asarray(self._predict_proba_encoded(self._transform(X)), dtype=np.float64)
        proba = np.clip(proba, 0.0, None)
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class of each row, as a label from ``classes_``."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def _predict_proba_encoded(self, X_enc: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class TabularRegressor(RegressorMixin, TabularEstimator):
    """Regressor side of the base: float targets, ``predict``."""

    _task: ClassVar[str] = "regression"

    def _encode_target(self, y: Any) -> np.ndarray:
        return encode_regression_target(y)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted value of each row, shape (n_rows,)."""
        return np.asarray(self._predict_encoded(self._transform(X)), dtype=np.float64)

    def _predict_encoded(self, X_enc: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _seed_from(random_state: Any) -> int:
    """A 31-bit seed from an int, None (fresh entropy) or a RandomState, as scikit-learn reads them."""
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        return int(random_state) % (2**31)
    return int(check_random_state(random_state).randint(0, 2**31 - 1))
