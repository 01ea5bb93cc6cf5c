"""TabM: the network, the piecewise-linear embeddings, the training loop and the estimators.

Everything runs on toy data with tiny networks (k <= 4, width <= 32, a few epochs).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import make_classification, make_regression
from sklearn.utils.estimator_checks import parametrize_with_checks

from models.numeric_embeddings import (
    OneHotEncoding,
    PiecewiseLinearEmbeddings,
    PiecewiseLinearEncoding,
    compute_quantile_bins,
)
from models.tabm import LinearBatchEnsemble, TabM, TabMConfig
from tabfm.tabm import TabMClassifier, TabMRegressor
from tabfm.training import TrainingConfig, split_validation, train

# Small enough for scikit-learn's checks, trained enough for their accuracy floors (0.83 on train).
CHECKS = dict(
    k=2, d_block=16, d_embedding=2, n_bins=4, max_epochs=10, batch_size=32, lr=1e-2, device="cpu"
)
TINY = dict(k=4, d_block=16, d_embedding=4, n_bins=8, max_epochs=3, batch_size=64, device="cpu")


# -- embeddings ----------------------------------------------------------------------------------


def test__ple__values__fill_bins_below_value_and_extrapolate_at_ends() -> None:
    enc = PiecewiseLinearEncoding([torch.tensor([0.0, 1.0, 3.0]), torch.tensor([0.0, 2.0])])
    out = enc(torch.tensor([[2.0, 1.0], [-1.0, 4.0], [5.0, -2.0]]))  # (B=3, F=2, M=2)
    expected = torch.tensor(
        [
            [[1.0, 0.5], [0.5, 0.0]],  # feature 2 has one bin: its padding component stays 0
            [[-1.0, 0.0], [2.0, 0.0]],  # below the first edge / above the only bin: linear
            [[1.0, 2.0], [-1.0, 0.0]],  # above the last edge: the last bin keeps growing
        ]
    )
    torch.testing.assert_close(out, expected)


def test__quantile_bins__ties_and_constant_columns__valid_increasing_edges() -> None:
    x = torch.tensor([[0.0, 5.0, float("nan")]] * 5 + [[1.0, 5.0, 2.0]] * 5)
    bins = compute_quantile_bins(x, n_bins=8)
    assert bins[0][0] == 0.0 and bins[0][-1] == 1.0 and bool((bins[0].diff() > 0).all())
    assert bins[1].tolist() == [5.0, 6.0]  # constant: one unit-wide bin
    assert bins[2].tolist() == [2.0, 3.0]  # NaN ignored, then constant


def test__quantile_bins__float64_quantiles_equal_in_float32__edges_still_increasing() -> None:
    # 0.3928308 and 0.3928308 + 1e-9 differ in float64 but are one float32 value.
    x = torch.tensor([0.0, 0.3928308, 0.3928308 + 1e-9, 1.0], dtype=torch.float64).repeat(5)
    bins = compute_quantile_bins(x[:, None], n_bins=19)
    assert bins[0].dtype == torch.float32 and bool((bins[0].diff() > 0).all())
    PiecewiseLinearEmbeddings(bins, d_embedding=2)  # accepts the edges


def test__ple_embeddings__start_linear__ple_weight_zero() -> None:
    emb = PiecewiseLinearEmbeddings(
        compute_quantile_bins(torch.randn(50, 3), n_bins=4), d_embedding=5
    )
    x = torch.randn(7, 3)
    assert emb(x).shape == (7, 3, 5)
    torch.testing.assert_close(emb(x), x.unsqueeze(-1) * emb.linear_weight + emb.linear_bias)


def test__one_hot__codes__one_per_feature_block() -> None:
    out = OneHotEncoding([2, 3])(torch.tensor([[1, 0], [0, 2]]))
    torch.testing.assert_close(
        out, torch.tensor([[0.0, 1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 1.0]])
    )


# -- network -------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["tabm", "tabm-mini"])
@pytest.mark.parametrize("d_embedding", [0, 4])
def test__tabm_forward__num_and_cat__k_member_outputs(arch: str, d_embedding: int) -> None:
    config = TabMConfig(
        n_num_features=3,
        d_out=5,
        cat_cardinalities=(3, 4),
        k=6,
        d_block=16,
        arch=arch,
        d_embedding=d_embedding,
    )
    bins = compute_quantile_bins(torch.randn(40, 3), n_bins=6)
    model = TabM(config, bins=bins)
    out = model(torch.randn(11, 3), torch.randint(0, 3, (11, 2)))
    assert out.shape == (11, 6, 5)  # (B, k, d_out)
    assert not torch.allclose(out[:, 0], out[:, 1])  # members differ from the start


def test__tabm_init__only_first_layer_adapters_random__rest_ones() -> None:
    config = TabMConfig(
        n_num_features=2, d_out=1, cat_cardinalities=(3,), k=5, d_block=8, n_blocks=3, d_embedding=4
    )
    model = TabM(config, bins=compute_quantile_bins(torch.randn(30, 2), n_bins=4))
    layers = [block[0] for block in model.blocks]
    assert all(isinstance(layer, LinearBatchEnsemble) for layer in layers)
    r0 = layers[0].r  # (k, d_in): one value per member and feature, repeated over its embedding
    assert r0.shape == (5, 2 * 4 + 3)
    torch.testing.assert_close(r0[:, :4], r0[:, :1].expand(5, 4))
    assert r0[:, 0].unique().numel() == 5
    for layer in layers:
        torch.testing.assert_close(layer.s, torch.ones_like(layer.s))
        torch.testing.assert_close(layer.bias, layer.bias[:1].expand_as(layer.bias))  # shared start
    for layer in layers[1:]:
        torch.testing.assert_close(layer.r, torch.ones_like(layer.r))


def test__tabm_config__no_features__clear_error() -> None:
    with pytest.raises(ValueError, match="at least one feature"):
        TabMConfig(n_num_features=0, d_out=2)


# -- training loop -------------------------------------------------------------------------------


def _toy_regression_problem() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(64, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5])
    return torch.nn.Linear(3, 1), x, y


def test__train__patience__stops_and_restores_best_weights() -> None:
    model, x, y = _toy_regression_problem()
    scores = iter([0.1, 0.5, 0.2, 0.3, 0.4, 0.45, 0.1])
    snapshots: list[torch.Tensor] = []

    def validation_score() -> float:
        snapshots.append(model.weight.detach().clone())
        return next(scores)

    result = train(
        model,
        n_train=64,
        batch_loss=lambda idx: (model(x[idx]).squeeze(-1) - y[idx]).square().mean(),
        validation_score=validation_score,
        config=TrainingConfig(lr=1e-2, batch_size=16, patience=3, max_epochs=50),
        generator=torch.Generator().manual_seed(0),
    )
    assert (result.n_epochs, result.best_epoch, result.stopped_by) == (5, 1, "patience")
    torch.testing.assert_close(model.weight, snapshots[1])


def test__train__time_limit__stops_early() -> None:
    model, x, y = _toy_regression_problem()

    def slow_loss(idx: torch.Tensor) -> torch.Tensor:
        time.sleep(0.02)
        return (model(x[idx]).squeeze(-1) - y[idx]).square().mean()

    result = train(
        model,
        n_train=64,
        batch_loss=slow_loss,
        validation_score=lambda: 0.0,
        config=TrainingConfig(batch_size=8, time_limit=0.1, patience=1000),
        generator=torch.Generator().manual_seed(0),
    )
    assert result.stopped_by == "time_limit" and result.n_epochs == 1


def test__split_validation__stratified__every_class_kept_in_training() -> None:
    y = np.array([0] * 10 + [1] * 3 + [2] * 2)
    train_rows, val_rows = split_validation(
        y, fraction=0.2, rng=np.random.default_rng(0), stratify=True
    )
    assert set(y[train_rows]) == {0, 1, 2}
    assert len(np.intersect1d(train_rows, val_rows)) == 0 and len(train_rows) + len(val_rows) == 15


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
    model = TabMClassifier(
        **{**TINY, "max_epochs": 20, "batch_size": 32, "d_block": 32}, random_state=0
    ).fit(X[:150], y[:150])
    proba = model.predict_proba(X[150:])
    assert proba.shape == (50, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    assert model.score(X[150:], y[150:]) > 0.6  # chance is 1/3


@pytest.mark.slow
def test__regressor__mixed_types_with_missing__fits_and_explains_variance() -> None:
    X, y = make_regression(n_samples=200, n_features=4, noise=1.0, random_state=0)
    frame = pd.DataFrame(X, columns=list("abcd"))
    frame.loc[::7, "a"] = np.nan
    frame["cat"] = pd.Categorical(np.where(X[:, 0] > 0, "hi", "lo"))
    model = TabMRegressor(**{**TINY, "max_epochs": 25, "d_block": 32}, random_state=0).fit(
        frame[:150], y[:150]
    )
    assert model.predict(frame[150:]).shape == (50,)
    assert model.score(frame[150:], y[150:]) > 0.5


def test__save_load__roundtrip__identical_predictions(tmp_path) -> None:
    X, y = make_classification(n_samples=80, n_features=4, random_state=0)
    frame = pd.DataFrame(X, columns=list("abcd"))
    frame["c"] = pd.Categorical(np.where(y == 1, "x", "y"))
    frame.loc[::5, "a"] = np.nan
    model = TabMClassifier(**TINY, random_state=0).fit(frame, y)
    loaded = TabMClassifier.load(model.save(tmp_path / "tabm"))
    np.testing.assert_array_equal(loaded.predict_proba(frame), model.predict_proba(frame))


@pytest.mark.parametrize("arch", ["tabm", "tabm-mini"])
def test__random_state__same_seed_same_predictions_other_seed_differs(arch: str) -> None:
    X, y = make_regression(n_samples=60, n_features=3, random_state=1)
    fit = lambda seed: TabMRegressor(**TINY, arch=arch, random_state=seed).fit(X, y).predict(X)  # noqa: E731
    np.testing.assert_array_equal(fit(3), fit(3))
    assert not np.array_equal(fit(3), fit(4))


@parametrize_with_checks(
    [
        TabMClassifier(**CHECKS, random_state=0),
        TabMRegressor(**CHECKS, random_state=0),
    ]
)
def test__sklearn_contract__tabm(estimator, check) -> None:
    check(estimator)
