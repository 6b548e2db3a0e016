"""Exact global selection across ranks against one process: time and bytes communicated per call.

The scores are ``|w|`` of one float32 tensor of ``--numel`` standard normal
entries (a fixed seed), shaped ``(rows, 1000)`` and sharded on dim 0 (uneven
when the rows do not divide). Half of the entries are pruned, as a 50 %
global L1 step would.

- ``one process``: :func:`pruneplug.selection.exact.keep_highest_across` on
  the whole tensor, with 1 and with ``--world`` intra-op threads;
- ``N ranks, bits B``: ``--world`` gloo processes on this machine (one
  intra-op thread each), each scoring its shard and calling
  :func:`pruneplug.selection.distributed.keep_highest_across_distributed`
  with digit width ``B``; the time is the slowest rank's, from a barrier to
  its masks. Each run checks that the ranks pruned exactly ``k`` in all.

The medians over ``--repeats`` calls are reported, with the all-reduces and
the bytes each rank put into them (independent of ``--numel``), and the
largest rank's extra peak resident memory during the call (the masks it
returns included) as a multiple of its shard's bytes, where Linux lets the
peak be reset. The scores are computed a chunk at a time from the shard
(``LocalScores(score=...)``), as ``prune_global`` does.

Usage::

    python benchmarks/distributed_selection.py                 # 10 M entries, 2 ranks, bits 8, 11 and 16
    python benchmarks/distributed_selection.py --quick         # 100 k entries, one repeat, bits 11: seconds
    python benchmarks/distributed_selection.py --numel 40000000 --world 4

It prints a markdown table and writes the raw numbers to
``benchmarks/results/distributed_selection.json`` (``--json`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import math
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
from _machine import machine  # benchmarks/ is the script's folder, first on sys.path
from _memory import peak_reset_works, proc_status, reset_peak

from pruneplug.selection.distributed import LocalScores, keep_highest_across_distributed
from pruneplug.selection.exact import ScoreSource, keep_highest_across

HERE = Path(__file__).resolve().parent
COLUMNS = 1000


def magnitude(values: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return torch.abs(values, out=out)


def weights(numel: int) -> torch.Tensor:
    rows = math.ceil(numel / COLUMNS)
    return torch.randn(rows, COLUMNS, generator=torch.Generator().manual_seed(0))


def one_process(numel: int, threads: int, repeats: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    w = weights(numel)
    k = w.numel() // 2
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        source = ScoreSource.elementwise(w, lambda values, out: torch.abs(values, out=out))
        keep = keep_highest_across([source], k)[0]
        times.append(time.perf_counter() - start)
        if int((~keep).sum()) != k:
            raise RuntimeError("one process did not prune k entries")
    return {"variant": f"one process, {threads} thread(s)", "seconds": statistics.median(times)}


def rank(index: int, world: int, port: int, numel: int, bits: int, repeats: int, out: Any) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=index, world_size=world, timeout=timedelta(seconds=120)
    )
    w = weights(numel)
    rows = torch.tensor_split(torch.arange(w.shape[0]), world)[index]
    local = w[int(rows[0]) : int(rows[-1]) + 1].clone() if rows.numel() else w[:0].clone()
    offset = int(rows[0]) if rows.numel() else 0
    del w
    k = math.ceil(numel / COLUMNS) * COLUMNS // 2
    measure_memory = peak_reset_works()
    shard_bytes = max(1, local.numel() * local.element_size())
    times, extras, selection = [], [], None
    for _ in range(repeats):
        selection = None  # the previous call's masks are not part of this call's peak
        dist.barrier()
        if measure_memory:
            reset_peak()
            before = proc_status("VmRSS")
        start = time.perf_counter()
        shard = LocalScores(local, (math.ceil(numel / COLUMNS), COLUMNS), (offset, 0), score=magnitude)
        selection = keep_highest_across_distributed([shard], k, bits=bits)
        elapsed = torch.tensor([time.perf_counter() - start, 0.0], dtype=torch.float64)
        if measure_memory:
            elapsed[1] = (proc_status("VmHWM") or 0) - (before or 0)
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        times.append(float(elapsed[0]))
        extras.append(float(elapsed[1]))
        pruned = torch.tensor([int((~selection.keep[0]).sum())])
        dist.all_reduce(pruned)
        if int(pruned) != k:
            raise RuntimeError(f"the ranks pruned {int(pruned)} entries, not {k}")
    if index == 0 and selection is not None:
        out.put(
            {
                "variant": f"{world} ranks, bits {bits}",
                "seconds": statistics.median(times),
                "all_reduces": selection.all_reduces,
                "bytes_communicated": selection.bytes_communicated,
                "extra_peak_bytes": statistics.median(extras) if measure_memory else None,
                "extra_peak_per_shard": statistics.median(extras) / shard_bytes if measure_memory else None,
            }
        )
    dist.destroy_process_group()


def distributed(numel: int, world: int, bits: int, repeats: int) -> dict[str, Any]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    context = mp.get_context("spawn")
    out = context.Queue()
    processes = [
        context.Process(target=rank, args=(index, world, port, numel, bits, repeats, out)) for index in range(world)
    ]
    for process in processes:
        process.start()
    result: dict[str, Any] = out.get(timeout=600)
    for process in processes:
        process.join(timeout=60)
        if process.exitcode != 0:
            raise RuntimeError(f"a rank exited with {process.exitcode}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numel", type=int, default=10_000_000)
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--bits", type=int, nargs="+", help="digit widths to time (default 8 11 16; 11 with --quick)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100 k entries, one repeat, 11-bit digits")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "distributed_selection.json")
    args = parser.parse_args(argv)
    numel, repeats = (100_000, 1) if args.quick else (args.numel, args.repeats)
    rows = [one_process(numel, threads, repeats) for threads in sorted({1, args.world})]
    widths = args.bits or ([11] if args.quick else [8, 11, 16])
    rows += [distributed(numel, args.world, bits, repeats) for bits in widths]
    print(f"{numel:,} entries, k = half, median of {repeats}\n")
    print("| variant | seconds | all-reduces | bytes per call | extra peak / shard | extra peak MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        calls, sent = row.get("all_reduces", ""), row.get("bytes_communicated", "")
        extra = "" if row.get("extra_peak_per_shard") is None else f"{row['extra_peak_per_shard']:.2f}"
        mib = "" if row.get("extra_peak_bytes") is None else f"{row['extra_peak_bytes'] / 2**20:.1f}"
        print(f"| {row['variant']} | {row['seconds']:.3f} | {calls} | {sent} | {extra} | {mib} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.json.with_suffix(".tmp")
    temporary.write_text(
        json.dumps({"machine": machine(1), "numel": numel, "repeats": repeats, "rows": rows}, indent=2)
    )
    temporary.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
