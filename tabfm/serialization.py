"""Saving and loading fitted estimators without pickle: a directory of JSON + safetensors.

Layout of a saved estimator::

    estimator.json        class, hyper-parameters, preprocessing state, classes, model metadata
    weights.safetensors   every tensor the model needs

The directory is written under a temporary name and renamed into place, so a crash mid-write never
leaves a half-written model behind. Loading imports only classes defined in tabfm itself.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import load_file, save_file

from tabfm.errors import TabFMValidationError
from tabfm.preprocessing import TablePreprocessor

FORMAT = "tabfm-estimator"
FORMAT_VERSION = 1
META_FILE = "estimator.json"
WEIGHTS_FILE = "weights.safetensors"
# Loading imports the class named in the file: only from these modules, never arbitrary code.
ALLOWED_MODULE_PREFIXES: tuple[str, ...] = ("tabfm.",)


def _json_safe(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return None  # e.g. a RandomState instance: not reproducible from JSON, dropped on purpose


def _encode_classes(classes: np.ndarray) -> dict[str, Any]:
    return {"dtype": classes.dtype.kind, "values": [_json_safe(c) for c in classes.tolist()]}


def _decode_classes(spec: dict[str, Any]) -> np.ndarray:
    kind, values = spec["dtype"], spec["values"]
    dtype = {"b": bool, "i": np.int64, "u": np.int64, "f": np.float64}.get(kind)
    return np.asarray(values, dtype=dtype) if dtype is not None else np.asarray(values)


def save_estimator(estimator: Any, path: str | Path) -> Path:
    """Write a fitted estimator to the directory ``path`` atomically (replacing an older one)."""
    if not getattr(estimator, "is_fitted_", False):
        raise TabFMValidationError(f"cannot save an unfitted {type(estimator).__name__}; call fit first")
    meta, tensors = estimator._get_state()
    cls = type(estimator)
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "params": _json_safe(estimator.get_params(deep=False)),
        "preprocessor": estimator.preprocessor_.to_dict(),
        "classes": _encode_classes(estimator.classes_) if hasattr(estimator, "classes_") else None,
        "model": _json_safe(meta),
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        (tmp / META_FILE).write_text(json.dumps(document, indent=1))
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / WEIGHTS_FILE))
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _estimator_class(qualified: str) -> type:
    from tabfm.base import TabularEstimator

    module_name, _, class_name = qualified.rpartition(".")
    if not module_name.startswith(ALLOWED_MODULE_PREFIXES) or not class_name.isidentifier():
        raise TabFMValidationError(f"refusing to load class {qualified!r}: only tabfm estimators load")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, TabularEstimator)):
        raise TabFMValidationError(f"{qualified!r} is not a tabfm estimator")
    return cls


def load_estimator(path: str | Path, device: str = "auto") -> Any:
    """Read an estimator written by :func:`save_estimator`, onto ``device``."""
    from tabfm.device import resolve_device

    directory = Path(path)
    meta_file = directory / META_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"no saved tabfm estimator at {directory} ({META_FILE} missing)")
    document = json.loads(meta_file.read_text())
    if document.get("format") != FORMAT or document.get("format_version", 0) > FORMAT_VERSION:
        raise TabFMValidationError(
            f"{meta_file} is not a tabfm estimator of a known format version "
            f"(format={document.get('format')!r}, version={document.get('format_version')!r})"
        )
    cls = _estimator_class(document["class"])
    # Options added since the model was saved take the value that reproduces it, not today's default.
    params = {**getattr(cls, "_options_before", {}), **document["params"]}
    params["device"] = device
    estimator = cls(**{k: v for k, v in params.items() if k in cls._get_param_names()})
    estimator.preprocessor_ = TablePreprocessor.from_dict(
        document["preprocessor"], categorical_features=params.get("categorical_features")
    )
    estimator.preprocessor_.owner = cls.__name__
    estimator.n_features_in_ = estimator.preprocessor_.n_features_in_
    if hasattr(estimator.preprocessor_, "feature_names_in_"):
        estimator.feature_names_in_ = estimator.preprocessor_.feature_names_in_
    if document.get("classes") is not None:
        estimator.classes_ = _decode_classes(document["classes"])
        estimator.n_classes_ = len(estimator.classes_)
    estimator.device_ = resolve_device(device)
    tensors = load_file(str(directory / WEIGHTS_FILE), device="cpu")
    estimator._set_state(document["model"], {k: v.to(estimator.device_) for k, v in tensors.items()})
    estimator.is_fitted_ = True
    return estimator


def load(path: str | Path, device: str = "auto") -> Any:
    """Load any saved tabfm estimator (``tabfm.load``)."""
    return load_estimator(path, device=device)


__all__ = ["load", "load_estimator", "save_estimator"]
