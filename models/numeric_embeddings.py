"""Feature encoders shared by the per-dataset models (TabM, TabR).

* :func:`compute_quantile_bins` — bin edges at the quantiles of each numeric column.
* :class:`PiecewiseLinearEncoding` — the parameter-free piecewise-linear encoding (PLE) of
  numeric features: bin ``j`` of a value holds how much of that bin lies below the value.
* :class:`PiecewiseLinearEmbeddings` — a per-feature linear embedding plus a learnt linear map
  of the PLE (zero at initialisation, so the embedding starts linear and learns its kinks).
* :class:`OneHotEncoding` — the concatenated one-hot codes of integer categorical features.

Letters in shape comments: B rows in a batch, F features, M bins, D embedding width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


def compute_quantile_bins(x: Tensor, *, n_bins: int = 48) -> list[Tensor]:
    """Bin edges at the quantiles of each column of ``x``.

    Parameters
    ----------
    x : Tensor of shape (N, F)
        Training values of the numeric features; NaN entries are ignored.
    n_bins : int, default=48
        Number of bins asked for; repeated quantiles (ties) are merged, so a column can get fewer.

    Returns
    -------
    list of Tensor
        One increasing 1-D tensor of edges per column, of length between 2 and ``n_bins + 1``.
        A column with a single distinct value (or only NaN) gets the edges ``[v, v + 1]``.
    """
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, F), however: x.shape={tuple(x.shape)}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, however: n_bins={n_bins}")
    x = x.double()
    levels = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)
    bins = []
    for j in range(x.shape[1]):
        column = x[:, j]
        column = column[~torch.isnan(column)]
        if column.numel() == 0:
            bins.append(torch.tensor([0.0, 1.0]))
            continue
        # Ties are merged after the cast to float32: two close float64 quantiles can round to the
        # same float32 value, which would make an empty bin.
        edges = torch.unique(torch.quantile(column, levels).float())  # sorted, ties merged
        if edges.numel() < 2:
            edges = torch.cat([edges, edges + 1.0])
        bins.append(edges)
    return bins


class PiecewiseLinearEncoding(nn.Module):
    """Piecewise-linear encoding of numeric features (no trainable parameters).

    For a feature with edges ``e_0 < ... < e_n``, component ``j`` of the encoding of ``x`` is
    ``(x - e_j) / (e_{j+1} - e_j)`` clipped to [0, 1], except that the first component is not
    clipped below and the last is not clipped above (so values outside the training range still
    move the encoding). A feature with one bin is the plain min-max scaled value. Features with
    fewer bins than the widest one are padded with zero components at the end.

    Parameters
    ----------
    bins : sequence of Tensor
        Edges per feature, as returned by :func:`compute_quantile_bins`.

    Shape
    -----
    - Input: ``(B, F)``
    - Output: ``(B, F, M)`` with ``M`` the largest number of bins over features.
    """

    left: Tensor
    inv_width: Tensor
    lower: Tensor
    upper: Tensor
    valid: Tensor

    def __init__(self, bins: Sequence[Tensor]) -> None:
        super().__init__()
        if len(bins) == 0:
            raise ValueError("bins must hold the edges of at least one feature, however: bins=[]")
        counts = [len(edges) - 1 for edges in bins]
        for i, (edges, count) in enumerate(zip(bins, counts, strict=True)):
            if count < 1 or not bool((edges.diff() > 0).all()):
                raise ValueError(
                    f"bins[{i}] must hold at least two strictly increasing edges, however: "
                    f"bins[{i}]={edges.tolist()}"
                )
        n_features, max_bins = len(bins), max(counts)
        left = torch.zeros(n_features, max_bins)
        inv_width = torch.zeros(n_features, max_bins)
        lower = torch.zeros(n_features, max_bins)
        upper = torch.ones(n_features, max_bins)
        valid = torch.zeros(n_features, max_bins, dtype=torch.bool)
        for i, (edges, count) in enumerate(zip(bins, counts, strict=True)):
            edges = edges.float()
            left[i, :count] = edges[:-1]
            inv_width[i, :count] = 1.0 / edges.diff()
            valid[i, :count] = True
            lower[i, 0] = -math.inf  # below the first edge: extrapolate linearly
            upper[i, count - 1] = math.inf  # above the last edge: same
        self.register_buffer("left", left)
        self.register_buffer("inv_width", inv_width)
        self.register_buffer("lower", lower)
        self.register_buffer("upper", upper)
        self.register_buffer("valid", valid)

    @property
    def n_features(self) -> int:
        return self.left.shape[0]

    @property
    def max_n_bins(self) -> int:
        return self.left.shape[1]

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(
                f"x must have shape (B, {self.n_features}), however: x.shape={tuple(x.shape)}"
            )
        ratio = (x.unsqueeze(-1) - self.left) * self.inv_width  # (B, F, M)
        ratio = torch.maximum(torch.minimum(ratio, self.upper), self.lower)
        return ratio * self.valid  # padding components stay exactly zero


class PiecewiseLinearEmbeddings(nn.Module):
    """Per-feature embeddings ``x * w + b + PLE(x) @ W`` with ``W`` starting at zero.

    At initialisation the module is a per-feature linear embedding; training adds the
    piecewise-linear part, as in the variant used by the TabM paper.

    Parameters
    ----------
    bins : sequence of Tensor
        Edges per feature (see :func:`compute_quantile_bins`).
    d_embedding : int
        Width ``D`` of each feature's embedding.

    Shape
    -----
    - Input: ``(B, F)``
    - Output: ``(B, F, D)``
    """

    def __init__(self, bins: Sequence[Tensor], *, d_embedding: int) -> None:
        super().__init__()
        if d_embedding < 1:
            raise ValueError(f"d_embedding must be a positive integer, however: {d_embedding=}")
        self.encoding = PiecewiseLinearEncoding(bins)
        n_features, max_bins = self.encoding.n_features, self.encoding.max_n_bins
        bound = d_embedding**-0.5
        self.linear_weight = nn.Parameter(
            torch.empty(n_features, d_embedding).uniform_(-bound, bound)
        )
        self.linear_bias = nn.Parameter(
            torch.empty(n_features, d_embedding).uniform_(-bound, bound)
        )
        self.ple_weight = nn.Parameter(torch.zeros(n_features, max_bins, d_embedding))

    @property
    def d_embedding(self) -> int:
        return self.linear_weight.shape[1]

    def forward(self, x: Tensor) -> Tensor:
        linear = torch.addcmul(self.linear_bias, self.linear_weight, x.unsqueeze(-1))  # (B, F, D)
        ple = self.encoding(x)  # (B, F, M)
        # Batched over features: (F, B, M) @ (F, M, D) -> (F, B, D).
        ple = torch.bmm(ple.transpose(0, 1), self.ple_weight).transpose(0, 1)  # (B, F, D)
        return linear + ple


class OneHotEncoding(nn.Module):
    """Concatenated one-hot codes of integer categorical features.

    Parameters
    ----------
    cardinalities : sequence of int
        Number of codes of each feature; feature ``i`` takes values in ``range(cardinalities[i])``.

    Shape
    -----
    - Input: ``(B, F)`` integer codes
    - Output: ``(B, sum(cardinalities))`` float
    """

    offsets: Tensor

    def __init__(self, cardinalities: Sequence[int]) -> None:
        super().__init__()
        cardinalities = [int(c) for c in cardinalities]
        if not cardinalities or min(cardinalities) < 1:
            raise ValueError(
                f"cardinalities must be a non-empty list of positive integers, however: {cardinalities=}"
            )
        self.cardinalities = tuple(cardinalities)
        starts = torch.tensor([0, *cardinalities[:-1]]).cumsum(0)
        self.register_buffer("offsets", starts, persistent=False)

    @property
    def d_out(self) -> int:
        return sum(self.cardinalities)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != len(self.cardinalities):
            raise ValueError(
                f"x must have shape (B, {len(self.cardinalities)}), however: x.shape={tuple(x.shape)}"
            )
        out = x.new_zeros((x.shape[0], self.d_out), dtype=torch.float32)
        return out.scatter_(1, x.long() + self.offsets, 1.0)
