"""TabFM estimators with local contexts: a local member's test row reads only its nearest training rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import make_classification, make_regression

from tabfm.errors import TabFMValidationError
from tabfm.icl import MAX_QUERIES, TabFMClassifier, TabFMRegressor
from tabfm.neighbours import NeighbourIndex, relevance_weights
from tests.test_tabfm import _tiny_checkpoint


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("ckpt")
    return {task: _tiny_checkpoint(directory, task, "full") for task in ("classification", "regression")}


def _regression(n: int = 150, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_regression(n_samples=n, n_features=4, noise=5.0, random_state=seed)
    return X, y * 50 + 3000  # far from standardised units: the local map back must be right


def test__relevance_weights__the_column_the_target_follows_outweighs_noise() -> None:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(600, 5))
    y = np.sin(2 * points[:, 0]) + 0.1 * rng.normal(size=600)  # nonlinear in column 0 only
    w = relevance_weights(points, y)
    assert w.shape == (5,) and np.isclose(np.mean(w**2), 1.0)
    assert w[0] > 5 * w[1:].max()
    # one-hot classes: the column that separates class 2 from the rest counts
    classes = (points[:, 3] > 0.5).astype(int) * 2
    w_cls = relevance_weights(points, (classes[:, None] == np.arange(3)).astype(float))
    assert np.argmax(w_cls) == 3
    # a constant target (or column) explains nothing: every column alike
    np.testing.assert_allclose(relevance_weights(points, np.ones(600)), np.ones(5))


def test__neighbour_index__relevance_targets_pick_neighbours_by_the_relevant_column() -> None:
    rng = np.random.default_rng(1)
    X = np.column_stack([rng.uniform(-3, 3, size=400), rng.normal(size=(400, 6))])
    y = X[:, 0] ** 2  # only column 0 matters; six noise columns swamp it in an unweighted distance
    plain = NeighbourIndex(np.zeros(7, bool), np.zeros(7, int)).fit(X, 10)
    weighted = NeighbourIndex(np.zeros(7, bool), np.zeros(7, int)).fit(X, 10, targets=y)
    gap = {name: np.abs(X[index.query(X[:50])][..., 0] - X[:50, None, 0]).mean()
           for name, index in (("plain", plain), ("weighted", weighted))}
    assert gap["weighted"] < gap["plain"] / 3
    assert np.all(weighted.query(X[:5])[:, 0] == np.arange(5))  # a row's nearest row is still itself


def test__local_metric__estimators_weigh_or_not_and_bad_value_is_named(ckpts: dict[str, Path]) -> None:
    X, y = _regression(120)
    for metric, weighted in (("relevance", True), ("uniform", False)):
        reg = TabFMRegressor(checkpoint=ckpts["regression"], n_estimators=2, context="local", local_rows=16,
                             local_metric=metric).fit(X, y)
        assert (reg.neighbour_index_.weights_ is not None) is weighted
    with pytest.raises(TabFMValidationError, match="local_metric"):
        TabFMClassifier(checkpoint=ckpts["classification"], local_metric="cosine").fit(np.eye(4), [0, 1, 1, 0])


def test__neighbour_index__nearest_first_and_categories_at_distance_one() -> None:
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=200), rng.integers(2, 5, size=200)])  # column 1: codes 2-4
    index = NeighbourIndex(np.array([False, True]), np.array([0, 5])).fit(X, 10)
    queries = X[:5]
    found = index.query(queries)
    points, q = index._embed(X).numpy(), index._embed(queries).numpy()
    expected = np.argsort(((q[:, None] - points[None]) ** 2).sum(-1), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(found, expected)
    assert np.all(found[:, 0] == np.arange(5))  # a row's nearest training row is itself
    # two rows with the same x and different categories lie at distance exactly 1
    pair = index._embed(np.array([[0.3, 2.0], [0.3, 4.0]])).numpy()
    assert float(((pair[0] - pair[1]) ** 2).sum()) == pytest.approx(1.0, abs=1e-6)


def test__neighbour_index__anchors__a_query_reads_its_nearest_anchors_neighbourhood() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 3))
    anchors = np.sort(rng.choice(300, size=20, replace=False))
    index = NeighbourIndex(np.zeros(3, bool), np.zeros(3, int)).fit(X, 15, anchors=anchors)
    queries = rng.normal(size=(40, 3))
    points, q = index._embed(X).numpy(), index._embed(queries).numpy()
    nearest_anchor = anchors[np.argmin(((q[:, None] - points[anchors][None]) ** 2).sum(-1), axis=1)]
    expected = np.argsort(((points[nearest_anchor][:, None] - points[None]) ** 2).sum(-1), axis=1, kind="stable")[:, :15]
    np.testing.assert_array_equal(index.query(queries), expected)
    assert np.all(index.query(queries)[:, 0] == nearest_anchor)  # an anchor is its own nearest row


@pytest.mark.parametrize("task", ["classification", "regression"])
def test__local_context__covering_all_training_rows__same_as_global(ckpts: dict[str, Path], task: str) -> None:
    if task == "classification":
        X, y = make_classification(n_samples=120, n_features=5, random_state=0)
        cls = TabFMClassifier
    else:
        X, y = _regression(120)
        cls = TabFMRegressor
    whole = cls(checkpoint=ckpts[task], n_estimators=2).fit(X[:90], y[:90])
    local = cls(checkpoint=ckpts[task], n_estimators=2, context="local", local_rows=90).fit(X[:90], y[:90])
    assert local.neighbour_index_ is None  # every row reads the whole table: the global path
    out = (lambda m: m.predict_proba(X[90:])) if task == "classification" else (lambda m: m.predict(X[90:]))
    np.testing.assert_array_equal(out(local), out(whole))


@pytest.mark.parametrize(("n_train", "local"), [(59, False), (60, True)])
def test__local_context__only_when_the_table_holds_twice_local_rows(ckpts: dict[str, Path], n_train: int, local: bool) -> None:
    X, y = _regression(n_train + 10)
    mixed = TabFMRegressor(checkpoint=ckpts["regression"], n_estimators=2, context="mixed", local_rows=30).fit(X[:n_train], y[:n_train])
    assert [m.local for m in mixed.members_] == [False, local]
    focused = TabFMRegressor(checkpoint=ckpts["regression"], n_estimators=2, context="focused", local_rows=30).fit(X[:n_train], y[:n_train])
    assert [m.focused for m in focused.members_] == [False, True]  # a focused read narrows whenever it can


@pytest.mark.parametrize("anchors", [None, 16])
def test__local_context__equals_a_fit_on_the_neighbours_alone(ckpts: dict[str, Path], anchors: object) -> None:
    """A test row's local prediction is what a model fitted on its context rows alone predicts:
    its own k nearest rows, or with anchors those of its nearest anchor."""
    X, y = _regression()
    k = 40
    # No ridge columns: a local context reads the whole table's leave-one-out ridge predictions,
    # which a fit on the neighbours alone would compute from them alone.
    local = TabFMRegressor(
        checkpoint=ckpts["regression"], n_estimators=1, context="local", local_rows=k, local_anchor_rows=anchors,
        linear_feature="none",
    ).fit(X[:120], y[:120])
    assert local.neighbour_index_ is not None and local.contexts_ == [None]
    assert (local.local_anchors_ is None) == (anchors is None)
    X_test = local._transform(X[120:])
    neighbours = local._neighbours(X_test)
    if anchors is None:  # each row's context is its own k nearest training rows
        index = local.neighbour_index_  # the regressor weighs columns by relevance (its default)
        assert index.weights_ is not None
        points, q = index.points_.numpy(), index._embed_query(X_test).numpy()
        expected = np.argsort(((q[:, None] - points[None]) ** 2).sum(-1), axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(neighbours, expected)
    for row in (0, 7, 29):
        alone = TabFMRegressor(checkpoint=ckpts["regression"], n_estimators=1, linear_feature="none").fit(
            X[neighbours[row]], y[neighbours[row]]
        )
        for output in ("mean", "median"):
            np.testing.assert_allclose(
                local.predict(X[120 + row : 121 + row], output=output),
                alone.predict(X[120 + row : 121 + row], output=output),
                rtol=1e-4,
            )


def _fit_three_class_or_regression(ckpts: dict[str, Path], task: str, **params: object) -> tuple[object, object, np.ndarray]:
    """A model fitted on 100 rows, its predict function, and the 50 test rows (``X[100:]``)."""
    if task == "classification":
        X, y = make_classification(n_samples=150, n_features=5, n_classes=3, n_informative=3, random_state=1)
        model = TabFMClassifier(checkpoint=ckpts[task], **params).fit(X[:100], y[:100])
        return model, model.predict_proba, X[100:]
    X, y = _regression()
    model = TabFMRegressor(checkpoint=ckpts[task], **params).fit(X[:100], y[:100])
    return model, model.predict, X[100:]


def _assert_rows_independent(predict: object, X_test: np.ndarray) -> np.ndarray:
    """Predictions of a subset and of the reversed rows match those of all rows; returns those."""
    full = predict(X_test)
    np.testing.assert_allclose(predict(X_test[::3]), full[::3], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predict(X_test[::-1]), full[::-1], rtol=1e-5, atol=1e-6)
    return full


@pytest.mark.parametrize("anchors", [None, 1, 16, 40])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test__local_context__test_rows_independent_and_save_load_identical(
    ckpts: dict[str, Path], task: str, anchors: object, tmp_path: Path
) -> None:
    model, predict, X_test = _fit_three_class_or_regression(
        ckpts, task, n_estimators=2, context="local", local_rows=30, local_anchor_rows=anchors, batch_size=70
    )
    full = _assert_rows_independent(predict, X_test)
    loaded = type(model).load(model.save(tmp_path / "local"), device="cpu")
    assert (loaded.context, loaded.local_rows, loaded.local_anchor_rows) == ("local", 30, anchors)
    assert (model.local_anchors_ is None) == (anchors in (None, 1))
    if model.local_anchors_ is not None:
        np.testing.assert_array_equal(loaded.local_anchors_, model.local_anchors_)
    loaded_predict = loaded.predict_proba if task == "classification" else loaded.predict
    np.testing.assert_allclose(loaded_predict(X_test), full, rtol=1e-5, atol=1e-6)  # float32 order of operations


def test__local_context__regression_quantiles_ordered_and_constant_neighbourhoods_finite(ckpts: dict[str, Path]) -> None:
    X, y = _regression()
    y = np.where(X[:, 0] > 0, 10.0, -4.0)  # a step: most local contexts hold a single value
    model = TabFMRegressor(checkpoint=ckpts["regression"], n_estimators=2, context="local", local_rows=20).fit(X[:120], y[:120])
    mean = model.predict(X[120:])
    q = model.predict(X[120:], output="quantiles", quantiles=[0.1, 0.5, 0.9])
    assert np.all(np.isfinite(mean)) and np.all(np.isfinite(q))
    assert np.all(np.diff(q, axis=1) >= -1e-6)
    np.testing.assert_allclose(q[:, 1], model.predict(X[120:], output="median"), rtol=1e-5)


@pytest.mark.parametrize("n_estimators", [1, 2, 4, 8])
def test__mixed_context__local_members_cross_the_numeric_transform(ckpts: dict[str, Path], n_estimators: int) -> None:
    X, y = make_classification(n_samples=100, n_features=4, random_state=0)
    model = TabFMClassifier(checkpoint=ckpts["classification"], n_estimators=n_estimators, context="mixed", local_rows=20).fit(X, y)
    pattern = [(m.quantile, m.local) for m in model.members_]
    expected = [(False, False), (True, True), (False, True), (True, False)] * 2
    assert pattern == expected[:n_estimators]
    assert [c is None for c in model.contexts_] == [m.local for m in model.members_]


@pytest.mark.parametrize("target_transform", ["none", "mixed"])
def test__mixed_context__regression_quantiles_invert_the_mixture_cdf(ckpts: dict[str, Path], target_transform: str) -> None:
    X, y = _regression()
    model = TabFMRegressor(
        checkpoint=ckpts["regression"], n_estimators=2, context="mixed", local_rows=25, target_transform=target_transform
    ).fit(X[:120], y[:120])
    levels = [0.05, 0.3, 0.5, 0.9]
    q = model.predict(X[120:], output="quantiles", quantiles=levels)
    assert np.all(np.diff(q, axis=1) > 0)
    np.testing.assert_allclose(q[:, 2], model.predict(X[120:], output="median"), rtol=1e-9)
    # the mixture's CDF reaches each level at the returned quantile and not before it (a warped
    # member puts its mass beyond the training range on the extreme targets: the CDF may jump there)
    members = model._member_distributions(model._transform(X[120:]))
    bar = model.network_.bar_distribution
    z = torch.as_tensor((q - model.y_mean_) / model.y_std_)
    # a hair above z: the round trip through the target's units may land just below a jump
    cdf = sum(m.cdf(bar, z + 1e-9) for m in members) / len(members)
    before = sum(m.cdf(bar, z - 1e-6) for m in members) / len(members)
    assert np.all(cdf.numpy() >= np.asarray(levels) - 1e-6) and np.all(before.numpy() <= np.asarray(levels) + 1e-6)
    if target_transform == "none":  # continuous: exactly the level
        np.testing.assert_allclose(cdf.numpy(), np.broadcast_to(levels, q.shape), atol=1e-6)
    # the mean is the average of the members' means, each on its own scale
    means = [m.mean(bar)[:, 0] for m in members]
    np.testing.assert_allclose(model.predict(X[120:]), (sum(means) / 2).numpy() * model.y_std_ + model.y_mean_, rtol=1e-9)
    assert not np.allclose(means[0], means[1], rtol=1e-3)  # the two members differ: a real mixture
    plain = members[0]  # member 0 is global and unwarped: its CDF and mean are the bars' own
    np.testing.assert_allclose(plain.cdf(bar, z).numpy(), bar.cdf(plain.logits, z).numpy())
    np.testing.assert_allclose(means[0].numpy(), bar.mean(plain.logits).numpy())
    if target_transform == "mixed":  # a warped member's mean: its quantiles mapped back, averaged
        warped = members[1]
        assert warped.warp is not None
        t = bar.quantile(warped.logits, [0.25, 0.75]) * warped.scale + warped.shift
        back = (model.target_quantiles_.inverse(t.numpy()) - model.y_mean_) / model.y_std_
        np.testing.assert_allclose(warped.quantile(bar, [0.25, 0.75]).numpy(), back)


def test__local_context__categorical_frame__runs_and_sums_to_one(ckpts: dict[str, Path]) -> None:
    rng = np.random.default_rng(0)
    n = 90
    X = pd.DataFrame({
        "x": rng.normal(size=n),
        "colour": pd.Categorical(rng.choice(["red", "green", "blue"], size=n)),
        "gap": np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n)),
    })
    y = np.where(X["colour"] == "red", "a", "b")
    model = TabFMClassifier(checkpoint=ckpts["classification"], n_estimators=2, context="local", local_rows=16).fit(X[:60], y[:60])
    proba = model.predict_proba(X[60:])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)


def test__context__unknown_value__error_names_it(ckpts: dict[str, Path]) -> None:
    with pytest.raises(TabFMValidationError, match="context must be one of"):
        TabFMClassifier(checkpoint=ckpts["classification"], context="nearest").fit(np.eye(4), [0, 1, 1, 0])


def test__local_anchor_rows__rows_sharing_an_anchor_share_one_table(ckpts: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = make_classification(n_samples=400, n_features=4, random_state=2)
    model = TabFMClassifier(
        checkpoint=ckpts["classification"], n_estimators=1, context="local", local_rows=24, local_anchor_rows=16
    ).fit(X[:160], y[:160])
    assert len(model.local_anchors_) == 10  # one anchor per 16 training rows
    tables = []
    forward = model.network_.forward  # the network is shared with later fits: patched for this test only
    monkeypatch.setattr(model.network_, "forward", lambda x, *a, **kw: tables.append(x.shape) or forward(x, *a, **kw))
    model.predict_proba(X[160:])
    _, per_anchor = np.unique(model._neighbours(model._transform(X[160:]))[:, 0], return_counts=True)
    assert len(per_anchor) <= 10
    # one table per anchor in use, split when more than MAX_QUERIES test rows read it
    assert sum(shape[0] for shape in tables) == int(np.ceil(per_anchor / MAX_QUERIES).sum()) < 240
    assert all(shape[1] > 24 + 1 for shape in tables)  # each holds several test rows


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test__local_context__bad_values__error_names_it(ckpts: dict[str, Path], bad: object) -> None:
    with pytest.raises(TabFMValidationError, match="local_rows"):
        TabFMClassifier(checkpoint=ckpts["classification"], context="local", local_rows=bad).fit(np.eye(4), [0, 1, 1, 0])


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "all"])
def test__local_anchor_rows__bad_values__error_names_it(ckpts: dict[str, Path], bad: object) -> None:
    with pytest.raises(TabFMValidationError, match="local_anchor_rows"):
        TabFMClassifier(checkpoint=ckpts["classification"], context="local", local_anchor_rows=bad).fit(np.eye(4), [0, 1, 1, 0])


def test__local_context__onnx_export__refused_with_reason(ckpts: dict[str, Path], tmp_path: Path) -> None:
    from tabfm.onnx_export import export_estimator

    X, y = _regression()
    model = TabFMRegressor(checkpoint=ckpts["regression"], n_estimators=1, context="local", local_rows=20).fit(X, y)
    with pytest.raises(TabFMValidationError, match="context='local'"):
        export_estimator(model, tmp_path / "m.onnx")


@pytest.mark.parametrize("n_estimators", [1, 2, 4])
def test__focused_context__members_1_and_2_focused_and_all_keep_a_global_summary(ckpts: dict[str, Path], n_estimators: int) -> None:
    X, y = make_classification(n_samples=100, n_features=4, random_state=0)
    model = TabFMClassifier(checkpoint=ckpts["classification"], n_estimators=n_estimators, context="focused", local_rows=20).fit(X, y)
    assert [(m.quantile, m.focused, m.local) for m in model.members_] == [
        (False, False, False), (True, True, False), (False, True, False), (True, False, False)
    ][:n_estimators]
    assert all(c is not None for c in model.contexts_)
    assert (model.neighbour_index_ is None) == (n_estimators == 1) and model.local_anchors_ is None


@pytest.mark.parametrize("threads", [1, 2])
def test__focused_context__one_neighbour_search_per_predict_whichever_member_needs_it_first(
    ckpts: dict[str, Path], monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    X, y = make_classification(n_samples=150, n_features=5, random_state=2)
    model = TabFMClassifier(checkpoint=ckpts["classification"], n_estimators=4, local_rows=25).fit(X[:100], y[:100])
    expected = model.predict_proba(X[100:])
    searches = []
    original = NeighbourIndex.query
    monkeypatch.setattr(NeighbourIndex, "query", lambda self, X_enc: searches.append(len(X_enc)) or original(self, X_enc))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)  # 2: members on two threads, the two focused ones at once
    try:
        proba = model.predict_proba(X[100:])
    finally:
        torch.set_num_threads(previous)
    assert searches == [50]
    np.testing.assert_allclose(proba, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test__focused_context__a_focused_member_reads_its_neighbours_in_the_last_blocks(ckpts: dict[str, Path], task: str) -> None:
    if task == "classification":
        X, y = make_classification(n_samples=150, n_features=5, n_classes=3, n_informative=3, random_state=1)
        cls = TabFMClassifier
    else:
        X, y = _regression()
        cls = TabFMRegressor
    params = dict(checkpoint=ckpts[task], n_estimators=2, local_rows=25, batch_size=20)
    focused = cls(context="focused", **params).fit(X[:100], y[:100])
    plain = cls(context="global", **params).fit(X[:100], y[:100])
    X_test = focused._transform(X[100:])
    neighbours = focused._neighbours(X_test)
    assert neighbours.shape == (50, 25)
    calls = []
    original = focused.network_.predict_from_context
    focused.network_.predict_from_context = lambda c, x, **kw: calls.append(kw) or original(c, x, **kw)
    out = focused._member_logits(1, X_test, neighbours)
    assert [kw["focus_rows"].shape for kw in calls] == [(1, 20, 25), (1, 20, 25), (1, 10, 25)]  # batch_size chunks
    np.testing.assert_array_equal(torch.cat([kw["focus_rows"][0] for kw in calls]).numpy(), neighbours)
    member_table, _ = focused._member_table(focused.members_[1], X_test, focused._ridge_columns(X_test))
    with torch.inference_mode():
        expected = original(focused.contexts_[1], member_table, focus_rows=torch.as_tensor(neighbours)[None], focus_blocks=2)
    np.testing.assert_allclose(out, expected[0].numpy(), rtol=1e-5, atol=1e-5)
    # member 0 is global: the same as in a global model
    np.testing.assert_array_equal(focused._member_logits(0, X_test, neighbours), plain._member_logits(0, X_test, None))
    assert not np.allclose(out, plain._member_logits(1, X_test, None), atol=1e-4)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test__focused_context__test_rows_independent_and_save_load_identical(ckpts: dict[str, Path], task: str, tmp_path: Path) -> None:
    model, predict, X_test = _fit_three_class_or_regression(
        ckpts, task, n_estimators=4, context="focused", local_rows=30, batch_size=16
    )
    full = _assert_rows_independent(predict, X_test)
    loaded = type(model).load(model.save(tmp_path / "focused"), device="cpu")
    assert [m.focused for m in loaded.members_] == [False, True, True, False]
    loaded_predict = loaded.predict_proba if task == "classification" else loaded.predict
    np.testing.assert_allclose(loaded_predict(X_test), full, rtol=1e-5, atol=1e-6)  # float32 order of operations


def test__focused_context__neighbourhood_of_every_row__same_as_global(ckpts: dict[str, Path]) -> None:
    X, y = make_classification(n_samples=120, n_features=5, random_state=0)
    whole = TabFMClassifier(checkpoint=ckpts["classification"], n_estimators=3).fit(X[:90], y[:90])
    focused = TabFMClassifier(checkpoint=ckpts["classification"], n_estimators=3, context="focused", local_rows=90).fit(X[:90], y[:90])
    assert focused.neighbour_index_ is None and not any(m.focused for m in focused.members_)
    np.testing.assert_array_equal(focused.predict_proba(X[90:]), whole.predict_proba(X[90:]))


def test__focused_context__onnx_export__refused_with_reason(ckpts: dict[str, Path], tmp_path: Path) -> None:
    from tabfm.onnx_export import export_estimator

    X, y = make_classification(n_samples=100, n_features=4, random_state=0)
    model = TabFMClassifier(checkpoint=ckpts["classification"], n_estimators=2, context="focused", local_rows=20).fit(X, y)
    with pytest.raises(TabFMValidationError, match="context='focused'"):
        export_estimator(model, tmp_path / "m.onnx")


def test__focused_context__inducing_attention_network__every_member_global(tmp_path: Path) -> None:
    X, y = make_classification(n_samples=100, n_features=4, random_state=0)
    ckpt = _tiny_checkpoint(tmp_path, "classification", "inducing")
    focused = TabFMClassifier(checkpoint=ckpt, n_estimators=2, context="focused", local_rows=20).fit(X[:80], y[:80])
    plain = TabFMClassifier(checkpoint=ckpt, n_estimators=2, context="global").fit(X[:80], y[:80])
    assert not any(m.focused for m in focused.members_) and focused.neighbour_index_ is None
    np.testing.assert_array_equal(focused.predict_proba(X[80:]), plain.predict_proba(X[80:]))


@pytest.mark.parametrize("anchors", [None, 16])
def test__neighbour_index__query_in_chunks__same_rows(anchors: object) -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 3))
    index = NeighbourIndex(np.zeros(3, bool), np.zeros(3, int)).fit(X, 12, anchors=None if anchors is None else np.arange(0, 200, anchors))
    queries = rng.normal(size=(50, 3))
    np.testing.assert_array_equal(index.query(queries, chunk_size=7), index.query(queries))


@pytest.mark.parametrize(("n_exact_blocks", "focused", "focus_blocks"), [(0, [False, False], None), (1, [False, True], 1)])
def test__focused_context__inducing_network__focuses_only_in_its_exact_last_blocks(
    tmp_path: Path, n_exact_blocks: int, focused: list[bool], focus_blocks: int | None
) -> None:
    from models.icl import ICLConfig, ICLTransformer
    from tabfm.checkpoint import save_checkpoint
    from tests.test_tabfm import TINY

    torch.manual_seed(0)
    config = ICLConfig(task="classification", attention={"kind": "inducing", "n_heads": 2, "n_inducing": 4},
                       n_exact_blocks=n_exact_blocks, **TINY)
    path = save_checkpoint(tmp_path / "hybrid.safetensors", ICLTransformer(config), dtype=torch.float32)
    X, y = make_classification(n_samples=150, n_features=5, random_state=1)
    model = TabFMClassifier(checkpoint=path, n_estimators=2, context="focused", local_rows=25).fit(X[:100], y[:100])
    assert [m.focused for m in model.members_] == focused
    calls = []
    original = model.network_.predict_from_context
    model.network_.predict_from_context = lambda c, x, **kw: calls.append(kw.get("focus_blocks")) or original(c, x, **kw)
    model.predict_proba(X[100:])
    assert set(calls) == ({None} if focus_blocks is None else {None, focus_blocks})


def test__vote_log_loss__a_direct_count_without_the_row_itself_and_tight_wins_on_sharp_classes() -> None:
    rng = np.random.default_rng(3)
    X = rng.uniform(-1, 1, size=(400, 1))
    stripes = (np.floor(X[:, 0] * 8) % 2).astype(int)  # classes alternate every 0.125: locally sharp
    noise = rng.integers(0, 2, size=400)  # labels unrelated to X
    index = NeighbourIndex(np.zeros(1, bool), np.zeros(1, int)).fit(X, 64)
    sizes = [4, 16, 64]
    points = index.points_.numpy().astype(np.float64)
    distances = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(distances, np.inf)  # a row never votes for itself
    order = np.argsort(distances, axis=1)
    spread = np.linspace(0, 399, 100).round().astype(int)  # the rows scored with max_rows=100
    for labels in (stripes, noise):
        same = {k: (labels[order[:, :k]] == labels[:, None]).sum(1) for k in sizes}
        expected = [-np.log((same[k] + 0.5) / (k + 1)).mean() for k in sizes]
        np.testing.assert_allclose(index.vote_log_loss(labels, 2, sizes), expected, rtol=1e-6)
        expected = [-np.log((same[k][spread] + 0.5) / (k + 1)).mean() for k in sizes]
        np.testing.assert_allclose(index.vote_log_loss(labels, 2, sizes, max_rows=100), expected, rtol=1e-6)
    assert np.argmin(index.vote_log_loss(stripes, 2, sizes)) == 0
    assert np.argmin(index.vote_log_loss(noise, 2, sizes)) == 2
    with pytest.raises(ValueError, match=r"1\.\.399"):
        index.vote_log_loss(stripes, 2, [400])


@pytest.mark.parametrize(("sharp", "expected"), [(True, 16), (False, 64)])
def test__local_rows_min__the_second_focused_member_reads_the_nearest_rows_the_vote_prefers(
    ckpts: dict[str, Path], sharp: bool, expected: int, tmp_path: Path
) -> None:
    rng = np.random.default_rng(4)
    X = rng.uniform(-1, 1, size=(330, 2))
    y = (np.floor(X[:, 0] * 3) % 2).astype(int) if sharp else rng.integers(0, 2, size=330)
    params = dict(checkpoint=ckpts["classification"], n_estimators=4, random_state=0)
    model = TabFMClassifier(local_rows=64, local_rows_min=16, **params).fit(X[:300], y[:300])
    assert [m.neighbourhood for m in model.members_] == [None, None, expected, None]
    # the tight member reads the same rows as a model whose neighbourhoods are that small
    small = TabFMClassifier(local_rows=expected, local_rows_min=None, **params).fit(X[:300], y[:300])
    X_test = model._transform(X[300:])
    np.testing.assert_allclose(model._all_member_logits(X_test)[2], small._all_member_logits(X_test)[2], rtol=1e-5, atol=1e-6)
    # and the others read local_rows, as without the choice
    wide = TabFMClassifier(local_rows=64, local_rows_min=None, **params).fit(X[:300], y[:300])
    assert all(m.neighbourhood is None for m in wide.members_)
    np.testing.assert_allclose(model._all_member_logits(X_test)[1], wide._all_member_logits(X_test)[1], rtol=1e-5, atol=1e-6)
    loaded = TabFMClassifier.load(model.save(tmp_path / "tight"), device="cpu")
    assert [m.neighbourhood for m in loaded.members_] == [None, None, expected, None]
    np.testing.assert_allclose(loaded.predict_proba(X[300:]), model.predict_proba(X[300:]), rtol=1e-5, atol=1e-6)


def test__regressor__a_local_member_reading_fewer_rows_maps_back_with_their_spread(ckpts: dict[str, Path]) -> None:
    X, y = _regression(150)
    params = dict(checkpoint=ckpts["regression"], n_estimators=2, context="local", random_state=0)
    wide = TabFMRegressor(local_rows=40, **params).fit(X[:120], y[:120])
    small = TabFMRegressor(local_rows=20, **params).fit(X[:120], y[:120])
    wide.members_[1].neighbourhood = 20  # member 1 now reads the 20 nearest rows of the 40
    X_test = wide._transform(X[120:])
    bar = wide.network_.bar_distribution.cpu()
    got = [d.mean(bar).numpy() for d in wide._member_distributions(X_test)]
    want = [d.mean(bar).numpy() for d in small._member_distributions(X_test)]
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-4)
    assert not np.allclose(got[0], want[0], atol=1e-2)  # member 0 still reads 40
