"""Global pruning: the lowest-importance entries across many tensors at once.

Scored strategies (L1, random, a plugin's :class:`~pruneplug.UnstructuredStrategy`)
stream through :func:`pruneplug.selection.exact.keep_highest_across`: a chunk of
scores (elementwise scores) or one tensor's scores in memory at a time,
nothing concatenated; entries a strategy :meth:`~pruneplug.UnstructuredStrategy.protected`
are left out of the selection. DTensor targets go to
:mod:`pruneplug.api.global_distributed` (each rank scores its shard, the
selection runs across ranks). Any other unstructured
strategy (one that only knows ``compute_mask``) gets torch's treatment: the
tensors are flattened into one vector and the strategy sees it whole.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.utils import prune as torch_prune

from ..core.fast_path import fast_path
from ..core.hook import method_name
from ..core.method import combine_masks
from ..core.state import TensorState, current_values
from ..errors import IncompatibleStrategyError, blamed
from ..selection.amount import count_to_prune
from ..selection.exact import ScoreSource, keep_highest_across
from ..selection.scores import scoring
from ..storage.formats import NATIVE_POLICY, TORCH_POLICY, MaskPolicy
from ..storage.packed import PackedMask, plain
from ..strategies import UnstructuredStrategy
from ..strategies._base import checked_protected
from .global_distributed import distributed_global_masks, has_dtensors

__all__ = ["global_masks"]


def _blamed_for(state: TensorState, policy: MaskPolicy) -> AbstractContextManager[None]:
    """Name ``state``'s target in an error raised while scoring it (the caller adds the strategy's name)."""
    return blamed(module_type=state.module_type, tensor=state.name, wrap_foreign=policy is not TORCH_POLICY)


def _orig_stands_for_values(method: UnstructuredStrategy, state: TensorState) -> bool:
    """Whether the strategy may rank the parameter itself rather than ``orig * mask``.

    Dead entries are never selected, so their values only matter to scores
    that read neighbours (not elementwise) of a tensor already pruned.
    """
    return not state.pruned or method.elementwise_scores or not method.uses_importance_scores


def _ranked(method: UnstructuredStrategy, values: Tensor | None, state: TensorState) -> Tensor:
    """What the strategy ranks for one target, whole: as :func:`_source` scores it."""
    if values is not None:
        return values
    return state.orig if _orig_stands_for_values(method, state) else current_values(state)


def _source(
    method: UnstructuredStrategy,
    values: Tensor | None,
    state: TensorState,
    alive: Tensor | None,
    policy: MaskPolicy = NATIVE_POLICY,
) -> ScoreSource:
    """Scores of one target: of its importance scores if given, else of its current values.

    Scores are computed while the target is the current :class:`~pruneplug.ScoreTarget`
    (gradient-based scores read its parameter). An error raised scoring the
    target names it (see :func:`_blamed_for`).
    """
    with _blamed_for(state, policy):
        if values is not None:
            source = method.score_source(values, alive)
        elif _orig_stands_for_values(method, state):
            source = method.score_source(state.orig, alive)
        else:
            source = ScoreSource.whole(
                lambda: method.scores(current_values(state), None if alive is None else plain(alive)),
                state.orig.numel(),
                state.orig.device,
                alive,
            )

    def read() -> Tensor:
        with _blamed_for(state, policy), scoring(state.module, state.name, state.orig):
            values = source.read()
            if values.numel() != source.numel:  # (the selection checks too, but cannot name the target)
                raise ValueError(f"its scores have {values.numel()} entries but the tensor has {source.numel}")
            return values

    def score(part: Tensor, out: Tensor) -> Tensor:
        with _blamed_for(state, policy), scoring(state.module, state.name, state.orig):
            return source.score(part, out)  # type: ignore[misc]

    return dataclasses.replace(source, read=read, score=None if source.score is None else score)


def _rewind_all(method: UnstructuredStrategy, states: Sequence[TensorState]) -> tuple[Callable[[], None] | None, bool]:
    """``(rewind, keep_reads)`` for the strategy's scores over every device the targets live on.

    Random scores are re-read on every pass, so every device's random stream
    must be rewound between passes. Where one cannot be, the scores are read
    once and kept instead (more memory, same result).
    """
    if type(method).score_rewinder is UnstructuredStrategy.score_rewinder:
        return None, False  # deterministic scores: nothing to rewind
    devices = list(dict.fromkeys(state.orig.device for state in states))
    rewinders = [method.score_rewinder(device) for device in devices]
    if any(r is None for r in rewinders):
        return None, True

    def rewind() -> None:
        for one in rewinders:
            one()  # type: ignore[misc]

    return rewind, False


def _protects(method: torch_prune.BasePruningMethod) -> bool:
    """Whether ``method`` is an unstructured strategy that overrides :meth:`~UnstructuredStrategy.protected`."""
    return isinstance(method, UnstructuredStrategy) and type(method).protected is not UnstructuredStrategy.protected


def global_masks(
    states: Sequence[TensorState],
    method: torch_prune.BasePruningMethod,
    importance: Sequence[Tensor | None],
    alive: Sequence[Tensor | None],
    *,
    packed: Sequence[bool] | None = None,
    policy: MaskPolicy = NATIVE_POLICY,
    process_group: dist.ProcessGroup | None = None,
) -> list[Tensor]:
    """New bool masks for every target after pruning ``method.amount`` of their alive entries together.

    Args:
        states: where each target tensor stands.
        method: an unstructured strategy instance (its ``amount`` counts over all targets).
        importance: per target, importance scores or ``None`` (use the tensor's values).
        alive: per target, the bool mask of still-unpruned entries, or ``None`` if
            it was never pruned (saves allocating a mask of ones per target); a
            :class:`~pruneplug.PackedMask` is read a chunk at a time.
        packed: per target, whether to return its mask as a
            :class:`~pruneplug.PackedMask`, packed as soon as it is computed
            (so that unpacked masks are never all held at once).
        policy: ``TORCH_POLICY`` (:mod:`pruneplug.compat`) lets an exception
            a strategy raises scoring one target propagate as it is; by
            default it becomes a :class:`~pruneplug.StrategyFailedError`
            naming the target.
        process_group: select across its ranks (DTensor targets: the ranks
            of their mesh; plain targets: each rank's own tensors).

    Raises:
        IncompatibleStrategyError: the strategy's ``global_refusal()`` says
            its configuration selects within one tensor (per row, N:M).
    """
    refusal = method.global_refusal() if isinstance(method, UnstructuredStrategy) else None
    if refusal is not None:
        raise IncompatibleStrategyError(f"global pruning cannot use this configuration: {refusal}")
    if has_dtensors(states) or process_group is not None:
        return distributed_global_masks(states, method, importance, alive, packed=packed, process_group=process_group)
    kept: list[Tensor | None] = [None] * len(states)  # per target: its protected, still unpruned entries

    def finish(index: int, keep: Tensor) -> Tensor:
        shaped = keep.reshape(states[index].orig.shape)
        protected = kept[index]
        if protected is not None:
            shaped = shaped | protected  # the selection never saw them: they stay
        return PackedMask.pack(shaped) if packed is not None and packed[index] else shaped

    if fast_path(method) and isinstance(method, UnstructuredStrategy):
        method.prepare_global(
            [(values if values is not None else state.orig).dtype for state, values in zip(states, importance)]
        )
        total = sum(s.orig.numel() if a is None else int(a.count_nonzero()) for s, a in zip(states, alive))
        candidates = list(alive)
        for index, (state, values, live) in enumerate(zip(states, importance, alive) if _protects(method) else ()):
            with _blamed_for(state, policy):
                guard = checked_protected(method, _ranked(method, values, state))
            if guard is not None:  # (no full-size mask is made for targets with nothing protected)
                unpacked = None if live is None else plain(live)
                kept[index] = guard if unpacked is None else guard & unpacked
                candidates[index] = ~guard if unpacked is None else unpacked & ~guard
        protected = sum(int(k.count_nonzero()) for k in kept if k is not None)
        count = count_to_prune(method.amount, total, protected=protected, strategy=method_name(method))
        rewind, keep_reads = _rewind_all(method, states)
        if (rewind is not None or keep_reads) and 0 < count == total:
            for state, values, live in zip(states, importance, alive):
                _source(method, values, state, live, policy).read()  # torch draws even when everything goes
        sources = [
            _source(method, values, state, live, policy) for state, values, live in zip(states, importance, candidates)
        ]
        return keep_highest_across(
            sources, count, rewind=rewind, guess=method.score_window, keep_reads=keep_reads, finish=finish
        )
    if _protects(method):
        raise IncompatibleStrategyError(
            "the strategy protects entries but computes its own masks (compute_mask is overridden): prune_global "
            "would show it all targets as one flat tensor, where its protected() cannot be honoured; prune each "
            "tensor with pruneplug.prune, or leave compute_mask to UnstructuredStrategy"
        )
    # A strategy that only computes masks sees all targets as one flat tensor, as in torch.
    flat_values = torch.cat(
        [
            (values if values is not None else current_values(state)).detach().reshape(-1)
            for state, values in zip(states, importance)
        ]
    )
    flat_alive = torch.cat(
        [
            torch.ones(s.orig.numel(), dtype=torch.bool, device=s.orig.device) if live is None else live.reshape(-1)
            for s, live in zip(states, alive)
        ]
    )
    flat_new = combine_masks(method, flat_values, flat_alive)
    out = []
    offset = 0
    for index, state in enumerate(states):
        numel = state.orig.numel()
        # a copy, not a view: each mask must not keep the whole flat vector alive
        out.append(finish(index, flat_new[offset : offset + numel].to(torch.bool, copy=True)))
        offset += numel
    return out
