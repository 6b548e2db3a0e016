"""Channel pruning and compaction of a ResNet-50: Torch-Pruning and pruneplug, side by side, in one run.

Both libraries take half the channels of every coupled channel group of the
same ResNet-50 (``benchmarks/_resnet50.py``: 25.6 M parameters, 4.09 GMACs
at 224x224), by the L2 norm of the group, and make the model physically
smaller; the classifier's outputs and the image channels stay.

* Torch-Pruning: ``tp.pruner.MetaPruner(model, example_inputs,
  importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=0.5,
  ignored_layers=[model.fc], round_to=None, global_pruning=False)`` then
  ``.step()``; the time is the constructor (which traces the model) and the step.
* pruneplug: ``pruneplug.prune_channels(model, "ln_structured", n=2,
  amount=0.5, example_inputs=...)`` (which traces the model) then
  ``pruneplug.compact(model)`` (which also checks the outputs); the time is
  both. ``trace_channels`` alone is timed too, for information.

Each side prunes a fresh deep copy of the dense model, ``--repeats`` times (3),
with autograd enabled; the median and the best time are reported. Then the
dense model and every pruned one are timed on a batch of 16x3x224x224 under
``torch.inference_mode`` in eval mode, on a fixed number of torch threads:
3 warm-up forwards each, then ``--latency-repeats`` (10) rounds in which the
models take turns (so drift in the machine's speed hits all alike): the
median and best latency of each, and speed-ups taken within each round (one
model's time over the other's, the median over rounds), which a load that
changes during the run -- other processes on a shared machine -- disturbs
much less than a ratio of two medians.
MACs are counted at 1x3x224x224 twice: by :func:`pruneplug.compaction.macs.count_macs`
(convolutions and matrix products only) and by Torch-Pruning's
``tp.utils.count_ops_and_params`` (which adds BatchNorm, activations and pooling).
Last, pruneplug prunes 40 % of every group -- which leaves odd widths (64
channels keep 38) -- alone and with ``round_to`` 8, 16 and 32 (channels kept
a multiple of it), and those models are timed too. (At 50 % every ResNet-50
width is already a multiple of 32.)

Printed ratios: speed-up (dense latency / pruned latency), MACs reduction
(dense MACs / pruned MACs), their quotient (how much of the MACs saved shows
up as time saved; the target is 0.7 or more), pruneplug's pruning time over
Torch-Pruning's (target: 1 or less) and pruneplug's latency over
Torch-Pruning's.

A side whose library is missing is skipped with a message: Torch-Pruning
comes with the ``bench`` extra; pruneplug's side needs ``pruneplug.prune_channels``.

Usage::

    python benchmarks/channels.py                 # several minutes on 2 cores
    python benchmarks/channels.py --quick         # 1 pruning run, 1 warm-up and 3 timed forwards each
    python benchmarks/channels.py --threads 4     # torch's intra-op threads (default: the CPUs it may use)
    python benchmarks/channels.py --write-docs    # also rewrite the channels table in docs/benchmarks.md

It prints markdown tables and writes the raw numbers to
``benchmarks/results/channels.json``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from _docs import write_between  # benchmarks/ is the script's folder, first on sys.path
from _machine import cpu_name, version
from _resnet50 import MACS, PARAMS, resnet50
from torch import Tensor, nn

import pruneplug
from pruneplug.compaction.macs import count_macs, count_params

try:
    import torch_pruning as tp
except ImportError:  # the bench extra is not installed
    tp = None

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOCS = ROOT / "docs" / "benchmarks.md"
MARKERS = ("<!-- table:channels:start -->", "<!-- table:channels:end -->")
ROUND_TO = (8, 16, 32)
ROUND_AMOUNT = 0.4
BATCH = 16
SKIP_TP = "Torch-Pruning is not installed (pip install 'pruneplug[bench]', torch first): its side is skipped."
SKIP_PRUNEPLUG = "this pruneplug has no prune_channels/compact (the compaction API, issue #13): its side is skipped."


@dataclass
class Row:
    """One model: how it was made, how long that took, its size and its speed."""

    name: str
    library: str
    prune_seconds: list[float] = field(default_factory=list)  # one per repeat
    phases: dict[str, float] = field(default_factory=dict)  # median seconds per phase (pruneplug)
    params: int | None = None
    macs: int | None = None  # count_macs at 1x3x224x224
    tp_macs: int | None = None  # Torch-Pruning's count_ops_and_params, same input
    latency: list[float] = field(default_factory=list)  # seconds per forward of the batch
    report: dict[str, Any] | None = None  # pruneplug's CompactionReport
    skipped: str | None = None

    @property
    def prune_median(self) -> float | None:
        return statistics.median(self.prune_seconds) if self.prune_seconds else None

    @property
    def prune_best(self) -> float | None:
        return min(self.prune_seconds) if self.prune_seconds else None

    @property
    def latency_median(self) -> float | None:
        return statistics.median(self.latency) if self.latency else None


def has_channel_api() -> bool:
    """Whether this pruneplug can prune and compact channels."""
    return all(hasattr(pruneplug, name) for name in ("trace_channels", "prune_channels", "compact"))


def machine(threads: int) -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = cpu_name()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "usable_cpus": usable,
        "threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_pruning": version("torch-pruning"),
        "pruneplug": version("pruneplug"),
        "load_average": os.getloadavg()[0],
    }


# --- pruning ----------------------------------------------------------------------------------


def prune_with_torch_pruning(model: nn.Module, example: Tensor) -> tuple[dict[str, float], None]:
    """Torch-Pruning's MetaPruner, half of every group by L2 magnitude; in place."""
    start = time.perf_counter()
    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=0.5,
        ignored_layers=[model.fc],
        round_to=None,
        global_pruning=False,
    )
    built = time.perf_counter()
    pruner.step()
    return {"constructor": built - start, "step": time.perf_counter() - built}, None


def prune_with_pruneplug(
    model: nn.Module, example: Tensor, round_to: int | None = None, amount: float = 0.5
) -> tuple[dict[str, float], Any]:
    """pruneplug's channel pruning, ``amount`` of every group by L2 norm, then compaction; in place.

    Returns the time of each call and the ``CompactionReport``.
    """
    start = time.perf_counter()
    kwargs = {} if round_to is None else {"round_to": round_to}
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=amount, example_inputs=(example,), **kwargs)
    pruned = time.perf_counter()
    with timed_checks() as checks:
        report = pruneplug.compact(model, example_inputs=(example,))
    phases = {"prune_channels": pruned - start, "compact": time.perf_counter() - pruned}
    if checks:
        phases["of which compact's output check"] = sum(checks)
    return phases, report


@contextmanager
def timed_checks() -> Iterator[list[float]]:
    """The seconds of each forward ``compact`` runs to check its result (masked, then compacted).

    Reaches into ``pruneplug.compaction.compact._run``, a private function, for
    the breakdown only: if it is gone, nothing is timed.
    """
    module = sys.modules.get("pruneplug.compaction.compact")
    run = getattr(module, "_run", None)
    seconds: list[float] = []
    if run is None:
        yield seconds
        return

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return run(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    module._run = timed
    try:
        yield seconds
    finally:
        module._run = run


def measure_pruning(
    row: Row, dense: nn.Module, prune: Callable[[nn.Module], tuple[dict[str, float], Any]], repeats: int
) -> nn.Module:
    """Prune a fresh copy of ``dense`` ``repeats`` times; the last pruned model is kept (in eval mode)."""
    phases: dict[str, list[float]] = {}
    model, report = dense, None
    for index in range(repeats):
        model = copy.deepcopy(dense)
        gc.collect()
        with torch.enable_grad():
            start = time.perf_counter()
            parts, report = prune(model)
            row.prune_seconds.append(time.perf_counter() - start)
        for name, seconds in parts.items():
            phases.setdefault(name, []).append(seconds)
        print(f"  {row.name}: pruned in {row.prune_seconds[-1]:.2f} s ({index + 1}/{repeats})", file=sys.stderr)
    row.phases = {name: statistics.median(values) for name, values in phases.items()}
    if report is not None:
        row.report = report.model_dump()
    return model.eval()


def time_tracing(dense: nn.Module, example: Tensor, repeats: int) -> tuple[float, int]:
    """Median seconds of ``pruneplug.trace_channels`` alone, and the number of groups it finds."""
    times, groups = [], 0
    for _ in range(repeats):
        model = copy.deepcopy(dense)
        start = time.perf_counter()
        graph = pruneplug.trace_channels(model, (example,))
        times.append(time.perf_counter() - start)
        groups = len(graph.groups)
    return statistics.median(times), groups


# --- size and speed ----------------------------------------------------------------------------


def measure_size(row: Row, model: nn.Module, example: Tensor) -> None:
    row.params = count_params(model)
    row.macs = count_macs(model, (example,))
    if tp is not None:
        row.tp_macs = int(tp.utils.count_ops_and_params(model, example)[0])


def measure_latency(models: dict[str, nn.Module], rows: dict[str, Row], warmups: int, repeats: int) -> None:
    """Median seconds of one forward of a 16x3x224x224 batch; the models take turns."""
    batch = torch.randn(BATCH, 3, 224, 224)
    with torch.inference_mode():
        for name, model in models.items():
            for _ in range(warmups):
                model(batch)
            print(f"  {name}: warmed up", file=sys.stderr)
        for index in range(repeats):
            for name, model in models.items():
                start = time.perf_counter()
                model(batch)
                rows[name].latency.append(time.perf_counter() - start)
            print(f"  latency round {index + 1}/{repeats} done", file=sys.stderr)


# --- reporting ----------------------------------------------------------------------------------


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def latency_ratio(slow: Row, fast: Row) -> float | None:
    """The median over rounds of ``slow``'s time over ``fast``'s in the same round.

    The models take turns, so within a round both meet the same load; a ratio
    of the two overall medians would pair rounds of different loads.
    """
    if not slow.latency or len(slow.latency) != len(fast.latency):
        return None
    return statistics.median(a / b for a, b in zip(slow.latency, fast.latency))


def ratios(rows: dict[str, Row]) -> dict[str, float | None]:
    """Each pruned model against the dense one, and pruneplug against Torch-Pruning."""
    dense = rows["dense"]
    out: dict[str, float | None] = {}
    for name, row in rows.items():
        if name == "dense":
            continue
        speedup = latency_ratio(dense, row)
        reduction = _ratio(dense.macs, row.macs)
        out[f"{name}.speedup"] = speedup
        out[f"{name}.macs_reduction"] = reduction
        out[f"{name}.speedup_per_macs_reduction"] = _ratio(speedup, reduction)
    theirs, ours = rows["torch_pruning"], rows["pruneplug"]
    out["pruneplug_time_over_torch_pruning"] = _ratio(ours.prune_median, theirs.prune_median)
    out["pruneplug_latency_over_torch_pruning"] = latency_ratio(ours, theirs)
    return out


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def _cell(value: float | None, spec: str, suffix: str = "") -> str:
    return "—" if value is None else format(value, spec) + suffix


def _latency_cell(row: Row) -> str:
    if row.latency_median is None:
        return "—"
    return f"{row.latency_median * 1e3:.0f} ms ({min(row.latency) * 1e3:.0f} ms)"


def render(rows: dict[str, Row], found: dict[str, float | None], about: dict[str, Any], quick: bool) -> str:
    repeats = max((len(row.prune_seconds) for row in rows.values()), default=0)
    rounds = len(rows["dense"].latency)
    lines = [
        f"Machine: {about['cpus']} CPUs ({about['cpu']}), torch on {about['threads']} threads, "
        f"Python {about['python']}, torch {about['torch']}, Torch-Pruning {about['torch_pruning'] or '—'}; "
        f"load average {about['load_average']:.1f} when the run started, {about.get('load_average_end', 0):.1f} "
        "when it ended" + ("; --quick." if quick else "."),
        "",
        f"| model | prune + compact time (median of {repeats}; best) | parameters | MACs "
        f"| MACs (Torch-Pruning's count) | latency, batch {BATCH}: median of {rounds} (best) | speed-up "
        "| MACs reduction | speed-up / MACs reduction |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in rows.items():
        if row.skipped is not None:
            lines.append(f"| {row.library} | skipped (below) | | | | | | | |")
            continue
        time_cell = "—" if row.prune_median is None else f"{row.prune_median:.2f} s ({row.prune_best:.2f} s)"
        lines.append(
            f"| {row.library} | {time_cell} | {_cell(_scaled(row.params, 1e-6), '.2f', ' M')} "
            f"| {_cell(_scaled(row.macs, 1e-9), '.3f', ' G')} "
            f"| {_cell(_scaled(row.tp_macs, 1e-9), '.3f', ' G')} "
            f"| {_latency_cell(row)} "
            f"| {_cell(found.get(f'{name}.speedup'), '.2f', '×')} "
            f"| {_cell(found.get(f'{name}.macs_reduction'), '.2f', '×')} "
            f"| {_cell(found.get(f'{name}.speedup_per_macs_reduction'), '.2f')} |"
        )
    lines += [
        "",
        "| comparison | value | target |",
        "| --- | ---: | ---: |",
        f"| pruneplug's pruning time / Torch-Pruning's | "
        f"{_cell(found['pruneplug_time_over_torch_pruning'], '.2f')} | ≤ 1 |",
        f"| pruneplug's latency / Torch-Pruning's | {_cell(found['pruneplug_latency_over_torch_pruning'], '.2f')} "
        "| ≤ 1 |",
        f"| Torch-Pruning: speed-up / MACs reduction | "
        f"{_cell(found.get('torch_pruning.speedup_per_macs_reduction'), '.2f')} | ≥ 0.7 |",
        f"| pruneplug: speed-up / MACs reduction | "
        f"{_cell(found.get('pruneplug.speedup_per_macs_reduction'), '.2f')} | ≥ 0.7 |",
    ]
    lines += ["", "Speed-ups and the latency ratio are medians over rounds of the ratio within a round."]
    skipped = {row.skipped for row in rows.values() if row.skipped is not None}
    lines += [f"Skipped: {reason}" for reason in sorted(skipped)]
    ours = rows["pruneplug"]
    if ours.phases:
        phases = ", ".join(f"`{name}` {seconds:.2f} s" for name, seconds in ours.phases.items())
        lines.append(f"pruneplug's time, by call (medians): {phases}.")
    if ours.report is not None:
        modes = ours.report["verified_modes"]
        lines.append(
            f"Its compaction report: {ours.report['groups_compacted']} groups compacted, "
            f"{sum(ours.report['channels_removed'].values())} channels removed, outputs within "
            f"{ours.report['max_abs_diff']:.2g} of the masked model's in {' and '.join(modes)} "
            f"mode{'s' if len(modes) > 1 else ''} (traced with {ours.report['tracer']})."
        )
    return "\n".join(lines)


def write_docs(text: str) -> None:
    """Put ``text`` between the channel benchmark's markers in docs/benchmarks.md (the other tables stay)."""
    write_between(MARKERS, text, DOCS)


# --- the run ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 pruning run, 1 warm-up and 3 timed forwards each")
    parser.add_argument("--repeats", type=int, default=None, help="pruning runs per library (default 3)")
    parser.add_argument("--latency-repeats", type=int, default=None, help="timed forwards per model (default 10)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the usable CPUs)")
    parser.add_argument("--write-docs", action="store_true", help="rewrite the channels table in docs/benchmarks.md")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    latency_repeats = args.latency_repeats or (3 if args.quick else 10)
    warmups = 1 if args.quick else 3
    threads = args.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    torch.set_num_threads(threads)
    about = machine(torch.get_num_threads())
    print(f"torch threads: {torch.get_num_threads()}", file=sys.stderr)

    example = torch.randn(1, 3, 224, 224)
    dense = resnet50().eval()
    params, macs = count_params(dense), count_macs(dense, (example,))
    if (params, macs) != (PARAMS, MACS):
        raise SystemExit(f"the ResNet-50 has {params} parameters and {macs} MACs, not {PARAMS} and {MACS}")

    rows = {"dense": Row("dense", "dense ResNet-50")}
    models: dict[str, nn.Module] = {"dense": dense}
    rows["torch_pruning"] = Row("torch_pruning", "Torch-Pruning, `MetaPruner`, ratio 0.5")
    rows["pruneplug"] = Row("pruneplug", 'pruneplug, `"ln_structured"`, n=2, amount 0.5')
    rows["pruneplug_odd"] = Row("pruneplug_odd", f"pruneplug, amount {ROUND_AMOUNT} (odd widths)")
    for round_to in ROUND_TO:
        name = f"pruneplug_round_to_{round_to}"
        rows[name] = Row(name, f"pruneplug, amount {ROUND_AMOUNT}, `round_to={round_to}`")

    if tp is None:
        print(SKIP_TP, file=sys.stderr)
        rows["torch_pruning"].skipped = SKIP_TP
    else:
        models["torch_pruning"] = measure_pruning(
            rows["torch_pruning"], dense, lambda m: prune_with_torch_pruning(m, example), repeats
        )
    trace: tuple[float, int] | None = None
    if not has_channel_api():
        print(SKIP_PRUNEPLUG, file=sys.stderr)
        for name, row in rows.items():
            if name.startswith("pruneplug"):
                row.skipped = SKIP_PRUNEPLUG
    else:
        trace = time_tracing(dense, example, repeats)
        models["pruneplug"] = measure_pruning(
            rows["pruneplug"], dense, lambda m: prune_with_pruneplug(m, example), repeats
        )
        models["pruneplug_odd"] = measure_pruning(
            rows["pruneplug_odd"], dense, lambda m: prune_with_pruneplug(m, example, None, ROUND_AMOUNT), 1
        )
        for round_to in ROUND_TO:
            name = f"pruneplug_round_to_{round_to}"
            models[name] = measure_pruning(
                rows[name], dense, lambda m, r=round_to: prune_with_pruneplug(m, example, r, ROUND_AMOUNT), 1
            )
    for name, model in models.items():
        measure_size(rows[name], model, example)
    measure_latency(models, rows, warmups, latency_repeats)
    about["load_average_end"] = os.getloadavg()[0]

    found = ratios(rows)
    text = render(rows, found, about, args.quick)
    if trace is not None:
        text += f"\n`trace_channels` alone (inside `prune_channels` too): {trace[0]:.2f} s, {trace[1]} groups."
    print(text)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    payload = {
        "machine": about,
        "quick": args.quick,
        "batch": BATCH,
        "warmups": warmups,
        "trace_channels": None if trace is None else {"seconds": trace[0], "groups": trace[1]},
        "rows": [
            {**asdict(row), "prune_median": row.prune_median, "latency_median": row.latency_median}
            for row in rows.values()
        ],
        "ratios": found,
    }
    (out / "channels.json").write_text(json.dumps(payload, indent=2) + "\n")
    if args.write_docs:
        write_docs(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
