"""Floating-point operations of whatever torch runs inside a ``with FlopCount() as count:`` block.

``torch.utils.flop_counter.FlopCounterMode`` cannot be used on the estimators: its module tracker
needs autograd and fails under ``torch.inference_mode``, and it has no formula for the CPU
flash-attention kernel, which does about half of TabFM's work. This mode counts at the dispatcher
instead: torch's own formulas for matrix products, ``linear`` and ``matmul`` (which reach the
dispatcher undecomposed under inference mode) as ``2 * output size * inner size``, and scaled
dot-product attention as ``4 * B * H * Lq * Lk * dh`` (``q k^T`` and ``p v``). Element-wise
operations (norms, GELU, softmax) are not counted, as in torch's counter.
"""

from __future__ import annotations

import math

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

_SDPA = {
    torch.ops.aten.scaled_dot_product_attention,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu,
    torch.ops.aten._scaled_dot_product_attention_math,
    torch.ops.aten._scaled_dot_product_efficient_attention,
    torch.ops.aten._scaled_dot_product_flash_attention,
}


def attention_flops(q: torch.Tensor, k: torch.Tensor) -> int:
    """FLOPs of ``softmax(q k^T) v`` for ``q (..., Lq, dh)`` and ``k (..., Lk, dh)``."""
    *lead, n_q, dh = q.shape
    return 4 * math.prod(lead) * n_q * k.shape[-2] * dh


class FlopCount(TorchDispatchMode):
    """Counts FLOPs of the torch operations run while active: ``total``, of which ``attention``."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.attention = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func.overloadpacket
        if packet in _SDPA:
            flops = attention_flops(args[0], args[1])
            self.total += flops
            self.attention += flops
        elif packet in (torch.ops.aten.linear, torch.ops.aten.matmul):
            self.total += 2 * out.numel() * args[0].shape[-1]
        elif packet in flop_registry:
            self.total += int(flop_registry[packet](*args, **kwargs, out_val=out))
        return out
