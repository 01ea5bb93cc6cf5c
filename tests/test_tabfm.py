"""TabFMClassifier / TabFMRegressor on tiny random networks: the estimator mechanics.

The quality of the shipped checkpoint is tested in tests/test_shipped_checkpoint.py; here a tiny
untrained network keeps every test fast while exercising the real code paths.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import make_regression

from models.icl import ICLConfig, ICLTransformer
from tabfm.checkpoint import load_checkpoint, save_checkpoint
from tabfm.errors import TabFMValidationError
from tabfm.icl import TabFMClassifier, TabFMRegressor

TINY = {
    "d_model": 16, "d_cell": 8, "d_cell_ffn": 16, "n_cell_heads": 2, "n_col_inducing": 4,
    "n_row_blocks": 1, "n_cls": 2, "n_icl_blocks": 2, "d_ffn": 32, "n_thinking_rows": 2,
}


def _tiny_checkpoint(directory: Path, task: str, kind: str = "inducing") -> Path:
    torch.manual_seed(0)
    n_outputs = 10 if task == "classification" else 16
    config = ICLConfig(task=task, n_outputs=n_outputs, attention={"kind": kind, "n_heads": 2, "n_inducing": 4}, **TINY)
    return save_checkpoint(directory / f"tiny-{task}-{kind}.safetensors", ICLTransformer(config), dtype=torch.float32)


@pytest.fixture(scope="module")
def cls_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), "classification")


@pytest.fixture(scope="module")
def reg_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), "regression")


@pytest.fixture(scope="module")
def table() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 120
    frame = pd.DataFrame({
        "x1": rng.normal(size=n),
        "x2": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
        "colour": pd.Categorical(rng.choice(["red", "green", "blue"], size=n)),
    })
    y = np.where(frame["x1"] + (frame["colour"] == "red") > 0.5, "yes", "no")
    return frame, y


def test__classifier__fit_predict__valid_probabilities(cls_ckpt: Path, table: Any) -> None:
    X, y = table
    model = TabFMClassifier(checkpoint=cls_ckpt, n_estimators=3).fit(X, y)
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), 2) and np.all(proba >= 0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert set(model.predict(X)) <= {"yes", "no"}
    assert len(model.members_) == 3 and len(model.contexts_) == 3


def test__classifier__test_rows__independent_of_each_other(cls_ckpt: Path, table: Any) -> None:
    X, y = table
    model = TabFMClassifier(checkpoint=cls_ckpt, n_estimators=2, batch_size=7).fit(X[:80], y[:80])
    full = model.predict_proba(X[80:])
    subset = model.predict_proba(X[80:][::3])
    np.testing.assert_allclose(subset, full[::3], atol=1e-5)


@pytest.mark.parametrize("cls", [TabFMClassifier, TabFMRegressor])
def test__members_on_threads__same_predictions_as_in_turn(cls: type, cls_ckpt: Path, reg_ckpt: Path, table: Any) -> None:
    # With 2 torch threads and 4 members, members run two at a time on one thread each; with
    # one thread they run in turn. Both must give the same predictions, and the count survives.
    X, y = table
    y = y if cls is TabFMClassifier else X["x1"].to_numpy() * 2.0
    ckpt = cls_ckpt if cls is TabFMClassifier else reg_ckpt
    before = torch.get_num_threads()
    try:
        out = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            model = cls(checkpoint=ckpt, n_estimators=4).fit(X[:90], y[:90])
            out[threads] = model.predict_proba(X[90:]) if cls is TabFMClassifier else model.predict(X[90:])
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    np.testing.assert_allclose(out[2], out[1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["inducing", "full"])
def test__classifier__training_rows_permuted__same_predictions(tmp_path: Path, table: Any, kind: str) -> None:
    """Invariance to the order of training rows, for both attention kinds through the estimator."""
    ckpt = _tiny_checkpoint(tmp_path, "classification", kind)
    X, y = table
    order = np.random.default_rng(1).permutation(80)
    a = TabFMClassifier(checkpoint=ckpt, n_estimators=1).fit(X[:80], y[:80]).predict_proba(X[80:])
    b = TabFMClassifier(checkpoint=ckpt, n_estimators=1).fit(X[:80].iloc[order], y[:80][order]).predict_proba(X[80:])
    np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("n_classes", [26, 100])
def test__classifier__more_classes_than_outputs__output_codes(cls_ckpt: Path, n_classes: int) -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(n_classes), 3)
    X = rng.normal(size=(len(y), 4)) + y[:, None] * 0.1
    model = TabFMClassifier(checkpoint=cls_ckpt, n_estimators=2).fit(X, y)
    # every pair of classes must be told apart by at least one member's grouping
    codes = np.stack([m.class_map for m in model.members_], axis=1)  # (n_classes, n_members)
    assert len(np.unique(codes, axis=0)) == n_classes
    proba = model.predict_proba(X[:10])
    assert proba.shape == (10, n_classes)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)


def test__classifier__context_subsample__keeps_every_class(cls_ckpt: Path) -> None:
    y = np.array([0] * 200 + [1] * 2 + [2] * 2)
    X = np.random.default_rng(0).normal(size=(len(y), 3))
    model = TabFMClassifier(checkpoint=cls_ckpt, n_estimators=1, max_context_rows=20).fit(X, y)
    assert len(model.y_train_) == 20 and set(model.y_train_) == {0, 1, 2}


def test__classifier__save_load__identical_probabilities(cls_ckpt: Path, table: Any, tmp_path: Path) -> None:
    X, y = table
    model = TabFMClassifier(checkpoint=cls_ckpt, n_estimators=2).fit(X, y)
    loaded = TabFMClassifier.load(model.save(tmp_path / "saved"), device="cpu")
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), atol=1e-6)


def test__classifier__random_state__reproducible_and_clonable(cls_ckpt: Path, table: Any) -> None:
    X, y = table
    a = TabFMClassifier(checkpoint=cls_ckpt, random_state=3).fit(X, y).predict_proba(X)
    b = clone(TabFMClassifier(checkpoint=cls_ckpt, random_state=3)).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)


def test__checkpoint__wrong_task__clear_error(reg_ckpt: Path, table: Any) -> None:
    X, y = table
    with pytest.raises(TabFMValidationError, match="regression network"):
        TabFMClassifier(checkpoint=reg_ckpt).fit(X, y)


def test__checkpoint__missing_file__names_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no tabfm checkpoint"):
        TabFMClassifier(checkpoint=tmp_path / "nope.safetensors").fit(np.eye(3), [0, 1, 1])


def test__checkpoint__float16_roundtrip__same_config_close_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = ICLTransformer(ICLConfig(**TINY))
    restored = load_checkpoint(save_checkpoint(tmp_path / "n.safetensors", net))
    assert restored.config == net.config
    for (name, a), (_, b) in zip(net.state_dict().items(), restored.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=2e-3, msg=name)


@pytest.mark.parametrize(
    "bad",
    [
        {"n_estimators": 0}, {"softmax_temperature": -1.0}, {"numeric_transform": "log"},
        {"categorical_transform": "ordinal"}, {"cell_grid": 1}, {"cell_grid": 2.5}, {"local_rows_min": 0},
    ],
)
def test__classifier__bad_parameters__error_names_them(cls_ckpt: Path, bad: dict) -> None:
    with pytest.raises(TabFMValidationError, match=next(iter(bad))):
        TabFMClassifier(checkpoint=cls_ckpt, **bad).fit(np.eye(3), [0, 1, 1])


@pytest.mark.parametrize(
    ("cls", "transform", "expected"),
    [
        (TabFMClassifier, None, [False, True, False, True]),  # the classifier's default: mixed
        (TabFMRegressor, None, [False] * 4),  # the regressor's default: raw values
        (TabFMRegressor, "mixed", [False, True, False, True]),
        (TabFMRegressor, "quantile", [True] * 4),
    ],
)
def test__numeric_transform__members_use_the_quantile_map_as_asked(cls: type, transform: str | None, expected: list[bool], cls_ckpt: Path, reg_ckpt: Path) -> None:
    X, y = make_regression(n_samples=60, n_features=3, random_state=2)
    X[:, 0] = np.exp(X[:, 0])  # skewed: the quantile map changes what the network sees
    if cls is TabFMClassifier:
        y, ckpt = (y > 0).astype(int), cls_ckpt
    else:
        ckpt = reg_ckpt
    kwargs = {} if transform is None else {"numeric_transform": transform}
    model = cls(checkpoint=ckpt, n_estimators=4, **kwargs).fit(X, y)
    assert [m.quantile for m in model.members_] == expected
    assert (model.scaler_ is not None) == any(expected)
    if any(expected):  # a quantile member's context differs from the raw one of the same member
        raw = cls(checkpoint=ckpt, n_estimators=4, numeric_transform="none").fit(X, y)
        i = expected.index(True)
        assert not torch.allclose(model.contexts_[i].high, raw.contexts_[i].high)


@pytest.mark.parametrize(("transform", "expected"), [(None, [False, False, True, True]), ("native", [False] * 4), ("onehot", [True] * 4)])
def test__categorical_transform__members_expand_as_asked(transform: str | None, expected: list[bool], cls_ckpt: Path, table: Any) -> None:
    X, y = table
    kwargs = {} if transform is None else {"categorical_transform": transform}
    model = TabFMClassifier(checkpoint=cls_ckpt, n_estimators=4, linear_feature="none", device="cpu", **kwargs).fit(X, y)
    assert [m.onehot is not None for m in model.members_] == expected
    for member, context in zip(model.members_, model.contexts_, strict=True):
        assert context.feature_mask.shape[1] == member.width() == (5 if member.onehot is not None else 3)


def test__onehot_member__indicator_columns__levels_missing_unseen_and_wide_columns(cls_ckpt: Path) -> None:
    rng = np.random.default_rng(1)
    n = 90
    X = pd.DataFrame({
        "shape": rng.choice(["a", "b", "c", "d"], size=n).astype(object),
        "x": rng.normal(size=n),
        "city": rng.choice([f"c{i}" for i in range(20)], size=n).astype(object),  # > 12 levels: native
    })
    X.loc[::9, "shape"] = None
    y = (X["shape"] == "a").astype(int).to_numpy()
    model = TabFMClassifier(checkpoint=cls_ckpt, n_estimators=1, categorical_transform="onehot", linear_feature="none", device="cpu")
    model.fit(X, y)
    member = model.members_[0]
    order = list(member.features)
    assert member.onehot.tolist() == [j == 0 for j in order]  # only "shape" is expanded
    X_new = pd.DataFrame({"shape": ["a", None, "zzz"], "x": [0.0, 1.0, 2.0], "city": ["c1", "c2", "c3"]})
    x, cat = model._member_table(member, model._transform(X_new))
    assert x.shape == (1, 3, 6) and cat.shape == (1, 6)
    start = sum(4 if j == 0 else 1 for j in order[: order.index(0)])
    block = x[0, :, start : start + 4].numpy()
    assert not cat[0, start : start + 4].any() and bool(cat[0, [i for i in range(6) if i < start or i >= start + 4]].sum() == 1)
    assert block[0].sum() == 1.0 and block[1].sum() == 0.0 and block[2].sum() == 0.0  # a level; missing; unseen
    # Each known level has its own column: the four levels give a permutation matrix.
    levels = model._member_table(member, model._transform(pd.DataFrame({"shape": list("abcd"), "x": 0.0, "city": "c1"})))[0]
    square = levels[0, :, start : start + 4].numpy()
    np.testing.assert_array_equal(square.sum(0), np.ones(4))
    np.testing.assert_array_equal(square.sum(1), np.ones(4))


def test__onehot_member__width_stays_within_the_budget(cls_ckpt: Path) -> None:
    from tabfm.icl import ONEHOT_MAX_WIDTH

    rng = np.random.default_rng(2)
    X = pd.DataFrame({f"c{j}": rng.choice(list("abcdefghij"), size=60).astype(object) for j in range(20)})  # 200 levels
    y = rng.integers(0, 2, 60)
    model = TabFMClassifier(checkpoint=cls_ckpt, n_estimators=1, categorical_transform="onehot", linear_feature="none", device="cpu")
    model.fit(X, y)
    member = model.members_[0]
    assert 0 < member.onehot.sum() < 20 and member.width() <= ONEHOT_MAX_WIDTH
    assert model.predict_proba(X).shape == (60, 2)


def test__onehot_members__save_load__identical_predictions(reg_ckpt: Path, table: Any, tmp_path: Path) -> None:
    X, _ = table
    y = X["x1"].to_numpy() * 3.0 + (X["colour"] == "red")
    model = TabFMRegressor(checkpoint=reg_ckpt, n_estimators=4, categorical_transform="mixed", device="cpu").fit(X, y)
    loaded = TabFMRegressor.load(model.save(tmp_path / "onehot"), device="cpu")
    assert [m.onehot is not None for m in loaded.members_] == [False, False, True, True]
    np.testing.assert_allclose(loaded.predict(X), model.predict(X), rtol=1e-6)


def test__regressor__mean_median_quantiles__consistent(reg_ckpt: Path) -> None:
    X, y = make_regression(n_samples=100, n_features=5, noise=1.0, random_state=0)
    y = y * 100 + 5000  # far from standardised units: the estimator must map back
    model = TabFMRegressor(checkpoint=reg_ckpt, n_estimators=2).fit(X, y)
    mean = model.predict(X)
    median = model.predict(X, output="median")
    q = model.predict(X, output="quantiles", quantiles=[0.05, 0.5, 0.95])
    assert mean.shape == (100,) and q.shape == (100, 3)
    assert np.all(np.diff(q, axis=1) >= -1e-6)
    np.testing.assert_allclose(q[:, 1], median, rtol=1e-5)
    assert y.min() - 10 * y.std() < mean.mean() < y.max() + 10 * y.std()
    with pytest.raises(TabFMValidationError, match="strictly between 0 and 1"):
        model.predict(X, output="quantiles", quantiles=[0.0, 0.5])


def test__regressor__save_load__identical_predictions(reg_ckpt: Path, tmp_path: Path) -> None:
    X, y = make_regression(n_samples=60, n_features=3, random_state=1)
    model = TabFMRegressor(checkpoint=reg_ckpt, n_estimators=2).fit(X, y)
    loaded = TabFMRegressor.load(model.save(tmp_path / "reg"), device="cpu")
    np.testing.assert_allclose(loaded.predict(X), model.predict(X), rtol=1e-6)


def test__regressor__saved_before_an_option_existed__loads_with_the_old_behaviour(reg_ckpt: Path, tmp_path: Path) -> None:
    X, y = make_regression(n_samples=300, n_features=6, n_informative=2, random_state=2)
    old = TabFMRegressor(checkpoint=reg_ckpt, n_estimators=2, local_rows=16, linear_basis="linear", local_metric="uniform").fit(X, y)
    path = old.save(tmp_path / "old")
    meta = path / "estimator.json"
    document = json.loads(meta.read_text())
    for name in ("linear_basis", "local_metric"):  # as written by a version without these options
        del document["params"][name]
    meta.write_text(json.dumps(document))
    loaded = TabFMRegressor.load(path, device="cpu")
    assert (loaded.linear_basis, loaded.local_metric) == ("linear", "uniform")
    tolerance = 1e-5 * np.std(y)  # float32 noise only; today's defaults move predictions far more
    np.testing.assert_allclose(loaded.predict(X), old.predict(X), rtol=0, atol=tolerance)
    today = TabFMRegressor(checkpoint=reg_ckpt, n_estimators=2, local_rows=16).fit(X, y).predict(X)
    assert np.abs(today - old.predict(X)).max() > 100 * tolerance


@pytest.mark.parametrize(("transform", "expected"), [("none", [False] * 4), ("mixed", [False, True, False, True]), ("quantile", [True] * 4)])
@pytest.mark.parametrize("context", ["global", "mixed"])
def test__regressor__target_transform__members_within_range_consistent_and_saved(
    transform: str, expected: list[bool], context: str, reg_ckpt: Path, tmp_path: Path
) -> None:
    X, y = make_regression(n_samples=80, n_features=3, noise=1.0, random_state=3)
    y = np.exp(y / y.std()) * 1000  # skewed, far from standardised units
    model = TabFMRegressor(checkpoint=reg_ckpt, target_transform=transform, context=context, local_rows=30).fit(X, y)
    assert [m.target_quantile for m in model.members_] == expected
    mean = model.predict(X)
    q = model.predict(X, output="quantiles", quantiles=[0.05, 0.5, 0.95])
    assert np.all(np.isfinite(mean)) and np.all(np.diff(q, axis=1) >= -1e-6)
    np.testing.assert_allclose(q[:, 1], model.predict(X, output="median"), rtol=1e-5)
    if transform == "quantile":  # every member maps back through the training quantiles
        assert np.all((q >= y.min() - 1e-6) & (q <= y.max() + 1e-6)) and np.all(mean <= y.max())
    loaded = TabFMRegressor.load(model.save(tmp_path / "reg"), device="cpu")
    np.testing.assert_allclose(loaded.predict(X), mean, rtol=1e-6)


def test__regressor__target_transform_quantile__changes_what_the_network_sees(reg_ckpt: Path) -> None:
    X, y = make_regression(n_samples=60, n_features=3, random_state=4)
    y = np.exp(y / y.std())
    raw = TabFMRegressor(checkpoint=reg_ckpt, n_estimators=1, context="global").fit(X, y)
    warped = TabFMRegressor(checkpoint=reg_ckpt, n_estimators=1, context="global", target_transform="quantile").fit(X, y)
    assert not np.allclose(raw._train_targets(raw.members_[0]), warped._train_targets(warped.members_[0]))
    assert not np.allclose(raw.predict(X), warped.predict(X))
    with pytest.raises(TabFMValidationError, match="target_transform"):
        TabFMRegressor(checkpoint=reg_ckpt, target_transform="log").fit(X, y)


def test__regressor__target_transform__onnx_export_refused_with_reason(reg_ckpt: Path, tmp_path: Path) -> None:
    from tabfm.onnx_export import export_estimator

    X, y = make_regression(n_samples=40, n_features=3, random_state=5)
    model = TabFMRegressor(checkpoint=reg_ckpt, n_estimators=2, context="global", target_transform="mixed").fit(X, y)
    with pytest.raises(TabFMValidationError, match="target_transform='mixed'"):
        export_estimator(model, tmp_path / "m.onnx")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test__sklearn_contract__tiny_network__all_checks_pass(cls_ckpt: Path, reg_ckpt: Path) -> None:
    from sklearn.utils.estimator_checks import check_estimator

    # An untrained network cannot reach the accuracy these two checks demand; the shipped
    # checkpoint runs them (tests/test_shipped_checkpoint.py).
    untrained = {"check_classifiers_train", "check_regressors_train"}
    for estimator in (TabFMClassifier(checkpoint=str(cls_ckpt), n_estimators=2), TabFMRegressor(checkpoint=str(reg_ckpt), n_estimators=2)):
        results = check_estimator(estimator, on_fail=None)
        failed = [r for r in results if r["status"] == "failed" and r["check_name"] not in untrained]
        assert failed == [], [(r["check_name"], str(r["exception"])[:300]) for r in failed]
        assert sum(r["status"] == "passed" for r in results) > 40


def test__checkpoint__loaded_once_per_file_version_and_shared_without_gradients(tmp_path: Path, table: Any) -> None:
    X, y = table
    path = _tiny_checkpoint(tmp_path, "classification")
    first = TabFMClassifier(checkpoint=path, n_estimators=1).fit(X, y)
    second = TabFMClassifier(checkpoint=path, n_estimators=1).fit(X, y)
    assert second.network_ is first.network_
    assert not any(p.requires_grad for p in first.network_.parameters())
    # a rewritten file is a new version: the next fit reads it
    torch.manual_seed(1)
    net = ICLTransformer(first.network_.config)
    save_checkpoint(path, net, dtype=torch.float32)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    third = TabFMClassifier(checkpoint=path, n_estimators=1).fit(X, y)
    assert third.network_ is not first.network_
    torch.testing.assert_close(third.network_.state_dict(), net.state_dict())
    assert not np.allclose(third.predict_proba(X), first.predict_proba(X))


@pytest.mark.parametrize(("option", "expected"), [("none", [False] * 4), ("mixed", [True, False, True, False]), ("all", [True] * 4)])
def test__linear_feature__members_get_the_ridge_columns_as_asked(option: str, expected: list[bool], cls_ckpt: Path, reg_ckpt: Path, table: Any) -> None:
    X, y = table
    clf = TabFMClassifier(checkpoint=cls_ckpt, linear_feature=option).fit(X, y)
    Xr, yr = make_regression(n_samples=70, n_features=4, random_state=6)
    reg = TabFMRegressor(checkpoint=reg_ckpt, linear_feature=option, context="global").fit(Xr, yr)
    for model, n_extra in ((clf, 1), (reg, 1)):  # binary: one column; regression: one column
        assert [m.linear for m in model.members_] == expected
        for member in model.members_:
            train, _ = model._member_table(member, model.X_train_, model._train_ridge_columns())
            test, _ = model._member_table(member, model.X_train_, model._ridge_columns(model.X_train_))
            assert train.shape[-1] == member.width() + n_extra * member.linear
            if member.linear:  # leave-one-out on the training rows, the full fit on new rows
                np.testing.assert_allclose(train[0, :, -1].numpy(), model.ridge_.train_predictions_[:, 0], rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(test[0, :, -1].numpy(), model.ridge_.predict(model.X_train_)[:, 0], rtol=1e-5, atol=1e-6)
    assert (reg.ridge_ is None) == (option == "none")


def test__linear_feature__multiclass_one_column_per_class_and_none_beyond_the_outputs(cls_ckpt: Path) -> None:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(150, 3))
    three = TabFMClassifier(checkpoint=cls_ckpt, linear_feature="all", n_estimators=2).fit(X, np.arange(150) % 3)
    assert three.ridge_.train_predictions_.shape == (150, 3)
    many = TabFMClassifier(checkpoint=cls_ckpt, linear_feature="all", n_estimators=2).fit(X, np.arange(150) % 12)
    assert many.ridge_ is None  # grouped members: no per-class columns
    assert many.predict_proba(X[:5]).shape == (5, 12)


@pytest.mark.parametrize("context", ["global", "mixed"])
def test__linear_feature__test_rows_independent_and_saved(context: str, reg_ckpt: Path, tmp_path: Path) -> None:
    X, y = make_regression(n_samples=90, n_features=4, noise=2.0, random_state=8)
    model = TabFMRegressor(checkpoint=reg_ckpt, linear_feature="all", context=context, local_rows=30, batch_size=7).fit(X[:70], y[:70])
    full = model.predict(X[70:])
    np.testing.assert_allclose(model.predict(X[70:][::3]), full[::3], rtol=1e-5)
    loaded = TabFMRegressor.load(model.save(tmp_path / "reg"), device="cpu")
    np.testing.assert_allclose(loaded.predict(X[70:]), full, rtol=1e-5, atol=1e-5)  # float32 rounding on the refit
    with pytest.raises(TabFMValidationError, match="linear_feature"):
        TabFMRegressor(checkpoint=reg_ckpt, linear_feature="yes").fit(X, y)

