"""Distribution-aware column embedding: every cell is embedded knowing its column's training values.

Steps, per column and with weights shared across columns (any number of features):

1. :func:`column_statistics`: robust location and scale from the *training* cells only (NaN
   ignored; one winsorising pass at ``mean ± 4 std`` so a few outliers do not set the scale), and
   the range of the training values.
2. :func:`cell_inputs`: three channels per cell, ``(z, missing, categorical)``: ``z`` is the value
   clamped to the column's training range, standardised with those statistics and clipped, 0 when
   missing (NaN; ``±inf`` counts as missing too); ``missing`` is a 0/1 flag;
   ``categorical`` flags columns of integer codes, which are standardised like ordinal values (the
   estimators shuffle code order per ensemble member and the prior produces both ordered and
   shuffled codes, so the network learns not to trust the order).
3. A small MLP lifts the channels to width ``d``; then ``n_blocks`` induced-set blocks: ``m``
   learned inducing points read the column's training cells (set-transformer style), and every
   cell, training or test, reads that summary back. Test cells never enter a summary.

Optionally the summaries are *target-aware*: an embedding of each training row's label is added to
that row's cells where the inducing points read them (never to the cells themselves). A summary
then describes the joint distribution of the column and the target, so every cell can carry how
its value relates to the target and whether its column matters: the step that lets the row
stages ignore irrelevant features instead of averaging them (a label-blind embedding had to learn
feature selection in the in-context stage alone, and after ~50k tables had not).

The summaries and statistics are what :class:`models.icl.ICLContext` stores for a fitted context.

At inference a cell's embedding depends only on its column (statistics, summaries, categorical
flag) and its own value, so :meth:`ColumnEmbedding.tabulate` can evaluate it once per column on a
grid of values over the column's training range (plus the missing cell), and
:meth:`ColumnEmbedding.embed_from_table` then embeds any number of cells by linear interpolation:
the cell stage no longer grows with the rows.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from models.attention import MultiHeadAttention
from models.icl_layers import FeedForward, make_norm

__all__ = ["ColumnEmbedding", "ColumnStats", "cell_inputs", "column_statistics"]


class ColumnStats(NamedTuple):
    """Per-column statistics of the training rows, each ``(B, F)``."""

    mean: Tensor
    std: Tensor
    low: Tensor  # smallest training value (0 for a column with none)
    high: Tensor  # largest training value


def _masked_mean_std(values: Tensor, observed: Tensor) -> tuple[Tensor, Tensor]:
    count = observed.sum(dim=1).clamp_min(1).to(values.dtype)  # (B, F)
    mean = torch.where(observed, values, 0.0).sum(dim=1) / count
    var = torch.where(observed, (values - mean.unsqueeze(1)) ** 2, 0.0).sum(dim=1) / count
    return mean, var.sqrt()


def column_statistics(x_train: Tensor, *, clip_sigma: float = 4.0) -> ColumnStats:
    """Robust per-column mean and standard deviation, and range, of the training rows.

    Parameters
    ----------
    x_train : Tensor
        ``(B, R_train, F)``, NaN where missing (infinite values are ignored like NaN).
    clip_sigma : float
        Values beyond ``mean ± clip_sigma * std`` are clipped before the final estimate.

    Returns
    -------
    ColumnStats
        ``mean``, ``std``, ``low``, ``high``, each ``(B, F)``. Columns that are constant (or
        entirely missing) get ``std = 1`` so that their cells standardise to 0 instead of
        amplifying rounding noise.
    """
    observed = torch.isfinite(x_train)
    values = torch.where(observed, x_train, 0.0)
    mean, std = _masked_mean_std(values, observed)
    lo = (mean - clip_sigma * std).unsqueeze(1)
    hi = (mean + clip_sigma * std).unsqueeze(1)
    mean, std = _masked_mean_std(torch.minimum(torch.maximum(values, lo), hi), observed)
    constant = std <= 1e-6 * (1.0 + mean.abs())
    low = torch.where(observed, x_train, torch.inf).amin(dim=1)
    high = torch.where(observed, x_train, -torch.inf).amax(dim=1)
    empty = ~observed.any(dim=1)
    return ColumnStats(
        mean,
        torch.where(constant, torch.ones_like(std), std),
        torch.where(empty, 0.0, low),
        torch.where(empty, 0.0, high),
    )


def cell_inputs(x: Tensor, stats: ColumnStats, categorical: Tensor, *, clip_value: float) -> Tensor:
    """Per-cell input channels ``(z, missing, categorical)``.

    Values beyond the training range are clamped to it, as a tree would see them: what lies
    outside says nothing the training rows can confirm, and a network extrapolating a smooth
    function there predicted, on real data, prices that the training rows contradicted by
    several target standard deviations.

    Parameters
    ----------
    x : Tensor
        ``(B, R, F)`` raw cells, NaN where missing.
    stats : ColumnStats
        ``(B, F)`` statistics from :func:`column_statistics`.
    categorical : Tensor
        ``(B, F)`` bool.
    clip_value : float
        Standardised values are clipped to ``[-clip_value, clip_value]``.

    Returns
    -------
    Tensor
        ``(B, F, R, 3)`` (columns first, ready for per-column set attention).
    """
    missing = ~torch.isfinite(x)
    x = torch.minimum(torch.maximum(x, stats.low.unsqueeze(1)), stats.high.unsqueeze(1))
    z = (x - stats.mean.unsqueeze(1)) / stats.std.unsqueeze(1)
    z = torch.where(missing, 0.0, z).clamp(-clip_value, clip_value)  # (B, R, F)
    cat = categorical.unsqueeze(1).expand_as(z).to(z.dtype)
    channels = torch.stack([z, missing.to(z.dtype), cat], dim=-1)  # (B, R, F, 3)
    return channels.transpose(1, 2)  # (B, F, R, 3)


class InducedSetBlock(nn.Module):
    """``m`` inducing points read a set; every element then reads them back (pre-norm, residual).

    Shape: ``summarize``: ``(N, L_ctx, d)`` -> ``(N, m, d)``; ``read``: ``(N, L, d)`` -> ``(N, L, d)``.
    """

    def __init__(
        self, *, d: int, n_inducing: int, n_heads: int, d_ffn: int, dropout: float
    ) -> None:
        super().__init__()
        self.inducing = nn.Parameter(torch.randn(n_inducing, d))
        self.norm_ctx = make_norm(d)
        self.pool = MultiHeadAttention(d_model=d, n_heads=n_heads)
        self.norm_pool = make_norm(d)
        self.ffn_pool = FeedForward(d, d_ffn, dropout=dropout)
        self.norm_summary = make_norm(d)
        self.norm_read = make_norm(d)
        self.read_attn = MultiHeadAttention(d_model=d, n_heads=n_heads)
        self.norm_ffn = make_norm(d)
        self.ffn = FeedForward(d, d_ffn, dropout=dropout)

    def summarize(self, e_ctx: Tensor, labels: Tensor | None = None) -> Tensor:
        """Summary of the context elements; ``labels`` (broadcast to ``e_ctx``) are added where read."""
        read = e_ctx if labels is None else e_ctx + labels
        s = self.inducing.expand(e_ctx.shape[0], *self.inducing.shape)  # (N, m, d)
        s = s + self.pool(s, self.norm_ctx(read))
        s = s + self.ffn_pool(self.norm_pool(s))
        return self.norm_summary(s)

    def read(self, e: Tensor, summary: Tensor) -> Tensor:
        e = e + self.read_attn(self.norm_read(e), summary)
        return e + self.ffn(self.norm_ffn(e))


class ColumnEmbedding(nn.Module):
    """Embeds each cell from its value and a learned summary of its column's training values.

    Parameters
    ----------
    d : int
        Cell embedding width.
    n_inducing : int
        Inducing points per column summary.
    n_blocks : int
        Induced-set blocks (each has its own summary).
    n_heads : int
        Attention heads in the blocks.
    d_ffn : int
        Hidden width of the feed-forward layers.
    clip_value : float
        Clip of standardised values.
    dropout : float
        Dropout in the feed-forward layers.

    Shape
    -----
    ``embed_train``: ``x_train (B, R_train, F)`` (and optional label embeddings ``(B, R_train, d)``)
    -> cells ``(B, F, R_train, d)``, statistics and summaries. ``embed``: ``x (B, R, F)`` with statistics and summaries -> ``(B, F, R, d)``.
    """

    def __init__(
        self,
        *,
        d: int,
        n_inducing: int,
        n_blocks: int,
        n_heads: int,
        d_ffn: int,
        clip_value: float,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.clip_value = clip_value
        self.lift = nn.Sequential(nn.Linear(3, d), nn.GELU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList(
            InducedSetBlock(
                d=d, n_inducing=n_inducing, n_heads=n_heads, d_ffn=d_ffn, dropout=dropout
            )
            for _ in range(n_blocks)
        )

    def _lift(self, x: Tensor, stats: ColumnStats, categorical: Tensor) -> Tensor:
        return self.lift(cell_inputs(x, stats, categorical, clip_value=self.clip_value))

    @staticmethod
    def _per_column(labels: Tensor | None, n_features: int) -> Tensor | None:
        if labels is None:
            return None
        return labels.unsqueeze(1).expand(-1, n_features, -1, -1).flatten(0, 1)  # (B*F, R_train, d)

    def embed_train(
        self, x_train: Tensor, categorical: Tensor, labels: Tensor | None = None
    ) -> tuple[Tensor, ColumnStats, tuple[Tensor, ...]]:
        """Embed the training cells and return ``(cells, stats, summaries)``.

        ``summaries`` holds one ``(B, F, m, d)`` tensor per block. ``labels`` ``(B, R_train, d)``,
        when given, enter the summaries only (target-aware summaries).
        """
        stats = column_statistics(x_train)
        e = self._lift(x_train, stats, categorical)  # (B, F, R_train, d)
        b, f = e.shape[:2]
        e = e.flatten(0, 1)  # (B*F, R_train, d)
        per_column = self._per_column(labels, f)
        summaries = []
        for block in self.blocks:
            s = block.summarize(e, per_column)  # (B*F, m, d)
            e = block.read(e, s)
            summaries.append(s.unflatten(0, (b, f)))
        return e.unflatten(0, (b, f)), stats, tuple(summaries)

    def summarize(
        self, x_train: Tensor, categorical: Tensor, labels: Tensor | None = None
    ) -> tuple[ColumnStats, tuple[Tensor, ...]]:
        """Statistics and summaries only: ``(stats, summaries)`` as from :meth:`embed_train`.

        Skips the read-back of the last block, so the training cells can then be embedded in
        row chunks with :meth:`embed` (same result, bounded memory).
        """
        stats = column_statistics(x_train)
        e = self._lift(x_train, stats, categorical)  # (B, F, R_train, d)
        b, f = e.shape[:2]
        e = e.flatten(0, 1)  # (B*F, R_train, d)
        per_column = self._per_column(labels, f)
        summaries = []
        for i, block in enumerate(self.blocks):
            s = block.summarize(e, per_column)  # (B*F, m, d)
            if i + 1 < len(self.blocks):
                e = block.read(e, s)
            summaries.append(s.unflatten(0, (b, f)))
        return stats, tuple(summaries)

    def _grid_range(self, stats: ColumnStats) -> tuple[Tensor, Tensor]:
        """``(B, F)`` smallest and largest standardised value a cell can take (see :func:`cell_inputs`)."""
        low = ((stats.low - stats.mean) / stats.std).clamp(-self.clip_value, self.clip_value)
        high = ((stats.high - stats.mean) / stats.std).clamp(-self.clip_value, self.clip_value)
        return low, high

    def tabulate(
        self, stats: ColumnStats, categorical: Tensor, summaries: tuple[Tensor, ...], n_points: int
    ) -> Tensor:
        """Embeddings ``(B, F, n_points + 1, d)`` of ``n_points`` evenly spaced values over each
        column's training range, then of the column's missing cell (for :meth:`embed_from_table`)."""
        if n_points < 2:
            raise ValueError(f"n_points must be >= 2, got n_points={n_points}")
        low, high = self._grid_range(stats)
        b, f = low.shape
        steps = torch.linspace(0.0, 1.0, n_points, dtype=low.dtype, device=low.device)
        z = torch.cat([low[..., None] + (high - low)[..., None] * steps, low.new_zeros(b, f, 1)], dim=-1)
        missing = torch.zeros_like(z)
        missing[..., -1] = 1.0
        flag = categorical.to(z.dtype)[..., None].expand_as(z)
        e = self.lift(torch.stack([z, missing, flag], dim=-1)).flatten(0, 1)  # (B*F, n_points + 1, d)
        for block, s in zip(self.blocks, summaries, strict=True):
            e = block.read(e, s.flatten(0, 1))
        return e.unflatten(0, (b, f))

    def embed_from_table(self, x: Tensor, stats: ColumnStats, categorical: Tensor, table: Tensor) -> Tensor:
        """:meth:`embed` of cells ``(B, R, F)`` interpolated in a :meth:`tabulate` table -> ``(B, F, R, d)``."""
        channels = cell_inputs(x, stats, categorical, clip_value=self.clip_value)  # (B, F, R, 3)
        z, missing = channels[..., 0], channels[..., 1] > 0
        b, f, r = z.shape
        n_points, d = table.shape[2] - 1, table.shape[3]
        low, high = self._grid_range(stats)
        span = (high - low).clamp_min(1e-12)[..., None]
        position = ((z - low[..., None]) / span * (n_points - 1)).clamp(0, n_points - 1)
        left = position.floor().clamp(max=n_points - 2)
        weight = torch.where(missing, 0.0, position - left)[..., None].to(table.dtype)
        # Row of the flattened table: the column's block, then the grid point (or the missing cell).
        first = (torch.arange(b * f, device=x.device) * (n_points + 1)).view(b, f, 1)
        left = first + torch.where(missing, n_points, left.long())
        right = torch.where(missing, left, left + 1)
        rows = table.reshape(-1, d)
        e_left = rows.index_select(0, left.reshape(-1)).view(b, f, r, d)
        e_right = rows.index_select(0, right.reshape(-1)).view(b, f, r, d)
        return torch.lerp(e_left, e_right, weight)

    def embed(
        self,
        x: Tensor,
        stats: ColumnStats,
        categorical: Tensor,
        summaries: tuple[Tensor, ...],
    ) -> Tensor:
        """Embed any cells ``(B, R, F)`` against stored statistics and summaries -> ``(B, F, R, d)``."""
        e = self._lift(x, stats, categorical)  # (B, F, R, d)
        b, f = e.shape[:2]
        e = e.flatten(0, 1)  # (B*F, R, d)
        for block, s in zip(self.blocks, summaries, strict=True):
            e = block.read(e, s.flatten(0, 1))
        return e.unflatten(0, (b, f))
