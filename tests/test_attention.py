"""Attention kinds of the in-context network: exact reference, inducing points, masks and RoPE."""

from __future__ import annotations

import pytest
import torch

from models.attention import AttentionConfig, ContextAttention, MultiHeadAttention, attend
from models.icl_layers import apply_rope, rope_angles


def _pair(d: int = 16, n_heads: int = 2, n_inducing: int = 4, seed: int = 0):
    """Exact and inducing attention with the same projection weights."""
    torch.manual_seed(seed)
    full = ContextAttention(d_model=d, config=AttentionConfig(kind="full", n_heads=n_heads))
    inducing = ContextAttention(
        d_model=d, config=AttentionConfig(kind="inducing", n_heads=n_heads, n_inducing=n_inducing)
    )
    inducing.mha.load_state_dict(full.mha.state_dict())
    return full, inducing


def test_attend__explicit_and_fused__agree_with_mask():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 7, 4), torch.randn(3, 2, 7, 6)
    mask = torch.rand(3, 1, 1, 7) > 0.4
    mask[..., 0] = True
    a = attend(q, k, v, key_mask=mask, explicit=True)
    b = attend(q, k, v, key_mask=mask, explicit=False)
    assert a.shape == (3, 2, 5, 6)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_self_attention__one_fused_projection__equals_separate_projections():
    torch.manual_seed(0)
    mha = MultiHeadAttention(d_model=8, n_heads=2)
    x = torch.randn(3, 5, 6, 8)
    mask = torch.rand(3, 5, 1, 1, 6) > 0.3
    mask[..., 0] = True
    fused = mha(x, x, key_mask=mask)  # the same tensor: q, k, v from one product
    separate = mha(x, x.clone(), key_mask=mask)  # distinct tensors: the general path
    torch.testing.assert_close(fused, separate, atol=1e-6, rtol=1e-5)


def test_attend__masked_keys__do_not_influence_output():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 6, 4), torch.randn(1, 2, 6, 4)
    mask = torch.tensor([True, True, True, False, False, True]).view(1, 1, 1, 6)
    out = attend(q, k, v, key_mask=mask)
    k2, v2 = k.clone(), v.clone()
    k2[..., 3:5, :] = 100.0
    v2[..., 3:5, :] = -50.0
    torch.testing.assert_close(out, attend(q, k2, v2, key_mask=mask))


def test_context_attention__single_context_row__inducing_equals_exact():
    full, inducing = _pair()
    x_ctx, x = torch.randn(2, 1, 16), torch.randn(2, 9, 16)
    torch.testing.assert_close(inducing(x, x_ctx), full(x, x_ctx), atol=1e-5, rtol=1e-5)


def test_context_attention__identical_context_rows__inducing_equals_exact():
    full, inducing = _pair(seed=1)
    x_ctx = torch.randn(2, 1, 16).expand(2, 50, 16)
    x = torch.randn(2, 7, 16)
    torch.testing.assert_close(inducing(x, x_ctx), full(x, x_ctx), atol=1e-5, rtol=1e-5)


def test_context_attention__distinct_context_rows__inducing_differs_from_exact():
    full, inducing = _pair(seed=2)
    x_ctx, x = torch.randn(2, 50, 16), torch.randn(2, 7, 16)
    assert (inducing(x, x_ctx) - full(x, x_ctx)).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["full", "inducing"])
def test_context_attention__permuted_context__same_output(kind):
    full, inducing = _pair(seed=3)
    attn = full if kind == "full" else inducing
    x_ctx, x = torch.randn(2, 30, 16), torch.randn(2, 5, 16)
    perm = torch.randperm(30)
    torch.testing.assert_close(attn(x, x_ctx), attn(x, x_ctx[:, perm]), atol=1e-5, rtol=1e-5)


def test_context_attention__inducing_summary__has_fixed_size():
    _, inducing = _pair(n_inducing=4)
    for n in (3, 40):
        k, v = inducing.summarize(torch.randn(2, n, 16))
        assert k.shape == v.shape == (2, 2, 4, 8)


def test_context_attention__rows__read_independently():
    _, inducing = _pair(seed=4)
    x_ctx, x = torch.randn(1, 20, 16), torch.randn(1, 6, 16)
    summary = inducing.summarize(x_ctx)
    torch.testing.assert_close(inducing.read(x, summary)[:, 2:4], inducing.read(x[:, 2:4], summary))


def test_multi_head_attention__rope__depends_on_relative_position_only():
    torch.manual_seed(0)
    mha = MultiHeadAttention(d_model=8, n_heads=2)
    x = torch.randn(1, 5, 8)
    pos = torch.arange(5.0).unsqueeze(0)
    out = mha(x, x, rope=rope_angles(pos, 4, 100.0))
    shifted = mha(x, x, rope=rope_angles(pos + 7.0, 4, 100.0))
    reordered = mha(x, x, rope=rope_angles(pos.flip(-1), 4, 100.0))
    torch.testing.assert_close(out, shifted, atol=1e-5, rtol=1e-5)
    assert (out - reordered).abs().max() > 1e-3


def test_apply_rope__rotation__preserves_norm():
    x = torch.randn(3, 5, 6)
    cos, sin = rope_angles(torch.arange(5.0), 6, 10.0)
    torch.testing.assert_close(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1))


def test_attention_config__bad_kind__raises():
    with pytest.raises(ValueError, match="kind"):
        AttentionConfig(kind="linear")  # type: ignore[arg-type]


def test_attention_config__length_scale__one_up_to_ref_then_log_ratio():
    config = AttentionConfig(kind="full", length_scale_ref=128)
    assert config.length_scale(100) == 1.0 and config.length_scale(128) == 1.0
    assert config.length_scale(128**2) == pytest.approx(2.0)
    assert AttentionConfig(kind="full").length_scale(10**6) == 1.0
    with pytest.raises(ValueError, match="length_scale_ref"):
        AttentionConfig(length_scale_ref=1)


@pytest.mark.parametrize("kind", ["full", "inducing"])
def test_context_attention__length_scale__equals_attention_with_scaled_logits(kind):
    torch.manual_seed(3)
    plain = ContextAttention(d_model=16, config=AttentionConfig(kind=kind, n_heads=2, n_inducing=4))
    scaled = ContextAttention(d_model=16, config=AttentionConfig(kind=kind, n_heads=2, n_inducing=4, length_scale_ref=8))
    scaled.load_state_dict(plain.state_dict())
    x = torch.randn(2, 5, 16)
    short = torch.randn(2, 8, 16)  # up to the reference length nothing changes
    torch.testing.assert_close(scaled(x, short), plain(x, short))
    # 64 context rows: every logit of the softmax over them doubles (ln 64 / ln 8 = 2), which is
    # what doubling the queries of that softmax does.
    x_ctx = torch.randn(2, 64, 16)
    if kind == "full":
        plain.mha.q_proj.weight.data *= 2
        plain.mha.q_proj.bias.data *= 2
    else:
        plain.inducing.data *= 2
    torch.testing.assert_close(scaled(x, x_ctx), plain(x, x_ctx), atol=1e-5, rtol=1e-5)
