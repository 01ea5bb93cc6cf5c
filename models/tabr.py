"""TabR: an MLP whose prediction for a row also looks at its nearest training rows.

The encoder maps a row to a hidden vector ``x`` and a key ``k`` (a linear map of the optionally
normalised ``x``). Retrieval takes the ``m`` training rows whose keys are nearest in squared L2
distance, weighs them by a softmax over the negative distances, and mixes in their values
``label_embedding(y_i) + T(k - k_i)``; a residual predictor turns the mixed vector into the output.

Retrieval here is exact top-m in torch, chunked over candidates so that memory stays bounded; a
different search (an approximate index, for very large training sets) can be passed as
``search=``. While training, the caller passes the batch's own positions among the candidates
(``self_idx``) and those are never retrieved: a row must not see its own label.

Letters in shape comments: B rows in a batch, N candidates, m context size, D width.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.dropout import Dropout, keep_mask_
from models.numeric_embeddings import OneHotEncoding, PiecewiseLinearEmbeddings

SearchFn = Callable[[Tensor, Tensor, int, "Tensor | None"], Tensor]


@torch.no_grad()
def exact_search(
    queries: Tensor,
    candidates: Tensor,
    m: int,
    exclude: Tensor | None = None,
    *,
    chunk_size: int = 16384,
) -> Tensor:
    """Indices of the ``m`` nearest candidates of each query (squared L2), nearest first.

    Parameters
    ----------
    queries : Tensor (B, D)
    candidates : Tensor (N, D)
    m : int
        Number of neighbours; must not exceed the candidates left after exclusion.
    exclude : Tensor (B,), optional
        For each query, one candidate index that must never be returned (its own row).
    chunk_size : int
        Candidates scored at a time; memory is O(B * (chunk_size + m)).

    Returns
    -------
    Tensor (B, m) of int64 candidate indices.
    """
    n_candidates = candidates.shape[0]
    limit = n_candidates - (1 if exclude is not None else 0)
    if not 1 <= m <= limit:
        raise ValueError(f"m must be in [1, {limit}] for {n_candidates} candidates, however: m={m}")
    q_sq = queries.square().sum(-1, keepdim=True)  # (B, 1)
    best_d = best_i = None
    for start in range(0, n_candidates, chunk_size):
        chunk = candidates[start : start + chunk_size]  # (C, D)
        # q_sq - 2 q.c + c_sq, in place (the same rounding as the exported graph's formula).
        dist = (queries @ chunk.T).mul_(-2.0).add_(q_sq).add_(chunk.square().sum(-1))  # (B, C)
        if exclude is not None:
            local = exclude - start
            rows = ((local >= 0) & (local < chunk.shape[0])).nonzero().squeeze(1)
            dist[rows, local[rows]] = torch.inf
        n_prev = 0 if best_d is None else best_d.shape[1]
        if best_d is not None:
            dist = torch.cat([best_d, dist], 1)  # (B, k + C): kept rows first, indices ascending
        k = min(m, dist.shape[1])
        # Ties go to the lowest index, as ONNX TopK does, so the exported graph retrieves the same
        # rows: keep everything nearer than the k-th distance, then the first tied positions.
        kth = dist.topk(k, dim=1, largest=False, sorted=False).values.amax(1, keepdim=True)
        keep = dist <= kth  # (B, k + C)
        if bool((keep.sum(1) > k).any()):  # more ties at the k-th distance than places left
            nearer, tied = dist < kth, dist == kth
            keep = nearer | (tied & (tied.cumsum(1) <= k - nearer.sum(1, keepdim=True)))
        pos = keep.nonzero()[:, 1].view(-1, k)  # (B, k) positions, ascending
        new_d = dist.gather(1, pos)
        new_i = pos + (start - n_prev)
        if best_i is not None:
            new_i = torch.where(pos < n_prev, best_i.gather(1, pos.clamp(max=n_prev - 1)), new_i)
        best_d, best_i = new_d, new_i
    return best_i.gather(1, torch.sort(best_d, dim=1, stable=True).indices)


# Rows of the (rows, m, d_block) hidden tensor formed at a time: ~8 MB pieces stay in the
# allocator's reused memory instead of fresh page-faulted mappings of the whole batch.
_HIDDEN_CHUNK_ELEMENTS = 1 << 21


def _hidden_rows(a: Tensor, proj: Tensor, idx: Tensor, keep: Tensor | None, out: Tensor) -> Tensor:
    """``drop(relu(a[b] - proj[idx[b, i]]))`` (without the 1/(1-p) scale) written into ``out``."""
    torch.index_select(proj, 0, idx.flatten(), out=out.view(-1, proj.shape[1]))
    torch.sub(a.unsqueeze(1), out, out=out).clamp_(min=0.0)  # (b, m, H)
    if keep is not None:
        out.mul_(keep.view(torch.uint8))  # several times faster than masked_fill_
    return out


class _MixHidden(torch.autograd.Function):
    """Forward and backward of :func:`mix_hidden`, a few rows at a time.

    Saves the inputs and the bool dropout mask (1 byte per hidden unit); the backward recomputes each piece of the hidden
    tensor instead of keeping all of it.
    """

    @staticmethod
    def forward(ctx, a: Tensor, proj: Tensor, idx: Tensor, weights: Tensor, p: float) -> Tensor:
        idx = idx.contiguous()
        (B, m), H = idx.shape, a.shape[1]
        rows = max(1, _HIDDEN_CHUNK_ELEMENTS // (m * H))
        keeps = None
        if p > 0.0:
            keeps = keep_mask_(torch.empty((B, m, H), dtype=torch.bool, device=a.device), p)
        buffer = a.new_empty((min(rows, B), m, H))
        out = a.new_empty((B, H))
        for s in range(0, B, rows):
            e = min(s + rows, B)
            hidden = _hidden_rows(
                a[s:e], proj, idx[s:e], None if keeps is None else keeps[s:e], buffer[: e - s]
            )  # (b, m, H)
            out[s:e] = torch.bmm(weights[s:e].unsqueeze(1), hidden).squeeze(1)
        if p > 0.0:
            out.mul_(1.0 / (1.0 - p))
        ctx.save_for_backward(a, proj, idx, weights, keeps)
        ctx.p, ctx.rows = p, rows
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        a, proj, idx, weights, keeps = ctx.saved_tensors
        p, rows = ctx.p, ctx.rows
        (B, m), H = idx.shape, a.shape[1]
        g = grad_out.contiguous() * (1.0 / (1.0 - p))  # (B, H)
        grad_a = torch.empty_like(a) if ctx.needs_input_grad[0] else None
        grad_proj = torch.zeros_like(proj) if ctx.needs_input_grad[1] else None
        grad_w = torch.empty_like(weights) if ctx.needs_input_grad[3] else None
        buffer = a.new_empty((min(rows, B), m, H))
        for s in range(0, B, rows):
            e = min(s + rows, B)
            hidden = _hidden_rows(
                a[s:e], proj, idx[s:e], None if keeps is None else keeps[s:e], buffer[: e - s]
            )  # (b, m, H)
            if grad_w is not None:
                grad_w[s:e] = torch.bmm(hidden, g[s:e].unsqueeze(-1)).squeeze(-1)
            # d out / d (a - proj): 1 where the unit is active and kept, times weight and grad.
            d_pre = hidden.sign_().mul_(weights[s:e].unsqueeze(-1)).mul_(g[s:e].unsqueeze(1))
            if grad_a is not None:
                torch.sum(d_pre, dim=1, out=grad_a[s:e])
            if grad_proj is not None:
                grad_proj.index_add_(0, idx[s:e].flatten(), d_pre.view(-1, H), alpha=-1.0)
        return grad_a, grad_proj, None, grad_w, None


def mix_hidden(a: Tensor, proj: Tensor, idx: Tensor, weights: Tensor, p: float = 0.0) -> Tensor:
    """``sum_i weights[b, i] * dropout(relu(a[b] - proj[idx[b, i]]), p)`` as ``(B, H)``.

    The same value (and gradients for ``a``, ``proj`` and ``weights``) as forming the
    ``(B, m, H)`` tensor with torch operations, without holding it: rows are processed a few at a
    time and the backward pass recomputes them. Dropout masks come from
    :func:`models.dropout.keep_mask_`.

    Parameters
    ----------
    a : Tensor (B, H)
    proj : Tensor (N, H)
    idx : Tensor (B, m) of int64 row indices into ``proj``
    weights : Tensor (B, m)
    p : float
        Dropout probability on the hidden units (0 in eval mode).
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p must be in [0, 1), however: p={p}")
    return _MixHidden.apply(a, proj, idx, weights, p)


@dataclass(frozen=True)
class TabRConfig:
    """Architecture of :class:`TabR` (defaults: the paper's untuned "TabR-S" configuration).

    ``n_classes=None`` means regression (one output, labels embedded by a linear map);
    ``d_embedding > 0`` puts numeric features through piecewise-linear embeddings.
    """

    n_num_features: int
    n_classes: int | None
    cat_cardinalities: tuple[int, ...] = field(default_factory=tuple)
    d_main: int = 265
    d_multiplier: float = 2.0
    encoder_n_blocks: int = 0
    predictor_n_blocks: int = 1
    mixer_normalization: bool | None = None  # None: only when the encoder has blocks
    context_dropout: float = 0.389
    dropout0: float = 0.389
    dropout1: float = 0.0
    context_size: int = 96
    d_embedding: int = 0

    def __post_init__(self) -> None:
        if self.n_num_features < 0 or (self.n_num_features == 0 and not self.cat_cardinalities):
            raise ValueError(
                "TabR needs at least one feature, however: "
                f"n_num_features={self.n_num_features}, cat_cardinalities={self.cat_cardinalities}"
            )
        if self.n_classes is not None and self.n_classes < 2:
            raise ValueError(
                f"n_classes must be None (regression) or >= 2, however: n_classes={self.n_classes}"
            )
        for name in ("d_main", "context_size"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"{name} must be a positive integer, however: {name}={getattr(self, name)}"
                )

    @property
    def d_out(self) -> int:
        return 1 if self.n_classes is None else self.n_classes

    @property
    def d_block(self) -> int:
        return int(self.d_main * self.d_multiplier)


class _ResidualBlock(nn.Module):
    def __init__(self, config: TabRConfig, *, prenorm: bool) -> None:
        super().__init__()
        self.net = nn.Sequential(
            *([nn.LayerNorm(config.d_main)] if prenorm else []),
            nn.Linear(config.d_main, config.d_block),
            nn.ReLU(),
            Dropout(config.dropout0),
            nn.Linear(config.d_block, config.d_main),
            Dropout(config.dropout1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


class TabR(nn.Module):
    """Retrieval-augmented MLP (TabR).

    Parameters
    ----------
    config : TabRConfig
    bins : sequence of Tensor, optional
        Bin edges per numeric feature, required when ``config.d_embedding > 0``.

    Shape
    -----
    - :meth:`encode`: ``x_num (B, n_num)``, ``x_cat (B, n_cat)`` -> ``x (B, D)``, ``k (B, D)``
    - :meth:`forward`: the same inputs plus ``candidate_k (N, D)`` and ``candidate_y (N,)``
      -> ``(B, d_out)`` (logits, or the value for regression)
    """

    def __init__(self, config: TabRConfig, *, bins: Sequence[Tensor] | None = None) -> None:
        super().__init__()
        self.config = config
        d_main = config.d_main
        self.num_embeddings: PiecewiseLinearEmbeddings | None = None
        d_in = sum(config.cat_cardinalities)
        if config.d_embedding > 0 and config.n_num_features > 0:
            if bins is None or len(bins) != config.n_num_features:
                raise ValueError(
                    f"bins must hold {config.n_num_features} tensors of edges when d_embedding > 0"
                )
            self.num_embeddings = PiecewiseLinearEmbeddings(bins, d_embedding=config.d_embedding)
            d_in += config.n_num_features * config.d_embedding
        else:
            d_in += config.n_num_features
        self.one_hot = (
            OneHotEncoding(config.cat_cardinalities) if config.cat_cardinalities else None
        )

        # Encoder E.
        self.linear = nn.Linear(d_in, d_main)
        self.encoder = nn.Sequential(
            *(_ResidualBlock(config, prenorm=i > 0) for i in range(config.encoder_n_blocks))
        )
        # Retrieval R.
        use_norm = config.mixer_normalization
        if use_norm is None:
            use_norm = config.encoder_n_blocks > 0
        self.key_norm = nn.LayerNorm(d_main) if use_norm else nn.Identity()
        self.key = nn.Linear(d_main, d_main)
        if config.n_classes is None:
            self.label_embedding: nn.Module = nn.Linear(1, d_main)
            nn.init.uniform_(self.label_embedding.weight, -(2**-0.5), 2**-0.5)
            nn.init.uniform_(self.label_embedding.bias, -(2**-0.5), 2**-0.5)
        else:
            self.label_embedding = nn.Embedding(config.n_classes, d_main)
            nn.init.uniform_(self.label_embedding.weight, -1.0, 1.0)
        self.transform = nn.Sequential(
            nn.Linear(d_main, config.d_block),
            nn.ReLU(),
            Dropout(config.dropout0),
            nn.Linear(config.d_block, d_main, bias=False),
        )
        self.context_dropout = Dropout(config.context_dropout)
        # Predictor P.
        self.predictor = nn.Sequential(
            *(_ResidualBlock(config, prenorm=True) for _ in range(config.predictor_n_blocks))
        )
        self.head = nn.Sequential(nn.LayerNorm(d_main), nn.ReLU(), nn.Linear(d_main, config.d_out))

    def encode(self, x_num: Tensor | None, x_cat: Tensor | None) -> tuple[Tensor, Tensor]:
        """Hidden vectors and retrieval keys of a batch of rows, both ``(B, D)``."""
        parts = []
        if self.config.n_num_features > 0:
            if x_num is None:
                raise ValueError(
                    f"x_num is required: the model has {self.config.n_num_features} numeric features"
                )
            parts.append(
                x_num if self.num_embeddings is None else self.num_embeddings(x_num).flatten(1)
            )
        if self.one_hot is not None:
            if x_cat is None:
                raise ValueError("x_cat is required: the model has categorical features")
            parts.append(self.one_hot(x_cat))
        x = self.encoder(self.linear(torch.cat(parts, dim=1)))  # (B, D)
        return x, self.key(self.key_norm(x))

    @torch.no_grad()
    def encode_keys(
        self, x_num: Tensor | None, x_cat: Tensor | None, *, batch_size: int = 4096
    ) -> Tensor:
        """Keys ``(N, D)`` of many rows, computed in batches without gradients (the predict cache)."""
        n = (x_num if x_num is not None else x_cat).shape[0]
        keys = [
            self.encode(
                None if x_num is None else x_num[i : i + batch_size],
                None if x_cat is None else x_cat[i : i + batch_size],
            )[1]
            for i in range(0, n, batch_size)
        ]
        return torch.cat(keys)

    def embed_labels(self, y: Tensor) -> Tensor:
        """Label embeddings ``(..., D)`` of class codes (long) or standardised values (float)."""
        if self.config.n_classes is None:
            return self.label_embedding(y.float().unsqueeze(-1))
        return self.label_embedding(y.long())

    def mix(
        self,
        x: Tensor,
        k: Tensor,
        candidate_k: Tensor,
        candidate_y: Tensor,
        context_idx: Tensor,
    ) -> Tensor:
        """Mix the retrieved context into ``x`` and predict.

        ``x``, ``k`` are ``(B, D)``; the context of row ``b`` is ``candidate_k[context_idx[b]]``
        with labels ``candidate_y[context_idx[b]]``. Returns ``(B, d_out)``.

        The value of context row ``i`` is ``emb(y_i) + W2 · drop(relu(W1 (k - k_i) + b1))``.
        Exact rewrites keep the cost well below the paper's formulation: ``W1 (k - k_i)`` is
        ``W1 k - W1 k_i``, projected from the queries and the candidates (whichever is fewer:
        all candidates once, or the gathered context rows); ``W2`` has no bias, so it is applied
        once to the weighted sum instead of to each of the ``m`` context rows; the weighted sum
        of label embeddings is a sum of weights per class (or of weighted labels, for the linear
        embedding of regression targets); and the ``(B, m, d_block)`` hidden tensor is formed
        and reduced a few rows at a time by :func:`mix_hidden`.
        """
        first, _, dropout, second = self.transform
        context_k = candidate_k[context_idx]  # (B, m, D)
        weights = F.softmax(-(k.unsqueeze(1) - context_k).square().sum(-1), dim=-1)  # (B, m)
        weights = self.context_dropout(weights)
        if candidate_k.shape[0] <= context_idx.numel():
            proj, proj_idx = F.linear(candidate_k, first.weight), context_idx  # (N, d_block)
        else:
            proj = F.linear(context_k.flatten(0, 1), first.weight)  # (B * m, d_block)
            proj_idx = torch.arange(proj.shape[0], device=proj.device).view(context_idx.shape)
        p_drop = dropout.p if dropout.training else 0.0
        mixed_hidden = mix_hidden(first(k), proj, proj_idx, weights, p_drop)  # (B, d_block)
        mixed_labels = self.mix_labels(weights, candidate_y[context_idx])  # (B, D)
        x = x + mixed_labels + second(mixed_hidden)  # (B, D)
        return self.head(self.predictor(x))

    def mix_labels(self, weights: Tensor, context_y: Tensor) -> Tensor:
        """``sum_i weights[b, i] * embed_labels(context_y[b, i])`` as ``(B, D)``, without the
        ``(B, m, D)`` tensor of embeddings."""
        if self.config.n_classes is None:
            w, b = self.label_embedding.weight, self.label_embedding.bias  # (D, 1), (D,)
            weighted_y = (weights * context_y.to(weights.dtype)).sum(1, keepdim=True)  # (B, 1)
            return F.linear(weighted_y, w) + weights.sum(1, keepdim=True) * b
        per_class = weights.new_zeros((weights.shape[0], self.config.n_classes))
        per_class = per_class.scatter_add(1, context_y.long(), weights)  # (B, C)
        return per_class @ self.label_embedding.weight

    def forward(
        self,
        x_num: Tensor | None,
        x_cat: Tensor | None,
        *,
        candidate_k: Tensor,
        candidate_y: Tensor,
        self_idx: Tensor | None = None,
        search: SearchFn | None = None,
    ) -> Tensor:
        """Predict a batch given the candidates' keys and labels.

        ``self_idx`` (B,) gives each row's own position among the candidates while training;
        that candidate is never retrieved. ``candidate_k`` may carry gradients (training) or
        be a cached, detached tensor (prediction).
        """
        x, k = self.encode(x_num, x_cat)
        context_idx = self.retrieve(k, candidate_k, self_idx=self_idx, search=search)  # (B, m)
        return self.mix(x, k, candidate_k, candidate_y, context_idx)

    def retrieve(
        self,
        k: Tensor,
        candidate_k: Tensor,
        *,
        self_idx: Tensor | None = None,
        search: SearchFn | None = None,
    ) -> Tensor:
        """Indices ``(B, m)`` of the context rows among the candidates (never ``self_idx``)."""
        n_available = candidate_k.shape[0] - (0 if self_idx is None else 1)
        m = min(self.config.context_size, n_available)
        search = search or exact_search
        return search(k.detach(), candidate_k.detach(), m, self_idx)
