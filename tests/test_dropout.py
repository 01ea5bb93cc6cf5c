"""The cheaper CPU dropout shared by TabM and TabR."""

from __future__ import annotations

import pytest
import torch

from models.dropout import Dropout, keep_mask


def test__keep_mask__drop_rate__close_to_p() -> None:
    torch.manual_seed(0)
    for p in (0.1, 0.389):
        dropped = 1.0 - keep_mask((400, 500), p).float().mean().item()
        assert abs(dropped - p) < 0.005, (p, dropped)


def test__dropout__train__zeroes_or_scales_each_element_reproducibly() -> None:
    x = torch.randn(64, 33, requires_grad=True)
    layer = Dropout(0.25).train()
    torch.manual_seed(3)
    out = layer(x)
    kept = out != 0
    torch.testing.assert_close(out[kept], x[kept] / 0.75)
    assert 0.6 < kept.float().mean().item() < 0.9
    out.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.75)
    torch.manual_seed(3)
    assert torch.equal(layer(x), out)


def test__dropout__eval_or_zero_p__identity() -> None:
    x = torch.randn(5, 4)
    assert Dropout(0.5).eval()(x) is x
    assert Dropout(0.0).train()(x) is x
    with pytest.raises(ValueError, match="p must be in"):
        Dropout(1.0)
