"""The native API: prune by strategy name, validated first, bool masks, atomic.

Every function here validates everything it can before touching a module
(the strategy, its parameters through its pydantic model, the tensor, the
importance scores), then computes and checks every mask, then installs
everything at once. A failure at any point leaves every module exactly as it
was: parameters, buffers, hooks and state_dict.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.tensor import DTensor
from torch.nn.utils import prune as torch_prune

from ..core.commit import commit, remove_pruning
from ..core.hook import MaskingHook
from ..core.method import combine_masks, with_history
from ..core.module_hooks import refresh_all
from ..core.plan import PendingPrune, plan_prune
from ..core.state import (
    check_importance_scores,
    find_hook,
    is_pruned as _is_pruned,
    pruned_tensors,
    tensor_state,
)
from ..errors import (
    IncompatibleStrategyError,
    InvalidMaskError,
    InvalidParametersError,
    InvalidTargetError,
    PruneplugError,
)
from ..storage.formats import NATIVE_POLICY, MaskStorage, check_storage, storage_for
from ..strategies import StructuredStrategy
from ..strategies.bias import plan_bias, release_precomputed
from ..strategies.custom import plan_precomputed
from .catalog import StrategyLike, instantiate, resolve_strategy
from .global_distributed import (
    check_mesh_group,
    check_process_group,
    distributed_global_masks,
    is_dtensor_target,
    mask_given,
)
from .global_prune import alive_or_none
from .structured_distributed import distributed_structured_mask

__all__ = ["prune", "remove", "is_pruned", "pruning_history", "compute_mask", "refresh"]


def _context(module: nn.Module, name: str | None, spec_name: str | None) -> dict[str, str | None]:
    return {
        "module_type": type(module).__name__ if isinstance(module, nn.Module) else None,
        "tensor": name,
        "strategy": spec_name,
    }


def prune(
    module: nn.Module,
    name: str,
    strategy: StrategyLike,
    *,
    importance_scores: Tensor | None = None,
    mask_storage: MaskStorage | None = None,
    process_group: dist.ProcessGroup | None = None,
    **params: Any,
) -> nn.Module:
    """Prune tensor ``name`` of ``module`` with a strategy; returns ``module``.

    Afterwards ``module.<name>_orig`` is the original parameter (the same
    object), ``module.<name>_mask`` a bool buffer, and ``module.<name>`` the
    masked tensor, computed when read (see the Concepts page; RNNs keep it
    stored and refreshed by a forward pre-hook, as torch does). Pruning an
    already pruned tensor acts only on what is still unpruned. Whatever is
    raised, the module is left exactly as it was.

    Args:
        module: the module that owns the tensor (e.g. ``model.conv1``).
        name: the parameter's name in ``module`` (e.g. ``"weight"``).
        strategy: a registered name (see :func:`list_strategies`), a
            :class:`StrategySpec`, or a strategy class or instance.
        importance_scores: rank by these instead of the tensor's values
            (same shape), for strategies that rank.
        mask_storage: ``"bool"`` (a ``torch.bool`` mask) or ``"packed"``
            (a :class:`PackedMask`, one bit per entry: 1/32 of fp32
            weights); default: as the tensor's mask is stored now, ``"bool"``
            for a tensor not pruned yet. ``prune_bias=True`` stores the bias
            mask the same way.
        process_group: for a DTensor, the group of its mesh's ranks (the
            mesh's own by default). For a plain tensor, prune across the
            ranks of this group as :func:`prune_global` does: each rank
            passes its own tensor, and ``amount`` counts over all of them
            (unstructured strategies only). Every rank must call.
        **params: the strategy's parameters, validated by its pydantic model
            before anything is touched (e.g. ``amount=0.3``, ``dim=0``).

    Raises:
        StrategyNotFoundError: unknown strategy name (lists close matches).
        StrategyConflictError: two plugins claim the name.
        InvalidParametersError: parameters rejected by the strategy's model.
        IncompatibleStrategyError: a strategy class (or instance) passed
            directly that is abstract or has no valid ``PRUNING_TYPE``.
        InvalidTargetError: ``module`` is not a module, or ``name`` is not a
            parameter's name (a buffer, a dotted path, part of a pruned tensor).
        TensorNotFoundError: ``module`` has no parameter ``name``.
        PruningStateError: the tensor's pruning was left half-undone.
        InvalidAmountError, InvalidDimError, InvalidImportanceScoresError,
        InvalidMaskError, StrategyFailedError: the prune cannot be done.
        DistributedSelectionError: across ranks (a DTensor, or a
            ``process_group``), ``torch.distributed`` is not initialized,
            the ranks disagree, or a collective failed; on every rank.

    >>> import torch, pruneplug
    >>> layer = torch.nn.Linear(4, 2)
    >>> pruneplug.prune(layer, "weight", "l1_unstructured", amount=3)
    Linear(in_features=4, out_features=2, bias=True)
    >>> int((layer.weight == 0).sum()), layer.weight_mask.dtype
    (3, torch.bool)
    """
    label = None  # a strategy that does not resolve is named by its own error
    try:
        spec = resolve_strategy(strategy)
        label = spec.name
        if importance_scores is not None and not spec.uses_importance_scores:
            raise InvalidParametersError(f"{spec.name} does not use importance scores")
        storage = check_storage(mask_storage)
        method = instantiate(strategy, spec, params)
        group = check_process_group(process_group)
        if (group is not None or is_dtensor_target(module, name)) and not mask_given(method):
            pending = _plan_across_ranks(module, name, method, importance_scores, spec.name, storage, group)
        else:
            pending = plan_prune(
                module,
                name,
                method,
                stack=with_history,
                importance_scores=importance_scores,
                policy=NATIVE_POLICY,
                label=spec.name,
                storage=storage,
            )
        pendings = [pending]
        if getattr(method, "prune_bias", False):
            bias = plan_bias(pending, spec.name, storage)
            if bias is not None:
                pendings.append(bias)
    except PruneplugError as error:
        raise error.add_context(**_context(module, name, label)) from error.__cause__
    commit(pendings)
    for extra in pendings[1:]:
        release_precomputed(extra.hook)
    return module


def _plan_across_ranks(
    module: nn.Module,
    name: str,
    method: torch_prune.BasePruningMethod,
    importance_scores: Tensor | None,
    label: str,
    storage: MaskStorage | None,
    group: dist.ProcessGroup | None,
) -> PendingPrune:
    """Plan the prune of one DTensor (or of each rank's tensor, with a ``group``): its mask selected across
    the ranks, as ``prune_global`` over it alone does."""
    state = tensor_state(module, name)
    if isinstance(method, StructuredStrategy):
        if not isinstance(state.orig, DTensor):
            raise IncompatibleStrategyError(
                "pruning a plain tensor across a process group ranks single entries over every rank's tensor: "
                "use an unstructured strategy, or no process_group (each rank prunes its own slices)"
            )
        check_mesh_group(state.orig.device_mesh, group)
        mask = distributed_structured_mask(state, method, importance_scores)
    else:
        packed = storage_for(state.mask, storage) == "packed"
        mask = distributed_global_masks(
            [state],
            method,
            [importance_scores],
            [alive_or_none(state)],
            packed=[packed],
            alone=True,
            process_group=group,
        )[0]
    description = method.describe() if isinstance(method, MaskingHook) else label
    return plan_precomputed(module, name, mask, description, label=label, storage=storage)


def remove(module: nn.Module, name: str | None = None) -> nn.Module:
    """Make pruning permanent; returns ``module``.

    ``module.<name>`` becomes a plain parameter again -- the same object that
    was ``<name>_orig`` (so optimizers keep working) -- holding the masked
    values; ``<name>_orig``, ``<name>_mask`` and the hook are gone. With no
    ``name``, every pruned tensor of ``module`` and its submodules. Works on
    models pruned by ``torch.nn.utils.prune`` too.

    Raises:
        NotPrunedError: ``name`` is given but that tensor is not pruned.
    """
    if not isinstance(module, nn.Module):
        raise InvalidTargetError(f"expected a torch.nn.Module, got {type(module).__name__}")
    if name is not None:
        remove_pruning(module, name)
        return module
    for _, sub, tensor in list(pruned_tensors(module)):
        remove_pruning(sub, tensor)
    return module


def refresh(module: nn.Module) -> nn.Module:
    """Recompute every masked tensor of ``module`` and its submodules now; returns ``module``.

    The forward pre-hook does this by itself whenever ``<name>_orig`` or
    ``<name>_mask`` change through PyTorch operations (optimizer steps,
    in-place ops, ``load_state_dict``). Writes through ``tensor.data`` bypass
    PyTorch's change tracking: call this after them.
    """
    if not isinstance(module, nn.Module):
        raise InvalidTargetError(f"expected a torch.nn.Module, got {type(module).__name__}")
    for sub in module.modules():
        refresh_all(sub)
    return module


def is_pruned(module: nn.Module) -> bool:
    """Whether ``module`` or any submodule has a pruned tensor (by pruneplug or torch)."""
    if not isinstance(module, nn.Module):
        raise InvalidTargetError(f"expected a torch.nn.Module, got {type(module).__name__}")
    return _is_pruned(module)


def pruning_history(module: nn.Module, name: str) -> list[torch_prune.BasePruningMethod]:
    """The methods applied to ``module.<name>``, oldest first (empty if not pruned).

    Raises:
        InvalidTargetError: ``module`` is not a module.
    """
    if not isinstance(module, nn.Module):
        raise InvalidTargetError(f"expected a torch.nn.Module, got {type(module).__name__}")
    found = find_hook(module, name)
    if found is None:
        return []
    hook = found[1]
    return list(hook) if isinstance(hook, torch_prune.PruningContainer) else [hook]


def compute_mask(
    strategy: StrategyLike,
    t: Tensor,
    default_mask: Tensor | None = None,
    *,
    importance_scores: Tensor | None = None,
    **params: Any,
) -> Tensor:
    """The bool mask a strategy gives ``t`` without touching any module.

    As in iterative pruning, the strategy acts only on what ``default_mask``
    keeps; the result is always ``torch.bool``, whatever the strategy. Neither
    ``t`` nor ``default_mask`` is modified.

    Args:
        strategy: a registered name, a :class:`StrategySpec`, or a strategy
            class or instance.
        t: the tensor to rank (its values, unless ``importance_scores``).
        default_mask: what is still unpruned (bool or 0/1, ``t``'s shape);
            default: everything.
        importance_scores: rank by these instead of ``t`` (``t``'s shape).
        **params: the strategy's parameters, validated by its model.

    Raises:
        StrategyNotFoundError, StrategyConflictError, InvalidParametersError:
            as for :func:`prune`.
        InvalidTargetError: ``t`` is not a tensor.
        InvalidMaskError: ``default_mask`` is misshapen or not 0/1, or the
            strategy returned a bad mask.
        InvalidAmountError, InvalidDimError, InvalidImportanceScoresError,
        StrategyFailedError: the mask cannot be computed.

    >>> import torch, pruneplug
    >>> pruneplug.compute_mask("l1_unstructured", torch.tensor([3.0, -1.0, 2.0]), amount=1)
    tensor([ True, False,  True])
    """
    spec = resolve_strategy(strategy)
    method = instantiate(strategy, spec, params)
    if not isinstance(t, Tensor):
        raise InvalidTargetError(f"t must be a tensor, got {type(t).__name__}", strategy=spec.name)
    scores = t if importance_scores is None else check_importance_scores(importance_scores, t)
    if default_mask is None:
        alive = torch.ones(t.shape, dtype=torch.bool, device=t.device)
    else:
        if not isinstance(default_mask, Tensor) or default_mask.shape != t.shape:
            raise InvalidMaskError("default_mask must be a tensor of t's shape", strategy=spec.name)
        if default_mask.dtype != torch.bool and not bool(((default_mask == 0) | (default_mask == 1)).all()):
            raise InvalidMaskError("default_mask holds values other than 0 and 1", strategy=spec.name)
        alive = default_mask != 0
    try:
        mask = combine_masks(method, scores, alive)
    except PruneplugError as error:
        error.add_context(strategy=spec.name)
        raise
    if mask.shape != t.shape or bool((mask & ~alive).any()):
        raise InvalidMaskError(
            "the strategy returned a mask that is misshapen or un-prunes entries", strategy=spec.name
        )
    return mask
