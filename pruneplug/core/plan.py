"""Planning a prune: the new mask of one tensor, computed and checked, with nothing changed yet.

A plan is all-or-nothing's first half: every mask of a prune (one tensor, a
bias beside a weight, all targets of a global prune, a whole state_dict) is
computed and checked first, and :func:`pruneplug.core.commit.commit` installs
them together. Planning never touches the module.

Which hook will stand for the tensor is the caller's to say (``stack``): the
method itself for an unpruned tensor, a :class:`~pruneplug.PruningContainer`
of the history and the method for a pruned one. The classes that build it
sit above this module (:mod:`pruneplug.core.method`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from ..errors import InvalidMaskError, PruningStateError, blamed
from ..selection.scores import scoring
from ..storage.formats import NATIVE_POLICY, TORCH_POLICY, MaskPolicy, MaskStorage, is_binary, storage_for
from ..storage.packed import added_entries, is_packed, pack_mask, packed_alike, plain
from .fast_path import selecting_entries, updating_values
from .hook import method_name
from .state import TensorState, check_importance_scores, current_values, default_alive, tensor_state

__all__ = ["PendingPrune", "HistoryStack", "plan_prune"]

HistoryStack = Callable[[TensorState, torch_prune.BasePruningMethod], torch_prune.BasePruningMethod]
"""Given a tensor's state and a new method, the hook that will stand for the tensor's whole history."""


def _default_mask(state: TensorState, policy: MaskPolicy) -> Tensor:
    if policy is TORCH_POLICY:
        if not state.pruned:
            return torch.ones_like(state.orig)
        assert state.mask is not None
        return plain(state.mask.detach()).clone(memory_format=torch.contiguous_format)
    alive = default_alive(state)
    # a copy: the strategy may write into it, and `previous` must stay what it was
    return alive.clone(memory_format=torch.contiguous_format) if state.pruned else alive


def _check_mask(raw: object, state: TensorState, previous: Tensor | None, label: str) -> Tensor:
    """Validate a computed mask; return it as bool. ``previous`` is the old alive mask."""
    context = {"module_type": state.module_type, "tensor": state.name, "strategy": label}
    if not isinstance(raw, Tensor):
        raise InvalidMaskError(f"the strategy returned {type(raw).__name__}, not a mask tensor", **context)
    if raw.shape != state.orig.shape:
        raise InvalidMaskError(
            f"the mask has shape {tuple(raw.shape)} but the tensor has shape {tuple(state.orig.shape)}", **context
        )
    if raw.device != state.orig.device:
        raise InvalidMaskError(f"the mask is on {raw.device} but the tensor is on {state.orig.device}", **context)
    if not is_binary(raw):
        raise InvalidMaskError("the mask holds values other than 0 and 1", **context)
    mask = raw.detach() if raw.dtype == torch.bool else raw.detach() != 0
    if previous is None:
        return mask
    if packed_alike(mask, previous):
        count = added_entries(mask, previous)  # read from the bytes, neither unpacked
    else:
        count = int((mask & ~plain(previous)).sum())
    if count:
        raise InvalidMaskError(
            f"the mask would un-prune {count} entr{'y' if count == 1 else 'ies'} that an earlier prune removed; "
            "masks may only lose ones",
            **context,
        )
    return mask


@dataclass
class PendingPrune:
    """A prune that has been computed and checked but not yet installed."""

    state: TensorState
    hook: torch_prune.BasePruningMethod
    mask: Tensor
    alive: Tensor = field(repr=False)
    lazy: bool = False  # compute the masked tensor on read (native API) instead of storing it
    values: Tensor | None = field(default=None, repr=False)  # new values of <name>_orig (UpdatesValues)


def plan_prune(
    module: nn.Module,
    name: str,
    method: torch_prune.BasePruningMethod,
    *,
    stack: HistoryStack,
    importance_scores: Tensor | None = None,
    policy: MaskPolicy = NATIVE_POLICY,
    label: str | None = None,
    mask: Tensor | None = None,
    storage: MaskStorage | None = None,
) -> PendingPrune:
    """Compute and check the mask ``method`` gives ``module.<name>``; change nothing.

    ``stack`` builds the hook that will stand for the tensor (see the module
    docstring); the mask is that hook's, so a pruned tensor's new mask keeps
    everything earlier prunes removed.

    ``mask`` skips the computation: it is the new mask (already computed, for
    global pruning), only checked. ``label`` names the strategy in errors.
    ``storage`` is how a native mask is stored (``"bool"`` or ``"packed"``,
    see :mod:`pruneplug.storage.packed`); ``None`` keeps the tensor's current
    storage, ``"bool"`` for a tensor not pruned yet.
    """
    state = tensor_state(module, name, whole_tensors_only=policy is NATIVE_POLICY)
    label = label or method_name(method)
    context = {"module_type": state.module_type, "tensor": name, "strategy": label}
    if not state.pruned:
        for suffix in ("_orig", "_mask"):
            taken = name + suffix
            if (
                taken in module._parameters
                or taken in module._buffers
                or taken in module.__dict__
                or taken in module._modules
            ):
                raise PruningStateError(
                    f"cannot add {taken!r}: the module already has an attribute of that name", **context
                )
    if importance_scores is not None:
        check_importance_scores(importance_scores, state.orig, module_type=state.module_type, tensor=name)
    method._tensor_name = name
    hook = stack(state, method)
    # what the new mask may not exceed (a given mask checks against packed bits as they are stored)
    if mask is not None and is_packed(state.mask):
        previous: Tensor | None = state.mask.detach()  # type: ignore[union-attr]
    else:
        previous = default_alive(state) if state.pruned else None
    values = None
    if mask is None:
        if importance_scores is not None:
            scores = importance_scores
        elif not state.pruned:
            scores = state.orig
        elif not getattr(method, "uses_importance_scores", True) or getattr(method, "elementwise_scores", False):
            # Only alive entries are ranked, where orig equals orig * mask: skip computing the product.
            scores = state.orig.detach()
        else:
            scores = current_values(state)
        with blamed(**context, wrap_foreign=policy is not TORCH_POLICY), scoring(module, name, state.orig):
            if policy is NATIVE_POLICY and importance_scores is None and updating_values(method):
                raw, values = method.prune_and_update(state.orig.detach(), previous)
                values = _checked_values(values, state, context)
            elif policy is NATIVE_POLICY and not state.pruned and selecting_entries(hook):
                raw = hook.keep_entries(scores, None)  # compute_mask(t, ones) without the ones
            else:
                raw = hook.compute_mask(scores, default_mask=_default_mask(state, policy))
    else:
        raw = mask
    if mask is None and not type(method).__module__.startswith("pruneplug.") and isinstance(raw, Tensor):
        raw = raw.clone()  # a strategy may hand back a tensor it keeps: the mask must not change under us
    alive = _check_mask(raw, state, previous, label)
    if policy is not NATIVE_POLICY:
        return PendingPrune(state, hook, raw.detach(), alive)  # type: ignore[union-attr]
    if storage_for(state.mask, storage) == "packed":
        packed = pack_mask(alive)
        return PendingPrune(state, hook, packed, packed, lazy=True, values=values)
    return PendingPrune(state, hook, plain(alive), alive, lazy=True, values=values)


def _checked_values(values: object, state: TensorState, context: Mapping[str, str]) -> Tensor:
    """New values a strategy computed for ``<name>_orig``: a finite tensor of its shape, dtype and device."""
    orig = state.orig
    if not isinstance(values, Tensor):
        raise InvalidMaskError(f"prune_and_update returned {type(values).__name__} as the new values", **context)
    if values.shape != orig.shape or values.dtype != orig.dtype or values.device != orig.device:
        raise InvalidMaskError(
            f"prune_and_update returned new values of shape {tuple(values.shape)}, {values.dtype} on "
            f"{values.device}; the tensor is {tuple(orig.shape)}, {orig.dtype} on {orig.device}",
            **context,
        )
    if values.is_floating_point() and not bool(torch.isfinite(values).all()):
        raise InvalidMaskError("prune_and_update returned new values that are not all finite", **context)
    return values.detach()
