"""Exact global selection across ranks against one process: time, bytes communicated and memory per call.

The model is ``--tensors`` float32 tensors of standard normal weights,
``(rows, 1000)`` each, holding ``--sizes`` entries per rank in all; each
tensor is sharded on dim 0 (every rank draws its own shard, seeded by its
rank). The scores are ``|w|``, computed a chunk at a time from the shards
(``LocalScores(score=...)``), as ``prune_global`` does, and half of all the
entries are pruned, as a 50 % global L1 step would.

- ``one process``: :func:`pruneplug.selection.exact.keep_highest_across` on
  the same number of entries as one rank holds, one intra-op thread, its
  masks bool or packed as they are made (``finish``, as
  ``prune_global(mask_storage="packed")`` does);
- ``N ranks``: ``--world`` gloo processes on this machine (one intra-op
  thread each) calling
  :func:`pruneplug.selection.distributed.keep_highest_across_distributed`
  (``pack=True`` for packed masks) with digit width ``bits``; the time is
  the slowest rank's, from a barrier to its masks. Each run checks that the
  ranks pruned exactly ``k`` in all.
- ``prune_global``: the whole call, :func:`pruneplug.prune_global` with
  ``l1_unstructured`` over the same tensors as DTensor parameters (the
  ranks' shards, ``Shard(0)``), ``mask_storage="bool"`` or ``"packed"``,
  and in one process over the same number of entries as one rank holds:
  what a user's call costs, checks and the masks it stores on the modules
  included.

Every variant runs in fresh processes with glibc's mmap threshold fixed at
32 KiB and its heap trimmed on every free, so that freed temporaries go
back to the system and the peak is what a call holds at once, not pages
the warm-up call left in the heap (with the default settings a call whose
temporaries fit in the heap looks free, and one whose temporaries do not
is charged for the heap's growth). Small allocations are slower so, and
the times are measured in a second run of each variant with glibc's
default settings. The medians over ``--repeats`` calls
after one warm-up call are reported, with the all-reduces, the bytes each
rank put into them (independent of the size: the formula is printed beside
them), and the largest rank's extra peak resident memory (``VmHWM`` reset
before the call; the masks it returns included) as a
multiple of its shard's bytes.

Usage::

    python benchmarks/distributed_selection.py                 # 2.5, 10, 40 M per rank; bits 8, 11, 16 at 10 M
    python benchmarks/distributed_selection.py --quick         # 400 k per rank, one repeat, one run: seconds
    python benchmarks/distributed_selection.py --write-docs    # also rewrite its table in docs/benchmarks.md

It prints a markdown table and writes the raw numbers to
``benchmarks/results/distributed_selection.json`` (``--json`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _docs import write_between  # benchmarks/ is the script's folder, first on sys.path
from _machine import machine
from _memory import peak_reset_works, proc_status, reset_peak

import pruneplug
from pruneplug.selection.distributed import DEFAULT_BITS, LocalScores, keep_highest_across_distributed
from pruneplug.selection.exact import ScoreSource, keep_highest_across
from pruneplug.storage.packed import PackedMask

HERE = Path(__file__).resolve().parent
COLUMNS = 1000
MARKERS = ("<!-- table:distributed:start -->", "<!-- table:distributed:end -->")
#: A fixed, low mmap threshold and a heap trimmed at once: the peak is what a call holds, not allocator history.
#: Whether the times come from a second run with glibc's defaults (``--quick``: one run, its times).
TIME_APART = True
#: Stands for a free port in the arguments of :func:`spawn` (each start of a rank group takes a new one).
PORT = object()
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "32768", "MALLOC_TRIM_THRESHOLD_": "0"}


def magnitude(values: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return torch.abs(values, out=out)


def rows_per_tensor(per_rank: int, tensors: int, world: int) -> int:
    """Rows of each unsharded tensor so that a rank holds about ``per_rank`` entries in all."""
    return max(world, math.ceil(per_rank * world / (tensors * COLUMNS)))


def formula_bytes(bits: int, all_reduces: int, total: int, key_bits: int = 32) -> int:
    """Bytes a rank puts into one call: agreement, key passes, tie passes if the call made them, final status."""
    key_passes = math.ceil(key_bits / bits)
    passes = sum((2 ** min(bits, key_bits - start) + 1) * 8 for start in range(0, key_bits, bits))
    if all_reduces > key_passes + 2:  # the ties at the threshold were split
        position_bits = max(1, (total - 1).bit_length())
        passes += sum((2 ** min(bits, position_bits - start) + 1) * 8 for start in range(0, position_bits, bits))
    return 14 * 8 + passes + 8


def rank_shards(rows: int, world: int, index: int, tensors: int) -> tuple[list[torch.Tensor], int]:
    """This rank's row shards of each tensor (drawn from a generator seeded by the rank) and their first row."""
    mine = torch.tensor_split(torch.arange(rows), world)[index]
    gen = torch.Generator().manual_seed(1 + index)
    shards = [torch.randn(mine.numel(), COLUMNS, generator=gen) for _ in range(tensors)]
    return shards, int(mine[0]) if mine.numel() else 0


def extra_peak(before: int | None) -> float:
    return float((proc_status("VmHWM") or 0) - (before or 0))


def one_process(per_rank: int, tensors: int, packed: bool, repeats: int, out: Any) -> None:
    """The same number of entries as one rank holds, selected by the one-process selection."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    rows = rows_per_tensor(per_rank, tensors, 1)
    weights = [torch.randn(rows, COLUMNS, generator=gen) for _ in range(tensors)]
    numel = sum(w.numel() for w in weights)
    k = numel // 2
    measure = peak_reset_works()
    finish = (lambda index, keep: PackedMask.pack(keep)) if packed else None
    times, extras = [], []
    keep_highest_across([ScoreSource.elementwise(w, magnitude) for w in weights], k, finish=finish)  # warm-up
    for _ in range(repeats):
        keep: list[torch.Tensor] | None = None
        before = proc_status("VmRSS") if measure and reset_peak() else None
        start = time.perf_counter()
        sources = [ScoreSource.elementwise(w, magnitude) for w in weights]
        keep = keep_highest_across(sources, k, finish=finish)
        times.append(time.perf_counter() - start)
        extras.append(extra_peak(before) if measure else math.nan)
        pruned = sum(int((~(m.unpack() if isinstance(m, PackedMask) else m)).sum()) for m in keep)
        if pruned != k:
            raise RuntimeError("one process did not prune k entries")
    out.put(
        {
            "variant": f"one process, {'packed' if packed else 'bool'} masks",
            "per_rank": numel,
            "seconds": statistics.median(times),
            "extra_peak_bytes": statistics.median(extras) if measure else None,
            "extra_peak_per_shard": statistics.median(extras) / (numel * 4) if measure else None,
        }
    )


def rank(
    index: int, world: int, port: int, per_rank: int, tensors: int, bits: int, packed: bool, repeats: int, out: Any
) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=index, world_size=world, timeout=timedelta(seconds=120)
    )
    rows = rows_per_tensor(per_rank, tensors, world)
    shards, offset = rank_shards(rows, world, index, tensors)
    k = rows * COLUMNS * tensors // 2
    measure = peak_reset_works()
    shard_bytes = max(1, sum(s.numel() * s.element_size() for s in shards))
    times, extras, selection = [], [], None
    warm_up = [LocalScores(s, (rows, COLUMNS), (offset, 0), score=magnitude) for s in shards]
    keep_highest_across_distributed(warm_up, k, bits=bits, pack=packed)  # (first calls load kernels, grow pools)
    del warm_up
    for _ in range(repeats):
        selection = None  # the previous call's masks are not part of this call's peak
        dist.barrier()
        before = proc_status("VmRSS") if measure and reset_peak() else None
        start = time.perf_counter()
        local = [LocalScores(s, (rows, COLUMNS), (offset, 0), score=magnitude) for s in shards]
        selection = keep_highest_across_distributed(local, k, bits=bits, pack=packed)
        elapsed = torch.tensor([time.perf_counter() - start, extra_peak(before) if measure else 0.0])
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        times.append(float(elapsed[0]))
        extras.append(float(elapsed[1]))
        masks = [m.unpack() if isinstance(m, PackedMask) else m for m in selection.keep]
        pruned = torch.tensor([sum(int((~m).sum()) for m in masks)])
        del masks
        dist.all_reduce(pruned)
        if int(pruned) != k:
            raise RuntimeError(f"the ranks pruned {int(pruned)} entries, not {k}")
    if index == 0 and selection is not None:
        out.put(
            {
                "variant": f"{world} ranks, {'packed' if packed else 'bool'} masks, bits {bits}",
                "per_rank": sum(s.numel() for s in shards),
                "seconds": statistics.median(times),
                "all_reduces": selection.all_reduces,
                "bytes_communicated": selection.bytes_communicated,
                "formula_bytes": formula_bytes(bits, selection.all_reduces, rows * COLUMNS * tensors),
                "extra_peak_bytes": statistics.median(extras) if measure else None,
                "extra_peak_per_shard": statistics.median(extras) / shard_bytes if measure else None,
            }
        )
    dist.destroy_process_group()


def holders(weights: list[torch.Tensor]) -> list[tuple[torch.nn.Module, str]]:
    """One module per weight, holding it as its parameter ``weight`` (the tensor itself, not a copy)."""
    pairs = []
    for weight in weights:
        holder = torch.nn.Module()
        holder.weight = torch.nn.Parameter(weight, requires_grad=False)
        pairs.append((holder, "weight"))
    return pairs


def pruned_entries(pairs: list[tuple[torch.nn.Module, str]]) -> int:
    """How many entries the masks of ``pairs`` prune (here; a DTensor's local shard)."""
    total = 0
    for module, _ in pairs:
        mask = module.weight_mask
        local = mask.to_local() if hasattr(mask, "to_local") else mask
        total += int((~(local.unpack() if isinstance(local, PackedMask) else local)).sum())
    return total


def prune_global_call(
    index: int, world: int, port: int, per_rank: int, tensors: int, storage: str, repeats: int, out: Any
) -> None:
    """``prune_global`` over DTensor weights (``world`` > 1) or, in one process, over plain ones."""
    from torch.distributed.tensor import DTensor, Shard

    torch.set_num_threads(1)
    rows = rows_per_tensor(per_rank, tensors, world)
    mesh = None
    if world > 1:
        from torch.distributed.device_mesh import init_device_mesh

        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=index, world_size=world, timeout=timedelta(seconds=120)
        )
        mesh = init_device_mesh("cpu", (world,))
    shards, _ = rank_shards(rows, world, index, tensors)
    shard_bytes = max(1, sum(t.numel() * t.element_size() for t in shards))

    def weights() -> list[torch.Tensor]:
        if mesh is None:
            return list(shards)
        return [
            DTensor.from_local(t, mesh, [Shard(0)], run_check=False, shape=(rows, COLUMNS), stride=(COLUMNS, 1))
            for t in shards
        ]

    measure = peak_reset_works()
    k = rows * COLUMNS * tensors // 2
    pruneplug.prune_global(holders(weights()), "l1_unstructured", amount=k, mask_storage=storage)  # warm-up
    times, extras = [], []
    for _ in range(repeats):
        pairs = holders(weights())  # the shards themselves: pruning leaves them as they are
        if mesh is not None:
            dist.barrier()
        before = proc_status("VmRSS") if measure and reset_peak() else None
        start = time.perf_counter()
        pruneplug.prune_global(pairs, "l1_unstructured", amount=k, mask_storage=storage)
        elapsed = torch.tensor([time.perf_counter() - start, extra_peak(before) if measure else 0.0])
        pruned = torch.tensor([pruned_entries(pairs)])
        if mesh is not None:
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
            dist.all_reduce(pruned)
        times.append(float(elapsed[0]))
        extras.append(float(elapsed[1]))
        if int(pruned) != k:
            raise RuntimeError(f"prune_global pruned {int(pruned)} entries, not {k}")
        del pairs
    if index == 0:
        where = f"{world} ranks" if mesh is not None else "one process"
        out.put(
            {
                "variant": f"{where}, prune_global, {storage} masks",
                "per_rank": sum(t.numel() for t in shards),
                "seconds": statistics.median(times),
                "extra_peak_bytes": statistics.median(extras) if measure else None,
                "extra_peak_per_shard": statistics.median(extras) / shard_bytes if measure else None,
            }
        )
    if mesh is not None:
        dist.destroy_process_group()


def spawn(target: Any, count: int, args: tuple[Any, ...]) -> dict[str, Any]:
    """Run ``target(index, *args, out)`` in ``count`` fresh processes, twice: what the first puts in ``out``.

    Once with :data:`MALLOC_ENV`, for the memory, once with glibc's default
    settings, for the time (with a low mmap threshold every temporary of a
    chunk is mapped and faulted in again, which is not what a run costs).
    """
    memory = _spawn_once(target, count, args, MALLOC_ENV)
    if not TIME_APART:
        return memory
    timing = _spawn_once(target, count, args, {})
    return {**memory, "seconds": timing["seconds"]}


def _spawn_once(target: Any, count: int, args: tuple[Any, ...], malloc: dict[str, str]) -> dict[str, Any]:
    context = mp.get_context("spawn")
    out = context.Queue()
    for key in MALLOC_ENV:  # read by glibc when each child starts
        os.environ.pop(key, None)
    os.environ.update(malloc)
    args = tuple(free_port() if value is PORT else value for value in args)  # a fresh port for each start
    processes = [context.Process(target=target, args=(*(index,)[: count > 1], *args, out)) for index in range(count)]
    for process in processes:
        process.start()
    result: dict[str, Any] = out.get(timeout=600)
    for process in processes:
        process.join(timeout=60)
        if process.exitcode != 0:
            raise RuntimeError(f"a process exited with {process.exitcode}")
    return result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def distributed(world: int, per_rank: int, tensors: int, bits: int, packed: bool, repeats: int) -> dict[str, Any]:
    return spawn(rank, world, (world, PORT, per_rank, tensors, bits, packed, repeats))


def whole_call(world: int, per_rank: int, tensors: int, storage: str, repeats: int) -> dict[str, Any]:
    """``prune_global`` on ``world`` ranks (1: one process, plain tensors)."""
    if world == 1:
        return spawn(prune_global_call, 1, (0, 1, 0, per_rank, tensors, storage, repeats))
    return spawn(prune_global_call, world, (world, PORT, per_rank, tensors, storage, repeats))


def table(rows: list[dict[str, Any]], about: dict[str, Any], world: int, tensors: int, repeats: int) -> str:
    lines = [
        f"Machine: {about['cpus']} CPUs ({about['cpu']}), torch {about['torch']}, one thread per process, "
        f"load average {about['load_average']:.1f}; {tensors} float32 tensors sharded on dim 0 over "
        f"{world} gloo ranks, half pruned, median of {repeats}",
        "",
        "| entries per rank | variant | seconds | all-reduces | bytes per call (formula) | extra peak / shard |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        sent = ""
        if "bytes_communicated" in row:
            sent = f"{row['bytes_communicated']:,} ({row['formula_bytes']:,})"
        extra = "" if row.get("extra_peak_per_shard") is None else f"{row['extra_peak_per_shard']:.3f}×"
        lines.append(
            f"| {row['per_rank'] / 1e6:g} M | {row['variant']} | {row['seconds']:.3f} | "
            f"{row.get('all_reduces', '')} | {sent} | {extra} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[2.5e6, 1e7, 4e7], help="entries per rank")
    parser.add_argument("--tensors", type=int, default=8)
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 11, 16], help="digit widths, at the middle size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--quick", action="store_true", help="400 k entries per rank, one repeat, 11-bit digits, one run per variant"
    )
    parser.add_argument("--write-docs", action="store_true", help="rewrite its table in docs/benchmarks.md")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "distributed_selection.json")
    args = parser.parse_args(argv)
    sizes, repeats, widths = ([4e5], 1, [DEFAULT_BITS]) if args.quick else (args.sizes, args.repeats, args.bits)
    global TIME_APART
    TIME_APART = not args.quick
    rows = []
    for size in sizes:
        per_rank = int(size)
        for packed in (False, True):
            rows.append(spawn(one_process, 1, (per_rank, args.tensors, packed, repeats)))
            rows.append(distributed(args.world, per_rank, args.tensors, DEFAULT_BITS, packed, repeats))
        for storage in ("bool", "packed"):
            rows.append(whole_call(1, per_rank, args.tensors, storage, repeats))
            rows.append(whole_call(args.world, per_rank, args.tensors, storage, repeats))
    middle = int(sizes[len(sizes) // 2])
    rows += [
        distributed(args.world, middle, args.tensors, bits, False, repeats) for bits in widths if bits != DEFAULT_BITS
    ]
    about = machine(1)
    text = table(rows, about, args.world, args.tensors, repeats)
    print(text)
    if args.write_docs:
        write_between(MARKERS, text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.json.with_suffix(".tmp")
    temporary.write_text(json.dumps({"machine": about, "repeats": repeats, "rows": rows}, indent=2))
    temporary.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
