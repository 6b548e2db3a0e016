"""Global pruning of DTensor parameters: each rank scores its shard, the selection runs across ranks.

:func:`pruneplug.api.global_masks.global_masks` comes here when its targets
are DTensors (tensor parallelism, FSDP2's ``fully_shard``). Each rank scores
the local shard of every target, counts and selects with
:func:`pruneplug.selection.distributed.keep_highest_across_distributed` (only
counts are all-reduced, never scores or weights), and gets its masks back as
DTensors placed like the targets: the same masks, gathered, as one process
computes on the unsharded tensors.

What is supported: unstructured strategies whose scores are elementwise
(``l1_unstructured``, a plugin's with ``elementwise_scores``), every target
a DTensor on one mesh with ``Shard(d)``/``Replicate`` placements; masks
bool or bit-packed (each rank packs its shard).
Anything else is refused on every rank before any collective is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import cast

import torch.distributed as dist
from torch import Tensor
from torch.distributed.tensor import DTensor
from torch.nn.utils import prune as torch_prune

from ..core.fast_path import fast_path
from ..core.hook import method_name
from ..core.state import TensorState
from ..errors import DistributedSelectionError, IncompatibleStrategyError, InvalidParametersError
from ..selection.amount import count_to_prune
from ..selection.distributed import (
    DEFAULT_TIMEOUT,
    LocalScores,
    count_alive_distributed,
    keep_highest_across_distributed,
)
from ..storage.packed import plain
from ..strategies import CustomFromMask, Identity, RandomUnstructured, UnstructuredStrategy
from .random_distributed import check_same_generator, local_draws
from .stages_distributed import stage_global_masks

__all__ = [
    "check_mesh_group",
    "check_process_group",
    "distributed_global_masks",
    "has_dtensors",
    "is_dtensor_target",
    "mask_given",
    "misplaced_scores",
]


def has_dtensors(states: Sequence[TensorState]) -> bool:
    """Whether any target is a DTensor (then every target must be one)."""
    return any(isinstance(state.orig, DTensor) for state in states)


def is_dtensor_target(module: object, name: object) -> bool:
    """Whether ``module.<name>`` (or its ``_orig``) is a DTensor parameter; ``False`` for anything malformed."""
    parameters = getattr(module, "_parameters", None)
    if not isinstance(parameters, dict) or not isinstance(name, str):
        return False
    return isinstance(parameters.get(f"{name}_orig", parameters.get(name)), DTensor)


def mask_given(method: torch_prune.BasePruningMethod) -> bool:
    """Whether ``method``'s mask is given to it (``custom_from_mask``, ``identity``): DTensor ops compute it."""
    return isinstance(method, (CustomFromMask, Identity))


def _refusal(
    states: Sequence[TensorState],
    method: torch_prune.BasePruningMethod,
    importance: Sequence[Tensor | None],
    alive: Sequence[Tensor | None],
) -> str | None:
    """Why these targets cannot be pruned together across ranks, or ``None``."""
    sharded = [isinstance(state.orig, DTensor) for state in states]
    if any(sharded) and not all(sharded):
        plain = [f"{s.module_type}.{s.name}" for s in states if not isinstance(s.orig, DTensor)]
        return f"some targets are DTensors and some are not ({', '.join(plain)}); shard all or none"
    if any(sharded):
        first = states[0].orig.device_mesh  # type: ignore[attr-defined]
        # (equal meshes, not one object: FSDP2 makes a mesh per fully_shard call, all over the same ranks)
        if any(state.orig.device_mesh != first for state in states):  # type: ignore[attr-defined]
            return "the targets are on different device meshes; put them on one"
    if not (isinstance(method, UnstructuredStrategy) and fast_path(method)):
        return "the strategy computes its own masks from whole tensors, which no rank holds"
    random = type(method).score_rewinder is not UnstructuredStrategy.score_rewinder
    if random and not any(sharded):
        return (
            "random scores are not supported for plain tensors held by different ranks "
            "(their draws would depend on how the model is split)"
        )
    if type(method) is RandomUnstructured:
        if states[0].orig.device_mesh.ndim != 1:  # type: ignore[attr-defined]
            return "random_unstructured across ranks needs a 1-D mesh"
    elif random:
        return "random scores other than random_unstructured's are not supported across ranks"
    if not method.elementwise_scores and type(method) is not RandomUnstructured:  # (its draws are made below)
        return "the strategy's scores are not elementwise, so a rank cannot score its shard alone"
    if type(method).protected is not UnstructuredStrategy.protected:
        return "the strategy protects entries, which is not supported across ranks yet"
    for state, values in zip(states, importance, strict=True):
        misplaced = misplaced_scores(state, values)
        if misplaced is not None:
            return misplaced
    return None


def misplaced_scores(state: TensorState, values: Tensor | None) -> str | None:
    """Why ``values``, importance scores of a DTensor target, cannot be scored shard by shard, or ``None``."""
    if values is None or (isinstance(values, DTensor) and values.placements == state.orig.placements):  # type: ignore[attr-defined]
        return None
    return f"the importance scores of {state.module_type}.{state.name} must be a DTensor placed like it"


def check_mesh_group(mesh: object, given: dist.ProcessGroup | None) -> None:
    """Raise unless ``given`` (if any) holds exactly the ranks of ``mesh``."""
    if given is None:
        return
    ranks = sorted(mesh.mesh.flatten().tolist())  # type: ignore[attr-defined]
    held = sorted(dist.get_process_group_ranks(given))
    if held != ranks:
        raise InvalidParametersError(
            f"process_group holds the ranks {held}, the targets' device mesh the ranks {ranks}: pass a group "
            "of exactly the mesh's ranks, or none (the mesh's own is used)"
        )


def _group(mesh: object, given: dist.ProcessGroup | None) -> dist.ProcessGroup | None:
    """The group of every rank of ``mesh``: ``given`` if it holds exactly those ranks, else the mesh's own
    for a 1-D mesh, the world's for a mesh over the world."""
    if given is not None:
        check_mesh_group(mesh, given)
        return given
    if mesh.ndim == 1:  # type: ignore[attr-defined]
        return mesh.get_group()  # type: ignore[attr-defined, no-any-return]
    if mesh.size() != dist.get_world_size():  # type: ignore[attr-defined]
        raise IncompatibleStrategyError(
            "a mesh of more than one dim must span every rank of the default group to prune across it, "
            "or pass process_group= holding exactly its ranks"
        )
    return None


def check_process_group(process_group: object) -> dist.ProcessGroup | None:
    """``process_group`` as a user passed it: ``None``, or a group of an initialized ``torch.distributed``."""
    if process_group is None:
        return None
    if not dist.is_available() or not dist.is_initialized():
        raise DistributedSelectionError(
            "process_group was given but torch.distributed is not initialized: call init_process_group first"
        )
    if not isinstance(process_group, dist.ProcessGroup):
        raise InvalidParametersError(
            f"process_group must be a torch.distributed.ProcessGroup (or None), got {type(process_group).__name__}"
        )
    return process_group


def distributed_global_masks(
    states: Sequence[TensorState],
    method: torch_prune.BasePruningMethod,
    importance: Sequence[Tensor | None],
    alive: Sequence[Tensor | None],
    *,
    packed: Sequence[bool] | None = None,
    alone: bool = False,
    process_group: dist.ProcessGroup | None = None,
) -> list[Tensor]:
    """New bool masks after pruning ``method.amount`` of the targets' entries across ranks.

    DTensor targets get DTensor masks placed like them, selected over the
    ranks of their mesh (``process_group``, if given, must hold exactly
    those). Plain targets with a ``process_group`` are each rank's own
    tensors (see :mod:`pruneplug.api.stages_distributed`).

    ``packed[i]``: target ``i``'s mask is bit-packed (each rank's shard a
    :class:`~pruneplug.PackedMask`). ``alive[i]`` may be packed alike: it
    is read a chunk at a time. ``alone``: the one target is pruned by
    :func:`pruneplug.prune` (errors say so), not ``prune_global``.

    Every rank of the targets' mesh must call this (through
    :func:`pruneplug.prune_global`) with the same targets and amount.

    Raises:
        IncompatibleStrategyError: what :func:`_refusal` names (raised on
            every rank alike, since the ranks hold the same strategy and
            targets).
        DistributedSelectionError: the ranks disagree or a collective fails.
    """
    refusal = _refusal(states, method, importance, alive)
    if refusal is not None:
        sharded = has_dtensors(states)
        what = ("pruning a DTensor" if alone else "global pruning of DTensors") if sharded else "pruning across ranks"
        raise IncompatibleStrategyError(f"{what}: {refusal}")
    method = cast(UnstructuredStrategy, method)  # (checked by _refusal)
    pack = [bool(packed is not None and packed[index]) for index in range(len(states))]
    if not has_dtensors(states):
        assert process_group is not None  # (plain targets come here only with a group)
        return stage_global_masks(states, method, importance, alive, pack, process_group, timeout=DEFAULT_TIMEOUT)
    tensors: list[DTensor] = [state.orig for state in states]  # type: ignore[misc]
    group = _group(tensors[0].device_mesh, process_group)
    method.prepare_global([(values if values is not None else t).dtype for t, values in zip(tensors, importance)])
    random = method if isinstance(method, RandomUnstructured) else None
    if random is not None:
        check_same_generator(random.generator, group, method_name(method))
    shards = []
    for tensor, values, live in zip(tensors, importance, alive, strict=True):
        local = cast(DTensor, values if values is not None else tensor).to_local().detach()
        local_alive = live.to_local() if isinstance(live, DTensor) else live
        shards.append(
            LocalScores.shard_of(tensor, local, local_alive, score=None if random is not None else method.scores_into)
        )
    total = count_alive_distributed(shards, group)
    count = count_to_prune(method.amount, total, strategy=method_name(method))
    if random is not None and count:  # (one process draws nothing when it prunes nothing)
        dtype = random.draw_dtype or tensors[0].dtype
        draws = local_draws(tensors, [shard.alive for shard in shards], random, dtype, group)
        shards = [replace(shard, scores=values.neg_()) for shard, values in zip(shards, draws, strict=True)]
    # (packed a chunk at a time as the selection makes them: no whole bool shard is held)
    selection = keep_highest_across_distributed(shards, count, group, pack=any(pack))
    return [
        DTensor.from_local(
            keep if wanted else plain(keep),
            tensor.device_mesh,
            tensor.placements,
            run_check=False,
            shape=tensor.shape,
            stride=tensor.stride(),
        )
        for tensor, keep, wanted in zip(tensors, selection.keep, pack, strict=True)
    ]
