"""pruneplug against torch.nn.utils.prune, side by side, in one run.

Every measurement runs in a subprocess of its own, so the peak memory it
reports belongs to one library and one case. Times are medians over
``--repeats`` runs (by default 3, and 7 for the one-tensor cases, which take
a tenth of a second and are the most exposed to a noisy machine); memory is reported as a multiple of the bytes of the
weights being pruned ("x weights"):

* extra peak: the highest resident memory while pruning, minus what was
  resident just before (the weights themselves);
* held: resident memory after pruning (and garbage collection), minus the
  same baseline -- masks, masked tensors and anything else kept.

The busy-neighbour row prunes the same layers alternately on an idle
machine and beside one busy process (a pure-Python loop pinned to one CPU,
started before the worker and stopped after it) and reports each library's
time beside it as a multiple of its own idle time.

Workers run with glibc told to hand freed blocks of 1 MiB or more straight
back to the OS (``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``), for
both libraries, so resident memory counts live tensors rather than the
allocator's reserve.

Usage::

    python benchmarks/run.py                 # every case (several minutes)
    python benchmarks/run.py --quick         # smaller tensors, fewer repeats
    python benchmarks/run.py --device cuda   # on a GPU
    python benchmarks/run.py --write-docs    # also rewrite docs/benchmarks.md

It prints a markdown table and writes the raw numbers to
``benchmarks/results/latest.json``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


# --- measuring inside a worker ------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    # Writing 5 to clear_refs resets the peak resident set (VmHWM) on Linux.
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def _peak_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _layers(count: int, width: int, device: str, seed: int = 0) -> list:
    import torch

    torch.manual_seed(seed)
    layers = []
    for _ in range(count):
        layer = torch.nn.Linear(width, width, bias=False, device="meta")
        layer.weight = torch.nn.Parameter(torch.randn(width, width, device=device) * 0.02)
        layers.append(layer)
    return layers


def _prune_call(library: str, case: str) -> Callable[[list], None]:
    import torch.nn.utils.prune as torch_prune

    import pruneplug

    if case in ("l1", "random"):
        name = {"l1": "l1_unstructured", "random": "random_unstructured"}[case]
        if library == "torch":
            return lambda layers: getattr(torch_prune, name)(layers[0], "weight", amount=0.5)
        return lambda layers: pruneplug.prune(layers[0], "weight", name, amount=0.5)
    if case.startswith("global"):
        if library == "torch":
            return lambda layers: torch_prune.global_unstructured(
                [(layer, "weight") for layer in layers], pruning_method=torch_prune.L1Unstructured, amount=0.5
            )
        storage = "packed" if case.endswith("_packed") else "bool"
        return lambda layers: pruneplug.prune_global(
            [(layer, "weight") for layer in layers], "l1_unstructured", amount=0.5, mask_storage=storage
        )
    raise ValueError(case)


def _peak_device(device: str) -> int:
    import torch

    return torch.cuda.max_memory_allocated() if device == "cuda" else _peak_bytes()


def _used_device(device: str) -> int:
    import torch

    return torch.cuda.memory_allocated() if device == "cuda" else _rss_bytes()


def worker_prune(library: str, case: str, count: int, width: int, device: str) -> dict:
    """Prune fresh layers once; report seconds, extra peak and held memory (bytes)."""
    import torch

    torch.set_grad_enabled(True)
    prune = _prune_call(library, case)
    prune(_layers(2, 16, device))  # warm up: imports, registry, first-call caches are not the case's cost
    layers = _layers(count, width, device)
    weights_bytes = sum(layer.weight.numel() * layer.weight.element_size() for layer in layers)
    gc.collect()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        _reset_peak()
    baseline = _used_device(device)
    _sync(device)
    start = time.perf_counter()
    prune(layers)
    _sync(device)
    seconds = time.perf_counter() - start
    peak = _peak_device(device)
    gc.collect()
    held = _used_device(device) - baseline
    return {"seconds": seconds, "extra_peak": peak - baseline, "held": held, "weights_bytes": weights_bytes}


def worker_forward(
    library: str, count: int, width: int, batch: int, device: str, repeats: int, storage: str = "bool"
) -> dict:
    """Median no-grad forward time of a pruned Linear stack and of the same stack unpruned."""
    import torch
    import torch.nn.utils.prune as torch_prune

    import pruneplug

    dense = torch.nn.Sequential(*_layers(count, width, device)).eval()
    pruned = copy.deepcopy(dense)
    for layer in pruned:
        if library == "torch":
            torch_prune.l1_unstructured(layer, "weight", amount=0.5)
        else:
            pruneplug.prune(layer, "weight", "l1_unstructured", amount=0.5, mask_storage=storage)
    x = torch.randn(batch, width, device=device)
    samples: dict[str, list[float]] = {"dense": [], "pruned": []}
    with torch.no_grad():
        dense(x), pruned(x)  # warm up
        # Alternate the two models so drift in the machine's speed hits both alike.
        for _ in range(repeats):
            for name, model in (("dense", dense), ("pruned", pruned)):
                _sync(device)
                start = time.perf_counter()
                model(x)
                _sync(device)
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


# --- orchestrating ------------------------------------------------------------------------


@dataclass
class Result:
    case: str
    library: str
    seconds: float | None = None
    extra_peak_x: float | None = None
    held_x: float | None = None
    forward_ratio: float | None = None
    idle_seconds: float | None = None  # busy-neighbour rows: the same case's median time on an idle machine
    error: str | None = None
    samples: list[float] = field(default_factory=list)


def _run_worker(args: list[str], memory_limit: int | None, timeout: float) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # Make glibc return freed blocks to the OS at once (for both libraries alike), so that
    # resident memory measures what is alive, not what the allocator keeps around for reuse.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(1 << 20))
    env.setdefault("MALLOC_TRIM_THRESHOLD_", str(1 << 20))
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", *args]

    def limit() -> None:
        if memory_limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    try:
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=timeout, preexec_fn=limit, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        if "DefaultCPUAllocator: can't allocate memory" in done.stderr or "MemoryError" in done.stderr:
            return {"error": "out of memory"}
        return {"error": f"exit {done.returncode}: {tail[0][:200]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_prune(
    case: str, library: str, count: int, width: int, device: str, repeats: int, **limits: object
) -> Result:
    result = Result(case, library)
    runs = []
    for _ in range(repeats):
        out = _run_worker(["prune", library, case, str(count), str(width), device], **limits)  # type: ignore[arg-type]
        if "error" in out:
            result.error = out["error"]
            return result
        runs.append(out)
    result.samples = [r["seconds"] for r in runs]
    result.seconds = statistics.median(result.samples)
    weights = runs[0]["weights_bytes"]
    result.extra_peak_x = statistics.median(r["extra_peak"] for r in runs) / weights
    result.held_x = statistics.median(r["held"] for r in runs) / weights
    return result


def _busy_neighbour() -> subprocess.Popen[bytes]:
    """A process that keeps one CPU busy (the last this one may use) until killed."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []

    def pin() -> None:
        if len(cpus) > 1:
            os.sched_setaffinity(0, {cpus[-1]})

    return subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=pin)


def measure_busy(case: str, library: str, count: int, width: int, device: str, repeats: int) -> Result:
    """``case`` timed alternately idle and beside one busy process; ``seconds`` is the median time beside it."""
    result = Result(f"{case}_busy", library)
    idle: list[float] = []
    busy: list[float] = []
    for _ in range(repeats):
        for times in (idle, busy):
            neighbour = _busy_neighbour() if times is busy else None
            try:
                out = _run_worker(["prune", library, case, str(count), str(width), device], None, 3600.0)
            finally:
                if neighbour is not None:
                    neighbour.kill()
                    neighbour.wait()
            if "error" in out:
                result.error = out["error"]
                return result
            times.append(out["seconds"])
    result.samples = busy
    result.seconds = statistics.median(busy)
    result.idle_seconds = statistics.median(idle)
    return result


def measure_forward(
    library: str, count: int, width: int, batch: int, device: str, repeats: int, storage: str = "bool"
) -> Result:
    result = Result("forward" if storage == "bool" else f"forward_{storage}", library)
    args = ["forward", library, str(count), str(width), str(batch), device, str(repeats), storage]
    out = _run_worker(args, None, 1800)
    if "error" in out:
        result.error = out["error"]
        return result
    result.forward_ratio = out["pruned"] / out["dense"]
    result.samples = [out["dense"], out["pruned"]]
    return result


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _busy_cell(result: Result) -> str:
    if result.seconds is None or result.idle_seconds is None:
        return result.error or "—"
    return f"{result.seconds:.3f} s ({result.seconds / result.idle_seconds:.2f}× idle)"


def render(results: list[Result], descriptions: dict[str, str], machine: str) -> str:
    by = {(r.case, r.library): r for r in results}
    lines = [
        f"Machine: {machine}",
        "",
        "| case | torch.nn.utils.prune | pruneplug | speed-up "
        "| extra peak (torch → pruneplug) | held (torch → pruneplug) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for case, description in descriptions.items():
        theirs, ours = by.get((case, "torch")), by.get((case, "pruneplug"))
        if theirs is None or ours is None:
            continue
        if case.endswith("_busy"):
            cells = [_busy_cell(r) for r in (theirs, ours)]
            speedup = f"{theirs.seconds / ours.seconds:.1f}×" if theirs.seconds and ours.seconds else "—"
            lines.append(f"| {description} | {cells[0]} | {cells[1]} | {speedup} | | |")
            continue
        if case.startswith("forward"):
            lines.append(
                f"| {description} | {_fmt(theirs.forward_ratio, '.2f')}× dense | "
                f"{_fmt(ours.forward_ratio, '.2f')}× dense | | | |"
            )
            continue
        t_time = theirs.error or f"{theirs.seconds:.3f} s"
        o_time = ours.error or f"{ours.seconds:.3f} s"
        speedup = f"{theirs.seconds / ours.seconds:.1f}×" if theirs.seconds and ours.seconds else "—"
        peak = f"{_fmt(theirs.extra_peak_x, '.2f')}× → {_fmt(ours.extra_peak_x, '.2f')}×"
        held = f"{_fmt(theirs.held_x, '.2f')}× → {_fmt(ours.held_x, '.2f')}×"
        lines.append(f"| {description} | {t_time} | {o_time} | {speedup} | {peak} | {held} |")
    return "\n".join(lines)


def machine_description(device: str) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    text = f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, torch {torch.__version__}"
    if device == "cuda" and torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name()}"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller tensors and fewer repeats")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=None, help="runs per measurement (median)")
    parser.add_argument("--skip-large", action="store_true", help="skip the 1.07 B-parameter global case")
    parser.add_argument("--write-docs", action="store_true", help="rewrite docs/benchmarks.md with the table")
    parser.add_argument("--worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        kind, *rest = args.worker
        if kind == "prune":
            library, case, count, width, device = rest
            print(json.dumps(worker_prune(library, case, int(count), int(width), device)))
        else:
            library, count, width, batch, device, repeats, storage = rest
            forward = worker_forward(library, int(count), int(width), int(batch), device, int(repeats), storage)
            print(json.dumps(forward))
        return 0

    quick = args.quick
    repeats = args.repeats or (1 if quick else 3)
    width = 1024 if quick else (8192 if args.device == "cuda" else 4096)
    global_count = 4 if quick else (16 if args.device == "cuda" else 12)
    busy_count = 4
    descriptions = {
        "l1": f"`l1_unstructured`, one {width}×{width} fp32 tensor, amount 0.5",
        "random": f"`random_unstructured`, one {width}×{width} fp32 tensor, amount 0.5",
        "global": f"global L1, {global_count} × {width}² fp32 ({global_count * width * width / 1e6:.0f} M params)",
        "global_packed": 'the same, pruneplug with `mask_storage="packed"`',
        "global_busy": f"global L1, {busy_count} × {width}² fp32, beside one busy process (time, × own idle time)",
        "global_large": "global L1, 16 × 8192² fp32 (1.07 B params, 4 GiB)",
        "global_large_packed": 'the same, pruneplug with `mask_storage="packed"`',
        "forward": f"no-grad forward of a pruned {width}-wide Linear stack vs unpruned",
        "forward_packed": 'the same, pruneplug with `mask_storage="packed"`',
    }
    results: list[Result] = []
    limits = {"memory_limit": None, "timeout": 3600.0}
    for case in ("l1", "random", "global"):
        count = global_count if case == "global" else 1
        # One tensor prunes in a tenth of a second: more runs, so the median is not one noisy sample.
        runs = repeats if quick or case == "global" or args.repeats else max(repeats, 7)
        for library in ("torch", "pruneplug"):
            result = measure_prune(case, library, count, width, args.device, runs, **limits)
            results.append(result)
            print(f"  {case:8} {library:10} {result.seconds or result.error}", file=sys.stderr)
    results += _packed_variant(
        results,
        "global",
        measure_prune("global_packed", "pruneplug", global_count, width, args.device, repeats, **limits),
    )
    for library in ("torch", "pruneplug"):
        result = measure_busy("global", library, busy_count, width, args.device, repeats)
        results.append(result)
        print(f"  busy     {library:10} {result.seconds or result.error} (idle {result.idle_seconds})", file=sys.stderr)
    if not quick and not args.skip_large:
        # torch needs ~12x the weights; cap its address space at the machine's memory so it fails fast
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        large_limits = {"memory_limit": memory if args.device == "cpu" else None, "timeout": 3600.0}
        for library in ("torch", "pruneplug"):
            result = measure_prune("global_large", library, 16, 8192, args.device, 1, **large_limits)
            results.append(result)
            print(f"  large    {library:10} {result.seconds or result.error}", file=sys.stderr)
        packed = measure_prune("global_large_packed", "pruneplug", 16, 8192, args.device, 1, **large_limits)
        results += _packed_variant(results, "global_large", packed)
    batch = 1024 if args.device == "cuda" else 64
    forward_args = (4 if quick else 8, width, batch, args.device, 5 if quick else 40)
    for library in ("torch", "pruneplug"):
        results.append(measure_forward(library, *forward_args))
    results += _packed_variant(results, "forward", measure_forward("pruneplug", *forward_args, storage="packed"))

    machine = machine_description(args.device)
    table = render(results, descriptions, machine)
    print(table)
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    payload = {"machine": machine, "device": args.device, "quick": quick, "results": [asdict(r) for r in results]}
    (out_dir / "latest.json").write_text(json.dumps(payload, indent=2))
    if args.write_docs:
        _write_docs(table, args.device)
    return 0


def _packed_variant(results: list[Result], case: str, packed: Result) -> list[Result]:
    """The rows of a pruneplug-with-packed-masks case: torch's figures are those of ``case`` (the same call)."""
    theirs = next(r for r in results if r.case == case and r.library == "torch")
    return [dataclasses.replace(theirs, case=packed.case), packed]


def _write_docs(table: str, device: str) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    marker_start, marker_end = f"<!-- table:{device}:start -->", f"<!-- table:{device}:end -->"
    text = path.read_text() if path.exists() else ""
    block = f"{marker_start}\n{table}\n{marker_end}"
    if marker_start in text and marker_end in text:
        before, _, rest = text.partition(marker_start)
        _, _, after = rest.partition(marker_end)
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
