"""Tests of the selection across ranks (``pruneplug.selection.distributed``) on 2 and 4 gloo processes.

Each test runs a scenario on several gloo processes (``tests/ranks.py``,
through the ``run_ranks`` fixture): every rank builds
the same random global scores from a seeded ``torch.Generator``, takes its
shard, selects, and checks its masks against the matching slice of the
one-process :func:`~pruneplug.selection.exact.keep_highest_across` on the
whole tensors.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from torch import Tensor

import pruneplug.selection.distributed as distributed
from pruneplug.errors import DistributedSelectionError, InvalidAmountError, InvalidMaskError
from pruneplug.selection.distributed import (
    LocalScores,
    keep_highest_across_distributed,
    select_lowest_distributed,
)
from pruneplug.selection.exact import ScoreSource, keep_highest_across
from pruneplug.storage.packed import PackedMask

SEEDS = 12
RunRanks = Callable[[str | Path, str, int], None]


# --- the scenarios (run in each rank) ---------------------------------------------------


def global_sources(gen: torch.Generator, mixed_dtypes: bool) -> list[tuple[Tensor, Tensor]]:
    """Scores with many ties, NaN, +-inf and -0.0, and alive masks, the same on every rank."""
    shapes = [(7, 5), (3, 11), (9, 2, 3), (1, 6)]
    dtypes = [torch.float16, torch.float32, torch.int32, torch.float32] if mixed_dtypes else [torch.float32] * 4
    sources = []
    for shape, dtype in zip(shapes, dtypes, strict=True):
        values = torch.randint(-3, 4, shape, generator=gen).to(torch.float64) / 2
        if dtype.is_floating_point:
            draw = torch.rand(shape, generator=gen)
            values[draw < 0.1] = math.nan
            values[(draw >= 0.1) & (draw < 0.15)] = math.inf
            values[(draw >= 0.15) & (draw < 0.2)] = -math.inf
            values[(draw >= 0.2) & (draw < 0.3)] = -0.0
        else:
            values = values * 2
        alive = torch.rand(shape, generator=gen) > 0.25
        sources.append((values.to(dtype), alive))
    return sources


def cut(size: int, world: int, gen: torch.Generator) -> list[int]:
    """Uneven bounds of ``world`` ranges covering ``range(size)`` (some may be empty)."""
    points = sorted(torch.randint(0, size + 1, (world - 1,), generator=gen).tolist())
    return [0, *points, size]


def shard_of(
    values: Tensor, alive: Tensor, dim: int | None, bounds: list[int], rank: int
) -> tuple[LocalScores, tuple[slice, ...]]:
    """This rank's shard along ``dim`` (``None``: replicated, counted on rank 0 only) and its slice."""
    if dim is None:
        return LocalScores.unsharded(values, alive, counted=rank == 0), (slice(None),) * values.dim()
    box = [slice(None)] * values.dim()
    box[dim] = slice(bounds[rank], bounds[rank + 1])
    offset = [0] * values.dim()
    offset[dim] = bounds[rank]
    local = LocalScores(values[tuple(box)], tuple(values.shape), tuple(offset), alive[tuple(box)])
    return local, tuple(box)


def magnitude(values: Tensor, out: Tensor) -> Tensor:
    return torch.abs(values, out=out) if values.dtype == out.dtype else values.abs()


def reference(sources: list[tuple[Tensor, Tensor]], k: int) -> list[Tensor]:
    whole = [ScoreSource.whole(lambda v=v: v, v.numel(), v.device, a) for v, a in sources]
    return [keep.reshape(v.shape) for keep, (v, _) in zip(keep_highest_across(whole, k), sources, strict=True)]


def scenario_random(rank: int, world: int) -> None:
    """Random scores sharded on dim 0, dim 1 or replicated, uneven; masks equal the one-process slices.

    Odd seeds read the shards in chunks of 8 entries and never hold the
    candidates until the last pass, as big shards do; every third seed
    gives the alive masks bit-packed (read a chunk at a time). Packed masks
    (``pack=True``, packed a chunk at a time) unpack to the same masks.
    """
    for seed in range(SEEDS):
        small = (8, 8, 1 << 40) if seed % 2 else (1 << 14, 1 << 18, 64)
        distributed._MIN_CHUNK, distributed._MAX_CHUNK, distributed._HOLD_FRACTION = small
        gen = torch.Generator().manual_seed(seed)
        sources = global_sources(gen, mixed_dtypes=seed % 4 == 3)
        total = sum(int(alive.sum()) for _, alive in sources)
        k = [0, total, 1][seed] if seed < 3 else int(torch.randint(0, total + 1, (1,), generator=gen))
        shards, boxes = [], []
        for values, alive in sources:
            dim = [0, 1, None][int(torch.randint(0, 3, (1,), generator=gen))]
            bounds = cut(values.shape[dim], world, gen) if dim is not None else []
            shard, box = shard_of(values, alive, dim, bounds, rank)
            shards.append(shard)
            boxes.append(box)
        if seed % 2:  # scored a chunk at a time from the values, as prune_global scores |w|
            shards = [dataclasses.replace(shard, score=magnitude) for shard in shards]
        if seed % 3 == 1:  # alive masks as bit-packed shards (prune_global over packed masks)
            shards = [dataclasses.replace(shard, alive=PackedMask.pack(shard.alive)) for shard in shards]
        bits = (16, 8, 5)[seed % 3]
        selection = keep_highest_across_distributed(shards, k, bits=bits, timeout=timedelta(seconds=30))
        expected = reference([(v.abs(), a) if seed % 2 else (v, a) for v, a in sources], k)
        for index, (keep, box) in enumerate(zip(selection.keep, boxes, strict=True)):
            if not torch.equal(keep, expected[index][box]):
                raise AssertionError(f"seed {seed}, k {k}, source {index}: {keep} != {expected[index][box]}")
        packed = keep_highest_across_distributed(shards, k, bits=bits, pack=True).keep
        for index, (keep, box) in enumerate(zip(packed, boxes, strict=True)):
            if not isinstance(keep, PackedMask) or not torch.equal(keep.unpack(), expected[index][box]):
                raise AssertionError(f"seed {seed}, k {k}, source {index}: the packed masks differ")
        lowest = select_lowest_distributed(shards, k, bits=bits)
        for index, (selected, (_, alive), box) in enumerate(zip(lowest, sources, boxes, strict=True)):
            if not torch.equal(selected, alive[box] & ~expected[index][box]):
                raise AssertionError(f"seed {seed}, source {index}: select_lowest_distributed is not the complement")
        key_bits = 64 if seed % 4 == 3 else 32
        position_bits = max(1, (sum(v.numel() for v, _ in sources) - 1).bit_length())
        # each pass's counts carry one more entry, whether a rank failed; a last 8-byte status ends the call
        expected_bytes = {14 * 8 + (2 ** min(bits, key_bits) + 1) * 8}  # k is 0 or all: one count shows it
        if k not in (0, total):
            passes = sum((2 ** min(bits, key_bits - start) + 1) * 8 for start in range(0, key_bits, bits))
            key_counts = 14 * 8 + passes + 8
            ties = sum((2 ** min(bits, position_bits - start) + 1) * 8 for start in range(0, position_bits, bits))
            expected_bytes = {key_counts, key_counts + ties}  # ties split or not
        if selection.bytes_communicated not in expected_bytes:
            raise AssertionError(f"seed {seed}: {selection.bytes_communicated} bytes, expected {expected_bytes}")


def scenario_dtensor(rank: int, world: int) -> None:
    """Scores held as DTensors (1-D and, on 4 ranks, 2-D meshes; Shard and Replicate): the same masks."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    line = init_device_mesh("cpu", (world,))  # each mesh made once: a mesh costs new groups on every rank
    layouts = [(line, [Shard(0)]), (line, [Shard(1)]), (line, [Replicate()])]
    if world == 4:
        square = init_device_mesh("cpu", (2, 2))
        layouts += [(square, [Shard(0), Shard(1)]), (square, [Replicate(), Shard(0)]), (square, [Shard(1), Shard(1)])]
    for seed, (mesh, placements) in enumerate(layouts):
        gen = torch.Generator().manual_seed(100 + seed)
        sources = global_sources(gen, mixed_dtypes=False)[:2]
        total = sum(int(alive.sum()) for _, alive in sources)
        k = int(torch.randint(1, total, (1,), generator=gen))
        shards = []
        for values, alive in sources:
            scores = distribute_tensor(values, mesh, placements)
            shards.append(LocalScores.from_dtensor(scores, distribute_tensor(alive, mesh, placements)))
        selection = keep_highest_across_distributed(shards, k)
        expected = reference(sources, k)
        for index, (keep, shard) in enumerate(zip(selection.keep, shards, strict=True)):
            box = tuple(slice(o, o + n) for o, n in zip(shard.offset, keep.shape, strict=True))
            if not torch.equal(keep, expected[index][box]):
                raise AssertionError(f"mesh {mesh.shape} {placements}, source {index}: masks differ")


def scenario_errors(rank: int, world: int) -> None:
    """Bad input raises on every rank (the rank at fault its own error); a missing rank times out."""
    values = torch.arange(12.0).reshape(3, 4)
    shard = LocalScores.unsharded(values, counted=rank == 0)
    try:
        keep_highest_across_distributed([shard], 3 + rank)
    except DistributedSelectionError as error:
        if "disagree on k" not in str(error):
            raise
    else:
        raise AssertionError("ranks that disagree on k were not refused")
    bad = LocalScores.unsharded(values, torch.ones(4, 3, dtype=torch.bool)) if rank == 1 else shard
    expected: type[Exception] = InvalidMaskError if rank == 1 else DistributedSelectionError
    try:
        keep_highest_across_distributed([bad], 2)
    except expected:
        pass
    else:
        raise AssertionError("a rank's bad alive mask was not refused")
    try:
        keep_highest_across_distributed([shard], 13)
    except InvalidAmountError:
        pass
    else:
        raise AssertionError("k above the number of alive entries was not refused")
    if rank != 0:
        time.sleep(4)  # alive but not selecting: rank 0 must give up after its timeout, not hang
    else:
        try:
            keep_highest_across_distributed([shard], 2, timeout=timedelta(seconds=2))
        except DistributedSelectionError as error:
            if "did not finish within" not in str(error):
                raise
        else:
            raise AssertionError("an all-reduce without the other ranks did not time out")


def scenario_scoring_fails(rank: int, world: int) -> None:
    """A rank whose scores raise after the ranks agreed: every rank raises at once, none waits for the timeout.

    The scores of this small shard are read three times (counted, gathered,
    masked); rank 1 raises at each of those reads in turn.
    """
    values = torch.arange(40.0).reshape(5, 8) % 7  # ties: the masks need the threshold's ties too

    def failing_at(failing_read: int) -> Callable[[Tensor, Tensor], Tensor]:
        reads = 0

        def magnitude_or_fail(part: Tensor, out: Tensor) -> Tensor:
            nonlocal reads
            reads += 1
            if rank == 1 and reads == failing_read:
                raise RuntimeError("scoring failed on rank 1")
            return torch.abs(part, out=out)

        return magnitude_or_fail

    for failing_read in (1, 2, 3):
        shard = dataclasses.replace(LocalScores.unsharded(values, counted=rank == 0), score=failing_at(failing_read))
        started = time.monotonic()
        try:
            keep_highest_across_distributed([shard], 17, timeout=timedelta(seconds=30))
        except RuntimeError as error:
            expected = "scoring failed on rank 1" if rank == 1 else "other rank(s) failed"
            if expected not in str(error):
                raise
        else:
            raise AssertionError(f"read {failing_read}: a failed scoring on rank 1 was not raised on rank {rank}")
        if time.monotonic() - started > 15:  # (the timeout is 30 s: waiting for it would be a hang)
            raise AssertionError(f"read {failing_read}: rank {rank} learnt of the failure only at the timeout")


SCENARIOS: dict[str, Callable[[int, int], None]] = {
    "random": scenario_random,
    "dtensor": scenario_dtensor,
    "errors": scenario_errors,
    "scoring_fails": scenario_scoring_fails,
}


# --- the tests (run by pytest) ----------------------------------------------------------


@pytest.mark.parametrize("world", [2, 4])
def test_sharded_selection_equals_one_process(run_ranks: RunRanks, world: int) -> None:
    run_ranks(__file__, "random", world)


def test_dtensor_shards_equal_one_process(run_ranks: RunRanks) -> None:
    run_ranks(__file__, "dtensor", 4)


def test_bad_input_raises_on_every_rank_and_nothing_hangs(run_ranks: RunRanks) -> None:
    run_ranks(__file__, "errors", 2)


def test_a_failure_after_the_agreement_raises_on_every_rank_at_once(run_ranks: RunRanks) -> None:
    run_ranks(__file__, "scoring_fails", 2)


def test_not_initialized_is_refused() -> None:
    with pytest.raises(DistributedSelectionError, match="not initialized"):
        keep_highest_across_distributed([LocalScores.unsharded(torch.ones(3))], 1)
