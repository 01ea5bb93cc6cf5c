"""The in-context-learning (ICL) transformer for tables, in the TabICL line, sized for a CPU budget.

A table of ``R`` rows (training rows first) and ``F`` features becomes predictions for its test
rows in one pass, in three stages:

1. **Column embedding** (:mod:`models.column_embedding`): each cell is standardised with its
   column's training statistics and embedded after reading a learned summary of that column's
   training cells (``n_col_inducing`` inducing points). Shared weights, any number of features.
2. **Row interaction** (:class:`RowEncoder`): a small transformer over each row's cells plus
   ``n_cls`` learned CLS tokens; a learned embedding of the feature position, added to each cell,
   makes columns distinguishable even when their marginal distributions are identical (positions
   count only real features, so padding anywhere changes nothing). The CLS outputs and the mean of the
   feature tokens are concatenated and projected to the row vector of width ``d_model``.
3. **In-context transformer over rows** (:class:`ICLBlock`): training rows get their label
   embedded; ``n_thinking_rows`` learned rows join them as extra context. In every block the
   context rows (training + thinking) read the context; test rows read the context only
   (:class:`models.attention.ContextAttention`, exact or inducing). An MLP head gives logits.

Because test rows only ever *read* summaries of the training rows, the network splits into
:meth:`ICLTransformer.encode_context` (a pure function of the weights and training rows:
statistics, column summaries and per-block keys/values) and
:meth:`ICLTransformer.predict_from_context`; ``forward`` is exactly these two calls.

Every summary in the context is a (softmax-weighted) sum over training rows: column statistics,
column summaries and, with inducing attention, the per-block pooled keys/values. A context over
data partitions can therefore be computed by one map-reduce round per stage (each block's summary
needs the previous block's summary broadcast back to the rows), never needing all rows at once.

Letters in shape comments: B tables, R rows, F features, D row width, d cell width, H heads,
M summary length (context rows or inducing points), T tokens in a row (CLS + features).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

import torch
from torch import Tensor, nn

from models.attention import AttentionConfig, ContextAttention, MultiHeadAttention, _use_explicit
from models.column_embedding import ColumnEmbedding, ColumnStats
from models.heads import BarDistribution, MLPHead
from models.icl_layers import FeedForward, make_norm

__all__ = ["ICLBlock", "ICLConfig", "ICLContext", "ICLTransformer", "RowEncoder"]


@dataclass(frozen=True)
class ICLConfig:
    """Architecture of :class:`ICLTransformer` (defaults: ~0.9M parameters).

    Parameters
    ----------
    task : {"classification", "regression"}
        Classification embeds class indices; regression embeds the standardised target and adds
        a :class:`models.heads.BarDistribution` with ``n_outputs`` bins.
    n_outputs : int
        Maximum number of classes (classification) or number of bins (regression).
    d_model : int
        Width of the row vectors and of the in-context transformer.
    d_cell : int
        Width of cell embeddings (column embedding and row interaction).
    d_cell_ffn : int
        Hidden width of the cell-level feed-forward layers.
    n_cell_heads : int
        Heads of the cell-level attention (column summaries and row interaction).
    n_col_inducing : int
        Inducing points summarising each column's training cells.
    n_col_blocks : int
        Induced-set blocks of the column embedding.
    n_row_blocks : int
        Transformer blocks over a row's cells.
    n_cls : int
        Learned CLS tokens per row; their outputs are concatenated into the row vector.
    n_icl_blocks : int
        Blocks of the in-context transformer over rows.
    d_ffn : int
        Hidden width of the in-context feed-forward layers and of the output head.
    n_thinking_rows : int
        Learned rows added to every context (extra scratch space for the in-context blocks).
    attention : AttentionConfig
        Attention over rows (kind ``"inducing"`` or ``"full"``, heads, inducing points). A dict
        is accepted and converted, so ``ICLConfig(**config.to_dict())`` round-trips.
    dropout : float
        Dropout in feed-forward layers.
    clip_value : float
        Standardised cell values are clipped to ``±clip_value``.
    position_base : float
        Longest period (in features, over ``2 pi``) of the sinusoidal feature-position identity.
    column_labels : bool
        Target-aware column summaries: the training labels are embedded (width ``d_cell``) into
        what each column's inducing points read (:mod:`models.column_embedding`). Off by default
        only so that checkpoints trained without it keep loading; new runs turn it on.
    n_exact_blocks : int
        With ``attention.kind="inducing"``, the last ``n_exact_blocks`` in-context blocks attend
        exactly instead: per-row keys, where a test row can read its nearest training rows
        (``predict_from_context``'s ``focus_rows``), at their quadratic cost in those blocks only.
        With ``"full"`` every block is exact anyway.
    """

    task: Literal["classification", "regression"] = "classification"
    n_outputs: int = 10
    d_model: int = 128
    d_cell: int = 32
    d_cell_ffn: int = 64
    n_cell_heads: int = 2
    n_col_inducing: int = 16
    n_col_blocks: int = 1
    n_row_blocks: int = 2
    n_cls: int = 4
    n_icl_blocks: int = 6
    d_ffn: int = 256
    n_thinking_rows: int = 4
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    dropout: float = 0.0
    clip_value: float = 6.0
    position_base: float = 1000.0
    column_labels: bool = False
    n_exact_blocks: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.attention, dict):
            object.__setattr__(self, "attention", AttentionConfig(**self.attention))
        if self.task not in ("classification", "regression"):
            raise ValueError(
                f"ICLConfig.task must be 'classification' or 'regression', got task={self.task!r}"
            )
        min_outputs = 3 if self.task == "regression" else 2
        if self.n_outputs < min_outputs:
            raise ValueError(
                f"ICLConfig.n_outputs must be >= {min_outputs} for {self.task}, got n_outputs={self.n_outputs}"
            )
        if self.d_model % self.attention.n_heads:
            raise ValueError(
                f"d_model={self.d_model} must be divisible by attention.n_heads={self.attention.n_heads}"
            )
        if not 0 <= self.n_exact_blocks <= self.n_icl_blocks:
            raise ValueError(
                f"ICLConfig.n_exact_blocks must be in 0..n_icl_blocks={self.n_icl_blocks}, got n_exact_blocks={self.n_exact_blocks}"
            )
        if self.d_cell % self.n_cell_heads:
            raise ValueError(
                f"d_cell={self.d_cell} must be divisible by n_cell_heads={self.n_cell_heads}"
            )
        for name in ("n_col_inducing", "n_col_blocks", "n_row_blocks", "n_cls", "n_icl_blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"ICLConfig.{name} must be >= 1, got {name}={getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (the nested attention config as a dict)."""
        return asdict(self)

    @property
    def focusable_blocks(self) -> int:
        """How many last in-context blocks attend exactly (and so can focus on chosen rows)."""
        return self.n_icl_blocks if self.attention.kind == "full" else self.n_exact_blocks

    def block_attention(self, index: int) -> AttentionConfig:
        """The attention of in-context block ``index``."""
        exact = index >= self.n_icl_blocks - self.focusable_blocks
        return replace(self.attention, kind="full") if exact else self.attention


@dataclass
class ICLContext:
    """Everything needed to predict test rows of a table: a pure function of weights and training rows.

    Attributes
    ----------
    mean, std, low, high : Tensor
        ``(B, F)`` per-column statistics and range of the training rows.
    feature_mask, categorical : Tensor
        ``(B, F)`` bool.
    column_summaries : tuple of Tensor
        One ``(B, F, n_col_inducing, d_cell)`` per column-embedding block.
    keys, values : tuple of Tensor
        One ``(B, H, M, dh)`` each per in-context block: every context row (``M = R_train +
        n_thinking_rows``, exact attention) or the pooled inducing summary (``M = n_inducing``).
    cell_table : Tensor, optional
        ``(B, F, G + 1, d_cell)`` cell embeddings tabulated over each column's range
        (:meth:`models.column_embedding.ColumnEmbedding.tabulate`); when present, test cells are
        interpolated in it instead of embedded one by one.
    """

    mean: Tensor
    std: Tensor
    low: Tensor
    high: Tensor
    feature_mask: Tensor
    categorical: Tensor
    column_summaries: tuple[Tensor, ...]
    keys: tuple[Tensor, ...]
    values: tuple[Tensor, ...]
    cell_table: Tensor | None = None

    def tensors(self) -> dict[str, Tensor]:
        """Flat name -> tensor mapping (e.g. for safetensors or ONNX constants)."""
        out = {
            "mean": self.mean,
            "std": self.std,
            "low": self.low,
            "high": self.high,
            "feature_mask": self.feature_mask,
            "categorical": self.categorical,
        }
        for name in ("column_summaries", "keys", "values"):
            for i, t in enumerate(getattr(self, name)):
                out[f"{name}.{i}"] = t
        if self.cell_table is not None:
            out["cell_table"] = self.cell_table
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor]) -> ICLContext:
        """Inverse of :meth:`tensors`."""

        def seq(name: str) -> tuple[Tensor, ...]:
            n = sum(1 for key in tensors if key.startswith(name + "."))
            return tuple(tensors[f"{name}.{i}"] for i in range(n))

        return cls(
            mean=tensors["mean"],
            std=tensors["std"],
            low=tensors["low"],
            high=tensors["high"],
            feature_mask=tensors["feature_mask"],
            categorical=tensors["categorical"],
            column_summaries=seq("column_summaries"),
            keys=seq("keys"),
            values=seq("values"),
            cell_table=tensors.get("cell_table"),
        )

    def pad_features(self, n_features: int) -> ICLContext:
        """The same context over ``n_features >= F`` columns, the new ones padding (masked out).

        Padding changes no prediction (feature positions count real features only), so contexts of
        tables of different widths can be stacked into one batch.
        """
        extra = n_features - self.feature_mask.shape[1]
        if extra < 0:
            raise ValueError(f"cannot pad a context of {self.feature_mask.shape[1]} features to {n_features}")

        def pad(t: Tensor, value: float = 0.0) -> Tensor:  # after the real columns, along dim 1
            return torch.cat([t, t.new_full((t.shape[0], extra, *t.shape[2:]), value)], dim=1)

        return ICLContext(
            mean=pad(self.mean),
            std=pad(self.std, 1.0),  # as for a constant column: its cells standardise to 0, not NaN
            low=pad(self.low),
            high=pad(self.high),
            feature_mask=pad(self.feature_mask),
            categorical=pad(self.categorical),
            column_summaries=tuple(pad(t) for t in self.column_summaries),
            keys=self.keys,
            values=self.values,
            cell_table=None if self.cell_table is None else pad(self.cell_table),
        )

    def map(self, fn: Any) -> ICLContext:
        """Apply ``fn`` to every tensor (e.g. ``lambda t: t.detach().to(device)``)."""
        kwargs = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                kwargs[f.name] = tuple(fn(t) for t in value)
            else:
                kwargs[f.name] = None if value is None else fn(value)
        return ICLContext(**kwargs)


class RowBlock(nn.Module):
    """Pre-norm attention + feed-forward over the tokens of each row.

    ``queries`` selects the leading tokens that are updated (all by default); every token is read.
    """

    def __init__(self, *, d: int, n_heads: int, d_ffn: int, dropout: float) -> None:
        super().__init__()
        self.norm_attn = make_norm(d)
        self.attn = MultiHeadAttention(d_model=d, n_heads=n_heads)
        self.norm_ffn = make_norm(d)
        self.ffn = FeedForward(d, d_ffn, dropout=dropout)

    def forward(self, t: Tensor, key_mask: Tensor, *, queries: int | None = None) -> Tensor:
        n = self.norm_attn(t)
        q = t if queries is None else t[..., :queries, :]
        nq = n if queries is None else n[..., :queries, :]
        q = q + self.attn(nq, n, key_mask=key_mask)
        return q + self.ffn(self.norm_ffn(q))


def feature_position_features(positions: Tensor, n_frequencies: int, base: float) -> Tensor:
    """Sinusoids ``(..., 2 n_frequencies)`` of feature positions ``(...)``.

    Periods run geometrically from ``2 pi`` to ``2 pi base``, so neighbouring positions differ in
    the fast components and distant ones in the slow components.
    """
    exponent = (
        torch.arange(n_frequencies, device=positions.device, dtype=torch.float32) / n_frequencies
    )
    angles = positions.to(torch.float32).unsqueeze(-1) * base ** (-exponent)  # (..., n_freq)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class RowEncoder(nn.Module):
    """Compresses each row's cell embeddings into one row vector.

    Feature identity: a learned projection of sinusoids of the feature position is added to every
    cell of that feature, so columns with identical marginal distributions stay distinguishable.
    Positions count real features only (``cumsum(feature_mask)``), so padding anywhere changes
    nothing. (Rotary embeddings inside the attention were measured slower on CPU: they add
    several element-wise passes over every query and key of every row, per block.)

    The blocks before the last update every token; the last block updates only the CLS tokens,
    whose outputs (and the mean of the real feature tokens entering it) form the row vector.

    Shape: cells ``(B, F, R, d)``, ``feature_mask (B, F)`` -> rows ``(B, R, D)``.
    """

    def __init__(
        self,
        *,
        d: int,
        d_out: int,
        n_cls: int,
        n_blocks: int,
        n_heads: int,
        d_ffn: int,
        position_base: float,
        dropout: float,
        n_frequencies: int = 8,
    ) -> None:
        super().__init__()
        self.n_cls = n_cls
        self.n_frequencies = n_frequencies
        self.position_base = position_base
        self.identity = nn.Linear(2 * n_frequencies, d)
        self.cls = nn.Parameter(torch.randn(n_cls, d))
        self.blocks = nn.ModuleList(
            RowBlock(d=d, n_heads=n_heads, d_ffn=d_ffn, dropout=dropout) for _ in range(n_blocks)
        )
        self.norm_cls = make_norm(d)
        self.norm_pool = make_norm(d)
        self.proj = nn.Linear((n_cls + 1) * d, d_out)
        self.norm_row = make_norm(d_out)

    def forward(self, cells: Tensor, feature_mask: Tensor) -> Tensor:
        b, _, r, d = cells.shape
        # Positions 1, 2, ... count real features only: padding anywhere shifts nothing.
        positions = torch.cumsum(feature_mask.to(torch.float32), dim=1)  # (B, F)
        identity = self.identity(
            feature_position_features(positions, self.n_frequencies, self.position_base)
        )
        tokens = cells.transpose(1, 2) + identity[:, None]  # (B, R, F, d)
        t = torch.cat([self.cls.expand(b, r, self.n_cls, d), tokens], dim=2)  # (B, R, T, d)
        cls_real = torch.ones_like(feature_mask[:, :1]).expand(b, self.n_cls)
        real = torch.cat([cls_real, feature_mask], dim=1)  # (B, T)
        # Broadcast over rows, heads and queries.
        key_mask = real[:, None, None, None, :]  # (B, 1, 1, 1, T)
        for block in self.blocks[:-1]:
            t = block(t, key_mask)
        weights = feature_mask.to(t.dtype)[:, None, :, None]  # (B, 1, F, 1)
        pooled = (t[:, :, self.n_cls :] * weights).sum(2)  # (B, R, d)
        pooled = pooled / weights.sum(2).clamp_min(1.0)
        cls = self.norm_cls(self.blocks[-1](t, key_mask, queries=self.n_cls))  # (B, R, n_cls, d)
        row = torch.cat([cls.flatten(2), self.norm_pool(pooled)], dim=-1)  # (B, R, (n_cls+1) d)
        return self.norm_row(self.proj(row))  # (B, R, D)


class ICLBlock(nn.Module):
    """Pre-norm in-context block: rows read a summary of the context rows, then a feed-forward."""

    def __init__(self, *, d: int, d_ffn: int, attention: AttentionConfig, dropout: float) -> None:
        super().__init__()
        self.norm_attn = make_norm(d)
        self.attn = ContextAttention(d_model=d, config=attention)
        self.norm_ffn = make_norm(d)
        self.ffn = FeedForward(d, d_ffn, dropout=dropout)

    def summarize(self, h_ctx: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values ``(B, H, M, dh)`` standing for the context rows ``(B, N_ctx, D)``."""
        return self.attn.summarize(self.norm_attn(h_ctx))

    def read(self, h: Tensor, summary: tuple[Tensor, Tensor], key_mask: Tensor | None = None) -> Tensor:
        """Update rows ``(B, N, D)`` from a context summary; ``key_mask`` ``(B, 1, N, M)`` bool
        marks the summary's keys each row may read (default: all)."""
        h = h + self.attn.read(self.norm_attn(h), summary, key_mask=key_mask)
        return h + self.ffn(self.norm_ffn(h))


class ICLTransformer(nn.Module):
    """In-context learner for tables: logits for test rows given labelled training rows.

    Parameters
    ----------
    config : ICLConfig
        Architecture.

    Shape
    -----
    ``forward``: ``x (B, R, F)``, ``y_train (B, R_train)`` -> logits ``(B, R - R_train, n_outputs)``.
    """

    def __init__(self, config: ICLConfig) -> None:
        super().__init__()
        self.config = c = config
        self.column_embedding = ColumnEmbedding(
            d=c.d_cell,
            n_inducing=c.n_col_inducing,
            n_blocks=c.n_col_blocks,
            n_heads=c.n_cell_heads,
            d_ffn=c.d_cell_ffn,
            clip_value=c.clip_value,
            dropout=c.dropout,
        )
        self.row_encoder = RowEncoder(
            d=c.d_cell,
            d_out=c.d_model,
            n_cls=c.n_cls,
            n_blocks=c.n_row_blocks,
            n_heads=c.n_cell_heads,
            d_ffn=c.d_cell_ffn,
            position_base=c.position_base,
            dropout=c.dropout,
        )
        if c.task == "classification":
            self.label_embedding: nn.Module = nn.Embedding(c.n_outputs, c.d_model)
            self.bar_distribution = None
        else:
            self.label_embedding = nn.Linear(1, c.d_model)
            self.bar_distribution = BarDistribution(c.n_outputs)
        self.column_label_embedding: nn.Module | None = None
        if c.column_labels:
            self.column_label_embedding = (
                nn.Embedding(c.n_outputs, c.d_cell)
                if c.task == "classification"
                else nn.Linear(1, c.d_cell)
            )
            # Zero at start: a network warm-started from label-blind weights begins unchanged.
            for p in self.column_label_embedding.parameters():
                nn.init.zeros_(p)
        self.thinking_rows = nn.Parameter(torch.randn(c.n_thinking_rows, c.d_model))
        self.blocks = nn.ModuleList(
            ICLBlock(d=c.d_model, d_ffn=c.d_ffn, attention=c.block_attention(i), dropout=c.dropout)
            for i in range(c.n_icl_blocks)
        )
        self.norm_out = make_norm(c.d_model)
        self.head = MLPHead(d=c.d_model, d_hidden=c.d_ffn, n_outputs=c.n_outputs, dropout=c.dropout)

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def _masks(
        x: Tensor, feature_mask: Tensor | None, categorical: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        b, _, f = x.shape
        if feature_mask is None:
            feature_mask = torch.ones(b, f, dtype=torch.bool, device=x.device)
        if categorical is None:
            categorical = torch.zeros(b, f, dtype=torch.bool, device=x.device)
        if feature_mask.shape != (b, f) or categorical.shape != (b, f):
            raise ValueError(
                f"feature_mask and categorical must have shape (B, F)={(b, f)}, got "
                f"{tuple(feature_mask.shape)} and {tuple(categorical.shape)}"
            )
        return feature_mask.to(torch.bool), categorical.to(torch.bool) & feature_mask.to(torch.bool)

    def _embed_labels(self, y_train: Tensor, embedding: nn.Module | None = None) -> Tensor:
        embedding = self.label_embedding if embedding is None else embedding
        if self.config.task == "regression":
            y = y_train.to(torch.float32).clamp(-self.config.clip_value, self.config.clip_value)
            return embedding(y.unsqueeze(-1))  # (B, R_train, width)
        if not _use_explicit():
            bad = (
                ~torch.isfinite(y_train)
                | (y_train < 0)
                | (y_train >= self.config.n_outputs)
                | (y_train != y_train.round())
            )
            if bool(bad.any()):
                raise ValueError(
                    f"y_train must hold class indices 0..{self.config.n_outputs - 1} for classification, "
                    f"got values such as {y_train[bad][:3].tolist()}"
                )
        return embedding(y_train.long())  # (B, R_train, width)

    def _rows(
        self,
        x: Tensor,
        stats: ColumnStats,
        categorical: Tensor,
        summaries: tuple[Tensor, ...],
        feature_mask: Tensor,
        cell_table: Tensor | None = None,
    ) -> Tensor:
        """Row vectors ``(B, R, D)`` of rows ``(B, R, F)`` against fitted column summaries (or
        their tabulated cells)."""
        if cell_table is None:
            cells = self.column_embedding.embed(x, stats, categorical, summaries)  # (B, F, R, d)
        else:
            cells = self.column_embedding.embed_from_table(x, stats, categorical, cell_table)
        return self.row_encoder(cells, feature_mask)

    # ---------------------------------------------------------------- inference
    def encode_context(
        self,
        x_train: Tensor,
        y_train: Tensor,
        *,
        feature_mask: Tensor | None = None,
        categorical: Tensor | None = None,
        row_chunk_size: int | None = 8192,
        cell_grid: int | None = None,
    ) -> ICLContext:
        """Summarise the training rows: a pure function of the weights and ``(x_train, y_train)``.

        Parameters
        ----------
        x_train : Tensor
            ``(B, R_train, F)`` float, NaN where missing; padded features hold 0.
        y_train : Tensor
            ``(B, R_train)``: class indices as floats, or the standardised target.
        feature_mask, categorical : Tensor, optional
            ``(B, F)`` bool: real features (default all) and categorical ones (default none).
        row_chunk_size : int, optional
            Without gradients, the row-wise stages (cell embedding, row interaction) run on this
            many training rows at a time, which bounds their memory; the result is the same.
            ``None``: all rows at once. Ignored when gradients are enabled.
        cell_grid : int, optional
            Tabulate each column's cell embedding at this many values over its training range
            and interpolate every cell, training or test, in that table (stored in the context):
            the cell stage then costs ``F * (cell_grid + 1)`` embeddings however many rows are
            embedded, at a small approximation error. ``None``: every cell exactly.

        Returns
        -------
        ICLContext
        """
        if y_train.shape != x_train.shape[:2]:
            raise ValueError(
                f"y_train must have shape (B, R_train)={tuple(x_train.shape[:2])}, got {tuple(y_train.shape)}"
            )
        feature_mask, categorical = self._masks(x_train, feature_mask, categorical)
        x_train = torch.where(feature_mask[:, None, :], x_train, 0.0)
        n_rows = x_train.shape[1]
        column_labels = None
        if self.column_label_embedding is not None:
            column_labels = self._embed_labels(y_train, self.column_label_embedding)  # (B, R_train, d)
        whole = row_chunk_size is None or torch.is_grad_enabled() or n_rows <= row_chunk_size
        cell_table = None
        if cell_grid is None and whole:
            cells, stats, summaries = self.column_embedding.embed_train(
                x_train, categorical, column_labels
            )
            rows = self.row_encoder(cells, feature_mask)  # (B, R_train, D)
        else:
            stats, summaries = self.column_embedding.summarize(
                x_train, categorical, column_labels
            )
            if cell_grid is not None:
                cell_table = self.column_embedding.tabulate(stats, categorical, summaries, cell_grid)
            chunk = max(n_rows, 1) if whole else row_chunk_size
            rows = torch.cat(
                [
                    self._rows(
                        x_train[:, i : i + chunk],
                        stats,
                        categorical,
                        summaries,
                        feature_mask,
                        cell_table,
                    )
                    for i in range(0, max(n_rows, 1), chunk)
                ],
                dim=1,
            )
        h = rows + self._embed_labels(y_train)  # (B, R_train, D)
        h = torch.cat([self.thinking_rows.expand(h.shape[0], -1, -1), h], dim=1)  # (B, N_ctx, D)
        keys, values = [], []
        for i, block in enumerate(self.blocks):
            summary = block.summarize(h)
            keys.append(summary[0])
            values.append(summary[1])
            if i + 1 < len(self.blocks):  # the last block's context update would never be read
                h = block.read(h, summary)
        return ICLContext(
            mean=stats.mean,
            std=stats.std,
            low=stats.low,
            high=stats.high,
            feature_mask=feature_mask,
            categorical=categorical,
            column_summaries=summaries,
            keys=tuple(keys),
            values=tuple(values),
            cell_table=cell_table,
        )

    def predict_from_context(
        self,
        context: ICLContext,
        x_test: Tensor,
        *,
        focus_rows: Tensor | None = None,
        focus_blocks: int = 2,
    ) -> Tensor:
        """Logits ``(B, R_test, n_outputs)`` for test rows ``(B, R_test, F)``; rows are independent.

        ``focus_rows`` ``(B, R_test, k)``: indices of training rows (in ``encode_context``'s order).
        In the last ``focus_blocks`` in-context blocks each test row then reads only those rows
        and the thinking rows, instead of every context row (exact attention only): a focused
        read of the neighbourhood, whose training rows were still encoded against all of them.
        """
        x_test = torch.where(context.feature_mask[:, None, :], x_test, 0.0)
        h = self._rows(
            x_test,
            ColumnStats(context.mean, context.std, context.low, context.high),
            context.categorical,
            context.column_summaries,
            context.feature_mask,
            context.cell_table,
        )  # (B, R_test, D)
        key_mask = None
        if focus_rows is not None:
            if not 0 <= focus_blocks <= len(self.blocks):
                raise ValueError(f"focus_blocks must be in 0..{len(self.blocks)}, got focus_blocks={focus_blocks}")
            if focus_blocks > self.config.focusable_blocks:
                raise ValueError(
                    f"focus_rows needs exact attention in the last focus_blocks={focus_blocks} blocks, but "
                    f"{self.config.focusable_blocks} attend exactly: an inducing summary has no per-row keys"
                )
            t = self.config.n_thinking_rows
            key_mask = torch.zeros(*h.shape[:2], context.keys[-1].shape[-2], dtype=torch.bool, device=h.device)
            key_mask[..., :t] = True  # the thinking rows stay readable
            key_mask.scatter_(-1, focus_rows.long() + t, True)
            key_mask = key_mask[:, None]  # (B, 1, R_test, M): the same rows for every head
        first_focused = len(self.blocks) - focus_blocks
        for i, (block, k, v) in enumerate(zip(self.blocks, context.keys, context.values, strict=True)):
            h = block.read(h, (k, v), key_mask if i >= first_focused else None)
        return self.head(self.norm_out(h))

    def forward(
        self,
        x: Tensor,
        y_train: Tensor,
        *,
        feature_mask: Tensor | None = None,
        categorical: Tensor | None = None,
    ) -> Tensor:
        """Logits for the test rows of ``x (B, R, F)`` whose first ``y_train.shape[1]`` rows are training rows.

        Returns
        -------
        Tensor
            ``(B, R - R_train, n_outputs)``. Classes ``>= C`` are not masked here.
        """
        n_train = y_train.shape[1]
        if not 0 < n_train < x.shape[1]:
            raise ValueError(
                f"need 0 < R_train < R, got R_train={n_train} (y_train.shape[1]) and R={x.shape[1]}"
            )
        context = self.encode_context(
            x[:, :n_train], y_train, feature_mask=feature_mask, categorical=categorical
        )
        return self.predict_from_context(context, x[:, n_train:])

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
