"""tabfm: tabular foundation models as scikit-learn estimators, ONNX files and a REST service.

Estimators are imported lazily so that ``import tabfm`` (and the CLI) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "TabFMClassifier": "tabfm.icl",
    "TabFMRegressor": "tabfm.icl",
    "TabMClassifier": "tabfm.tabm",
    "TabMRegressor": "tabfm.tabm",
    "TabRClassifier": "tabfm.tabr",
    "TabRRegressor": "tabfm.tabr",
    "OnnxPredictor": "tabfm.onnx_predictor",
    "TablePreprocessor": "tabfm.preprocessing",
    "load": "tabfm.serialization",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tabfm' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
