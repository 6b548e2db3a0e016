"""The method classes: :class:`BasePruningMethod`, and the history of methods on one tensor.

:class:`BasePruningMethod` is the public base class of every strategy: the
hook of :mod:`pruneplug.core.hook` plus torch's ``apply`` and ``remove``,
which plan, commit and undo prunes. Both need the history class, and the
history class is a method, so the two live here together.

Iterative pruning: when a tensor is pruned again, the new method acts only on
what is still unpruned: the still-alive entries (unstructured), the
still-alive slices along its ``dim`` (structured), or the whole tensor
(global, for masks given whole).
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
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from ..errors import InvalidMaskError
from ..selection.slices import alive_slices, normalize_dim
from ..storage.formats import NATIVE_POLICY, TORCH_POLICY, MaskPolicy, is_binary
from .commit import commit, unreparametrize
from .fast_path import selecting_entries, selecting_slices
from .hook import MaskingHook
from .plan import plan_prune
from .state import TensorState

__all__ = ["BasePruningMethod", "PruningContainer", "combine_masks", "with_history", "apply_method"]


class BasePruningMethod(MaskingHook):
    """Base class for pruning strategies (and drop-in for torch's of the same name).

    Subclass it the way the tutorial subclasses ``torch.nn.utils.prune.BasePruningMethod``:
    set ``PRUNING_TYPE`` and implement ``compute_mask(t, default_mask)``, which
    returns a new 0/1 mask shaped like ``t`` that only zeroes entries
    ``default_mask`` keeps. Add ``name`` (and ``Params``, a pydantic model of
    the constructor's keyword arguments) to make it registrable by name.

    Class attributes:
        PRUNING_TYPE: ``"unstructured"`` (entries), ``"structured"`` (whole
            slices along ``self.dim``) or ``"global"`` (the whole tensor).
        name: the registry name, e.g. ``"l1_unstructured"``; ``None`` if unregistered.
        Params: pydantic model of the constructor's keyword arguments.
        uses_importance_scores: whether ``importance_scores`` change the mask.

    >>> import torch
    >>> class EveryOther(BasePruningMethod):
    ...     PRUNING_TYPE = "unstructured"
    ...     def compute_mask(self, t, default_mask):
    ...         mask = default_mask.clone()
    ...         mask.view(-1)[::2] = 0
    ...         return mask
    >>> EveryOther().compute_mask(torch.ones(4), torch.ones(4))
    tensor([0., 1., 0., 1.])
    """

    @classmethod
    def apply(  # type: ignore[override]
        cls,
        module: nn.Module,
        name: str,
        *args: Any,
        importance_scores: Tensor | None = None,
        **kwargs: Any,
    ) -> torch_prune.BasePruningMethod:
        """Prune ``module.<name>`` with ``cls(*args, **kwargs)``, as torch's ``apply`` does.

        Masks keep torch's dtypes on this path (it is what
        :mod:`pruneplug.compat` uses). Returns the hook now in charge of the
        tensor: the new method, or a :class:`~pruneplug.PruningContainer`
        holding the whole history. On any error the module is left exactly as
        it was.
        """
        method = cls(*args, **kwargs)
        return apply_method(module, name, method, importance_scores=importance_scores, policy=TORCH_POLICY)

    def remove(self, module: nn.Module) -> None:
        """Make the pruning of ``module.<name>`` permanent (torch protocol).

        ``<name>`` becomes a plain parameter again -- the same parameter object
        that was ``<name>_orig``, now holding the masked values -- and
        ``<name>_orig`` / ``<name>_mask`` are deleted. Like torch's method, this
        leaves the hook entry itself to the caller; :func:`pruneplug.remove`
        does both.
        """
        unreparametrize(module, self)


def combine_masks(method: torch_prune.BasePruningMethod, t: Tensor, default_mask: Tensor) -> Tensor:
    """The mask after applying ``method`` to the still-unpruned part of ``t``.

    The result has ``t``'s dtype, as in torch -- except that a bool
    ``default_mask`` gives a bool result. ``default_mask`` is never modified.
    """
    out_dtype = torch.bool if default_mask.dtype == torch.bool else t.dtype
    kind = getattr(method, "PRUNING_TYPE", None)
    if kind == "unstructured":
        alive = default_mask if default_mask.dtype == torch.bool else default_mask == 1
        if selecting_entries(method):
            keep = method.keep_entries(t, alive)
            return keep if out_dtype == torch.bool else default_mask.to(out_dtype) * keep
        slc: Any = alive
    elif kind == "structured":
        if not hasattr(method, "dim"):
            raise AttributeError(
                'Pruning methods of PRUNING_TYPE "structured" need to have the attribute `dim` defined.'
            )
        dim = normalize_dim(method.dim, t.dim())
        keep = alive_slices(default_mask, dim)
        if selecting_slices(method):
            pruned_now = method.pruned_slices(t, keep)
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
    if out_dtype == torch.bool and not is_binary(partial):
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


def with_history(state: TensorState, method: torch_prune.BasePruningMethod) -> torch_prune.BasePruningMethod:
    """The hook that stands for ``state``'s tensor once ``method`` is applied (a ``HistoryStack``).

    ``method`` itself for an unpruned tensor; otherwise a new
    :class:`PruningContainer` of the earlier methods and ``method`` (the old
    hook is left as it is until the prune commits).
    """
    if not state.pruned:
        return method
    old = state.hook
    assert old is not None
    history = list(old) if isinstance(old, torch_prune.PruningContainer) else [old]
    return PruningContainer(*history, method)


def apply_method(
    module: nn.Module,
    name: str,
    method: torch_prune.BasePruningMethod,
    *,
    importance_scores: Tensor | None = None,
    policy: MaskPolicy = NATIVE_POLICY,
    label: str | None = None,
) -> torch_prune.BasePruningMethod:
    """Plan and commit one prune; return the hook now in charge of the tensor."""
    pending = plan_prune(
        module, name, method, stack=with_history, importance_scores=importance_scores, policy=policy, label=label
    )
    commit([pending])
    return pending.hook
