"""Nearest training rows of each query row, for the local contexts of the TabFM estimators.

Distances are Euclidean in the space where TabR retrieves (:class:`tabfm.training.FeatureEncoder`):
numeric columns quantile-mapped to a standard normal (missing values at the median, plus a 0/1
missingness indicator), and categorical columns one-hot scaled by ``1/sqrt(2)``, so that two
different categories lie at distance 1, as two numeric values one standard deviation apart do.

With training targets, each of those columns is then scaled by how much of the target it explains
on its own (:func:`relevance_weights`), so that columns the target ignores stop deciding who is
near: with 48 columns of which a few matter, unweighted neighbours are mostly noise.

With anchors (a subset of the training rows), a query reads the neighbourhood of its nearest
anchor instead of its own: queries near one another then share one context, which the estimator
runs once for all of them, and each query's context still depends on that query alone.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from models.tabr import exact_search
from tabfm.training import FeatureEncoder

RELEVANCE_BINS = 16  # a column's rows fall in this many equal-count bins (or its distinct values, if fewer)
RELEVANCE_FLOOR = 1e-3  # every column keeps a little weight: ties between relevant columns still break
VOTE_ROWS = 512  # rows whose k-NN vote is scored when the classifier picks a neighbourhood size


def relevance_weights(points: np.ndarray, targets: np.ndarray, bins: int = RELEVANCE_BINS) -> np.ndarray:
    """``(D,)`` weights of the columns of ``points`` ``(n, D)``, with mean square 1.

    A column's weight is the square root of its adjusted correlation ratio with the targets
    ``(n, t)``: the share of each standardised target's variance explained by that target's mean
    in the column's bins, less the share ``(groups - 1) / (n - 1)`` that noise alone would explain,
    averaged over targets (one-hot classes count alike). Marginal, so it sees nonlinear effects of
    one column (not interactions), in O(n log n) per column.
    """
    n, d = points.shape
    y = np.asarray(targets, dtype=np.float64).reshape(n, -1)
    y = y - y.mean(0)
    scale = y.std(0)
    y = y[:, scale > 0] / scale[scale > 0]
    if n < 2 or y.shape[1] == 0:
        return np.ones(d)
    eta = np.zeros(d)
    for c in range(d):
        values, group = np.unique(points[:, c], return_inverse=True)
        if len(values) > bins:
            edges = np.quantile(points[:, c], np.linspace(0, 1, bins + 1)[1:-1])
            group = np.searchsorted(edges, points[:, c], side="right")
        counts = np.bincount(group)
        used = counts > 0
        sums = np.stack([np.bincount(group, weights=y[:, j], minlength=len(counts)) for j in range(y.shape[1])], 1)
        explained = (sums[used] ** 2 / counts[used, None]).sum(0) / n  # (t,) between-group share
        eta[c] = max(0.0, float(explained.mean()) - (used.sum() - 1) / (n - 1))
    w = np.sqrt(eta + RELEVANCE_FLOOR)
    return w / np.sqrt(np.mean(w**2))


class NeighbourIndex:
    """Exact k-nearest-neighbour search over the rows of an encoded training table."""

    def __init__(self, categorical_mask: np.ndarray, cardinalities: np.ndarray) -> None:
        self.encoder = FeatureEncoder(categorical_mask, cardinalities)

    def fit(
        self, X_enc: np.ndarray, k: int, anchors: np.ndarray | None = None, targets: np.ndarray | None = None
    ) -> NeighbourIndex:
        """Index the training rows for ``k``-row neighbourhoods; ``anchors``: training-row indices;
        ``targets`` ``(n,)`` or ``(n, t)``: weigh columns by relevance (None: all alike)."""
        self.encoder.fit(X_enc)
        self.weights_ = None
        points = self._embed(X_enc)
        if targets is not None:
            self.weights_ = torch.as_tensor(relevance_weights(points.numpy(), targets), dtype=points.dtype)
            points = points * self.weights_
        self.points_ = points
        self.k_ = int(k)
        self.anchors_ = None if anchors is None else np.asarray(anchors, dtype=np.int64)
        if self.anchors_ is not None:
            self.anchor_rows_ = exact_search(self.points_[self.anchors_], self.points_, self.k_).numpy()
        return self

    def _embed(self, X_enc: np.ndarray) -> torch.Tensor:
        x_num, x_cat = self.encoder.transform(X_enc)
        parts = [] if x_num is None else [torch.as_tensor(x_num)]
        if x_cat is not None:
            for j, card in enumerate(self.encoder.cat_cardinalities):
                codes = torch.as_tensor(x_cat[:, j]).clamp(0, max(card, 1) - 1)
                parts.append(F.one_hot(codes, max(card, 1)).float() * 0.5**0.5)
        if not parts:  # no features at all: every row is equally near
            return torch.zeros(len(X_enc), 1)
        return torch.cat(parts, dim=1)

    def _embed_query(self, X_enc: np.ndarray) -> torch.Tensor:
        points = self._embed(X_enc)
        return points if self.weights_ is None else points * self.weights_

    def query(self, X_enc: np.ndarray, chunk_size: int = 4096) -> np.ndarray:
        """``(n, k)`` int64 training-row indices of each row's context, nearest first: its own
        ``k`` nearest rows, or with anchors those of its nearest anchor. Queries run
        ``chunk_size`` rows at a time, which bounds the distance matrix's memory."""
        parts = [self._query(X_enc[i : i + chunk_size]) for i in range(0, len(X_enc), chunk_size)]
        return np.concatenate(parts) if parts else np.empty((0, self.k_), dtype=np.int64)

    def vote_log_loss(self, labels: np.ndarray, n_classes: int, sizes: list[int], max_rows: int = VOTE_ROWS) -> np.ndarray:
        """``(len(sizes),)`` leave-one-out log-loss of the ``k``-nearest-neighbour vote of the
        training rows' ``labels`` (``(n,)`` class indices), for each ``k`` in ``sizes``: a row is
        predicted from the class counts of its ``k`` nearest other rows plus one uniform pseudo-row.
        At most ``max_rows`` rows, evenly spread over the table, are predicted (from all rows).

        A small ``k`` wins where classes are locally sharp (rule-like tables), a large one where
        the labels are noisy; it is how the classifier picks a tight neighbourhood size.
        """
        labels = np.asarray(labels, dtype=np.int64)
        n = len(labels)
        k_max = max(sizes)
        if not 0 < k_max < n:
            raise ValueError(f"neighbourhood sizes {sizes} must lie in 1..{n - 1} (training rows less one)")
        rows = np.unique(np.linspace(0, n - 1, min(n, max_rows)).round().astype(np.int64))
        points, squares = self.points_, self.points_.square().sum(-1)
        q = torch.as_tensor(rows)
        dist = (points[q] @ points.T).mul_(-2.0).add_(squares[q, None]).add_(squares)  # (r, n) squared
        dist[torch.arange(len(rows)), q] = torch.inf  # a row never votes for itself
        # A plain top-k rather than exact_search: ties need not go to the lowest index (nothing
        # here is exported), which saves its tie pass, and only the k_max kept rows are sorted.
        values, nearest = dist.topk(k_max, dim=1, largest=False, sorted=False)
        nearest = nearest.gather(1, values.argsort(dim=1)).numpy()
        same = np.cumsum(labels[nearest] == labels[rows, None], axis=1)  # (r, k_max): own-class votes
        return np.array([-np.log((same[:, k - 1] + 1.0 / n_classes) / (k + 1)).mean() for k in sizes])

    def _query(self, X_enc: np.ndarray) -> np.ndarray:
        if self.anchors_ is None:
            return exact_search(self._embed_query(X_enc), self.points_, self.k_).numpy()
        nearest = exact_search(self._embed_query(X_enc), self.points_[self.anchors_], 1).numpy()[:, 0]
        return self.anchor_rows_[nearest]
