"""The benchmark's model registry: a name maps to a factory ``(task, seed) -> estimator``.

Every estimator follows scikit-learn's ``fit(X, y)`` / ``predict`` / ``predict_proba`` and takes
the runner's pandas frames as they are: numeric columns (NaN for missing) and ``category`` columns.
Classifiers are fitted on labels ``0..k-1``; the runner maps their probability columns back to the
dataset's classes. Add a model by adding an entry to ``MODELS``: the runner has no list of names.
A name may carry constructor parameters, ``tabfm[n_estimators=2]`` (values are Python literals,
several separated by ``;``), so variants of one model run side by side under their own names.

The GBDTs run with default parameters, two threads and native categorical support. The neural
models import ``tabfm`` lazily, so a model that is not available yet records its ``ImportError`` in
the results instead of stopping the run.
"""

from __future__ import annotations

import ast
import re
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

N_THREADS = 2

# CatBoost's multiclass fit costs about classes × rows × features (1000 default iterations, one
# gradient dimension per class). Measured on the 2-core development machine under load: ~0.5 ms
# per unit, so 100,000 units is about a minute; larger multiclass fits are skipped with the reason
# recorded (movement_libras: 15 × 252 × 90 took three minutes per seed).
CATBOOST_MAX_MULTICLASS_WORK = 100_000
# Many categorical columns make CatBoost's feature combinations expensive in a way the rule above
# misses (dermatology: 6 classes, 33 categorical columns, minutes per fit), so a fit that runs past
# this wall-clock budget is stopped and recorded as skipped rather than scored with fewer trees.
CATBOOST_MAX_FIT_S = 60.0


class ModelSkipped(RuntimeError):
    """A model declines a fit on purpose; the message (the reason) goes into the results."""


def _is_categorical(s: pd.Series) -> bool:
    return isinstance(s.dtype, pd.CategoricalDtype)


class LinearBaseline(BaseEstimator):
    """Logistic regression or ridge on the shared preprocessing.

    ``tabfm.preprocessing.TablePreprocessor`` encodes the table (categorical codes, numeric NaN
    kept); categorical codes are then one-hot encoded (missing and unseen get their own code, an
    unseen category at predict time maps to all zeros), numerics are median-imputed with a
    missingness indicator and standardised.

    Parameters
    ----------
    task : {"binary", "multiclass", "regression"}
    seed : int
        Random state of the solver.
    """

    def __init__(self, *, task: str = "binary", seed: int = 0):
        self.task = task
        self.seed = seed

    def _features(self):
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        mask = np.asarray(self.preprocessor_.categorical_mask_, dtype=bool)
        cat_idx = np.flatnonzero(mask).tolist()
        num_idx = np.flatnonzero(~mask).tolist()
        parts = []
        if cat_idx:
            parts.append(
                ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), cat_idx)
            )
        if num_idx:
            numeric = make_pipeline(
                SimpleImputer(strategy="median", add_indicator=True), StandardScaler()
            )
            parts.append(("num", numeric, num_idx))
        return ColumnTransformer(parts)

    def fit(self, X, y):
        from sklearn.linear_model import LogisticRegression, Ridge

        from tabfm.preprocessing import TablePreprocessor

        self.preprocessor_ = TablePreprocessor().fit(X)
        Z = self.preprocessor_.transform(X)  # (R, F) float32, categorical columns as codes
        self.columns_ = self._features().fit(Z)
        Z = self.columns_.transform(Z)
        if self.task == "regression":
            self.model_ = Ridge(alpha=1.0)
        else:
            self.model_ = LogisticRegression(max_iter=1000, random_state=self.seed)
        self.model_.fit(Z, y)
        if self.task != "regression":
            self.classes_ = self.model_.classes_
        return self

    def _encode(self, X):
        return self.columns_.transform(self.preprocessor_.transform(X))

    def predict(self, X):
        return self.model_.predict(self._encode(X))

    def predict_proba(self, X):
        return self.model_.predict_proba(self._encode(X))


class _TimeBudget:
    """CatBoost callback that stops training once ``max_s`` seconds have passed."""

    def __init__(self, max_s: float | None):
        self.max_s = max_s
        self.start = time.perf_counter()
        self.stopped_at: int | None = None

    def after_iteration(self, info) -> bool:
        if self.max_s is not None and time.perf_counter() - self.start > self.max_s:
            self.stopped_at = info.iteration
            return False  # stop training
        return True


class CatBoostNative(BaseEstimator):
    """CatBoost with default parameters and its native categorical features.

    CatBoost wants categorical values as strings without NaN, so ``category`` columns are cast to
    strings with missing values as their own level. Multiclass fits whose classes × rows × features
    exceed ``max_multiclass_work``, and fits that run past ``max_fit_s`` seconds, raise
    ``ModelSkipped`` (the reason lands in the results).
    """

    def __init__(
        self,
        *,
        task: str = "binary",
        seed: int = 0,
        max_multiclass_work: int = CATBOOST_MAX_MULTICLASS_WORK,
        max_fit_s: float | None = CATBOOST_MAX_FIT_S,
    ):
        self.task = task
        self.seed = seed
        self.max_multiclass_work = max_multiclass_work
        self.max_fit_s = max_fit_s

    def _prepare(self, X: pd.DataFrame) -> pd.DataFrame:
        X = X.copy()
        for col in self.cat_features_:
            X[col] = X[col].astype(object).where(X[col].notna(), "__missing__").astype(str)
        return X

    def fit(self, X: pd.DataFrame, y):
        import catboost

        self.cat_features_ = [c for c in X.columns if _is_categorical(X[c])]
        n_classes = len(np.unique(y))
        work = n_classes * X.shape[0] * X.shape[1]
        if self.task == "multiclass" and work > self.max_multiclass_work:
            raise ModelSkipped(
                f"multiclass fit of {n_classes} classes × {X.shape[0]} rows × {X.shape[1]} "
                f"features = {work} > {self.max_multiclass_work} would take minutes on "
                f"{N_THREADS} threads"
            )
        params = dict(
            thread_count=N_THREADS,
            random_seed=self.seed,
            verbose=False,
            allow_writing_files=False,
            cat_features=self.cat_features_,
        )
        if self.task == "regression":
            self.model_ = catboost.CatBoostRegressor(**params)
        else:
            self.model_ = catboost.CatBoostClassifier(**params)
        budget = _TimeBudget(self.max_fit_s)
        self.model_.fit(self._prepare(X), y, callbacks=[budget] if self.max_fit_s else None)
        if budget.stopped_at is not None:
            raise ModelSkipped(
                f"fit exceeded the {self.max_fit_s:g} s budget at iteration {budget.stopped_at} "
                f"of {self.model_.get_all_params()['iterations']} (default) on {N_THREADS} threads"
            )
        if self.task != "regression":
            self.classes_ = np.asarray(self.model_.classes_)
        return self

    def predict(self, X):
        pred = self.model_.predict(self._prepare(X))
        return np.asarray(pred).reshape(len(X), -1)[:, 0] if self.task != "regression" else pred

    def predict_proba(self, X):
        return self.model_.predict_proba(self._prepare(X))


def linear(task: str, seed: int) -> LinearBaseline:
    return LinearBaseline(task=task, seed=seed)


def lightgbm(task: str, seed: int):
    import lightgbm as lgb

    cls = lgb.LGBMRegressor if task == "regression" else lgb.LGBMClassifier
    # Default parameters; pandas ``category`` columns are used as categorical features.
    return cls(n_jobs=N_THREADS, random_state=seed, verbose=-1)


def xgboost(task: str, seed: int):
    import xgboost as xgb

    cls = xgb.XGBRegressor if task == "regression" else xgb.XGBClassifier
    return cls(n_jobs=N_THREADS, random_state=seed, enable_categorical=True, tree_method="hist")


def catboost(task: str, seed: int) -> CatBoostNative:
    return CatBoostNative(task=task, seed=seed)


def _from_tabfm(classifier: str, regressor: str) -> Callable[[str, int], object]:
    """A factory for an estimator of the ``tabfm`` package, imported only when used."""

    def factory(task: str, seed: int):
        name = regressor if task == "regression" else classifier
        import tabfm

        cls = getattr(tabfm, name, None)
        if cls is None:
            raise ImportError(f"tabfm.{name} is not available in this version of tabfm")
        return cls(random_state=seed)

    factory.__name__ = classifier.removesuffix("Classifier").lower()
    return factory


MODELS: dict[str, Callable[[str, int], object]] = {
    "linear": linear,
    "lightgbm": lightgbm,
    "xgboost": xgboost,
    "catboost": catboost,
    "tabfm": _from_tabfm("TabFMClassifier", "TabFMRegressor"),
    "tabm": _from_tabfm("TabMClassifier", "TabMRegressor"),
    "tabr": _from_tabfm("TabRClassifier", "TabRRegressor"),
}


_SPEC = re.compile(r"^(?P<name>[A-Za-z_][\w]*)(?:\[(?P<params>[^\[\]]*)\])?$")


def parse_model_spec(spec: str) -> tuple[str, dict[str, object]]:
    """Split ``"tabfm[n_estimators=2; softmax_temperature=0.9]"`` into a name and parameters."""
    match = _SPEC.match(spec.strip())
    if match is None:
        raise ValueError(f"model {spec!r}: expected NAME or NAME[key=value; ...]")
    params: dict[str, object] = {}
    for item in filter(None, (t.strip() for t in (match["params"] or "").split(";"))):
        key, sep, text = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"model {spec!r}: parameter {item!r} is not key=value")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()  # a bare word such as device=cpu
        params[key.strip()] = value
    return match["name"], params


def make_model(spec: str, task: str, seed: int):
    """Build the estimator registered as ``spec``'s name with its parameters set.

    An unknown name raises ``KeyError``; a parameter the estimator lacks raises ``ValueError``.
    """
    name, params = parse_model_spec(spec)
    try:
        factory = MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(MODELS)}") from None
    model = factory(task, seed)
    if params:
        model.set_params(**params)
    return model
