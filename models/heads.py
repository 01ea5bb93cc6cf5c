"""Output heads: an MLP that maps row vectors to logits, and the bar distribution for regression.

Bar (Riemann) distribution
--------------------------
Regression is classification over ``n_bins`` bins of the *standardised* target (the estimator
standardises with the training rows, so the same fixed borders suit every dataset). Inside an inner
bin the density is uniform; the two outer bins are half-normal tails that extend to ``-inf`` and
``+inf`` (scale = the bin's width), so a value beyond the borders still has a finite loss and the
predicted mean reacts to mass in the tails.

Border choice: ``borders = half_range * sinh(k t) / sinh(k)`` for ``t`` evenly spaced on
``[-1, 1]``, by default 64 bins, ``half_range = 5`` and ``k = 2``. Bins are narrowest around 0
(width ≈ 0.086, where a standardised target has most of its mass) and about 4× wider at ±5
(≈ 0.32), without a prior-specific border fit that would tie the checkpoint to one prior.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["BarDistribution", "MLPHead", "sinh_borders"]


class MLPHead(nn.Module):
    """``Linear -> GELU -> Linear`` from width ``d`` to ``n_outputs`` logits.

    Shape: ``(..., d)`` -> ``(..., n_outputs)``.
    """

    def __init__(self, *, d: int, d_hidden: int, n_outputs: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, d_hidden)
        self.fc2 = nn.Linear(d_hidden, n_outputs)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.dropout(nn.functional.gelu(self.fc1(x))))


def sinh_borders(n_bins: int = 64, *, half_range: float = 5.0, sharpness: float = 2.0) -> Tensor:
    """Bin borders ``half_range * sinh(k t) / sinh(k)``, ``t`` evenly spaced on ``[-1, 1]``.

    Returns ``(n_bins + 1,)`` increasing float32 borders, symmetric around 0.
    """
    if n_bins < 3:
        raise ValueError(
            f"a bar distribution needs n_bins >= 3 (two tails and an inner bin), got n_bins={n_bins}"
        )
    if half_range <= 0 or sharpness <= 0:
        raise ValueError(
            f"half_range and sharpness must be > 0, got half_range={half_range}, sharpness={sharpness}"
        )
    t = torch.linspace(-1.0, 1.0, n_bins + 1, dtype=torch.float64)
    return (half_range * torch.sinh(sharpness * t) / math.sinh(sharpness)).to(torch.float32)


def _normal_icdf(p: Tensor) -> Tensor:
    return math.sqrt(2.0) * torch.erfinv(2.0 * p - 1.0)


class BarDistribution(nn.Module):
    """Riemann distribution over fixed bins with half-normal outer tails.

    Parameters
    ----------
    n_bins : int
        Number of bins (the regression network's ``n_outputs``).
    half_range : float
        Outermost borders are ``±half_range`` (standardised units).
    sharpness : float
        ``k`` of :func:`sinh_borders`; larger concentrates bins near 0.
    tail_clip : float or None
        In :meth:`nll`, targets further than ``tail_clip`` tail widths beyond the outermost borders
        are scored as if they lay at that limit (``None``: never). A half-normal tail makes the loss
        grow with the squared distance, so one standardised target of 1e5 (a training set with a
        near-constant target) would otherwise swamp a whole batch; at the default 3 such a target
        costs at most ``8 - log p(tail bin)`` nats and still pulls mass into the tail bin. The
        clipped mass is ``2 (1 - Phi(tail_clip + 1)) < 1e-4`` of a tail bin's.

    Attributes
    ----------
    borders : Tensor
        ``(n_bins + 1,)`` buffer (saved with the weights).

    Notes
    -----
    All methods take ``logits (..., n_bins)``; ``y`` has shape ``(...)``.
    """

    def __init__(
        self,
        n_bins: int = 64,
        *,
        half_range: float = 5.0,
        sharpness: float = 2.0,
        tail_clip: float | None = 3.0,
    ) -> None:
        super().__init__()
        if tail_clip is not None and tail_clip < 0:
            raise ValueError(f"tail_clip must be >= 0 or None, got tail_clip={tail_clip}")
        self.n_bins = n_bins
        self.tail_clip = tail_clip
        self.register_buffer(
            "borders", sinh_borders(n_bins, half_range=half_range, sharpness=sharpness)
        )

    @property
    def widths(self) -> Tensor:
        """``(n_bins,)`` widths; for the tails, the half-normal scale."""
        return self.borders[1:] - self.borders[:-1]

    def _check(self, logits: Tensor) -> None:
        if logits.shape[-1] != self.n_bins:
            raise ValueError(
                f"logits must end with n_bins={self.n_bins} entries, got shape {tuple(logits.shape)}"
            )

    def nll(self, logits: Tensor, y: Tensor) -> Tensor:
        """Per-element negative log-likelihood ``(...)`` of targets ``y (...)``.

        Finite for any finite ``y``; bounded for far-out targets when ``tail_clip`` is set.
        """
        self._check(logits)
        log_p = torch.log_softmax(logits, dim=-1)
        b = self.borders.to(logits.dtype)
        w = self.widths.to(logits.dtype)
        y = y.to(logits.dtype)
        if self.tail_clip is not None:
            y = y.clamp(b[0] - self.tail_clip * w[0], b[-1] + self.tail_clip * w[-1])
        inner = b[1:-1].contiguous()
        idx = torch.bucketize(y.detach().contiguous(), inner)  # bin index in [0, n_bins)
        log_mass = log_p.gather(-1, idx.unsqueeze(-1)).squeeze(-1)
        # Uniform inside inner bins.
        log_density = log_mass - torch.log(w[idx])
        # Half-normal tails: density 2/s * phi(dist / s) for the distance from the inner border.
        left_dist = (b[1] - y).clamp_min(0) / w[0]
        right_dist = (y - b[-2]).clamp_min(0) / w[-1]
        half_normal = math.log(2.0) - 0.5 * math.log(2 * math.pi)
        left = log_mass + half_normal - torch.log(w[0]) - 0.5 * left_dist**2
        right = log_mass + half_normal - torch.log(w[-1]) - 0.5 * right_dist**2
        log_density = torch.where(
            idx == 0, left, torch.where(idx == self.n_bins - 1, right, log_density)
        )
        return -log_density

    def mean(self, logits: Tensor) -> Tensor:
        """Mean ``(...)`` of the predicted distribution."""
        self._check(logits)
        p = torch.softmax(logits, dim=-1)
        b = self.borders.to(p.dtype)
        centres = 0.5 * (b[1:] + b[:-1])
        shift = math.sqrt(2.0 / math.pi)  # mean of a unit half-normal
        centres = torch.cat(
            [
                (b[1] - shift * (b[1] - b[0])).reshape(1),
                centres[1:-1],
                (b[-2] + shift * (b[-1] - b[-2])).reshape(1),
            ]
        )
        return p @ centres

    def cdf(self, logits: Tensor, y: Tensor) -> Tensor:
        """Cumulative probability ``(..., Q)`` at values ``y (..., Q)``; the inverse of :meth:`quantile`."""
        self._check(logits)
        p = torch.softmax(logits, dim=-1)
        cum = torch.cumsum(p, dim=-1)
        b = self.borders.to(p.dtype)
        w = self.widths.to(p.dtype)
        y = y.to(p.dtype)
        k = torch.bucketize(y.contiguous(), b[1:-1].contiguous())  # bin index in [0, n_bins)
        before = torch.where(k > 0, cum.gather(-1, (k - 1).clamp_min(0)), torch.zeros_like(y))
        frac = ((y - b[k]) / w[k]).clamp(0.0, 1.0)
        left = 2.0 * torch.special.ndtr(-(b[1] - y).clamp_min(0) / w[0])
        right = 2.0 * torch.special.ndtr((y - b[-2]).clamp_min(0) / w[-1]) - 1.0
        frac = torch.where(k == 0, left, torch.where(k == self.n_bins - 1, right, frac))
        return before + p.gather(-1, k) * frac

    def median(self, logits: Tensor) -> Tensor:
        """Median ``(...)`` of the predicted distribution."""
        return self.quantile(logits, 0.5)

    def quantile(self, logits: Tensor, q: float | Sequence[float] | Tensor) -> Tensor:
        """Quantiles of the predicted distribution.

        Parameters
        ----------
        logits : Tensor
            ``(..., n_bins)``.
        q : float or sequence of float
            Levels in ``(0, 1)``.

        Returns
        -------
        Tensor
            ``(...)`` for a scalar ``q``; ``(..., len(q))`` for a sequence. Non-decreasing in ``q``.
        """
        self._check(logits)
        scalar = isinstance(q, (int, float))
        levels = torch.as_tensor([q] if scalar else q, dtype=logits.dtype, device=logits.device)
        if levels.numel() and ((levels <= 0) | (levels >= 1)).any():
            raise ValueError(f"quantile levels must lie strictly between 0 and 1, got q={q}")
        p = torch.softmax(logits, dim=-1)  # (..., n)
        cdf = torch.cumsum(p, dim=-1)
        lv = levels.expand(*p.shape[:-1], -1)  # (..., Q)
        # Bin holding each level: the number of bins whose cumulative mass is below it.
        k = (cdf.unsqueeze(-2) < lv.unsqueeze(-1)).sum(-1).clamp(max=self.n_bins - 1)  # (..., Q)
        before = torch.where(k > 0, cdf.gather(-1, (k - 1).clamp_min(0)), torch.zeros_like(lv))
        mass = p.gather(-1, k).clamp_min(1e-12)
        frac = ((lv - before) / mass).clamp(1e-6, 1 - 1e-6)
        b = self.borders.to(p.dtype)
        w = self.widths.to(p.dtype)
        inner = b[k] + frac * w[k]
        left = b[1] - w[0] * _normal_icdf(1 - frac / 2)
        right = b[-2] + w[-1] * _normal_icdf((1 + frac) / 2)
        out = torch.where(k == 0, left, torch.where(k == self.n_bins - 1, right, inner))
        return out.squeeze(-1) if scalar else out
