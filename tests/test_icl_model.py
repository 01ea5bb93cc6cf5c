"""The in-context network and its heads: invariances, caching, padding, missing values, learning."""

from __future__ import annotations

import math

import pytest
import torch

import models.attention
from models.attention import AttentionConfig
from models.heads import BarDistribution
from models.icl import ICLConfig, ICLContext, ICLTransformer

KINDS = ["full", "inducing"]


def tiny_config(
    kind: str = "inducing", task: str = "classification", n_outputs: int = 4
) -> ICLConfig:
    return ICLConfig(
        task=task,
        n_outputs=n_outputs,
        d_model=16,
        d_cell=8,
        d_cell_ffn=16,
        n_cell_heads=2,
        n_col_inducing=4,
        n_row_blocks=1,
        n_cls=2,
        n_icl_blocks=2,
        d_ffn=32,
        n_thinking_rows=2,
        attention=AttentionConfig(kind=kind, n_heads=2, n_inducing=4),
    )


def tiny_model(
    kind: str = "inducing", task: str = "classification", seed: int = 0
) -> ICLTransformer:
    torch.manual_seed(seed)
    return ICLTransformer(tiny_config(kind, task)).eval()


def tiny_batch(b: int = 2, n_train: int = 12, n_test: int = 5, f: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n_train + n_test, f, generator=g)
    y = (x[:, :n_train, 0] > 0).float()
    return x, y


@pytest.mark.parametrize("kind", KINDS)
def test_forward__classification__returns_n_outputs_logits_per_test_row(kind):
    x, y = tiny_batch()
    out = tiny_model(kind)(x, y)
    assert out.shape == (2, 5, 4)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("kind", KINDS)
def test_forward__equals_encode_context_then_predict(kind):
    model = tiny_model(kind)
    x, y = tiny_batch()
    context = model.encode_context(x[:, :12], y)
    torch.testing.assert_close(
        model(x, y), model.predict_from_context(context, x[:, 12:]), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("kind", KINDS)
def test_encode_context__row_chunks_without_grad__same_context(kind):
    model = tiny_model(kind)
    x, y = tiny_batch(n_train=23)
    with torch.no_grad():
        whole = model.encode_context(x[:, :23], y, row_chunk_size=None).tensors()
        chunked = model.encode_context(x[:, :23], y, row_chunk_size=5).tensors()
    for name in whole:
        torch.testing.assert_close(chunked[name], whole[name], atol=1e-5, rtol=1e-5, msg=name)


def test_encode_context__row_chunks_with_two_column_blocks__same_predictions():
    torch.manual_seed(0)
    model = ICLTransformer(ICLConfig(**{**tiny_config().to_dict(), "n_col_blocks": 2})).eval()
    x, y = tiny_batch(n_train=23)
    with torch.no_grad():
        whole = model.predict_from_context(
            model.encode_context(x[:, :23], y, row_chunk_size=None), x[:, 23:]
        )
        chunked = model.predict_from_context(
            model.encode_context(x[:, :23], y, row_chunk_size=4), x[:, 23:]
        )
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_forward__test_rows_changed__training_context_unchanged(kind, monkeypatch):
    model = tiny_model(kind)
    x, y = tiny_batch()
    x2 = x.clone()
    x2[:, 12:] = torch.randn(2, 5, 3) * 10
    seen: list[ICLContext] = []
    original = model.predict_from_context

    def spy(context, x_test):
        seen.append(context)
        return original(context, x_test)

    monkeypatch.setattr(model, "predict_from_context", spy)
    model(x, y)
    model(x2, y)
    a, b = (c.tensors() for c in seen)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=0.0, rtol=0.0, msg=name)


@pytest.mark.parametrize("kind", KINDS)
def test_forward__subset_of_test_rows__same_predictions(kind):
    model = tiny_model(kind)
    x, y = tiny_batch()
    full = model(x, y)
    subset = model(torch.cat([x[:, :12], x[:, 14:16]], dim=1), y)
    torch.testing.assert_close(subset, full[:, 2:4], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_forward__training_rows_permuted_with_labels__same_predictions(kind):
    model = tiny_model(kind)
    x, y = tiny_batch(n_train=20)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(1))
    x_perm = torch.cat([x[:, :20][:, perm], x[:, 20:]], dim=1)
    torch.testing.assert_close(model(x_perm, y[:, perm]), model(x, y), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_forward__padded_features_at_end_or_between__same_predictions(kind):
    model = tiny_model(kind)
    x, y = tiny_batch()
    reference = model(x, y, categorical=torch.tensor([[False, True, False]] * 2))
    for where in (3, 1):  # append two padded columns, or insert them between real ones
        pad = torch.zeros(2, x.shape[1], 2)
        xp = torch.cat([x[..., :where], pad, x[..., where:]], dim=-1)
        mask = torch.ones(2, 5, dtype=torch.bool)
        mask[:, where : where + 2] = False
        cat = torch.zeros(2, 5, dtype=torch.bool)
        cat[:, 1 if where == 3 else 3] = True
        cat[:, where] = True  # a categorical flag on a padded column must not matter either
        out = model(xp, y, feature_mask=mask, categorical=cat)
        torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)


def test_forward__padded_tables_in_one_batch__match_each_table_alone():
    model = tiny_model("inducing")
    x, y = tiny_batch(b=2, f=3)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    xb = x.clone()
    xb[1, :, 2] = 0.0
    batched = model(xb, y, feature_mask=mask)
    alone = model(x[1:, :, :2], y[1:])
    torch.testing.assert_close(batched[1:], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_forward__nan_cells_constant_and_empty_columns__finite_outputs(kind):
    model = tiny_model(kind)
    x, y = tiny_batch(f=4)
    x[:, ::3, 0] = float("nan")
    x[:, :, 1] = 7.5  # constant column
    x[:, :, 2] = float("nan")  # entirely missing column
    x[:, 2, 3] = 1e30  # outlier
    x[:, 3, 3] = float("inf")
    x[:, 13, 3] = -float("inf")  # in a test row
    out = model(x, y)
    assert torch.isfinite(out).all()


def test_forward__missing_flag__changes_predictions():
    model = tiny_model()
    x, y = tiny_batch()
    x_nan = x.clone()
    x_nan[:, 13, 1] = float("nan")
    assert (model(x_nan, y)[:, 1] - model(x, y)[:, 1]).abs().max() > 1e-6


def test_forward__swapped_columns_with_same_marginals__distinguished():
    # Column 1 is a permutation of column 0's values, so both have the same distribution; a
    # network blind to feature identity would give the same answer after swapping them.
    model = tiny_model(seed=3)
    x, y = tiny_batch(f=2, n_train=30)
    x[..., 1] = x[:, torch.randperm(x.shape[1]), 0]
    swapped = x.flip(-1)
    assert (model(x, y) - model(swapped, y)).abs().max() > 1e-4


def test_forward__explicit_attention_path__matches_fused(monkeypatch):
    model = tiny_model("full")
    x, y = tiny_batch()
    fused = model(x, y)
    monkeypatch.setattr(models.attention, "_use_explicit", lambda: True)
    torch.testing.assert_close(model(x, y), fused, atol=1e-5, rtol=1e-5)


def test_context__tensors_round_trip__same_predictions():
    model = tiny_model()
    x, y = tiny_batch()
    context = model.encode_context(x[:, :12], y)
    rebuilt = ICLContext.from_tensors({k: v.clone() for k, v in context.tensors().items()})
    assert len(rebuilt.keys) == 2 and len(rebuilt.column_summaries) == 1
    torch.testing.assert_close(
        model.predict_from_context(rebuilt, x[:, 12:]),
        model.predict_from_context(context, x[:, 12:]),
    )


@pytest.mark.parametrize("kind", KINDS)
def test_context__padded_features__same_predictions_with_nan_test_cells(kind):
    # Stacking contexts of different widths (one-hot ensemble members) relies on this.
    model = tiny_model(kind)
    x, y = tiny_batch()
    x_test = x[:, 12:].clone()
    x_test[:, 0, 1] = float("nan")
    context = model.encode_context(x[:, :12], y, categorical=torch.tensor([[False, True, False]] * 2))
    padded = context.pad_features(5)
    assert padded.feature_mask.shape == (2, 5) and not padded.feature_mask[:, 3:].any()
    x_padded = torch.cat([x_test, torch.full((2, 5, 2), float("nan"))], dim=-1)  # whatever sits in the padding
    torch.testing.assert_close(
        model.predict_from_context(padded, x_padded),
        model.predict_from_context(context, x_test),
        atol=1e-5,
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="cannot pad"):
        context.pad_features(2)


def test_encode_context__label_out_of_range__raises_value_error():
    model = tiny_model()
    x, y = tiny_batch()
    y[0, 0] = 4.0
    with pytest.raises(ValueError, match=r"class indices 0\.\.3"):
        model(x, y)


def test_config__dict_round_trip__rebuilds_same_config():
    config = tiny_config("full", "regression")
    assert ICLConfig(**config.to_dict()) == config


def test_default_config__parameter_count__near_one_million():
    n = ICLTransformer(ICLConfig()).n_parameters()
    assert 0.7e6 < n < 1.3e6


@pytest.mark.parametrize("kind", KINDS)
def test_regression__forward__logits_over_bins_and_finite_nll(kind):
    torch.manual_seed(0)
    config = ICLConfig(**{**tiny_config(kind).to_dict(), "task": "regression", "n_outputs": 16})
    model = ICLTransformer(config)
    x, _ = tiny_batch()
    y = x[:, :12, 0] * 2.0
    logits = model(x, y)
    assert logits.shape == (2, 5, 16)
    nll = model.bar_distribution.nll(logits, x[:, 12:, 0] * 2.0)
    assert nll.shape == (2, 5) and torch.isfinite(nll).all()


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_training__few_adam_steps_on_fixed_batch__loss_decreases(task):
    torch.manual_seed(0)
    config = ICLConfig(
        **{
            **tiny_config("inducing").to_dict(),
            "task": task,
            "n_outputs": 16 if task == "regression" else 4,
        }
    )
    model = ICLTransformer(config)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 32, 3, generator=g)
    target = x[..., 0] - x[..., 1] if task == "regression" else (x[..., 0] > x[..., 1]).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)

    def loss_fn() -> torch.Tensor:
        logits = model(x, target[:, :24])
        if task == "regression":
            return model.bar_distribution.nll(logits, target[:, 24:]).mean()
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, 4), target[:, 24:].reshape(-1).long()
        )

    first = loss_fn().item()
    for _ in range(12):
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        optimizer.step()
    assert loss_fn().item() < 0.8 * first


# ------------------------------------------------------------------ bar distribution
def test_bar_distribution__values_far_beyond_borders__finite_nll():
    bar = BarDistribution(64)
    logits = torch.zeros(4, 64)
    nll = bar.nll(logits, torch.tensor([-100.0, 0.0, 1e4, 5.5]))
    assert torch.isfinite(nll).all()
    assert nll[0] > nll[1] and nll[2] > nll[3] > nll[1]
    assert nll.max() < 20  # extreme targets are clipped, so they cannot swamp a batch


def test_bar_distribution__without_tail_clip__nll_grows_with_distance():
    bar = BarDistribution(64, tail_clip=None)
    nll = bar.nll(torch.zeros(3, 64), torch.tensor([6.0, 10.0, 100.0]))
    assert torch.isfinite(nll).all() and (nll.diff() > 0).all()


def test_bar_distribution__far_target__still_pulls_mass_into_tail_bin():
    bar = BarDistribution(16)
    logits = torch.zeros(16, requires_grad=True)
    bar.nll(logits, torch.tensor(1e6)).backward()
    assert logits.grad.argmin().item() == 15


def test_bar_distribution__density__integrates_to_one():
    bar = BarDistribution(32)
    logits = torch.randn(32, generator=torch.Generator().manual_seed(0))
    lo = (bar.borders[0] - 3 * bar.widths[0]).item()
    hi = (bar.borders[-1] + 3 * bar.widths[-1]).item()
    grid = torch.linspace(lo, hi, 400_001)  # the tails are clipped beyond 3 tail widths
    density = torch.exp(-bar.nll(logits.expand(grid.numel(), 32), grid))
    assert torch.trapezoid(density, grid).item() == pytest.approx(1.0, abs=2e-3)


def test_bar_distribution__peaked_logits__mean_median_quantiles_in_that_bin():
    bar = BarDistribution(64)
    logits = torch.full((64,), -30.0)
    logits[40] = 30.0
    lo, hi = bar.borders[40].item(), bar.borders[41].item()
    for value in (bar.mean(logits), bar.median(logits), *bar.quantile(logits, [0.1, 0.9])):
        assert lo <= value.item() <= hi


def test_bar_distribution__tail_mass__quantiles_beyond_borders():
    bar = BarDistribution(16)
    logits = torch.full((16,), -30.0)
    logits[-1] = 30.0
    q = bar.quantile(logits, [0.5, 0.99])
    assert (q > bar.borders[-2]).all() and q[1] > bar.borders[-1]
    assert bar.mean(logits) == pytest.approx(
        bar.borders[-2].item() + math.sqrt(2 / math.pi) * bar.widths[-1].item()
    )


def test_bar_distribution__quantiles__monotone_in_level():
    bar = BarDistribution(64)
    logits = torch.randn(5, 64, generator=torch.Generator().manual_seed(1))
    q = bar.quantile(logits, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99])
    assert q.shape == (5, 7)
    assert (q.diff(dim=-1) >= 0).all()
    torch.testing.assert_close(bar.quantile(logits, 0.5), bar.median(logits))


def test_bar_distribution__borders__symmetric_increasing_within_range():
    b = BarDistribution(64).borders
    assert b.shape == (65,) and (b.diff() > 0).all()
    torch.testing.assert_close(b, -b.flip(0))
    assert b[-1].item() == pytest.approx(5.0)


@pytest.mark.slow
def test_predict_from_context__onnx_export__matches_torch(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    model = tiny_model("inducing")
    x, y = tiny_batch(b=1, f=3)
    x[0, ::4, 1] = float("nan")
    with torch.no_grad():
        context = model.encode_context(
            x[:, :12], y, categorical=torch.tensor([[False, False, True]])
        )

    class Predict(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x_test: torch.Tensor) -> torch.Tensor:
            return self.model.predict_from_context(context, x_test)

    path = tmp_path / "icl.onnx"
    torch.onnx.export(
        Predict(),
        (x[:, 12:],),
        str(path),
        dynamo=True,
        dynamic_shapes={"x_test": {1: torch.export.Dim("rows")}},
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x_new = torch.randn(1, 9, 3)
    x_new[0, 0, 0] = float("nan")
    out = session.run(None, {session.get_inputs()[0].name: x_new.numpy()})[0]
    with torch.no_grad():
        expected = model.predict_from_context(context, x_new).numpy()
    assert abs(out - expected).max() < 1e-5


# ------------------------------------------------------------ target-aware column summaries
def labelled_model(task: str = "classification") -> ICLTransformer:
    """Tiny network with target-aware column summaries, label embedding randomised (not zero)."""
    torch.manual_seed(0)
    config = ICLConfig(**{**tiny_config("full", task).to_dict(), "column_labels": True})
    model = ICLTransformer(config).eval()
    with torch.no_grad():
        for p in model.column_label_embedding.parameters():
            p.normal_()
    return model


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_column_labels__fresh__equals_label_blind_network_with_same_weights(task):
    blind = tiny_model("full", task)
    labelled = ICLTransformer(ICLConfig(**{**blind.config.to_dict(), "column_labels": True})).eval()
    missing = labelled.load_state_dict(blind.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("column_label_embedding") for k in missing)
    x, y = tiny_batch()
    torch.testing.assert_close(labelled(x, y), blind(x, y), atol=0.0, rtol=0.0)


def test_column_labels__labels_changed__column_summaries_and_predictions_change():
    model = labelled_model()
    x, y = tiny_batch()
    flipped = 1.0 - y
    a = model.encode_context(x[:, :12], y)
    b = model.encode_context(x[:, :12], flipped)
    assert not torch.allclose(a.column_summaries[0], b.column_summaries[0])
    blind = tiny_model("full")
    c = blind.encode_context(x[:, :12], y)
    d = blind.encode_context(x[:, :12], flipped)
    torch.testing.assert_close(c.column_summaries[0], d.column_summaries[0], atol=0.0, rtol=0.0)


def test_column_labels__training_rows_permuted_with_labels__same_predictions():
    model = labelled_model()
    x, y = tiny_batch(n_train=20)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(1))
    x_perm = torch.cat([x[:, :20][:, perm], x[:, 20:]], dim=1)
    torch.testing.assert_close(model(x_perm, y[:, perm]), model(x, y), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_column_labels__subset_of_test_rows_and_row_chunks__same_predictions(task):
    model = labelled_model(task)
    x, y = tiny_batch(n_train=23)
    if task == "regression":
        y = x[:, :23, 0] * 2.0
    with torch.no_grad():
        whole = model.predict_from_context(
            model.encode_context(x[:, :23], y, row_chunk_size=None), x[:, 23:]
        )
        chunked = model.predict_from_context(
            model.encode_context(x[:, :23], y, row_chunk_size=4), x[:, 23:]
        )
        subset = model(torch.cat([x[:, :23], x[:, 24:26]], dim=1), y)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(subset, whole[:, 1:3], atol=1e-5, rtol=1e-5)


def test_forward__test_value_beyond_training_range__predicted_as_at_the_boundary():
    model = tiny_model("full")
    x, y = tiny_batch()
    top = x[:, :12, 1].amax(dim=1)  # (B,)
    at_edge, beyond, infinite, missing = (x[:, 12:].clone() for _ in range(4))
    at_edge[:, :, 1] = top[:, None]
    beyond[:, :, 1] = top[:, None] + 50.0
    infinite[:, :, 1] = torch.inf
    missing[:, :, 1] = torch.nan
    out = {k: model(torch.cat([x[:, :12], v], dim=1), y) for k, v in
           {"edge": at_edge, "beyond": beyond, "inf": infinite, "nan": missing}.items()}
    torch.testing.assert_close(out["beyond"], out["edge"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out["inf"], out["nan"], atol=1e-6, rtol=1e-6)  # ±inf counts as missing
    assert not torch.allclose(out["nan"], out["edge"])


def _focus_case(n_train: int = 12, n_test: int = 5, k: int = 4):
    model = tiny_model("full")
    x, y = tiny_batch(n_train=n_train, n_test=n_test)
    context = model.encode_context(x[:, :n_train], y)
    g = torch.Generator().manual_seed(3)
    rows = torch.stack([torch.stack([torch.randperm(n_train, generator=g)[:k] for _ in range(n_test)]) for _ in range(2)])
    return model, context, x[:, n_train:], rows  # rows: (B, R_test, k) training-row indices


def test_predict_from_context__focus_on_every_training_row__same_as_unfocused():
    model, context, x_test, _ = _focus_case()
    every = torch.arange(12).expand(2, 5, 12)
    torch.testing.assert_close(
        model.predict_from_context(context, x_test, focus_rows=every, focus_blocks=2),
        model.predict_from_context(context, x_test),
        atol=1e-5,
        rtol=1e-5,
    )


def test_predict_from_context__focus_blocks_zero__same_as_unfocused():
    model, context, x_test, rows = _focus_case()
    torch.testing.assert_close(
        model.predict_from_context(context, x_test, focus_rows=rows, focus_blocks=0),
        model.predict_from_context(context, x_test),
        atol=0.0,
        rtol=0.0,
    )


def test_predict_from_context__focused_blocks__read_only_the_focus_rows_and_thinking_rows():
    """In a focused block a test row's output ignores every other training row's keys and values,
    but not those of its own rows."""
    model, context, x_test, rows = _focus_case()
    focused = model.predict_from_context(context, x_test, focus_rows=rows, focus_blocks=1)
    assert not torch.allclose(focused, model.predict_from_context(context, x_test), atol=1e-4)
    t, last = model.config.n_thinking_rows, len(model.blocks) - 1

    def with_last_block_keys(change: torch.Tensor) -> ICLContext:  # change: (B, M) bool over context rows
        keys, values = list(context.keys), list(context.values)
        noise = torch.randn_like(keys[last]) * 5
        keys[last] = torch.where(change[:, None, :, None], keys[last] + noise, keys[last])
        values[last] = torch.where(change[:, None, :, None], values[last] - noise, values[last])
        return ICLContext(**{**context.__dict__, "keys": tuple(keys), "values": tuple(values)})

    for b in range(2):
        for r in range(5):
            outside = torch.ones(2, t + 12, dtype=torch.bool)
            outside[:, :t] = False
            outside[b, t + rows[b, r]] = False
            changed = model.predict_from_context(with_last_block_keys(outside), x_test, focus_rows=rows, focus_blocks=1)
            torch.testing.assert_close(changed[b, r], focused[b, r], atol=1e-5, rtol=1e-5)
    inside = torch.zeros(2, t + 12, dtype=torch.bool)
    inside[0, t + rows[0, 0, 0]] = True
    changed = model.predict_from_context(with_last_block_keys(inside), x_test, focus_rows=rows, focus_blocks=1)
    assert not torch.allclose(changed[0, 0], focused[0, 0], atol=1e-4)


def test_predict_from_context__focus_with_inducing_attention__raises():
    model = tiny_model("inducing")
    x, y = tiny_batch()
    context = model.encode_context(x[:, :12], y)
    with pytest.raises(ValueError, match="exact attention"):
        model.predict_from_context(context, x[:, 12:], focus_rows=torch.zeros(2, 5, 3, dtype=torch.long))
    model, context, x_test, rows = _focus_case()
    with pytest.raises(ValueError, match="focus_blocks"):
        model.predict_from_context(context, x_test, focus_rows=rows, focus_blocks=3)


def _hybrid_model(n_exact_blocks: int = 1) -> ICLTransformer:
    """Tiny network with inducing in-context blocks but exact last ``n_exact_blocks``."""
    torch.manual_seed(0)
    config = ICLConfig(**{**tiny_config("inducing").to_dict(), "n_exact_blocks": n_exact_blocks})
    return ICLTransformer(config).eval()


def test_icl_config__n_exact_blocks__last_blocks_exact_and_out_of_range_raises():
    config = ICLConfig(**{**tiny_config("inducing").to_dict(), "n_exact_blocks": 1})
    assert [config.block_attention(i).kind for i in range(2)] == ["inducing", "full"]
    assert config.focusable_blocks == 1 and tiny_config("full").focusable_blocks == 2
    assert ICLConfig(**config.to_dict()) == config  # round-trips through a checkpoint's JSON
    model = ICLTransformer(config)
    assert model.blocks[0].attn.inducing is not None and model.blocks[1].attn.inducing is None
    with pytest.raises(ValueError, match=r"n_exact_blocks must be in 0\.\.n_icl_blocks=2"):
        ICLConfig(**{**tiny_config("inducing").to_dict(), "n_exact_blocks": 3})


def test_predict_from_context__hybrid_network__focuses_in_its_exact_blocks_only():
    model = _hybrid_model(1)
    x, y = tiny_batch()
    context = model.encode_context(x[:, :12], y)
    x_test = x[:, 12:]
    every = torch.arange(12).expand(2, 5, 12)
    torch.testing.assert_close(  # focusing on every row: the exact block reads what it read anyway
        model.predict_from_context(context, x_test, focus_rows=every, focus_blocks=1),
        model.predict_from_context(context, x_test),
        atol=1e-5,
        rtol=1e-5,
    )
    few = torch.zeros(2, 5, 3, dtype=torch.long)
    assert not torch.allclose(
        model.predict_from_context(context, x_test, focus_rows=few, focus_blocks=1), model.predict_from_context(context, x_test), atol=1e-4
    )
    with pytest.raises(ValueError, match="1 attend exactly"):
        model.predict_from_context(context, x_test, focus_rows=few, focus_blocks=2)


def test_hybrid_network__test_rows_independent_and_training_order_invariant():
    model = _hybrid_model(1)
    x, y = tiny_batch()
    out = model(x, y)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(model(torch.cat([x[:, perm], x[:, 12:]], dim=1), y[:, perm]), out, atol=1e-5, rtol=1e-5)
    alone = model(torch.cat([x[:, :12], x[:, 12:13]], dim=1), y)
    torch.testing.assert_close(alone[:, 0], out[:, 0], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------ tabulated cell embeddings
def _column_inputs(model: ICLTransformer, x_train, y, categorical):
    _, categorical = model._masks(x_train, None, categorical)
    labels = model._embed_labels(y, model.column_label_embedding)
    stats, summaries = model.column_embedding.summarize(x_train, categorical, labels)
    return stats, categorical, summaries


def test_cell_table__cells_on_grid_points_and_missing__equal_exact_embedding():
    model = labelled_model()
    x, y = tiny_batch(n_train=20)
    x[0, 3, 1] = float("nan")
    categorical = torch.tensor([[False, True, False], [False, False, False]])
    ce = model.column_embedding
    with torch.no_grad():
        stats, categorical, summaries = _column_inputs(model, x[:, :20], y, categorical)
        table = ce.tabulate(stats, categorical, summaries, 9)
        # Cells exactly on the grid: the column's training minimum, maximum and the points between.
        low, high = stats.low[:, None, :], stats.high[:, None, :]
        on_grid = low + (high - low) * torch.linspace(0, 1, 9)[None, :, None]  # (B, 9, F)
        on_grid[0, 4, 2] = float("nan")
        torch.testing.assert_close(
            ce.embed_from_table(on_grid, stats, categorical, table),
            ce.embed(on_grid, stats, categorical, summaries),
            atol=1e-5, rtol=1e-5,
        )


def test_cell_table__fine_grid__close_to_exact_coarse_grid__further():
    model = labelled_model()
    x, y = tiny_batch(n_train=40, n_test=200)
    ce = model.column_embedding
    with torch.no_grad():
        stats, categorical, summaries = _column_inputs(model, x[:, :40], y, None)
        exact = ce.embed(x[:, 40:], stats, categorical, summaries)
        errors = [
            (ce.embed_from_table(x[:, 40:], stats, categorical, ce.tabulate(stats, categorical, summaries, n)) - exact)
            .abs()
            .max()
            for n in (4, 256)
        ]
    assert errors[1] < 1e-3 * exact.abs().max() and errors[1] < errors[0] / 20


@pytest.mark.parametrize("kind", KINDS)
def test_encode_context__cell_grid__predictions_close_to_exact_and_test_rows_independent(kind):
    model = labelled_model()
    if kind == "inducing":
        model = tiny_model("inducing")
    x, y = tiny_batch(n_train=30, n_test=20)
    with torch.no_grad():
        exact = model.predict_from_context(model.encode_context(x[:, :30], y), x[:, 30:])
        context = model.encode_context(x[:, :30], y, cell_grid=256, row_chunk_size=7)
        assert context.cell_table.shape == (2, 3, 257, model.config.d_cell)
        tabulated = model.predict_from_context(context, x[:, 30:])
        subset = model.predict_from_context(context, x[:, 33:35])
        rebuilt = ICLContext.from_tensors(context.tensors())
        torch.testing.assert_close(model.predict_from_context(rebuilt, x[:, 30:]), tabulated)
    torch.testing.assert_close(tabulated, exact, atol=1e-3, rtol=0)
    torch.testing.assert_close(subset, tabulated[:, 3:5], atol=1e-6, rtol=1e-6)


def test_cell_table__fewer_than_two_points__raises_value_error():
    model = tiny_model()
    x, y = tiny_batch()
    with pytest.raises(ValueError, match="n_points"):
        model.encode_context(x[:, :12], y, cell_grid=1)
