"""TabM: an MLP that holds ``k`` ensemble members in one network (BatchEnsemble).

All members share the weight matrices of the MLP; each member owns cheap multiplicative
adapters ``r`` (on the input of a linear layer) and ``s`` (on its output) and its own biases, and
its own output head. Following the TabM paper, only the first layer's ``r`` starts random (one
random value per member and input feature, repeated over that feature's embedding), every other
adapter starts at one, so the members differ first in how they weigh the features.
``arch="tabm-mini"`` keeps just that first per-member scaling and shares everything else except
the heads.

Letters in shape comments: B rows, k members, F features, D width, O outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from models.dropout import Dropout
from models.numeric_embeddings import OneHotEncoding, PiecewiseLinearEmbeddings

ScalingInit = Literal["ones", "normal", "random-signs"]


def _uniform_fan_in_(tensor: Tensor, fan_in: int) -> Tensor:
    bound = fan_in**-0.5
    return nn.init.uniform_(tensor, -bound, bound)


@torch.no_grad()
def init_member_scaling_(
    scaling: Tensor, how: ScalingInit, *, chunks: Sequence[int] | None = None
) -> Tensor:
    """Fill per-member scalings ``(k, D)`` in place.

    With ``chunks`` (sizes summing to ``D``), each member draws one value per chunk, so all
    components that describe one input feature are scaled alike.
    """
    k, width = scaling.shape
    sizes = [width] if chunks is None else list(chunks)
    if sum(sizes) != width:
        raise ValueError(
            f"chunks must sum to the scaling width {width}, however: sum(chunks)={sum(sizes)}"
        )
    if how == "ones":
        return scaling.fill_(1.0)
    draws = torch.empty(k, len(sizes) if chunks is not None else width)
    if how == "normal":
        draws.normal_()
    elif how == "random-signs":
        draws.bernoulli_(0.5).mul_(2.0).sub_(1.0)
    else:
        raise ValueError(f"how must be 'ones', 'normal' or 'random-signs', however: how={how!r}")
    if chunks is not None:
        draws = draws.repeat_interleave(torch.tensor(sizes), dim=1)  # (k, D)
    return scaling.copy_(draws)


class LinearBatchEnsemble(nn.Module):
    """``k`` linear layers sharing one weight: member ``i`` computes ``((x * r_i) @ W.T) * s_i + b_i``.

    Shape
    -----
    - Input: ``(B, k, d_in)``
    - Output: ``(B, k, d_out)``
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        *,
        k: int,
        r_init: ScalingInit,
        s_init: ScalingInit = "ones",
        r_chunks: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(_uniform_fan_in_(torch.empty(d_out, d_in), d_in))
        self.r = nn.Parameter(init_member_scaling_(torch.empty(k, d_in), r_init, chunks=r_chunks))
        self.s = nn.Parameter(init_member_scaling_(torch.empty(k, d_out), s_init))
        # Members start from one shared bias; they drift apart while training.
        shared_bias = _uniform_fan_in_(torch.empty(d_out), d_in)
        self.bias = nn.Parameter(shared_bias.expand(k, d_out).clone())

    def forward(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.bias, (x * self.r) @ self.weight.T, self.s)


class LinearEnsemble(nn.Module):
    """``k`` fully independent linear layers (the members' heads).

    Shape
    -----
    - Input: ``(B, k, d_in)``
    - Output: ``(B, k, d_out)``
    """

    def __init__(self, d_in: int, d_out: int, *, k: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(_uniform_fan_in_(torch.empty(k, d_in, d_out), d_in))
        self.bias = nn.Parameter(_uniform_fan_in_(torch.empty(k, d_out), d_in))

    def forward(self, x: Tensor) -> Tensor:
        # (k, B, d_in) @ (k, d_in, d_out) -> (k, B, d_out)
        return torch.bmm(x.transpose(0, 1), self.weight).transpose(0, 1) + self.bias


@dataclass(frozen=True)
class TabMConfig:
    """Architecture of :class:`TabM`.

    ``n_blocks=None`` takes 2 blocks with numeric embeddings and 3 without (the defaults of the
    TabM reference package). ``d_embedding=0`` feeds numeric features as they are instead of
    through piecewise-linear embeddings (which then need ``bins``).
    """

    n_num_features: int
    d_out: int
    cat_cardinalities: tuple[int, ...] = field(default_factory=tuple)
    k: int = 32  # ensemble members
    n_blocks: int | None = None
    d_block: int = 512
    dropout: float = 0.1
    arch: Literal["tabm", "tabm-mini"] = "tabm"
    d_embedding: int = 16  # width of each numeric feature's piecewise-linear embedding; 0 = none

    def __post_init__(self) -> None:
        for name in ("k", "d_block", "d_out"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"{name} must be a positive integer, however: {name}={getattr(self, name)}"
                )
        if self.n_blocks is not None and self.n_blocks < 1:
            raise ValueError(
                f"n_blocks must be None or a positive integer, however: n_blocks={self.n_blocks}"
            )
        if self.n_num_features < 0 or (self.n_num_features == 0 and not self.cat_cardinalities):
            raise ValueError(
                "TabM needs at least one feature, however: "
                f"n_num_features={self.n_num_features}, cat_cardinalities={self.cat_cardinalities}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), however: dropout={self.dropout}")
        if self.arch not in ("tabm", "tabm-mini"):
            raise ValueError(f"arch must be 'tabm' or 'tabm-mini', however: arch={self.arch!r}")

    @property
    def uses_embeddings(self) -> bool:
        return self.d_embedding > 0 and self.n_num_features > 0

    @property
    def resolved_n_blocks(self) -> int:
        if self.n_blocks is not None:
            return self.n_blocks
        return 2 if self.uses_embeddings else 3


class TabM(nn.Module):
    """TabM: ``k`` MLP members in one BatchEnsemble network, each with its own head.

    Parameters
    ----------
    config : TabMConfig
    bins : sequence of Tensor, optional
        Bin edges per numeric feature for the piecewise-linear embeddings; required when
        ``config.d_embedding > 0`` and there are numeric features.

    Shape
    -----
    - Input: ``x_num`` ``(B, n_num_features)`` float (no NaN), ``x_cat`` ``(B, n_cat)`` integer
      codes with ``x_cat[:, i] < cat_cardinalities[i]`` (either may be None when absent).
    - Output: ``(B, k, d_out)``: one prediction (logits or value) per member.
    """

    def __init__(self, config: TabMConfig, *, bins: Sequence[Tensor] | None = None) -> None:
        super().__init__()
        self.config = config
        chunks: list[int] = []  # width of each input feature's representation
        self.num_embeddings: PiecewiseLinearEmbeddings | None = None
        if config.uses_embeddings:
            if bins is None or len(bins) != config.n_num_features:
                raise ValueError(
                    f"bins must hold {config.n_num_features} tensors of edges when d_embedding > 0, "
                    f"however: len(bins)={None if bins is None else len(bins)}"
                )
            self.num_embeddings = PiecewiseLinearEmbeddings(bins, d_embedding=config.d_embedding)
            chunks += [config.d_embedding] * config.n_num_features
        else:
            chunks += [1] * config.n_num_features
        self.one_hot = (
            OneHotEncoding(config.cat_cardinalities) if config.cat_cardinalities else None
        )
        chunks += list(config.cat_cardinalities)
        d_in = sum(chunks)

        # The reference initialises the first scaling with N(0, 1) with embeddings, random signs without.
        first_init: ScalingInit = "normal" if config.uses_embeddings else "random-signs"
        k, d, n_blocks = config.k, config.d_block, config.resolved_n_blocks
        self.mini_scaling: nn.Parameter | None = None
        layers: list[nn.Module] = []
        if config.arch == "tabm-mini":
            self.mini_scaling = nn.Parameter(
                init_member_scaling_(torch.empty(k, d_in), first_init, chunks=chunks)
            )
            layers = [nn.Linear(d_in if i == 0 else d, d) for i in range(n_blocks)]
        else:
            layers = [
                LinearBatchEnsemble(
                    d_in if i == 0 else d,
                    d,
                    k=k,
                    r_init=first_init if i == 0 else "ones",
                    r_chunks=chunks if i == 0 else None,
                )
                for i in range(n_blocks)
            ]
        self.blocks = nn.ModuleList(
            nn.Sequential(layer, nn.ReLU(), Dropout(config.dropout)) for layer in layers
        )
        self.heads = LinearEnsemble(d, config.d_out, k=k)

    def encode_features(self, x_num: Tensor | None, x_cat: Tensor | None) -> Tensor:
        """The flat representation ``(B, d_in)`` shared by all members."""
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
                raise ValueError(
                    f"x_cat is required: the model has {len(self.config.cat_cardinalities)} categorical features"
                )
            parts.append(self.one_hot(x_cat))
        return torch.cat(parts, dim=1)

    def forward(self, x_num: Tensor | None = None, x_cat: Tensor | None = None) -> Tensor:
        x = self.encode_features(x_num, x_cat)  # (B, d_in)
        x = x.unsqueeze(1).expand(-1, self.config.k, -1)  # (B, k, d_in): a view, no copy
        if self.mini_scaling is not None:
            x = x * self.mini_scaling
        for block in self.blocks:
            x = block(x)  # (B, k, D)
        return self.heads(x)  # (B, k, O)
