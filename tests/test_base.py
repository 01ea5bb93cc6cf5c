"""The shared estimator base, exercised through a minimal model defined here.

The model is a nearest-class-mean rule in torch: small enough that every failure points at the
base (validation, encoding, seeding, save/load), not at a network.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_iris, make_regression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from tabfm.base import TabularClassifier, TabularRegressor
from tabfm.errors import NotFittedError, TabFMValidationError
from tabfm.serialization import load_estimator


def _features(X_enc: np.ndarray) -> torch.Tensor:
    return torch.nan_to_num(torch.as_tensor(X_enc, dtype=torch.float32))


class MeanClassifier(TabularClassifier):
    """Predicts the class whose mean (plus seeded jitter, to test random_state) is nearest."""

    def __init__(self, *, jitter: float = 0.0, categorical_features: Any = None, device: str = "auto", random_state: Any = None) -> None:
        self.jitter = jitter
        self.categorical_features = categorical_features
        self.device = device
        self.random_state = random_state

    def _fit_encoded(self, X_enc: np.ndarray, y_enc: np.ndarray, rng: np.random.Generator) -> None:
        X = _features(X_enc)
        means = torch.stack([X[torch.as_tensor(y_enc == c)].mean(0) for c in range(self.n_classes_)])
        self.means_ = means + self.jitter * torch.randn(means.shape)

    def _predict_proba_encoded(self, X_enc: np.ndarray) -> np.ndarray:
        return torch.softmax(-torch.cdist(_features(X_enc), self.means_), dim=1).numpy()

    def _get_state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        return {"kind": "means"}, {"means": self.means_}

    def _set_state(self, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        assert meta == {"kind": "means"}
        self.means_ = tensors["means"]


class MeanRegressor(TabularRegressor):
    def __init__(self, *, categorical_features: Any = None, device: str = "auto", random_state: Any = None) -> None:
        self.categorical_features = categorical_features
        self.device = device
        self.random_state = random_state

    def _fit_encoded(self, X_enc: np.ndarray, y_enc: np.ndarray, rng: np.random.Generator) -> None:
        X = np.c_[np.nan_to_num(X_enc), np.ones(len(X_enc))]
        self.coef_ = np.linalg.lstsq(X, y_enc, rcond=None)[0]

    def _predict_encoded(self, X_enc: np.ndarray) -> np.ndarray:
        return np.c_[np.nan_to_num(X_enc), np.ones(len(X_enc))] @ self.coef_


def test__classifier__fit_predict__labels_from_classes_and_probabilities_sum_to_one() -> None:
    X, y = load_iris(return_X_y=True, as_frame=True)
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    model = MeanClassifier().fit(X, labels)
    assert model.classes_.tolist() == ["setosa", "versicolor", "virginica"]
    assert model.n_features_in_ == 4 and model.feature_names_in_.tolist() == list(X.columns)
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert model.score(X, labels) > 0.85


def test__base__works_in_pipeline_cross_val_and_clone() -> None:
    X, y = load_iris(return_X_y=True)
    pipe = make_pipeline(FunctionTransformer(np.log1p), MeanClassifier())
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.mean() > 0.8
    assert clone(MeanClassifier(jitter=0.5)).get_params()["jitter"] == 0.5


def test__random_state__same_seed_same_model_and_global_rng_untouched() -> None:
    X, y = load_iris(return_X_y=True)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = MeanClassifier(jitter=1.0, random_state=7).fit(X, y)
    after = torch.rand(1)
    b = MeanClassifier(jitter=1.0, random_state=7).fit(X, y)
    c = MeanClassifier(jitter=1.0, random_state=8).fit(X, y)
    assert torch.equal(before, after)
    assert torch.equal(a.means_, b.means_) and not torch.equal(a.means_, c.means_)


def test__predict_before_fit__not_fitted_error() -> None:
    with pytest.raises(NotFittedError, match="not fitted"):
        MeanClassifier().predict(np.zeros((2, 2)))


@pytest.mark.parametrize(
    ("X", "y", "fragment"),
    [
        (np.zeros((5, 2)), np.arange(4), "X has 5, y has 4"),
        (np.zeros((4, 2)), np.zeros(4), "single class"),
        (np.zeros((4, 2)), np.array([0, 1, np.nan, 1]), "row 2"),
    ],
)
def test__fit__bad_input__clear_error(X: np.ndarray, y: np.ndarray, fragment: str) -> None:
    with pytest.raises(TabFMValidationError, match=fragment):
        MeanClassifier().fit(X, y)


def test__max_classes__more_classes_than_supported__error() -> None:
    class TwoClasses(MeanClassifier):
        _max_classes = 2

    with pytest.raises(TabFMValidationError, match="3 classes but TwoClasses supports at most 2"):
        TwoClasses().fit(*load_iris(return_X_y=True))


@pytest.fixture
def _allow_test_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    import tabfm.serialization

    monkeypatch.setattr(tabfm.serialization, "ALLOWED_MODULE_PREFIXES", ("tabfm.", __name__))


@pytest.mark.usefixtures("_allow_test_classes")
def test__save_load__roundtrip__identical_predictions_and_no_pickle(tmp_path: Any) -> None:
    frame = pd.DataFrame({"x": [0.0, 1.0, 5.0, 6.0], "c": ["a", "b", "a", None]})
    model = MeanClassifier(random_state=0).fit(frame, [True, False, True, False])
    path = model.save(tmp_path / "model")
    assert sorted(p.name for p in path.iterdir()) == ["estimator.json", "weights.safetensors"]
    loaded = MeanClassifier.load(path, device="cpu")
    np.testing.assert_array_equal(loaded.predict_proba(frame), model.predict_proba(frame))
    assert loaded.classes_.dtype == bool
    # saving again over the same directory replaces it atomically
    model.save(path)
    assert load_estimator(path).predict(frame).tolist() == model.predict(frame).tolist()


def test__load__foreign_class_in_file__refused(tmp_path: Any) -> None:
    import json

    model = MeanClassifier().fit(np.eye(3), [0, 1, 1])
    path = model.save(tmp_path / "m")
    document = json.loads((path / "estimator.json").read_text())
    document["class"] = "os.system"
    (path / "estimator.json").write_text(json.dumps(document))
    with pytest.raises(TabFMValidationError, match="refusing to load"):
        load_estimator(path)


def test__pickle__roundtrip__same_predictions() -> None:
    X, y = load_iris(return_X_y=True)
    model = MeanClassifier().fit(X, y)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).predict(X), model.predict(X))


def test__regressor__fit_predict__r2_and_feature_names() -> None:
    X, y = make_regression(n_samples=80, n_features=3, noise=0.1, random_state=0)
    model = MeanRegressor().fit(X, y)
    assert model.score(X, y) > 0.99
    assert not hasattr(model, "feature_names_in_")


def test__device__cuda_without_gpu__clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(TabFMValidationError, match="no CUDA GPU"):
        MeanClassifier(device="cuda").fit(np.eye(3), [0, 1, 1])




@pytest.mark.filterwarnings("ignore::UserWarning")
def test__sklearn_contract__base__all_checks_pass() -> None:
    """The base alone must satisfy every check; model families inherit this."""
    from sklearn.utils.estimator_checks import check_estimator

    for estimator in (MeanClassifier(), MeanRegressor()):
        failed = [r for r in check_estimator(estimator, on_fail=None) if r["status"] == "failed"]
        assert failed == [], [(r["check_name"], str(r["exception"])[:200]) for r in failed]


def test__map_on_threads__in_order_inference_mode_and_thread_count_restored() -> None:
    from tabfm.device import map_on_threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        seen = []

        def work(i: int) -> int:
            seen.append((torch.get_num_threads(), torch.is_inference_mode_enabled()))
            return i * i

        assert map_on_threads(work, 4, torch.device("cpu")) == [0, 1, 4, 9]
        assert seen == [(1, True)] * 4  # one intra-op thread each, in inference mode
        assert torch.get_num_threads() == 2
        seen.clear()
        assert map_on_threads(work, 1, torch.device("cpu")) == [0]  # a single call keeps both threads
        assert seen == [(2, True)]
    finally:
        torch.set_num_threads(before)
