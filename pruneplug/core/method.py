"""Iterative pruning: the history of methods on one tensor, and combining their masks.

When a tensor is pruned again, the new method acts only on what is still
unpruned: the still-alive entries (unstructured), the still-alive slices along
its ``dim`` (structured), or the whole tensor (global, for masks given whole).
:func:`combine_masks` computes that combined mask; :class:`PruningContainer`
keeps the methods in the order they were applied and is the hook that stands
for all of them, exactly as in ``torch.nn.utils.prune``.

Unlike torch's container, nothing here writes into the caller's mask, and a
failing prune never leaves a half-built container behind (the core builds a
new container and installs it only once the mask is valid).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils import prune as torch_prune

from ..errors import InvalidDimError, InvalidMaskError
from .method import BasePruningMethod

__all__ = ["PruningContainer", "combine_masks", "normalize_dim", "alive_slices", "fast_path"]


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


def fast_path(method: object) -> bool:
    """Whether ``method`` can select among alive entries itself, avoiding copies of ``t[alive]``.

    Only pruneplug's scored strategies can, and only while their
    ``compute_mask`` is their own (a subclass or a test mock that replaces it,
    here or on torch's class of the same name, gets the general,
    torch-identical path).
    """
    cls = type(method)
    own = getattr(cls, "_own_compute_mask", None)
    if own is None or getattr(cls, "compute_mask", None) is not own:
        return False
    replaced = getattr(cls, "_mask_replaced", None)  # pruneplug.compat's twins of torch's classes
    return replaced is None or not replaced()


def combine_masks(method: torch_prune.BasePruningMethod, t: Tensor, default_mask: Tensor) -> Tensor:
    """The mask after applying ``method`` to the still-unpruned part of ``t``.

    The result has ``t``'s dtype, as in torch -- except that a bool
    ``default_mask`` gives a bool result. ``default_mask`` is never modified.
    """
    out_dtype = torch.bool if default_mask.dtype == torch.bool else t.dtype
    kind = getattr(method, "PRUNING_TYPE", None)
    if kind == "unstructured":
        alive = default_mask if default_mask.dtype == torch.bool else default_mask == 1
        if fast_path(method):
            keep: Tensor = method._keep(t, alive)  # type: ignore[attr-defined]
            return keep if out_dtype == torch.bool else default_mask.to(out_dtype) * keep
        slc: Any = alive
    elif kind == "structured":
        if not hasattr(method, "dim"):
            raise AttributeError(
                'Pruning methods of PRUNING_TYPE "structured" need to have the attribute `dim` defined.'
            )
        dim = normalize_dim(method.dim, t.dim())
        keep = alive_slices(default_mask, dim)
        if fast_path(method):
            pruned_now: Tensor = method._pruned_slices(t, keep)  # type: ignore[attr-defined]
            shape = [1] * t.dim()
            shape[dim] = -1
            survivors = (~pruned_now).reshape(shape)
            if out_dtype == torch.bool:
                return default_mask & survivors
            return default_mask.to(out_dtype) * survivors
        slc = tuple(keep if d == dim else slice(None) for d in range(t.dim()))
    elif kind == "global":
        slc = tuple(slice(None) for _ in range(t.dim()))
    else:
        raise ValueError(f"Unrecognized PRUNING_TYPE {kind}")
    new_mask = default_mask.to(dtype=out_dtype, copy=True)
    part = t[slc]
    partial = method.compute_mask(part, default_mask=default_mask[slc])
    if not isinstance(partial, Tensor):
        raise InvalidMaskError(f"the strategy returned {type(partial).__name__}, not a mask tensor")
    if partial.shape != part.shape:
        raise InvalidMaskError(
            f"the strategy returned a mask of shape {tuple(partial.shape)} for a slice of shape {tuple(part.shape)}"
        )
    if out_dtype == torch.bool and partial.dtype != torch.bool:  # noqa: SIM102 - check only when converting
        if partial.is_complex() or not bool(((partial == 0) | (partial == 1)).all()):
            raise InvalidMaskError("the strategy returned a mask with values other than 0 and 1")
    new_mask[slc] = partial.to(dtype=out_dtype)
    return new_mask


class PruningContainer(BasePruningMethod, torch_prune.PruningContainer):
    """The methods applied to one tensor, in order; the hook of an iteratively pruned tensor.

    Iterating it gives the history, e.g. ``[RandomStructured, LnStructured]``
    after the tutorial's two prunes of ``conv1.weight``.

    Accepts pruning methods (or none, to be filled with
    :meth:`add_pruning_method`); they must all act on the same tensor. It is
    also a ``torch.nn.utils.prune.PruningContainer``, so torch's own functions
    extend it rather than nesting it.
    """

    def __init__(self, *methods: torch_prune.BasePruningMethod) -> None:
        self._pruning_methods: tuple[torch_prune.BasePruningMethod, ...] = ()
        if methods:
            first = methods[0]
            if isinstance(first, torch_prune.BasePruningMethod) and hasattr(first, "_tensor_name"):
                self._tensor_name = first._tensor_name
        for method in methods:
            self.add_pruning_method(method)

    def add_pruning_method(self, method: torch_prune.BasePruningMethod) -> None:
        """Append ``method`` to the history; it must act on this container's tensor."""
        if not isinstance(method, torch_prune.BasePruningMethod):
            raise TypeError(f"{type(method)} is not a BasePruningMethod subclass")
        mine = getattr(self, "_tensor_name", None)
        theirs = getattr(method, "_tensor_name", None)
        if mine != theirs:
            raise ValueError(
                "Can only add pruning methods acting on "
                f"the parameter named '{mine}' to PruningContainer {self}. Found '{theirs}'"
            )
        self._pruning_methods += (method,)

    def __len__(self) -> int:
        return len(self._pruning_methods)

    def __iter__(self) -> Iterator[torch_prune.BasePruningMethod]:
        return iter(self._pruning_methods)

    def __getitem__(self, idx: int) -> torch_prune.BasePruningMethod:
        return self._pruning_methods[idx]

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        """Apply the latest method to what ``default_mask`` keeps, and combine the two."""
        return combine_masks(self._pruning_methods[-1], t, default_mask)
