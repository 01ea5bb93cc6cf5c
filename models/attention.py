"""Attention for tabular in-context learning: one interface, exact or inducing-point.

Two layers of the network use attention between *sets*:

* :class:`MultiHeadAttention`: plain multi-head attention of queries over keys/values, with an
  optional key mask and rotary position embeddings (used inside a row, over its features, and by
  the column embedding).
* :class:`ContextAttention`: rows of a table (training and test) read the training rows, the
  "context". The context is first turned into a *summary* (keys and values), then any row reads
  it. Training rows never read test rows and test rows never read each other, by construction:
  the summary is a function of the training rows only.

  - ``kind="full"``: the summary is the keys and values of every context row (exact softmax
    attention, cost ``O(N * N_ctx)``).
  - ``kind="inducing"``: ``m`` learned inducing queries per head attend over the context keys;
    the summary is the attention-weighted average of the context keys *and* values, ``m`` of each
    per head. Every row then attends over those ``m`` pairs (cost ``O(N * m)``). The same
    projections are used as in the exact kind, so the two agree exactly whenever every context row
    is the same (in particular with a single context row): each pooled key/value is then that
    row's key/value. The summary is a softmax-weighted sum over context rows, so it can be
    computed per data partition and merged with a log-sum-exp.

Both kinds compute ``softmax(q k^T / sqrt(d)) v`` with ``F.scaled_dot_product_attention`` when
running eagerly (fused, memory-efficient on CPU) and with an explicit matmul + softmax while
tracing or exporting to ONNX; the two give the same numbers. (The explicit path was ~1.5x faster
on CPU over short key sets such as a row's features, but its batched matmul made a row's output
depend on the order of the other rows at the 1e-7 level, which breaks scikit-learn's
sample-order invariance check; the fused kernel does not.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.icl_layers import apply_rope

__all__ = ["AttentionConfig", "ContextAttention", "MultiHeadAttention", "attend"]

AttentionKind = Literal["full", "inducing"]


@dataclass(frozen=True)
class AttentionConfig:
    """Configuration of the row-level (in-context) attention.

    Parameters
    ----------
    kind : {"full", "inducing"}
        ``"full"``: exact softmax attention over every training row. ``"inducing"``: ``n_inducing``
        learned points per head summarise the training rows; every row reads the summary.
    n_heads : int
        Number of attention heads; must divide the model width.
    n_inducing : int
        Number of inducing points per head (``kind="inducing"`` only).
    length_scale_ref : int or None
        Scalable softmax over the context rows: with ``N`` context keys the attention logits are
        multiplied by ``max(1, ln N / ln length_scale_ref)``, so that attention does not flatten
        as contexts grow beyond the sizes seen in pretraining (one member's ROC-AUC on 3,000-row
        contexts rose by 0.003 to 0.012 on four datasets with 128, the weights unchanged). Applied
        where queries read the context rows: every row (``"full"``) or the inducing points
        (``"inducing"``). ``None`` (default) leaves the logits as they are.
    """

    kind: AttentionKind = "inducing"
    n_heads: int = 4
    n_inducing: int = 32
    length_scale_ref: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("full", "inducing"):
            raise ValueError(
                f"AttentionConfig.kind must be 'full' or 'inducing', got kind={self.kind!r}"
            )
        if self.n_heads < 1:
            raise ValueError(f"AttentionConfig.n_heads must be >= 1, got n_heads={self.n_heads}")
        if self.n_inducing < 1:
            raise ValueError(
                f"AttentionConfig.n_inducing must be >= 1, got n_inducing={self.n_inducing}"
            )
        if self.length_scale_ref is not None and self.length_scale_ref < 2:
            raise ValueError(
                "AttentionConfig.length_scale_ref must be None or >= 2, got "
                f"length_scale_ref={self.length_scale_ref}"
            )

    def length_scale(self, n_context: int) -> float:
        """Factor on the logits of a softmax over ``n_context`` context keys (1 when off)."""
        if self.length_scale_ref is None or n_context <= self.length_scale_ref:
            return 1.0
        return math.log(n_context) / math.log(self.length_scale_ref)


def _use_explicit() -> bool:
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()


def attend(
    q: Tensor, k: Tensor, v: Tensor, *, key_mask: Tensor | None = None, explicit: bool | None = None
) -> Tensor:
    """Scaled dot-product attention ``softmax(q k^T / sqrt(d)) v``.

    Parameters
    ----------
    q : Tensor
        ``(..., H, Lq, dh)`` queries.
    k : Tensor
        ``(..., H, Lk, dh)`` keys (same leading dimensions as ``q``).
    v : Tensor
        ``(..., H, Lk, dv)`` values.
    key_mask : Tensor, optional
        Boolean, broadcastable to ``(..., H, Lq, Lk)``; ``True`` marks keys that may be read. Every
        query must be able to read at least one key.
    explicit : bool, optional
        Force the explicit matmul + softmax path (``True``) or the fused kernel (``False``). By
        default the explicit path is used only while tracing or exporting.

    Returns
    -------
    Tensor
        ``(..., H, Lq, dv)``.
    """
    if explicit is None:
        explicit = _use_explicit()
    if explicit:
        scale = 1.0 / math.sqrt(q.shape[-1])
        scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # (..., H, Lq, Lk)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)
        return torch.matmul(torch.softmax(scores, dim=-1), v)
    lead = q.shape[:-3]
    q4 = q.reshape(-1, *q.shape[-3:])  # (B', H, Lq, dh)
    k4 = k.reshape(-1, *k.shape[-3:])
    v4 = v.reshape(-1, *v.shape[-3:])
    mask4 = None
    if key_mask is not None:
        mask4 = key_mask.expand(*lead, *key_mask.shape[-3:]).reshape(-1, *key_mask.shape[-3:])
    out = F.scaled_dot_product_attention(q4, k4, v4, attn_mask=mask4)
    return out.reshape(*lead, *out.shape[-3:])


class MultiHeadAttention(nn.Module):
    """Multi-head attention of a query set over a key/value set.

    Parameters
    ----------
    d_model : int
        Width of queries, keys/values inputs and output.
    n_heads : int
        Number of heads; must divide ``d_model``.
    bias : bool
        Whether the projections have a bias.

    Shape
    -----
    ``x_q``: ``(..., Lq, D)``, ``x_kv``: ``(..., Lk, D)`` -> ``(..., Lq, D)``.
    """

    def __init__(self, *, d_model: int, n_heads: int, bias: bool = True) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(
                f"d_model must be divisible by n_heads, got d_model={d_model}, n_heads={n_heads}"
            )
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def _heads(self, x: Tensor) -> Tensor:
        x = x.unflatten(-1, (self.n_heads, self.head_dim))  # (..., L, H, dh)
        return x.transpose(-2, -3)  # (..., H, L, dh)

    def project_kv(self, x_kv: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values ``(..., H, Lk, dh)`` of a key/value set ``(..., Lk, D)``."""
        return self._project(x_kv, self.k_proj, self.v_proj)

    def _project(self, x: Tensor, *projections: nn.Linear) -> tuple[Tensor, ...]:
        # One matrix product for several projections of the same input: fewer, larger GEMMs.
        weight = torch.cat([p.weight for p in projections])
        bias = None if projections[0].bias is None else torch.cat([p.bias for p in projections])
        out = F.linear(x, weight, bias).unflatten(-1, (len(projections), self.n_heads, self.head_dim))
        return tuple(out.movedim(out.ndim - 3, 0).transpose(-2, -3).unbind(0))  # each (..., H, L, dh)

    def read(
        self,
        x_q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        key_mask: Tensor | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Queries ``(..., Lq, D)`` read projected keys/values ``(..., H, Lk, dh)``."""
        q = self._heads(self.q_proj(x_q))  # (..., H, Lq, dh)
        if rope is not None:
            q = apply_rope(q, *rope)
        out = attend(q, k, v, key_mask=key_mask)  # (..., H, Lq, dh)
        return self.out_proj(out.transpose(-2, -3).flatten(-2))  # (..., Lq, D)

    def forward(
        self,
        x_q: Tensor,
        x_kv: Tensor,
        *,
        key_mask: Tensor | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Attention of ``x_q`` over ``x_kv``; ``rope`` (cos, sin) rotates queries and keys alike,
        so it requires ``x_q`` and ``x_kv`` to be the same sequence."""
        if x_q is x_kv and rope is None:  # self-attention: queries, keys and values in one product
            q, k, v = self._project(x_q, self.q_proj, self.k_proj, self.v_proj)
            out = attend(q, k, v, key_mask=key_mask)
            return self.out_proj(out.transpose(-2, -3).flatten(-2))
        k, v = self.project_kv(x_kv)
        if rope is not None:
            k = apply_rope(k, *rope)
        return self.read(x_q, k, v, key_mask=key_mask, rope=rope)


class ContextAttention(nn.Module):
    """Rows read a summary of the context (training) rows; exact or through inducing points.

    Use :meth:`summarize` once on the (normalised) context rows, then :meth:`read` for any rows;
    ``forward(x, x_ctx)`` does both.

    Parameters
    ----------
    d_model : int
        Row width ``D``.
    config : AttentionConfig
        Kind, number of heads and of inducing points.

    Shape
    -----
    ``summarize``: ``(B, N_ctx, D)`` -> keys, values ``(B, H, M, dh)`` with ``M = N_ctx`` (full) or
    ``M = n_inducing`` (inducing). ``read``: ``(B, N, D)`` -> ``(B, N, D)``.
    """

    def __init__(self, *, d_model: int, config: AttentionConfig) -> None:
        super().__init__()
        self.config = config
        self.mha = MultiHeadAttention(d_model=d_model, n_heads=config.n_heads)
        if config.kind == "inducing":
            head_dim = d_model // config.n_heads
            # Queries in key space; unit-scale entries give sharp but not saturated first softmaxes.
            self.inducing = nn.Parameter(torch.randn(config.n_heads, config.n_inducing, head_dim))
        else:
            self.register_parameter("inducing", None)

    def summarize(self, x_ctx: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values that stand for the context rows ``(B, N_ctx, D)``."""
        k, v = self.mha.project_kv(x_ctx)  # (B, H, N_ctx, dh) each
        if self.inducing is None:
            return k, v
        dh = k.shape[-1]
        scale = self.config.length_scale(k.shape[-2])
        q = self.inducing.expand(k.shape[0], *self.inducing.shape)  # (B, H, m, dh)
        pooled = attend(q * scale if scale != 1.0 else q, k, torch.cat([k, v], dim=-1))  # (B, H, m, 2 dh)
        return pooled[..., :dh], pooled[..., dh:]

    def read(self, x: Tensor, summary: tuple[Tensor, Tensor], *, key_mask: Tensor | None = None) -> Tensor:
        """Rows ``(B, N, D)`` read a summary from :meth:`summarize`; ``key_mask`` (broadcastable
        to ``(B, H, N, M)``, exact attention only) marks the context rows each row may read."""
        k, v = summary
        if self.inducing is None:  # the summary is every context row: its length is N_ctx
            # The softmax spans the keys a row may read (every row of a mask reads as many).
            n_keys = k.shape[-2] if key_mask is None else int(key_mask.sum(-1).amax())
            scale = self.config.length_scale(n_keys)
            if scale != 1.0:
                k = k * scale
        elif key_mask is not None:
            raise ValueError("key_mask needs exact attention: an inducing summary has no per-row keys")
        return self.mha.read(x, k, v, key_mask=key_mask)

    def forward(self, x: Tensor, x_ctx: Tensor) -> Tensor:
        return self.read(x, self.summarize(x_ctx))
