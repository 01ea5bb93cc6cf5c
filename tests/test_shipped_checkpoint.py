"""The checkpoints shipped in the package: what `TabFMClassifier()` with no arguments promises."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import (
    load_breast_cancer,
    load_diabetes,
    load_iris,
    load_wine,
    make_regression,
)
from sklearn.metrics import accuracy_score, r2_score, roc_auc_score
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tabfm import TabFMClassifier, TabFMRegressor
from tabfm.checkpoint import read_card, shipped_checkpoint
from tabfm.errors import TabFMValidationError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("task", ["classification", "regression"])
def test__shipped_checkpoint__present_small_with_model_card(task: str) -> None:
    path = shipped_checkpoint(task)
    assert path.is_file(), f"{path} is missing: the package must ship a pretrained {task} checkpoint"
    assert path.stat().st_size < 50 * 2**20
    card = read_card(path)
    assert card["pretraining"]["datasets_seen"] > 0 and card["pretraining"]["cpu_hours"] > 0
    assert set(card["validation"]["datasets"]) and np.isfinite(card["validation"]["mean"])


def test__classifier__defaults__ranks_held_out_rows_well_above_chance() -> None:
    """Guards the whole path (preprocessing, members, class order): a broken one lands near 0.5 or below."""
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    proba = TabFMClassifier().fit(X_train, y_train).predict_proba(X_test)[:, 1]
    assert roc_auc_score(y_test, proba) > 0.75


def test__classifier__in_pipeline_cross_val__runs_and_scores() -> None:
    X, y = load_wine(return_X_y=True)
    scores = cross_val_score(make_pipeline(StandardScaler(), TabFMClassifier(n_estimators=2)), X, y, cv=3)
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))


def test__classifier__learns_from_context__far_above_label_prior() -> None:
    X, y = load_iris(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    accuracy = accuracy_score(y_test, TabFMClassifier().fit(X_train, y_train).predict(X_test))
    assert accuracy > 0.8  # the label prior gives 1/3


def test__regressor__learns_from_context__far_above_the_mean() -> None:
    X, y = make_regression(n_samples=400, n_features=5, noise=5.0, random_state=0)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
    prediction = TabFMRegressor().fit(X_train, y_train).predict(X_test)
    assert r2_score(y_test, prediction) > 0.5  # the training mean gives about 0


def test__regressor__defaults__finite_predictions_in_target_units() -> None:
    X, y = load_diabetes(return_X_y=True)
    X_train, X_test, y_train, _ = train_test_split(X, y, test_size=0.3, random_state=0)
    prediction = TabFMRegressor().fit(X_train, y_train).predict(X_test)
    assert np.all(np.isfinite(prediction))
    assert y_train.min() - y_train.std() < prediction.mean() < y_train.max() + y_train.std()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test__sklearn_contract__shipped_checkpoints__all_checks_pass() -> None:
    from sklearn.utils.estimator_checks import check_estimator

    # check_methods_subset_invariance compares at rtol 1e-7: float32 attention kernels round
    # differently by batch size (2e-8 measured), so the invariance is tested at 1e-6 below instead.
    rounding = {"check_methods_subset_invariance"}
    for estimator in (TabFMClassifier(n_estimators=2), TabFMRegressor(n_estimators=2)):
        results = check_estimator(estimator, on_fail=None)
        failed = [r for r in results if r["status"] == "failed" and r["check_name"] not in rounding]
        assert failed == [], [(r["check_name"], str(r["exception"])[:300]) for r in failed]


def test__classifier__prediction_of_a_row__independent_of_the_other_test_rows() -> None:
    X, y = load_breast_cancer(return_X_y=True)
    model = TabFMClassifier(n_estimators=2).fit(X[:300], y[:300])
    full = model.predict_proba(X[300:])
    one_by_one = np.vstack([model.predict_proba(X[i : i + 1]) for i in range(300, 330)])
    np.testing.assert_allclose(one_by_one, full[:30], atol=1e-6)


@pytest.mark.slow
def test__readme__python_blocks__run_as_written() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "the README has no Python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})


def test__shipped_checkpoint__environment_folder__points_the_default_there(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TABFM_CHECKPOINT_DIR", str(tmp_path))
    assert shipped_checkpoint("regression") == tmp_path / "tabfm-regression.safetensors"
    monkeypatch.setenv("TABFM_CHECKPOINT_DIR", "")
    assert shipped_checkpoint("regression").parent.name == "checkpoints"


def _write_card(path: Path, attention: str, n_exact_blocks: int = 0) -> None:
    architecture = {"task": "classification", "attention": {"kind": attention}, "n_exact_blocks": n_exact_blocks}
    path.with_suffix(".json").write_text(json.dumps({"architecture": architecture}))
    path.write_bytes(b"")


def test__shipped_checkpoint__exact_variant__its_file_or_the_default_when_that_is_exact(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TABFM_CHECKPOINT_DIR", str(tmp_path))
    default = tmp_path / "tabfm-classification.safetensors"
    _write_card(default, "full")
    assert shipped_checkpoint("classification", "exact") == default  # already exact everywhere
    _write_card(default, "inducing", n_exact_blocks=1)
    assert shipped_checkpoint("classification", "exact") == tmp_path / "tabfm-classification-exact.safetensors"
    with pytest.raises(TabFMValidationError, match="'fast' is not a shipped network"):
        shipped_checkpoint("classification", "fast")


def test__classifier__checkpoint_exact__all_blocks_attend_exactly_and_predict() -> None:
    X, y = load_breast_cancer(return_X_y=True)
    model = TabFMClassifier(checkpoint="exact", n_estimators=1).fit(X[:200], y[:200])
    config = model.network_.config
    assert config.attention.kind == "full" and config.focusable_blocks == config.n_icl_blocks
    assert roc_auc_score(y[200:300], model.predict_proba(X[200:300])[:, 1]) > 0.75


def test__save_checkpoint__readable_by_all_like_any_shipped_file(tmp_path) -> None:
    from models.icl import ICLConfig, ICLTransformer
    from tabfm.checkpoint import save_checkpoint

    network = ICLTransformer(ICLConfig(d_model=16, d_cell=8, d_cell_ffn=16, n_icl_blocks=1, d_ffn=32))
    path = save_checkpoint(tmp_path / "net.safetensors", network, card={"model": "tiny"})
    assert path.stat().st_mode & 0o777 == 0o644
    assert path.with_suffix(".json").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("cls", [TabFMClassifier, TabFMRegressor])
def test__cell_grid__default__close_to_every_cell_exact(cls) -> None:
    """The tabulated column embedding is an approximation: it must stay far below what moves a score."""
    X, y = load_breast_cancer(return_X_y=True)
    if cls is TabFMRegressor:
        y = X[:, 0] * 3 + X[:, 1]
    kwargs = {"context": "global"} if cls is TabFMRegressor else {}  # local members embed exactly anyway
    tabulated = cls(**kwargs).fit(X[:300], y[:300])
    exact = cls(cell_grid=None, **kwargs).fit(X[:300], y[:300])
    assert all(c.cell_table is not None for c in tabulated.contexts_)
    assert all(c.cell_table is None for c in exact.contexts_)
    if cls is TabFMClassifier:
        np.testing.assert_allclose(tabulated.predict_proba(X[300:]), exact.predict_proba(X[300:]), atol=1e-3)
    else:
        np.testing.assert_allclose(tabulated.predict(X[300:]), exact.predict(X[300:]), atol=1e-3 * np.std(y))
