"""Slices of a tensor along one dim: checking the dim, and which slices are still alive."""

from __future__ import annotations

from torch import Tensor

from ..errors import InvalidDimError

__all__ = ["normalize_dim", "alive_slices"]


def normalize_dim(dim: int, ndim: int) -> int:
    """Turn a possibly negative ``dim`` into an index of a tensor with ``ndim`` dims.

    >>> normalize_dim(-1, 4)
    3
    """
    if ndim < 2:
        raise InvalidDimError(
            f"structured pruning needs a tensor with at least 2 dims to have slices; this one has {ndim}"
        )
    if not -ndim <= dim < ndim:
        raise InvalidDimError(f"dim={dim} is out of range for a tensor with {ndim} dims (valid: {-ndim}..{ndim - 1})")
    return dim % ndim


def alive_slices(mask: Tensor, dim: int) -> Tensor:
    """Bool vector over ``dim``: which slices still have an unpruned entry."""
    others = [d for d in range(mask.dim()) if d != dim]
    return mask.ne(0).any(dim=others) if others else mask.ne(0)
