"""Small building blocks shared by the in-context-learning network: norm, feed-forward, RoPE.

Written with plain tensor operations only (no fused kernels that lack an ONNX counterpart) so the
inference path exports as it is.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def make_norm(d: int) -> nn.LayerNorm:
    """The normalisation used throughout the network: ``LayerNorm`` over the last dimension.

    RMSNorm was tried first; on these CPUs its unfused forward+backward measured ~3-4x slower than
    the fused ``LayerNorm`` kernel, and norms over cell-level tensors are a large share of a step.
    """
    return nn.LayerNorm(d)


class FeedForward(nn.Module):
    """Two-layer perceptron with GELU, applied to the last dimension.

    Shape: input ``(..., D)``, output ``(..., D)``.
    """

    def __init__(self, d: int, d_hidden: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, d_hidden)
        self.fc2 = nn.Linear(d_hidden, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.dropout(nn.functional.gelu(self.fc1(x))))


def rope_angles(positions: Tensor, head_dim: int, base: float) -> tuple[Tensor, Tensor]:
    """Cosines and sines of rotary position embeddings.

    Parameters
    ----------
    positions : Tensor
        ``(..., T)`` float positions (any value, not only integers).
    head_dim : int
        Width of one attention head; must be even.
    base : float
        Wavelength base: frequencies are ``base ** (-2 i / head_dim)``.

    Returns
    -------
    tuple of Tensor
        ``cos`` and ``sin``, each ``(..., T, head_dim // 2)``.
    """
    if head_dim % 2:
        raise ValueError(f"rotary embeddings need an even head width, got head_dim={head_dim}")
    half = head_dim // 2
    exponent = torch.arange(half, device=positions.device, dtype=torch.float32) / half
    inv_freq = base ** (-exponent)  # (half,)
    angles = positions.to(torch.float32).unsqueeze(-1) * inv_freq  # (..., T, half)
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs ``(x[..., i], x[..., i + half])`` by the given angles.

    ``x`` is ``(..., T, head_dim)``; ``cos`` and ``sin`` broadcast to ``(..., T, head_dim // 2)``.
    """
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
