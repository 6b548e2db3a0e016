"""``prune_global``: the lowest-ranked entries across many tensors, pruned in one all-or-nothing step.

This module checks the targets and the importance scores, plans every
target's mask through :func:`pruneplug.api.global_masks.global_masks` (the
exact selection across tensors) and commits them together.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch.distributed as dist
from torch import Tensor, nn

from ..core.commit import commit
from ..core.state import TensorState, check_importance_scores, check_untied, default_alive, tensor_state
from ..errors import (
    IncompatibleStrategyError,
    InvalidImportanceScoresError,
    InvalidParametersError,
    InvalidTargetError,
    PruneplugError,
    StrategyFailedError,
    blamed,
    cross_tensor_hint,
)
from ..storage.formats import MaskStorage, check_storage, storage_for
from ..storage.packed import is_packed
from ..strategies.bias import release_precomputed
from ..strategies.custom import plan_precomputed
from .catalog import StrategyLike, instantiate, resolve_strategy
from .global_distributed import check_process_group
from .global_masks import global_masks

__all__ = ["alive_or_none", "prune_global"]


def _pair_context(item: object) -> dict[str, str | None]:
    """The module type and tensor of what looks like a ``(module, name)`` pair, as far as it does."""
    pair = item if isinstance(item, tuple) and len(item) == 2 else (None, None)
    return {
        "module_type": type(pair[0]).__name__ if isinstance(pair[0], nn.Module) else None,
        "tensor": pair[1] if isinstance(pair[1], str) else None,
    }


def _targets(targets: Iterable[tuple[nn.Module, str]], *, may_be_empty: bool = False) -> list[tuple[nn.Module, str]]:
    if isinstance(targets, (str, bytes)) or not isinstance(targets, Iterable):
        raise InvalidTargetError(f"targets must be an iterable of (module, name) pairs, got {type(targets).__name__}")
    out: list[tuple[nn.Module, str]] = []
    seen: set[tuple[int, str]] = set()
    for index, item in enumerate(targets):
        if not (
            isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], nn.Module) and isinstance(item[1], str)
        ):
            raise InvalidTargetError(
                f"target #{index} must be a (module, name) pair, got {item!r}", **_pair_context(item)
            )
        key = (id(item[0]), item[1])
        if key in seen:
            raise InvalidTargetError(
                f"target #{index} is listed twice; list each (module, name) pair once", **_pair_context(item)
            )
        seen.add(key)
        out.append(item)
    if not out and not may_be_empty:
        raise InvalidTargetError(
            "prune_global needs at least one (module, name) target (with process_group=, a rank may have none)"
        )
    return out


def _importance_for(
    targets: list[tuple[nn.Module, str]], states: list[TensorState], importance_scores: Mapping[Any, Tensor] | None
) -> list[Tensor | None]:
    if importance_scores is None:
        return [None] * len(targets)
    if not isinstance(importance_scores, Mapping):
        raise InvalidImportanceScoresError(
            "importance_scores must be a dict mapping (module, name) to a tensor, "
            f"got {type(importance_scores).__name__}"
        )
    known = {(id(m), n) for m, n in targets}
    for key in importance_scores:
        if not (isinstance(key, tuple) and len(key) == 2 and (id(key[0]), key[1]) in known):
            raise InvalidImportanceScoresError(
                f"importance_scores has a key that is not one of the targets: {key!r} "
                "(a key is a target's own (module, name) pair: the same module object)",
                **_pair_context(key),
            )
    by_key = {(id(k[0]), k[1]): v for k, v in importance_scores.items()}
    out = []
    for (module, name), state in zip(targets, states):
        scores = by_key.get((id(module), name))
        if scores is not None:
            check_importance_scores(scores, state.orig, module_type=state.module_type, tensor=name)
        out.append(scores)
    return out


def alive_or_none(state: TensorState) -> Tensor | None:
    """What is still unpruned of a global target: ``None`` if never pruned, a packed mask as it is stored."""
    if is_packed(state.mask):
        return state.mask.detach()  # read a chunk at a time by the selection, never unpacked whole
    return default_alive(state) if state.pruned else None


def prune_global(
    targets: Iterable[tuple[nn.Module, str]],
    strategy: StrategyLike,
    *,
    amount: int | float | None = None,
    importance_scores: Mapping[tuple[nn.Module, str], Tensor] | None = None,
    mask_storage: MaskStorage | None = None,
    process_group: dist.ProcessGroup | None = None,
    **params: Any,
) -> None:
    """Prune the ``amount`` lowest-importance entries across all ``targets`` together.

    Per-tensor sparsity follows from the data: layers whose entries matter
    less lose more of them. ``amount`` counts (or is a fraction of) the
    still-unpruned entries of all targets together.

    Args:
        targets: ``(module, name)`` pairs; any iterable, a generator too.
        strategy: any unstructured strategy (``"l1_unstructured"``,
            ``"random_unstructured"``, a plugin's).
        amount: an int count or a float fraction in [0, 1] (required by
            strategies that rank; a strategy without ``amount`` takes none).
        importance_scores: optional ``{(module, name): tensor}``; targets
            without an entry are ranked by their own values.
        mask_storage: ``"bool"`` or ``"packed"`` (see :func:`prune`);
            default: each target's as it is now, ``"bool"`` for targets not
            pruned yet. With ``"packed"``, each mask is packed as soon as it
            is computed, so the extra memory of the whole selection stays
            near 1/32 of fp32 weights plus one tensor's bool mask.
        process_group: prune across the ranks of this ``torch.distributed``
            group, every rank calling with the same strategy and amount.
            With DTensor targets it must hold exactly the ranks of their
            mesh (default: the mesh's). With plain tensors each rank passes
            its own targets (pipeline stages; a rank may pass none) and the
            selection ranks the targets of every rank together, as one
            process would over all of them in rank order. Default: none,
            one process (or the DTensors' mesh).
        **params: the strategy's other parameters.

    Each target's history records the selection as one step,
    ``<strategy>(amount=...) [global over N tensors]``. Either every target
    is pruned or, whatever is raised, none is.

    Raises:
        InvalidTargetError: no targets, a malformed or repeated one, or one
            tied parameter listed through two modules.
        IncompatibleStrategyError: the strategy is not of kind
            ``"unstructured"`` (a strategy of kind ``"global"`` computes one
            tensor's mask from that whole tensor: use :func:`prune` per tensor),
            or its parameters select within each tensor (``wanda`` with
            ``compare="row"`` or N:M: the strategy's ``global_refusal()``).
        StrategyNotFoundError, StrategyConflictError: as for :func:`prune`.
        InvalidAmountError, InvalidParametersError,
        InvalidImportanceScoresError, InvalidMaskError, StrategyFailedError:
            the selection cannot be done (``InvalidParametersError`` too for a
            ``process_group`` that is not one, or not the DTensors' mesh's).
        DistributedSelectionError: across ranks, ``torch.distributed`` is
            not initialized, the ranks disagree (targets, strategy,
            amount), or a collective failed or timed out; on every rank.

    >>> import torch, pruneplug
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    >>> pruneplug.prune_global([(net[0], "weight"), (net[1], "weight")], "l1_unstructured", amount=0.5)
    >>> int((net[0].weight == 0).sum() + (net[1].weight == 0).sum())
    40
    """
    # Errors caused by one target name its module type and tensor (and all name the strategy, once
    # resolved); the others -- no or malformed targets, the amount, the parameters, a strategy that
    # sees all targets as one flat tensor -- name the strategy only.
    label = None
    try:
        spec = resolve_strategy(strategy)
        label = spec.name
        group = check_process_group(process_group)
        pairs = _targets(targets, may_be_empty=group is not None)
        if spec.kind != "unstructured":
            raise IncompatibleStrategyError(
                "prune_global ranks single entries across all targets together, so it needs a strategy of kind "
                f"'unstructured'; {cross_tensor_hint(spec.name, spec.kind)}. "
                f"Prune each tensor on its own with pruneplug.prune(module, name, {spec.name!r}, ...) instead"
            )
        if importance_scores is not None and not spec.uses_importance_scores:
            raise InvalidParametersError(f"{spec.name} does not use importance scores")
        storage = check_storage(mask_storage)
        method = instantiate(strategy, spec, params if amount is None else {"amount": amount, **params})
        states = []
        for module, name in pairs:
            with blamed(module_type=type(module).__name__, tensor=name):
                states.append(tensor_state(module, name))
        packed = [storage_for(state.mask, storage) == "packed" for state in states]
        check_untied(states)
        importance = _importance_for(pairs, states, importance_scores)
        alive = []
        for state in states:
            with blamed(module_type=state.module_type, tensor=state.name):
                alive.append(alive_or_none(state))
        try:
            masks = global_masks(states, method, importance, alive, packed=packed, process_group=group)
        except PruneplugError:
            raise
        except Exception as error:
            raise StrategyFailedError(
                f"the strategy raised {type(error).__name__} ranking all {len(pairs)} targets together: {error}"
            ) from error
        description = (
            f"{method.describe() if hasattr(method, 'describe') else spec.name} [global over {len(pairs)} tensors]"
        )
        pendings = [
            plan_precomputed(module, name, mask, description, label=spec.name, storage="packed" if pack else "bool")
            for (module, name), mask, pack in zip(pairs, masks, packed)
        ]
    except PruneplugError as error:
        raise error.add_context(strategy=label) from error.__cause__
    commit(pendings)
    for pending in pendings:
        release_precomputed(pending.hook)
