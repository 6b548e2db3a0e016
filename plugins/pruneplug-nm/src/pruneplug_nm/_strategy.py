"""The ``nm`` strategy: N:M semi-structured sparsity along one dimension."""

from __future__ import annotations

from typing import Annotated, ClassVar

import torch
from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError
from torch import Tensor

import pruneplug

__all__ = ["NMParams", "NMSparsity"]


class NMParams(pruneplug.StrategyParams):
    """Parameters of ``nm``: keep ``n`` of every ``m`` consecutive entries along ``dim``.

    Frozen, strict and closed (``pruneplug.StrategyParams``): ``n=2.0``,
    ``n=True`` or an unknown name are rejected before anything is touched.
    """

    n: Annotated[int, Field(ge=1, description="entries kept in every group")] = 2
    m: Annotated[int, Field(ge=2, description="group size: consecutive entries along dim")] = 4
    dim: Annotated[int, Field(description="the dimension the groups run along (1: a Linear/Conv weight's inputs)")] = 1

    @model_validator(mode="after")
    def _n_below_m(self) -> NMParams:
        if self.n >= self.m:
            raise PydanticCustomError(
                "nm_ratio",
                "n={n} must be smaller than m={m}: N:M sparsity keeps n of every m entries (1 <= n < m)",
                {"n": self.n, "m": self.m},
            )
        return self


class NMSparsity(pruneplug.BasePruningMethod):
    """Keep the ``n`` largest-magnitude entries in every group of ``m`` consecutive entries along ``dim``.

    2:4 by default, along dim 1 -- the input features of a ``Linear`` weight
    and the input channels of a ``Conv`` weight, the layout of NVIDIA's 2:4
    sparse tensor cores. The tensor needs at least 2 dims, and ``m`` must divide
    its size along ``dim``.

    Ties are broken by position: the earlier entry is kept. Pruned again, it
    acts on what is left: already-pruned entries count as zero magnitude, rank
    below every unpruned entry (even an unpruned zero) and stay pruned, so the
    result is an N:M-compliant mask intersected with the previous one. NaN
    counts as the largest magnitude (kept, so it stays visible).
    """

    PRUNING_TYPE: ClassVar[str] = "global"  # the whole tensor at once: groups need their neighbours
    name: ClassVar[str | None] = "nm"
    Params: ClassVar[type[pruneplug.StrategyParams]] = NMParams

    def __init__(self, n: int = 2, m: int = 4, dim: int = 1) -> None:
        if not 1 <= n < m:
            raise pruneplug.InvalidParametersError(
                f"n={n} and m={m}: N:M sparsity keeps n of every m entries (1 <= n < m)", strategy=self.name
            )
        self.n = n
        self.m = m
        self.dim = dim

    def _check(self, t: Tensor) -> int:
        """The dimension the groups run along, after checking that ``t`` can be split into groups."""
        shape = tuple(t.shape)
        if t.dim() < 2:
            raise pruneplug.InvalidDimError(
                f"N:M sparsity needs a tensor with at least 2 dims (a Linear or Conv weight); "
                f"this one has {t.dim()} (shape {shape})",
                strategy=self.name,
            )
        if not -t.dim() <= self.dim < t.dim():
            raise pruneplug.InvalidDimError(
                f"dim={self.dim} is out of range for a tensor with {t.dim()} dims (shape {shape})", strategy=self.name
            )
        dim = self.dim % t.dim()
        if shape[dim] % self.m:
            raise pruneplug.InvalidParametersError(
                f"m={self.m} does not divide the size {shape[dim]} of dim {dim} (shape {shape}): "
                f"the entries along dim {dim} must split into whole groups of {self.m}",
                strategy=self.name,
            )
        return dim

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        """``default_mask`` with all but the ``n`` largest of every ``m`` consecutive entries along ``dim`` zeroed."""
        dim = self._check(t)
        alive = default_mask.detach() != 0
        # Rank by magnitude; a pruned entry ranks below every unpruned one, even an unpruned zero.
        magnitude = t.detach().abs()
        rank = magnitude.masked_fill(~alive, -1)
        groups = rank.movedim(dim, -1).reshape(-1, self.m)
        # A stable descending sort keeps the earlier of equal entries first.
        kept = torch.sort(groups, dim=1, descending=True, stable=True).indices[:, : self.n]
        keep = torch.zeros(groups.shape, dtype=torch.bool, device=t.device).scatter_(1, kept, True)
        moved_shape = list(t.shape)
        moved_shape.append(moved_shape.pop(dim))
        keep = keep.reshape(moved_shape).movedim(-1, dim) & alive
        if default_mask.dtype == torch.bool:
            return keep.contiguous()
        return default_mask * keep.to(default_mask.dtype)
