"""ONNX export of fitted tabfm estimators: one self-contained ``.onnx`` file per model.

Every exported graph has the same interface, whatever the model family:

* one input ``X``: float32 ``(rows, n_features)``, the :class:`~tabfm.preprocessing.TablePreprocessor`
  encoding (numeric values with NaN where missing; categorical codes ``0`` missing, ``1`` unseen,
  ``2..`` the categories seen at fit), with a dynamic rows axis;
* one output: ``probabilities`` ``(rows, n_classes)`` for classifiers, ``prediction`` ``(rows,)``
  for regressors.

Everything numeric happens inside the graph: quantile-normal maps (interpolation written with
comparisons and gathers, computed in float64 like the estimators), missing indicators,
piecewise-linear bins, the TabFM members' feature permutations and code maps, the TabFM fitted
contexts and the TabR candidate keys as constants, and the averaging over TabM's ``k`` members and
TabFM's ensemble members. Only the mapping of raw categories to codes stays outside: it travels as
JSON in the model's ``metadata_props`` (key ``tabfm.preprocessor``), so a client in any language
can encode its rows, and :class:`tabfm.OnnxPredictor` does it for Python callers.

The graphs are exported with the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``):
the wrappers below are plain tensor code without data-dependent control flow, which that exporter
traces predictably into a small set of standard operators, and the attention layers switch to
explicit matmul + softmax while it runs.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tabfm.errors import NotFittedError, TabFMValidationError
from tabfm.preprocessing import FIRST_CATEGORY_CODE, MISSING_CODE, UNSEEN_CODE
from tabfm.ridge_feature import HINGE_KNOTS

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
OPSET = 17
INPUT_NAME = "X"
# metadata_props keys (values are JSON documents, except format_version and family)
META_FORMAT_VERSION = "tabfm.format_version"
META_FAMILY = "tabfm.family"
META_TASK = "tabfm.task"
META_ESTIMATOR = "tabfm.estimator"
META_PREPROCESSOR = "tabfm.preprocessor"
META_CLASSES = "tabfm.classes"
META_OUTPUTS = "tabfm.outputs"
QUANTILE_EPS = 1e-7  # NumericScaler clips probabilities to [eps, 1 - eps] before the normal quantile

__all__ = [
    "FORMAT_VERSION",
    "ColumnInterp",
    "build_graph",
    "export_estimator",
    "family_of",
    "ndtri",
    "output_name",
    "probe_rows",
]


# ---------------------------------------------------------------------------------------------
# Exportable numeric building blocks
# ---------------------------------------------------------------------------------------------

# Wichura's algorithm AS 241 (PPND16): the normal quantile to about 1e-16 relative accuracy.
_A = (3.3871328727963666080e0, 1.3314166789178437745e2, 1.9715909503065514427e3, 1.3731693765509461125e4,
      4.5921953931549871457e4, 6.7265770927008700853e4, 3.3430575583588128105e4, 2.5090809287301226727e3)
_B = (1.0, 4.2313330701600911252e1, 6.8718700749205790830e2, 5.3941960214247511077e3,
      2.1213794301586595867e4, 3.9307895800092710610e4, 2.8729085735721942674e4, 5.2264952788528545610e3)
_C = (1.42343711074968357734e0, 4.63033784615654529590e0, 5.76949722146069140550e0, 3.64784832476320460504e0,
      1.27045825245236838258e0, 2.41780725177450611770e-1, 2.27238449892691845833e-2, 7.74545014278341407640e-4)
_D = (1.0, 2.05319162663775882187e0, 1.67638483018380384940e0, 6.89767334985100004550e-1,
      1.48103976427480074590e-1, 1.51986665636164571966e-2, 5.47593808499534494600e-4, 1.05075007164441684324e-9)
_E = (6.65790464350110377720e0, 5.46378491116411436990e0, 1.78482653991729133580e0, 2.96560571828504891230e-1,
      2.65321895265761230930e-2, 1.24266094738807843860e-3, 2.71155556874348757815e-5, 2.01033439929228813265e-7)
_F = (1.0, 5.99832206555887937690e-1, 1.36929880922735805310e-1, 1.48753612908506148525e-2,
      7.86869131145613259100e-4, 1.84631831751005468180e-5, 1.42151175831644588870e-7, 2.04426310338993978564e-15)


def _poly(coefficients: tuple[float, ...], x: Tensor) -> Tensor:
    out = torch.full_like(x, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        out = out * x + c
    return out


def ndtri(p: Tensor, *, tails: bool = True) -> Tensor:
    """Quantile function of the standard normal for ``p`` in ``(0, 1)``, elementwise.

    Written with elementwise operations and ``where`` only (ONNX has no inverse error function);
    in float64 it matches ``scipy.special.ndtri`` to about 1e-15. ``tails=False`` leaves out the
    branch for ``min(p, 1 - p) < exp(-25)`` (fewer graph nodes) when ``p`` is known to avoid it.
    """
    q = p - 0.5
    r_central = 0.180625 - q * q
    central = q * _poly(_A, r_central) / _poly(_B, r_central)
    tail_p = torch.minimum(p, 1.0 - p).clamp_min(torch.finfo(p.dtype).tiny)
    r = torch.sqrt(-torch.log(tail_p))
    tail = _poly(_C, r - 1.6) / _poly(_D, r - 1.6)
    if tails:
        tail = torch.where(r <= 5.0, tail, _poly(_E, r - 5.0) / _poly(_F, r - 5.0))
    tail = torch.where(q < 0, -tail, tail)
    return torch.where(q.abs() <= 0.425, central, tail)


def _float32_at_least(values: np.ndarray) -> np.ndarray:
    """The smallest float32 not below each float64 value: for float32 ``x``, ``v <= x`` iff ``result <= x``."""
    out = values.astype(np.float32)
    below = out.astype(np.float64) < values
    out[below] = np.nextafter(out[below], np.float32(np.inf))
    return out


class ColumnInterp(nn.Module):
    """``np.interp`` column by column, written with comparisons and gathers only (no sorting).

    The knot search is two-level: a comparison with the last knot of each block of ``S ~ sqrt(N)``
    knots finds the block, then ``S`` comparisons inside it give the position, so a cell costs
    ``~2 sqrt(N)`` comparisons instead of ``N``. Counting runs in float32 against knots rounded
    up, which gives exactly the float64 comparison for float32 inputs; interpolation runs in
    float64.

    Parameters
    ----------
    xp : ndarray
        ``(N, F)`` non-decreasing knots of each column (ties allowed, as in quantiles).
    fp : ndarray
        ``(N,)`` values at the knots shared by the columns, or ``(N, F)`` one set per column.

    Shape: ``(R, F)`` float32 -> ``(R, F)`` float64. Constant extrapolation beyond the first and
    last knots; at a tie, the value of the last tied knot, as numpy returns. NaN cells give
    ``fp[0]`` (callers mask them).
    """

    def __init__(self, xp: np.ndarray, fp: np.ndarray) -> None:
        super().__init__()
        xp = np.asarray(xp, dtype=np.float64)
        n, f = xp.shape
        block = max(1, math.ceil(math.sqrt(n)))
        n_blocks = math.ceil(n / block)
        padded = np.full((n_blocks * block, f), np.inf, dtype=np.float32)  # +inf: never counted
        padded[:n] = _float32_at_least(xp)
        self.n, self.f, self.block = n, f, block
        self.register_buffer("block_last", torch.as_tensor(padded[block - 1 :: block].copy()))  # (n_blocks, F)
        self.register_buffer("knots32", torch.as_tensor(padded.reshape(-1)))  # (n_blocks * S * F,)
        self.register_buffer("knots64", torch.as_tensor(xp.reshape(-1)))  # (N * F,)
        values = np.broadcast_to(np.asarray(fp, dtype=np.float64).reshape(n, -1), (n, f))
        self.register_buffer("values", torch.as_tensor(values.reshape(-1).copy()))  # (N * F,)
        self.register_buffer("column", torch.arange(f, dtype=torch.int64))
        self.register_buffer("offsets", torch.arange(block, dtype=torch.int64) * f)  # (S,)
        self.n_blocks = n_blocks

    def forward(self, x: Tensor) -> Tensor:
        n, f, block = self.n, self.f, self.block
        full_blocks = (self.block_last.unsqueeze(0) <= x.unsqueeze(1)).to(torch.float32).sum(1)  # (R, F)
        start = full_blocks.to(torch.int64).clamp(max=self.n_blocks - 1) * block  # (R, F)
        index = (start * f + self.column).unsqueeze(-1) + self.offsets  # (R, F, S)
        inside = (self.knots32[index] <= x.unsqueeze(-1)).to(torch.float32).sum(-1).to(torch.int64)  # (R, F)
        count = (start + inside).clamp(max=n)  # knots at or below x
        lo = (count - 1).clamp(0, n - 1)
        hi = count.clamp(0, n - 1)
        lo, hi = lo * f + self.column, hi * f + self.column  # flat positions (R, F)
        x_lo, x_hi = self.knots64[lo], self.knots64[hi]
        f_lo, f_hi = self.values[lo], self.values[hi]
        xd = x.to(torch.float64)
        gap = x_hi - x_lo
        safe_gap = torch.where(gap > 0, gap, torch.ones_like(gap))
        t = torch.where(gap > 0, (xd - x_lo) / safe_gap, torch.zeros_like(xd)).clamp(0.0, 1.0)
        return f_lo + t * (f_hi - f_lo)


class QuantileNormal(nn.Module):
    """The quantile-normal map of :class:`~tabfm.preprocessing.NumericScaler` as a module.

    Computes in float64 (as the scaler does) and returns float32; NaN stays NaN.

    Shape: ``(R, F)`` float32 -> ``(R, F)`` float32.
    """

    def __init__(self, quantiles: np.ndarray, references: np.ndarray) -> None:
        super().__init__()
        q = np.asarray(quantiles, dtype=np.float64)  # (N, F)
        r = np.asarray(references, dtype=np.float64)  # (N,)
        f = q.shape[1]
        self.f = f
        # The scaler averages interp(x, q, r) and its backward twin -interp(-x, -q[::-1], -r[::-1]);
        # both run as one interpolation over 2F columns (half the graph nodes, for 1-row latency).
        knots = np.concatenate([q, -q[::-1]], axis=1)  # (N, 2F)
        values = np.concatenate([np.repeat(r[:, None], f, 1), np.repeat(-r[::-1, None], f, 1)], axis=1)
        self.interp = ColumnInterp(knots, values)

    def forward(self, x: Tensor) -> Tensor:
        both = self.interp(torch.cat([x, -x], dim=1))  # (R, 2F)
        p = (0.5 * (both[:, : self.f] - both[:, self.f :])).clamp(QUANTILE_EPS, 1.0 - QUANTILE_EPS)
        z = ndtri(p, tails=False)  # p within [1e-7, 1 - 1e-7]: the far-tail branch is never taken
        return torch.where(torch.isnan(x), torch.full_like(x, math.nan), z.to(torch.float32))


class FeatureEncoderGraph(nn.Module):
    """:class:`tabfm.training.FeatureEncoder` (TabM, TabR inputs) inside the graph.

    Shape: ``X (R, F)`` -> ``x_num (R, n_num_inputs)`` float32 or None, ``x_cat (R, n_cat)`` int64
    or None.
    """

    def __init__(self, encoder: Any) -> None:
        super().__init__()
        self.n_num_inputs = int(encoder.n_num_inputs)
        self.register_buffer("num_idx", torch.as_tensor(np.asarray(encoder.num_idx), dtype=torch.int64))
        self.register_buffer("cat_idx", torch.as_tensor(np.asarray(encoder.cat_idx), dtype=torch.int64))
        self.register_buffer("indicator_idx", torch.as_tensor(np.asarray(encoder.indicator_idx_), dtype=torch.int64))
        self.has_num = len(encoder.num_idx) > 0
        self.has_indicators = len(encoder.indicator_idx_) > 0
        self.has_cat = len(encoder.cat_idx) > 0
        self.scaler = (
            QuantileNormal(encoder.scaler_.quantiles_, encoder.scaler_.references_) if self.has_num else None
        )
        cards = np.asarray(encoder.cardinalities)[np.asarray(encoder.cat_idx, dtype=np.int64)]
        self.register_buffer("cat_max", torch.as_tensor(cards - 1, dtype=torch.int64))

    def forward(self, X: Tensor) -> tuple[Tensor | None, Tensor | None]:
        x_num = x_cat = None
        if self.n_num_inputs > 0:
            parts = []
            if self.has_num:
                raw = X.index_select(1, self.num_idx)  # (R, n_num)
                scaled = self.scaler(raw)
                parts.append(torch.where(torch.isnan(scaled), torch.zeros_like(scaled), scaled))
                if self.has_indicators:
                    parts.append(torch.isnan(raw.index_select(1, self.indicator_idx)).to(torch.float32))
            x_num = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        if self.has_cat:
            codes = X.index_select(1, self.cat_idx)
            codes = torch.where(torch.isnan(codes), torch.zeros_like(codes), codes).to(torch.int64)
            x_cat = torch.minimum(codes.clamp_min(0), self.cat_max)
        return x_num, x_cat


class RidgeGraph(nn.Module):
    """:class:`tabfm.ridge_feature.RidgeFeature` inside the graph: its design columns (clipped raw and
    quantile-normal numeric values, missing indicators, one 0/1 column per known level, hinges of the
    quantile-normal values when the ridge kept them), standardised, then the fitted linear map.
    Computes in float64, as the estimator does.

    Shape: ``X (R, F)`` float32 -> ``(R, t)`` float32.
    """

    def __init__(self, ridge: Any) -> None:
        super().__init__()
        categorical = np.asarray(ridge.categorical_mask, dtype=bool)
        numeric_idx = np.flatnonzero(~categorical)
        self.has_num = len(numeric_idx) > 0
        self.register_buffer("numeric_idx", torch.as_tensor(numeric_idx, dtype=torch.int64))
        if self.has_num:
            self.register_buffer("low", torch.as_tensor(ridge.low_, dtype=torch.float64))
            self.register_buffer("high", torch.as_tensor(ridge.high_, dtype=torch.float64))
            self.quantile = QuantileNormal(ridge.quantile_.quantiles_, ridge.quantile_.references_)
            self.register_buffer("missing_idx", torch.as_tensor(np.flatnonzero(ridge.has_missing_), dtype=torch.int64))
        self.hinge = bool(ridge.hinge_) and self.has_num
        self.register_buffer("knots", torch.as_tensor(HINGE_KNOTS, dtype=torch.float64))
        source, codes = [], []
        for column, levels in zip(np.flatnonzero(categorical), ridge.levels_, strict=True):
            source += [column] * levels
            codes += list(FIRST_CATEGORY_CODE + np.arange(levels))
        self.has_levels = len(source) > 0
        self.register_buffer("level_source", torch.as_tensor(source, dtype=torch.int64))
        self.register_buffer("level_code", torch.as_tensor(codes, dtype=torch.float32))
        keep = np.asarray(ridge.keep_, dtype=bool)
        self.register_buffer("keep", torch.as_tensor(np.flatnonzero(keep), dtype=torch.int64))
        self.register_buffer("loc", torch.as_tensor(ridge.loc_[keep], dtype=torch.float64))
        self.register_buffer("scale", torch.as_tensor(ridge.scale_[keep], dtype=torch.float64))
        self.register_buffer("coef", torch.as_tensor(ridge.coef_, dtype=torch.float64))  # (kept columns, t)
        self.register_buffer("y_mean", torch.as_tensor(ridge.y_mean_, dtype=torch.float64))

    def forward(self, X: Tensor) -> Tensor:
        if self.coef.shape[0] == 0:  # nothing to regress on: the mean for every row
            return self.y_mean.to(torch.float32).expand(X.shape[0], -1)
        blocks = []
        if self.has_num:
            raw = X.index_select(1, self.numeric_idx)
            wide = raw.to(torch.float64)
            clipped = torch.where(torch.isnan(wide), wide, torch.minimum(torch.maximum(wide, self.low), self.high))
            missing = torch.isnan(raw.index_select(1, self.missing_idx)).to(torch.float64)
            quantile = self.quantile(raw).to(torch.float64)
            blocks += [clipped, quantile, missing]
        if self.has_levels:
            blocks.append((X.index_select(1, self.level_source) == self.level_code).to(torch.float64))
        if self.hinge:  # max(0, q - knot), NaN where q is missing (the column mean below)
            q = quantile.unsqueeze(2)
            hinges = torch.relu(torch.where(torch.isnan(q), torch.zeros_like(q), q) - self.knots)
            blocks.append(torch.where(torch.isnan(q), q.expand_as(hinges), hinges).flatten(1))
        design = torch.cat(blocks, dim=1).index_select(1, self.keep)
        z = (design - self.loc) / self.scale
        z = torch.where(torch.isnan(z), torch.zeros_like(z), z)  # missing values at the column mean
        return (z @ self.coef + self.y_mean).to(torch.float32)


# ---------------------------------------------------------------------------------------------
# One wrapper per family
# ---------------------------------------------------------------------------------------------


def _stack_contexts(contexts: list[Any]) -> Any:
    """The members' contexts ``(1, ...)`` stacked into one batch of tables ``(M, ...)``, the narrower
    ones padded to the widest (one-hot members are wider)."""
    from models.icl import ICLContext

    width = max(c.feature_mask.shape[1] for c in contexts)
    tensors = [c.pad_features(width).tensors() for c in contexts]
    return ICLContext.from_tensors(
        {key: torch.cat([t[key].detach().cpu() for t in tensors], dim=0) for key in tensors[0]}
    )


class TabFMGraph(nn.Module):
    """All members of a fitted TabFM estimator in one batched forward pass.

    The members' views of the table (numeric raw or quantile-normal, a feature subset in the
    member's order, permuted categorical codes) are built with constant index tables; the members
    then run as a batch of ``M`` tables against their cached contexts (constants).
    """

    def __init__(self, est: Any) -> None:
        super().__init__()
        self.task = est._task
        self.network = copy.deepcopy(est.network_).to("cpu").float().eval()
        members = est.members_
        self.n_members = len(members)
        categorical = np.asarray(est.preprocessor_.categorical_mask_, dtype=bool)
        n_features = len(categorical)
        numeric_idx = np.flatnonzero(~categorical)
        use_quantile = est.scaler_ is not None and any(m.quantile for m in members)
        self.scaler = QuantileNormal(est.scaler_.quantiles_, est.scaler_.references_) if use_quantile else None
        self.register_buffer("numeric_idx", torch.as_tensor(numeric_idx, dtype=torch.int64))
        # Column j of the extended table [X, quantile(X numeric)]: raw j, or n_features + position.
        quantile_column = np.arange(n_features)
        quantile_column[numeric_idx] = n_features + np.arange(len(numeric_idx))
        gather, code_offset, code_limit, is_cat, table = [], [], [], [], [np.nan]  # slot 0: numeric cells
        for member in members:
            columns = quantile_column if (member.quantile and use_quantile) else np.arange(n_features)
            gather.append(columns[member.features])
            for mapping in member.code_maps:
                if mapping is None:
                    code_offset.append(0)
                    code_limit.append(0)
                    is_cat.append(False)
                else:
                    code_offset.append(len(table))
                    code_limit.append(len(mapping) - 1)
                    is_cat.append(True)
                    table.extend(np.asarray(mapping, dtype=np.float64).tolist())
        n_used = len(members[0].features)
        self.n_used = n_used
        self.register_buffer("gather", torch.as_tensor(np.concatenate(gather), dtype=torch.int64))  # (M*F_m,)
        self.register_buffer("code_offset", torch.as_tensor(code_offset, dtype=torch.int64).view(self.n_members, 1, n_used))
        self.register_buffer("code_limit", torch.as_tensor(code_limit, dtype=torch.int64).view(self.n_members, 1, n_used))
        self.register_buffer("is_cat", torch.as_tensor(is_cat, dtype=torch.bool).view(self.n_members, 1, n_used))
        self.register_buffer("code_table", torch.as_tensor(np.asarray(table), dtype=torch.float32))
        # One-hot members: column w of a member's view is used column source[w], copied (level -1),
        # or its indicator of one level (level >= 0); narrower members end in padding (level -2).
        width = max(m.width() for m in members)
        self.expand = any(m.onehot is not None for m in members)  # else every member is n_used wide
        source = np.zeros((self.n_members, width), dtype=np.int64)
        level = np.full((self.n_members, width), -2.0, dtype=np.float32)
        for i, member in enumerate(members):
            hot = member.onehot if member.onehot is not None else np.zeros(n_used, dtype=bool)
            w = 0
            for k, n in enumerate(member.column_widths()):
                source[i, w : w + n] = k
                level[i, w : w + n] = np.arange(n) if hot[k] else -1.0
                w += n
        self.register_buffer("onehot_source", torch.as_tensor(source).view(self.n_members, 1, width))
        self.register_buffer("onehot_level", torch.as_tensor(level).view(self.n_members, 1, width))
        # Linear members end in the ridge feature's t columns: column w of a member's view is column
        # ridge_source[w] of [view, ridge columns, a zero column].
        ridge = getattr(est, "ridge_", None)
        self.ridge = None if ridge is None else RidgeGraph(ridge)  # fitted only when some member is linear
        if self.ridge is not None:
            t = ridge.coef_.shape[1]
            total = max(m.width() + t * m.linear for m in members)
            ridge_source = np.full((self.n_members, total), width + t, dtype=np.int64)  # padding: the zero column
            for i, member in enumerate(members):
                ridge_source[i, : member.width()] = np.arange(member.width())
                if member.linear:
                    ridge_source[i, member.width() : member.width() + t] = width + np.arange(t)
            self.register_buffer("ridge_source", torch.as_tensor(ridge_source).view(self.n_members, 1, total))
        context = _stack_contexts(est.contexts_)
        self._context_names = []
        for name, tensor in context.tensors().items():
            buffer = "ctx_" + name.replace(".", "_")
            self.register_buffer(buffer, tensor.clone())
            self._context_names.append((name, buffer))
        self.temperature = float(est.softmax_temperature)
        if self.task == "classification":
            n_out = self.network.config.n_outputs
            self.grouped = est.n_classes_ > n_out
            mask = np.zeros((self.n_members, 1, n_out), dtype=np.float32)
            for i, member in enumerate(members):
                mask[i, 0, int(member.class_map.max()) + 1 :] = -np.inf  # outputs the member's context cannot produce
            self.register_buffer("output_mask", torch.as_tensor(mask))
            self.register_buffer(
                "class_maps", torch.as_tensor(np.stack([m.class_map for m in members]), dtype=torch.int64)
            )
        else:
            self.y_mean, self.y_std = float(est.y_mean_), float(est.y_std_)

    def _context(self) -> Any:
        from models.icl import ICLContext

        return ICLContext.from_tensors({name: getattr(self, buffer) for name, buffer in self._context_names})

    def member_inputs(self, X: Tensor) -> Tensor:
        """The members' views of the rows: ``(M, R, F_m)`` float32, NaN for missing and unseen codes."""
        extended = X
        if self.scaler is not None:
            extended = torch.cat([X, self.scaler(X.index_select(1, self.numeric_idx))], dim=1)
        x = extended.index_select(1, self.gather)  # (R, M*F_m)
        x = x.reshape(x.shape[0], self.n_members, self.n_used).transpose(0, 1)  # (M, R, F_m)
        codes = torch.where(self.is_cat & ~torch.isnan(x), x, torch.full_like(x, float(MISSING_CODE)))
        codes = codes.to(torch.int64)
        in_range = (codes >= 0) & (codes <= self.code_limit)
        codes = torch.where(in_range, codes, torch.full_like(codes, UNSEEN_CODE))
        mapped = self.code_table[self.code_offset + codes]  # (M, R, F_m)
        x = torch.where(self.is_cat, mapped, x)
        if self.expand:
            picked = torch.gather(x, 2, self.onehot_source.expand(-1, x.shape[1], -1))  # (M, R, W)
            indicator = (picked == self.onehot_level).to(x.dtype)  # NaN (missing, unseen) matches no level
            x = torch.where(self.onehot_level >= 0, indicator, torch.where(self.onehot_level == -1, picked, torch.zeros_like(picked)))
        if self.ridge is None:
            return x
        ridge = self.ridge(X).unsqueeze(0).expand(self.n_members, -1, -1)  # (M, R, t)
        extended = torch.cat([x, ridge, torch.zeros_like(x[:, :, :1])], dim=2)
        return torch.gather(extended, 2, self.ridge_source.expand(-1, x.shape[1], -1))  # (M, R, W + t)

    def forward(self, X: Tensor) -> Tensor:
        x = self.member_inputs(X)
        logits = self.network.predict_from_context(self._context(), x) / self.temperature  # (M, R, O)
        if self.task == "regression":
            log_p = torch.log_softmax(logits, dim=-1)
            mixture = torch.logsumexp(log_p, dim=0) - math.log(self.n_members)  # (R, O)
            mean = self.network.bar_distribution.mean(mixture)
            return mean * self.y_std + self.y_mean  # (R,)
        log_p = torch.log_softmax(logits + self.output_mask, dim=-1)  # (M, R, O)
        per_member = [log_p[i].index_select(1, self.class_maps[i]) for i in range(self.n_members)]  # (R, C) each
        stacked = torch.stack(per_member)  # (M, R, C)
        if self.grouped:
            total = stacked.sum(0)
            proba = torch.exp(total - total.max(dim=1, keepdim=True).values)
        else:
            proba = torch.exp(stacked).mean(0)
        return proba / proba.sum(dim=1, keepdim=True)


class TabMGraph(nn.Module):
    """A fitted TabM estimator: feature encoding, the ``k`` members, their average."""

    def __init__(self, est: Any) -> None:
        super().__init__()
        self.task = est._task
        self.features = FeatureEncoderGraph(est.features_)
        self.model = copy.deepcopy(est.model_).to("cpu").float().eval()
        if self.task == "regression":
            self.y_mean, self.y_std = float(est.y_mean_), float(est.y_std_)

    def forward(self, X: Tensor) -> Tensor:
        x_num, x_cat = self.features(X)
        out = self.model(x_num, x_cat)  # (R, k, O)
        if self.task == "classification":
            return torch.softmax(out, dim=-1).mean(1)  # (R, C)
        return out.squeeze(-1).mean(1) * self.y_std + self.y_mean  # (R,)


class TabRGraph(nn.Module):
    """A fitted TabR estimator: encoding, exact top-m retrieval among constant candidate keys, mix.

    The candidates' keys, their first value projection ``W1 k_i`` and their label embeddings are
    constants, so a row costs one matmul against the keys, a TopK and gathers of ``m`` rows.
    """

    def __init__(self, est: Any) -> None:
        super().__init__()
        self.task = est._task
        self.features = FeatureEncoderGraph(est.features_)
        model = copy.deepcopy(est.model_).to("cpu").float().eval()
        self.model = model
        keys = est.candidate_k_.detach().cpu().float()
        labels = est.candidate_y_.detach().cpu()
        first = model.transform[0]
        with torch.no_grad():
            self.register_buffer("keys", keys)  # (N, D)
            self.register_buffer("keys_sq", keys.square().sum(-1))  # (N,)
            self.register_buffer("keys_proj", nn.functional.linear(keys, first.weight))  # (N, d_block)
            self.register_buffer("label_emb", model.embed_labels(labels).float())  # (N, D)
        self.m = int(min(model.config.context_size, keys.shape[0]))
        if self.task == "regression":
            self.y_mean, self.y_std = float(est.y_mean_), float(est.y_std_)

    def forward(self, X: Tensor) -> Tensor:
        x_num, x_cat = self.features(X)
        x, k = self.model.encode(x_num, x_cat)  # (R, D) each
        dist = k.square().sum(-1, keepdim=True) - 2.0 * (k @ self.keys.T) + self.keys_sq  # (R, N)
        if torch.onnx.is_in_onnx_export():
            # ONNX TopK breaks ties by the lower index (duplicate training rows have equal keys).
            _, idx = torch.topk(dist, self.m, dim=1, largest=False, sorted=True)  # (R, m)
        else:  # the same choice in torch, whose topk breaks ties arbitrarily
            idx = torch.sort(dist, dim=1, stable=True).indices[:, : self.m]
        first, activation, _, second = self.model.transform
        context_k = self.keys[idx]  # (R, m, D)
        weights = torch.softmax(-(k.unsqueeze(1) - context_k).square().sum(-1), dim=-1)  # (R, m)
        hidden = activation(first(k).unsqueeze(1) - self.keys_proj[idx])  # (R, m, d_block)
        mixed_hidden = torch.bmm(weights.unsqueeze(1), hidden).squeeze(1)  # (R, d_block)
        mixed_labels = torch.bmm(weights.unsqueeze(1), self.label_emb[idx]).squeeze(1)  # (R, D)
        out = self.model.head(self.model.predictor(x + mixed_labels + second(mixed_hidden)))  # (R, O)
        if self.task == "classification":
            return torch.softmax(out, dim=-1)
        return out.squeeze(-1) * self.y_std + self.y_mean


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def family_of(est: Any) -> str:
    """``"tabfm"``, ``"tabm"`` or ``"tabr"`` for a tabfm estimator."""
    from tabfm.icl import _TabFMBase
    from tabfm.tabm import _TabMBase

    if isinstance(est, _TabFMBase):
        return "tabfm"
    if isinstance(est, _TabMBase):
        return "tabm"
    try:
        from tabfm.tabr import _TabRBase
    except ImportError:  # pragma: no cover - TabR not installed
        _TabRBase = ()  # type: ignore[assignment]
    if _TabRBase and isinstance(est, _TabRBase):
        return "tabr"
    raise TabFMValidationError(f"cannot export a {type(est).__name__}: only tabfm estimators export to ONNX")


_GRAPHS = {"tabfm": TabFMGraph, "tabm": TabMGraph, "tabr": TabRGraph}


def build_graph(est: Any) -> nn.Module:
    """The exportable module of a fitted estimator: encoded rows ``(R, F)`` -> the graph output."""
    if not getattr(est, "is_fitted_", False):
        raise NotFittedError(f"This {type(est).__name__} instance is not fitted yet; call fit before exporting it")
    if getattr(est, "neighbour_index_", None) is not None:
        raise TabFMValidationError(
            f"cannot export a {type(est).__name__} with context={est.context!r}: the ONNX graph holds one summary "
            "of all training rows per member, and local and focused members read each test row's own neighbours; refit with "
            "context='global' to export"
        )
    if any(getattr(m, "target_quantile", False) for m in getattr(est, "members_", [])):
        raise TabFMValidationError(
            f"cannot export a {type(est).__name__} with target_transform={est.target_transform!r}: the ONNX graph "
            "takes the mean of each member's bins on the standardised target; refit with target_transform='none' to export"
        )
    return _GRAPHS[family_of(est)](est).eval()


def output_name(task: str) -> str:
    """Name of the graph output: ``probabilities`` (classification) or ``prediction``."""
    return "probabilities" if task == "classification" else "prediction"


def probe_rows(est: Any, n_rows: int, *, seed: int = 0) -> np.ndarray:
    """Encoded rows with missing cells and every kind of code, within the fitted value ranges.

    Used as the tracing example and to check the exported graph against torch.
    """
    rng = np.random.default_rng(seed)
    pre = est.preprocessor_
    categorical = np.asarray(pre.categorical_mask_, dtype=bool)
    cards = np.asarray(pre.cardinalities_, dtype=np.int64)
    lo, hi = _numeric_ranges(est, categorical)
    X = np.empty((n_rows, len(categorical)), dtype=np.float32)
    numeric_position = 0
    for j in range(len(categorical)):
        if categorical[j]:
            X[:, j] = rng.integers(0, max(int(cards[j]), 1), size=n_rows)
        else:
            X[:, j] = rng.uniform(lo[numeric_position], hi[numeric_position], size=n_rows)
            X[rng.random(n_rows) < 0.2, j] = np.nan
            numeric_position += 1
    return X


def _numeric_ranges(est: Any, categorical: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n_numeric = int((~categorical).sum())
    scaler = getattr(est, "scaler_", None)
    if scaler is None and hasattr(est, "features_"):
        scaler = getattr(est.features_, "scaler_", None)
    if scaler is not None and getattr(scaler, "quantiles_", None) is not None and n_numeric:
        q = np.asarray(scaler.quantiles_, dtype=np.float64)
        return q[0], np.where(q[-1] > q[0], q[-1], q[0] + 1.0)
    return np.full(n_numeric, -1.0), np.full(n_numeric, 1.0)


def _metadata(est: Any, family: str) -> dict[str, str]:
    from tabfm.serialization import _encode_classes

    task = est._task
    meta = {
        META_FORMAT_VERSION: str(FORMAT_VERSION),
        META_FAMILY: family,
        META_TASK: task,
        META_ESTIMATOR: type(est).__name__,
        META_PREPROCESSOR: json.dumps(est.preprocessor_.to_dict()),
        META_OUTPUTS: json.dumps([output_name(task)]),
        META_CLASSES: json.dumps(_encode_classes(est.classes_) if task == "classification" else None),
    }
    return meta


def _unflatten_symbolic(g: Any, input: Any, dim: Any, sizes: Any) -> Any:
    """``aten::unflatten`` as Reshape(x, concat(shape[:dim], sizes, shape[dim + 1:])) with constant slices.

    The exporter's own version computes the slice bounds in the graph, and its shape inference
    then freezes the dynamic rows axis of the result to the example's size.
    """
    from torch.onnx import symbolic_helper

    rank = symbolic_helper._get_tensor_rank(input)
    if rank is None:
        return symbolic_helper._unimplemented("unflatten", "input rank must be known at export time")
    d = symbolic_helper._get_const(dim, "i", "dim") % rank

    def const(values: list[int]) -> Any:
        return g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))

    shape = g.op("Shape", input)
    head = g.op("Slice", shape, const([0]), const([d]))
    tail = g.op("Slice", shape, const([d + 1]), const([rank]))
    sizes = symbolic_helper._maybe_get_const(sizes, "is")
    if isinstance(sizes, list):
        sizes = const([int(v) for v in sizes])
    return g.op("Reshape", input, g.op("Concat", head, sizes, tail, axis_i=0))


@contextlib.contextmanager
def _dynamic_unflatten(opset: int) -> Iterator[None]:
    torch.onnx.register_custom_op_symbolic("aten::unflatten", _unflatten_symbolic, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::unflatten", opset)


def export_estimator(est: Any, path: str | Path, *, opset: int = OPSET, verify: bool = True) -> Path:
    """Write a fitted estimator to ``path`` as one self-contained ONNX file.

    Parameters
    ----------
    est : TabularEstimator
        A fitted TabFM, TabM or TabR classifier or regressor.
    path : str or Path
        The ``.onnx`` file to write (replaced atomically if it exists).
    opset : int, default 17
        ONNX opset (17 or later).
    verify : bool, default True
        Run the written file with onnxruntime on a number of rows different from the tracing
        example and compare it with the torch module (raises if they differ by more than 1e-3).

    Returns
    -------
    Path
    """
    import onnx

    if opset < 17:
        raise TabFMValidationError(f"opset must be 17 or later, however: opset={opset}")
    family = family_of(est)
    graph = build_graph(est)
    task = est._task
    out_name = output_name(task)
    example = torch.as_tensor(probe_rows(est, 2, seed=0))
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".onnx", dir=target.parent)
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings(), _dynamic_unflatten(opset):
            warnings.simplefilter("ignore")  # tracer warnings about Python values treated as constants
            torch.onnx.export(
                graph,
                (example,),
                tmp,
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[out_name],
                dynamic_axes={INPUT_NAME: {0: "rows"}, out_name: {0: "rows"}},
                opset_version=opset,
                do_constant_folding=True,
            )
        model = onnx.load(tmp)
        model.producer_name = "tabfm"
        model.doc_string = f"tabfm {type(est).__name__} ({family}, {task})"
        for key, value in _metadata(est, family).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(model)
        onnx.save(model, tmp)
        if verify:
            _verify(graph, tmp, est, out_name)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("exported %s to %s (%.1f MB)", type(est).__name__, target, target.stat().st_size / 1e6)
    return target


def _verify(graph: nn.Module, path: str, est: Any, out_name: str, *, tolerance: float = 1e-3) -> None:
    import onnxruntime as ort

    X = probe_rows(est, 7, seed=1)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run([out_name], {INPUT_NAME: X})[0]
    with torch.no_grad():
        want = graph(torch.as_tensor(X)).numpy()
    scale = 1.0 if est._task == "classification" else max(1.0, float(np.abs(want).max()))
    error = float(np.max(np.abs(got - want))) / scale if got.shape == want.shape else math.inf
    if not error <= tolerance:
        raise RuntimeError(
            f"the exported ONNX graph of {type(est).__name__} disagrees with torch on 7 probe rows "
            f"(max relative error {error:.3g}, shapes {got.shape} and {want.shape}); please report it"
        )
