"""Structured pruning of one DTensor: slices chosen across the ranks, as one process chooses them.

:func:`pruneplug.prune` comes here for ``ln_structured``,
``random_structured`` and ``scored_structured`` (with an elementwise score)
on a DTensor on a 1-D mesh. The slices along ``dim``
are few (channels, rows), so every rank ends up holding one score per
slice, and then selects the same slices with the one-process selection
(:func:`~pruneplug.selection.exact.select_lowest_slices`: a stable sort,
ties to the lower index):

* ``Replicate``: each rank scores the whole tensor it holds;
* ``Shard(dim)``: each slice lives on one rank, which scores it exactly as
  one process does; the scores are all-gathered (4 bytes per slice);
* ``Shard(d)``, ``d != dim``: each rank holds a part of every slice. The
  L``n`` norm is combined from per-rank parts all-reduced over the ranks
  (``max``/``min`` for ``n = ±inf``, counts for ``n = 0``, and sums of
  ``|x|^n`` in float64 otherwise). Sums can differ from one process's
  norms in their last bits, so the few slices whose order they leave in
  doubt are gathered and scored as one process scores them
  (:mod:`pruneplug.api.structured_boundary`): the choice is one process's;
* ``scored_structured`` scores a rank's entries itself (its score must be
  elementwise) and reduces them per slice as one process does; along an
  unsharded dim only ``reduce="max"`` is exact (all-reduced max), sums and
  means are refused;
* ``random_structured`` draws one number per alive slice, as one process
  does, on every rank from its own generator, after checking that every
  rank's generator is in the same state.

Which slices are still alive is combined the same way (a slice is alive if
any rank holds an unpruned entry of it), so repeated pruning counts the
amount over the alive slices, as in one process.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.tensor import DTensor, Replicate, Shard

from ..core.state import TensorState, default_alive
from ..errors import IncompatibleStrategyError
from ..selection.amount import count_to_prune
from ..selection.exact import select_lowest_slices
from ..selection.slices import alive_slices, normalize_dim
from ..strategies import LnStructured, RandomStructured, ScoredStructured, StructuredStrategy
from .global_distributed import misplaced_scores
from .random_distributed import check_same_generator
from .structured_boundary import norm_bounds, settle_lowest_slices

__all__ = ["distributed_structured_mask"]


def _refusal(state: TensorState, method: StructuredStrategy, importance: Tensor | None) -> str | None:
    tensor = cast(DTensor, state.orig)
    if type(method) not in (LnStructured, RandomStructured, ScoredStructured):
        return (
            f"{type(method).__name__} scores slices its own way; "
            "ln_structured, random_structured and scored_structured are supported"
        )
    if isinstance(method, ScoredStructured):
        refusal = _scored_refusal(tensor, method)
        if refusal is not None:
            return refusal
    if method.prune_bias:
        return "prune_bias is not supported across ranks yet; prune the bias on its own"
    if tensor.device_mesh.ndim != 1:
        return "structured pruning across ranks needs a 1-D mesh"
    if isinstance(method, LnStructured) and method.n == "nuc":
        return "the nuclear norm of a slice cannot be combined from the ranks' parts"
    return misplaced_scores(state, importance)


def _scored_refusal(tensor: DTensor, method: ScoredStructured) -> str | None:
    """Why ``scored_structured`` cannot prune ``tensor`` across ranks as one process does, or ``None``."""
    if not method.elementwise_scores:
        return f"score {method.score!r} is not elementwise, so a rank cannot score its shard alone"
    placement = tensor.placements[0] if tensor.placements else None
    dim = normalize_dim(method.dim, tensor.dim())
    across = isinstance(placement, Shard) and placement.dim != dim
    if across and method.reduce != "max":
        return (
            f"reduce={method.reduce!r} along an unsharded dim would add float32 scores in another order than one "
            "process (its masks could differ); prune along the sharded dim, or use reduce='max'"
        )
    return None


def _combined_max(local: Tensor, dim: int, method: ScoredStructured, group: dist.ProcessGroup) -> Tensor:
    """Per slice along ``dim``, the max of its entries' scores over every rank's part (exact, as one process's)."""
    if local.numel() == 0:  # (an uneven split can leave a rank no entries: the neutral part)
        part = torch.full((local.shape[dim],), -math.inf, dtype=torch.float32, device=local.device)
    else:
        part = method.slice_scores(local, dim, None)
    dist.all_reduce(part, op=dist.ReduceOp.MAX, group=group)
    return part


def _gathered(local: Tensor, mesh: object, length: int) -> Tensor:
    """The whole vector whose rows ``local`` holds, this rank's share of a ``Shard(0)`` split."""
    vector = DTensor.from_local(local, mesh, [Shard(0)], run_check=False, shape=(length,), stride=(1,))  # type: ignore[arg-type]
    return vector.full_tensor()


def _combined_parts(local: Tensor, dim: int, order: float, group: dist.ProcessGroup) -> Tensor:
    """Per slice along ``dim``, from every rank's part of it (all-reduced, float64): the max or min of ``|x|``
    (``order = ±inf``), the count of nonzeros (``0``), or the sum of ``|x|^order``."""
    others = [d for d in range(local.dim()) if d != dim]
    values = local.detach().abs().to(torch.float64)
    empty = values.numel() == 0  # (an uneven split can leave a rank no entries; max and min need a neutral part)
    if order == float("inf"):
        part = values.new_zeros(local.shape[dim]) if empty else values.amax(dim=others) if others else values
        op = dist.ReduceOp.MAX
    elif order == float("-inf"):
        part = (
            values.new_full((local.shape[dim],), math.inf) if empty else values.amin(dim=others) if others else values
        )
        op = dist.ReduceOp.MIN
    elif order == 0:
        part, op = (values != 0).sum(dim=others, dtype=torch.float64), dist.ReduceOp.SUM
    else:
        part, op = values.pow(order).sum(dim=others), dist.ReduceOp.SUM
    dist.all_reduce(part, op=op, group=group)
    return part


def _lowest_by_combined_norms(
    scored: Tensor,
    tensor: DTensor,
    dim: int,
    method: LnStructured,
    count: int,
    alive: Tensor,
    group: dist.ProcessGroup,
) -> Tensor:
    """The slices one process prunes, from norms combined from every rank's part of each slice.

    Max, min and counts combine exactly; sums of ``|x|^n`` do not, so the
    slices whose order they leave in doubt are scored again from their
    gathered entries (:mod:`pruneplug.api.structured_boundary`).
    """
    order = 2.0 if method.n == "fro" else float(method.n)
    parts = _combined_parts(scored, dim, order, group)
    if order in (0.0, float("inf"), float("-inf")):
        return select_lowest_slices(parts.to(scored.dtype), count, alive)
    approximate = parts.pow(1.0 / order)
    if not scored.dtype.is_floating_point:  # (torch.norm refuses integer tensors in one process as well)
        return select_lowest_slices(approximate.to(scored.dtype), count, alive)
    low, high = norm_bounds(parts, order, tensor.numel() // max(tensor.shape[dim], 1), scored.dtype)

    def exact_scores(indices: Tensor) -> Tensor:
        shape = list(tensor.shape)
        shape[dim] = indices.numel()
        part = scored.index_select(dim, indices.to(scored.device)).contiguous()
        slices = DTensor.from_local(
            part,
            tensor.device_mesh,
            tensor.placements,
            run_check=False,
            shape=torch.Size(shape),
            stride=_contiguous(shape),
        )
        return method.slice_scores(slices.full_tensor(), dim, None)

    pruned, _ = settle_lowest_slices(approximate, low, high, count, alive, exact_scores)
    return pruned


def _contiguous(shape: list[int]) -> tuple[int, ...]:
    """The strides of a contiguous tensor of ``shape``."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def distributed_structured_mask(state: TensorState, method: StructuredStrategy, importance: Tensor | None) -> Tensor:
    """The new bool DTensor mask of ``state``'s tensor after ``method`` prunes slices of it across the ranks.

    Every rank of the tensor's mesh calls this with the same strategy.

    Raises:
        IncompatibleStrategyError: the strategy, mesh or scores are not
            supported (raised on every rank alike, before any collective).
    """
    refusal = _refusal(state, method, importance)
    if refusal is not None:
        raise IncompatibleStrategyError(f"structured pruning of a DTensor: {refusal}")
    tensor = cast(DTensor, state.orig)
    mesh = tensor.device_mesh
    group = mesh.get_group()
    placement = tensor.placements[0]
    dim = normalize_dim(method.dim, tensor.dim())
    length = tensor.shape[dim]
    scored = cast(DTensor, importance if importance is not None else tensor).to_local().detach()
    mask = default_alive(state)
    local_mask = mask.to_local() if isinstance(mask, DTensor) else mask
    local_alive = alive_slices(local_mask, dim)
    if isinstance(placement, Replicate):
        alive = local_alive
    elif isinstance(placement, Shard) and placement.dim == dim:
        alive = _gathered(local_alive, mesh, length)
    else:
        flags = local_alive.to(torch.int64)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=group)
        alive = flags.bool()
    count = count_to_prune(method.amount, int(alive.count_nonzero()), unit=f"slices along dim {dim}")
    if count == 0:  # (the same count on every rank: none goes on to a collective alone)
        return DTensor.from_local(
            local_mask.clone(), mesh, tensor.placements, run_check=False, shape=tensor.shape, stride=tensor.stride()
        )
    scores: Tensor | None
    if isinstance(method, RandomStructured):
        check_same_generator(method.generator, group, "random_structured")
        scores = method.slice_scores(torch.empty(tensor.shape, device="meta"), dim, alive)
    elif isinstance(placement, Replicate):
        scores = method.slice_scores(scored, dim, alive)
    elif isinstance(placement, Shard) and placement.dim == dim:
        scores = _gathered(method.slice_scores(scored, dim, None), mesh, length)
    else:
        scores = None
    if scores is None and isinstance(method, ScoredStructured):
        scores = _combined_max(scored, dim, method, group)  # (the only reduce _refusal lets through here)
    if scores is None:
        pruned = _lowest_by_combined_norms(scored, tensor, dim, cast(LnStructured, method), count, alive, group)
    else:
        pruned = select_lowest_slices(scores, count, alive)
    if isinstance(placement, Shard) and placement.dim == dim:
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        shape, offset = compute_local_shape_and_global_offset(tensor.shape, mesh, tensor.placements)
        pruned = pruned[offset[dim] : offset[dim] + shape[dim]]
    survivors = (~pruned).to(local_mask.device).reshape([-1 if d == dim else 1 for d in range(tensor.dim())])
    return DTensor.from_local(
        local_mask & survivors,
        mesh,
        tensor.placements,
        run_check=False,
        shape=tensor.shape,
        stride=tensor.stride(),
    )
