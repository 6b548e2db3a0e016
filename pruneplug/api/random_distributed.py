"""``random_unstructured`` across ranks: each rank's part of the very draws one process makes.

One process draws one uniform number per alive entry, target after target,
in row-major order, from one generator (torch's, or the strategy's), and
prunes the largest draws. Across ranks, every rank runs through that same
sequence of draws, a chunk (2^20 draws) at a time, and keeps the ones that
fall on its own shard: so the masks are one process's, bit for bit, for any
number of ranks and any sharding, and every rank's generator ends where one
process's would. The price is time: each rank draws for all the targets,
while it holds only its own shard's draws and one chunk.

Where a rank's entries fall in the sequence follows from how many alive
entries each rank holds in each run of the row-major order (for
``Shard(d)``: per index over the dims before ``d``); those counts are
all-gathered, 8 bytes per run and rank.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.tensor import DTensor, Replicate, Shard

from ..errors import IncompatibleStrategyError
from ..strategies import RandomUnstructured

__all__ = ["CHUNK", "check_same_generator", "local_draws"]

#: How many draws are made at a time.
CHUNK = 1 << 20


def check_same_generator(generator: torch.Generator | None, group: dist.ProcessGroup | None, strategy: str) -> None:
    """Raise on every rank unless ``generator`` (``None``: torch's global one) is in the same state on all of them."""
    state = (generator.get_state() if generator is not None else torch.get_rng_state()).numpy()
    digest = int.from_bytes(hashlib.blake2b(state.tobytes(), digest_size=7).digest(), "little")
    seen = torch.tensor([digest, -digest], dtype=torch.int64)
    dist.all_reduce(seen, op=dist.ReduceOp.MAX, group=group)
    if int(seen[0]) != digest or int(seen[1]) != -digest:
        where = "the strategy's generator" if generator is not None else "torch's global generator"
        raise IncompatibleStrategyError(f"{strategy} across ranks: {where} is not in the same state on every rank")


def _runs(tensor: DTensor, local_alive: Tensor | None, group: dist.ProcessGroup | None) -> tuple[Tensor, Tensor, int]:
    """``(start, count)`` of each run of this rank's alive entries in the target's order of draws, and their total.

    A run is a stretch of the target's row-major order that this rank holds:
    the whole shard for ``Replicate``, one per index over the dims before
    ``d`` for ``Shard(d)``.
    """
    placement = tensor.placements[0]
    local = tensor.to_local()
    if isinstance(placement, Replicate):
        count = local.numel() if local_alive is None else int(local_alive.count_nonzero())
        return torch.zeros(1, dtype=torch.int64), torch.tensor([count], dtype=torch.int64), count
    assert isinstance(placement, Shard)
    outer = math.prod(tensor.shape[: placement.dim])
    if local_alive is None:
        counts = torch.full((outer,), local.numel() // max(outer, 1), dtype=torch.int64)
    else:
        counts = local_alive.reshape(outer, -1).sum(dim=1, dtype=torch.int64)
    gathered = [torch.empty_like(counts) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, counts, group=group)
    every = torch.stack(gathered)  # [rank, run]: within a run, the ranks' shards follow each other in rank order
    per_run = every.sum(dim=0)
    start = torch.cumsum(per_run, 0) - per_run + every[: dist.get_rank(group)].sum(dim=0)
    return start, counts, int(per_run.sum())


def local_draws(
    tensors: Sequence[DTensor],
    alive: Sequence[Tensor | None],
    method: RandomUnstructured,
    dtype: torch.dtype,
    group: dist.ProcessGroup | None,
) -> list[Tensor]:
    """Per target, this rank's draws laid out like its local shard (0 where dead), from the whole sequence.

    ``alive``: per target, this rank's local bool mask of alive entries or
    ``None`` (all). Every rank of ``group`` calls this with the same targets.
    """
    generator = method.generator
    out: list[Tensor] = []
    for tensor, live in zip(tensors, alive, strict=True):
        start, counts, total_all = _runs(tensor, live, group)
        values = torch.empty(int(counts.sum()), dtype=dtype)
        kept_before = torch.cumsum(counts, 0) - counts  # where each run's draws go in ``values``
        run = 0
        for first in range(0, total_all, CHUNK):
            last = min(first + CHUNK, total_all)
            chunk = torch.rand(last - first, dtype=dtype, generator=generator)
            while run < counts.numel() and int(start[run]) < last:
                begin, end = int(start[run]), int(start[run]) + int(counts[run])
                lo, hi = max(begin, first), min(end, last)
                if lo < hi:
                    at = int(kept_before[run]) + lo - begin
                    values[at : at + hi - lo] = chunk[lo - first : hi - first]
                if end > last:
                    break  # the run goes on into the next chunk
                run += 1
        local = tensor.to_local()
        if live is None:
            out.append(values.reshape(local.shape).to(local.device))
        else:
            laid_out = torch.zeros(local.shape, dtype=dtype, device=local.device)
            laid_out[live] = values.to(local.device)
            out.append(laid_out)
    return out
