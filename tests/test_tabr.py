"""TabR: retrieval, the network and the estimators, on toy data with tiny networks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import make_classification, make_regression
from sklearn.utils.estimator_checks import parametrize_with_checks

import models.tabr as tabr_module
from models.dropout import keep_mask
from models.tabr import TabR, TabRConfig, exact_search, mix_hidden
from tabfm.tabr import TabRClassifier, TabRRegressor, _faiss_search

TINY = dict(d_main=16, context_size=8, max_epochs=3, batch_size=32, device="cpu")
CHECKS = dict(d_main=16, context_size=8, max_epochs=10, batch_size=32, lr=1e-2, device="cpu")


# -- retrieval -----------------------------------------------------------------------------------


def test__exact_search__chunked__equals_brute_force_and_excludes_self() -> None:
    torch.manual_seed(0)
    candidates = torch.randn(50, 4)
    queries = candidates[[3, 7, 20]] + 0.01  # each query's nearest candidate is itself
    brute = torch.cdist(queries, candidates).topk(5, largest=False).indices
    torch.testing.assert_close(exact_search(queries, candidates, 5, chunk_size=7), brute)
    own = torch.tensor([3, 7, 20])
    found = exact_search(queries, candidates, 5, own, chunk_size=7)
    assert not (found == own[:, None]).any()
    next_five = torch.cdist(queries, candidates).topk(6, largest=False).indices[:, 1:]
    torch.testing.assert_close(found, next_five)


def test__faiss_search__when_installed__same_as_exact() -> None:
    search = _faiss_search()
    if search is None:
        pytest.skip("faiss is not installed")
    torch.manual_seed(0)
    candidates = torch.randn(200, 8)
    own = torch.arange(10)
    torch.testing.assert_close(
        search(candidates[:10], candidates, 6, own),
        exact_search(candidates[:10], candidates, 6, own),
    )


def test__mix__equals_paper_formula_of_per_context_values() -> None:
    config = TabRConfig(n_num_features=3, n_classes=3, d_main=8, context_size=4)
    model = TabR(config).eval()
    x, k = model.encode(torch.randn(5, 3), None)
    candidate_k, candidate_y = torch.randn(9, 8), torch.randint(0, 3, (9,))
    ctx = torch.randint(0, 9, (5, 4))
    with torch.no_grad():
        context_k = candidate_k[ctx]  # (B, m, D)
        weights = F.softmax(-(k[:, None] - context_k).square().sum(-1), -1)
        values = model.label_embedding(candidate_y[ctx]) + model.transform(k[:, None] - context_k)
        naive = model.head(model.predictor(x + (weights[:, :, None] * values).sum(1)))
        torch.testing.assert_close(model.mix(x, k, candidate_k, candidate_y, ctx), naive)


def test__exact_search__ties_across_chunks__lowest_indices_as_stable_sort() -> None:
    torch.manual_seed(0)
    for trial in range(60):
        n = int(torch.randint(3, 40, ()))
        candidates = torch.randint(0, 3, (n, 2)).float()  # many exactly equal distances
        queries = torch.randint(0, 3, (5, 2)).float()
        own = torch.randint(0, n, (5,)) if trial % 2 else None
        m = int(torch.randint(1, n, ()))
        dist = torch.cdist(queries, candidates).square()
        if own is not None:
            dist[torch.arange(5), own] = torch.inf
        expected = torch.sort(dist, dim=1, stable=True).indices[:, :m]
        for chunk_size in (1, 3, 16384):
            found = exact_search(queries, candidates, m, own, chunk_size=chunk_size)
            assert torch.equal(found, expected), (trial, chunk_size)


@pytest.mark.parametrize("p", [0.0, 0.3])
def test__mix_hidden__chunked__same_value_and_gradients_as_torch_ops(monkeypatch, p: float) -> None:
    monkeypatch.setattr(tabr_module, "_HIDDEN_CHUNK_ELEMENTS", 2 * 5 * 6)  # 2 rows at a time
    torch.manual_seed(0)
    a = torch.randn(7, 6, dtype=torch.float64, requires_grad=True)
    proj = torch.randn(11, 6, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(7, 5, dtype=torch.float64, requires_grad=True)
    idx = torch.randint(0, 11, (7, 5))
    torch.manual_seed(1)
    fused = mix_hidden(a, proj, idx, weights, p)
    torch.manual_seed(1)
    keep = keep_mask((7, 5, 6), p) if p > 0 else torch.ones(7, 5, 6, dtype=torch.bool)
    hidden = torch.relu(a[:, None] - proj[idx]) * keep / (1 - p)  # (B, m, H)
    naive = (weights[:, :, None] * hidden).sum(1)
    torch.testing.assert_close(fused, naive)
    g = torch.randn_like(naive)
    grads_fused = torch.autograd.grad(fused, (a, proj, weights), g)
    grads_naive = torch.autograd.grad(naive, (a, proj, weights), g)
    for got, want in zip(grads_fused, grads_naive, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("n_classes", [None, 3])
def test__mix_labels__equals_weighted_sum_of_label_embeddings(n_classes) -> None:
    torch.manual_seed(0)
    model = TabR(TabRConfig(n_num_features=2, n_classes=n_classes, d_main=8))
    weights = torch.rand(4, 6)
    context_y = torch.randn(4, 6) if n_classes is None else torch.randint(0, 3, (4, 6))
    naive = (weights[:, :, None] * model.embed_labels(context_y)).sum(1)  # (B, D)
    torch.testing.assert_close(model.mix_labels(weights, context_y), naive)


@pytest.mark.parametrize("memory_efficient", [False, True])
def test__training__a_row_never_retrieves_itself(monkeypatch, memory_efficient: bool) -> None:
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = TabR.retrieve

    def recording_retrieve(self, k, candidate_k, *, self_idx=None, search=None):
        ctx = original(self, k, candidate_k, self_idx=self_idx, search=search)
        if self.training:
            calls.append((self_idx, ctx))
        return ctx

    monkeypatch.setattr(TabR, "retrieve", recording_retrieve)
    X, y = make_classification(n_samples=120, n_features=4, random_state=0)
    # 96 training rows: the cheap path re-encodes the context when 96 > 1.5 * batch * context.
    batch_size = 8 if memory_efficient else 32
    TabRClassifier(
        d_main=8, context_size=4, batch_size=batch_size, max_epochs=2, random_state=0
    ).fit(X, y)
    assert calls and all(idx is not None for idx, _ in calls)
    for self_idx, ctx in calls:
        assert ctx.shape == (len(self_idx), 4)
        assert not (ctx == self_idx[:, None]).any()


def test__predict__candidate_keys_cached__not_re_encoded(monkeypatch) -> None:
    X, y = make_regression(n_samples=80, n_features=3, random_state=0)
    model = TabRRegressor(**TINY, random_state=0).fit(X, y)
    expected = model.model_.encode_keys(model.candidate_x_num_, model.candidate_x_cat_)
    torch.testing.assert_close(model.candidate_k_, expected)

    def fail(*args, **kwargs):
        raise AssertionError("candidate keys were recomputed at predict time")

    monkeypatch.setattr(TabR, "encode_keys", fail)
    assert model.predict(X).shape == (80,)


# -- estimators ----------------------------------------------------------------------------------


@pytest.mark.slow
def test__classifier__multiclass_toy__well_above_chance() -> None:
    X, y = make_classification(
        n_samples=200,
        n_features=6,
        n_informative=4,
        n_redundant=0,
        n_classes=3,
        class_sep=2.0,
        random_state=0,
    )
    model = TabRClassifier(**{**TINY, "max_epochs": 20, "lr": 3e-3}, random_state=0).fit(
        X[:150], y[:150]
    )
    proba = model.predict_proba(X[150:])
    assert proba.shape == (50, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    assert model.score(X[150:], y[150:]) > 0.6  # chance is 1/3


@pytest.mark.slow
def test__regressor__mixed_types_with_missing__explains_variance() -> None:
    X, y = make_regression(n_samples=200, n_features=4, noise=1.0, random_state=0)
    frame = pd.DataFrame(X, columns=list("abcd"))
    frame.loc[::7, "a"] = np.nan
    frame["cat"] = pd.Categorical(np.where(X[:, 0] > 0, "hi", "lo"))
    model = TabRRegressor(**{**TINY, "max_epochs": 30, "lr": 3e-3}, random_state=0).fit(
        frame[:150], y[:150]
    )
    assert model.score(frame[150:], y[150:]) > 0.5


def test__save_load__roundtrip__identical_predictions(tmp_path) -> None:
    X, y = make_classification(n_samples=80, n_features=4, random_state=0)
    frame = pd.DataFrame(X, columns=list("abcd"))
    frame["c"] = pd.Categorical(np.where(y == 1, "x", "y"))
    model = TabRClassifier(**TINY, d_embedding=4, n_bins=4, random_state=0).fit(frame, y)
    loaded = TabRClassifier.load(model.save(tmp_path / "tabr"))
    np.testing.assert_array_equal(loaded.predict_proba(frame), model.predict_proba(frame))


def test__random_state__same_seed_same_predictions_other_seed_differs() -> None:
    X, y = make_regression(n_samples=60, n_features=3, random_state=1)
    fit = lambda seed: TabRRegressor(**TINY, random_state=seed).fit(X, y).predict(X)  # noqa: E731
    np.testing.assert_array_equal(fit(3), fit(3))
    assert not np.array_equal(fit(3), fit(4))


# scikit-learn compares a row's prediction within a subset or a reordered table with atol 1e-7.
# TabR's float32 matrix products over a batch of queries are not bit-identical across batch
# shapes on every CPU (on an AMD EPYC a regression output moved by 1.8e-7, float32 rounding), so
# these two checks are replaced by the tolerance test below, at float32 precision.
_FLOAT32_BATCH_CHECKS = {
    "check_methods_subset_invariance": "float32 batch-shape rounding (1e-7); see the test below",
    "check_methods_sample_order_invariance": "float32 batch-shape rounding (1e-7); see the test below",
}


@parametrize_with_checks(
    [TabRClassifier(**CHECKS, random_state=0), TabRRegressor(**CHECKS, random_state=0)]
)
def test__sklearn_contract__tabr(estimator, check) -> None:
    name = getattr(check, "func", check).__name__
    if name in _FLOAT32_BATCH_CHECKS:  # passes on some CPUs, not all: replaced, not expected to fail
        pytest.skip(_FLOAT32_BATCH_CHECKS[name])
    check(estimator)


def test__predict__subset_and_reordered_rows__same_predictions_to_float32_precision() -> None:
    X, y = make_regression(n_samples=120, n_features=4, random_state=2)
    model = TabRRegressor(**CHECKS, random_state=0).fit(X, y)
    full = model.predict(X)
    order = np.random.default_rng(0).permutation(len(X))
    np.testing.assert_allclose(model.predict(X[order]), full[order], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.predict(X[::3]), full[::3], rtol=1e-5, atol=1e-5)


def test__estimator__faiss_for_many_candidates__same_predictions_as_exact(monkeypatch) -> None:
    import tabfm.tabr as tabr_module

    if _faiss_search() is None:
        pytest.skip("faiss is not installed")
    X, y = make_regression(n_samples=80, n_features=3, random_state=0)
    exact = TabRRegressor(**TINY, random_state=0).fit(X, y).predict(X)
    monkeypatch.setattr(tabr_module, "FAISS_MIN_CANDIDATES", 10)
    with_faiss = TabRRegressor(**TINY, random_state=0).fit(X, y).predict(X)
    np.testing.assert_allclose(with_faiss, exact, rtol=1e-4, atol=1e-4)
