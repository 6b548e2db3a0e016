"""Global pruning of plain tensors that different ranks hold: one selection over all of them.

Pipeline parallelism gives each rank other layers of one model (its
stage), as plain tensors. ``prune_global(..., process_group=group)`` on
every rank of ``group``, each with its own targets, prunes the lowest
entries of the whole model: the ranks exchange the sizes of their targets
once, then each scores only its own, and
:func:`pruneplug.selection.distributed.keep_highest_across_distributed`
selects over the targets of every rank in rank order (each target seen as
a flat tensor that the other ranks hold no part of). The masks are those
one process computes with ``prune_global`` over all the ranks' targets,
those of rank 0 first.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

from ..core.hook import method_name
from ..core.state import TensorState
from ..errors import DistributedSelectionError
from ..selection.amount import count_to_prune
from ..selection.distributed import LocalScores, count_alive_distributed, keep_highest_across_distributed
from ..storage.packed import PackedMask, flat_mask
from ..strategies import UnstructuredStrategy

__all__ = ["stage_global_masks"]


def _exchange(
    group: dist.ProcessGroup, mine: tuple[str, list[int], list[str]]
) -> list[tuple[str, list[int], list[str]]]:
    """Every rank's ``(what it prunes, its targets' sizes, their dtypes)``, in the group's rank order."""
    gathered: list[tuple[str, list[int], list[str]] | None] = [None] * dist.get_world_size(group)
    try:
        dist.all_gather_object(gathered, mine, group=group)
    except (RuntimeError, dist.DistBackendError) as error:
        raise DistributedSelectionError(f"the ranks could not exchange their targets' sizes: {error}") from error
    return [item for item in gathered if item is not None]


def stage_global_masks(
    states: Sequence[TensorState],
    method: UnstructuredStrategy,
    importance: Sequence[Tensor | None],
    alive: Sequence[Tensor | None],
    packed: Sequence[bool],
    group: dist.ProcessGroup,
    *,
    timeout: timedelta,
) -> list[Tensor]:
    """This rank's new masks after pruning ``method.amount`` of the alive entries of every rank's targets.

    ``states`` are this rank's targets (plain tensors). Every rank of
    ``group`` must call this, with its own targets and the same strategy and
    amount; a rank with no targets passes none.

    The caller has checked that the strategy scores each entry on its own,
    without random draws.

    Raises:
        DistributedSelectionError: the ranks prune with other strategies or
            amounts, or a collective fails.
    """
    what = f"{method_name(method)}(amount={method.amount!r})"
    dtypes = [str((values if values is not None else state.orig).dtype) for state, values in zip(states, importance)]
    ranks = _exchange(group, (what, [state.orig.numel() for state in states], dtypes))
    differing = sorted({strategy for strategy, _, _ in ranks})
    if len(differing) > 1:
        raise DistributedSelectionError(
            f"the ranks prune with different strategies or amounts ({', '.join(differing)}); nothing was pruned"
        )
    every_dtype = [getattr(torch, name.removeprefix("torch.")) for _, _, names in ranks for name in names]
    if every_dtype:
        method.prepare_global(every_dtype)
    me = dist.get_rank(group)
    shards: list[LocalScores] = []
    mine: list[int] = []
    for rank, (_, sizes, _) in enumerate(ranks):
        for index, size in enumerate(sizes):
            if rank != me:  # a target only another rank holds: an empty part of it here
                shards.append(LocalScores(torch.empty(0), (size,), (0,)))
                continue
            state, values, live = states[index], importance[index], alive[index]
            scores = (values if values is not None else state.orig).detach().reshape(-1)
            local_alive = None if live is None else flat_mask(live)
            mine.append(len(shards))
            shards.append(LocalScores(scores, (size,), (0,), local_alive, score=method.scores_into))
    total = count_alive_distributed(shards, group, timeout=timeout)
    count = count_to_prune(method.amount, total, strategy=method_name(method))
    selection = keep_highest_across_distributed(shards, count, group, timeout=timeout, pack=any(packed))
    masks: list[Tensor] = []
    for state, position, pack in zip(states, mine, packed, strict=True):
        keep = selection.keep[position]
        if isinstance(keep, PackedMask):
            masks.append(PackedMask(keep.packed, state.orig.shape) if pack else keep.unpack().reshape(state.orig.shape))
        else:
            masks.append(keep.reshape(state.orig.shape))
    return masks
