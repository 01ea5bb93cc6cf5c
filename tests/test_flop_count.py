"""The FLOP counter behind the speed benchmark: exact counts for the operations it knows."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.flop_count import FlopCount


def test_flop_count__matrix_product__two_flops_per_multiply_add():
    a, b = torch.randn(3, 5, 7), torch.randn(3, 7, 11)
    with FlopCount() as count:
        a @ b
    assert count.total == 2 * 3 * 5 * 7 * 11


def test_flop_count__linear_under_inference_mode__counted():
    layer = torch.nn.Linear(8, 16)
    with torch.inference_mode(), FlopCount() as count:
        layer(torch.randn(4, 10, 8))
    assert count.total == 2 * 4 * 10 * 8 * 16


def test_flop_count__attention__scores_and_weighted_sum():
    q, k = torch.randn(2, 4, 10, 8), torch.randn(2, 4, 12, 8)
    with torch.inference_mode(), FlopCount() as count:
        torch.nn.functional.scaled_dot_product_attention(q, k, k)
    assert count.total == 4 * 2 * 4 * 10 * 12 * 8


def test_flop_count__element_wise__not_counted():
    with FlopCount() as count:
        torch.nn.functional.gelu(torch.randn(100)) + 1
    assert count.total == 0
