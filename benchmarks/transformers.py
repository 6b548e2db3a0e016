"""Structured pruning and compaction of a 1.1 B-parameter LLaMA: time, peak memory, and what it buys.

The model is ``transformers``' ``LlamaForCausalLM`` in TinyLlama-1.1B's shape
(hidden size 2048, 22 layers, MLP width 5632, 32 query heads sharing 4
key/value heads, vocabulary 32000, untied LM head; 1.10 B parameters, 4.4 GB
in fp32), built from its config with random weights (``torch.manual_seed``,
nothing downloaded) and put in eval mode. Building it is timed apart and
counted nowhere else. ``--quick`` takes a small model of the same family
(hidden 256, 4 layers, MLP 704, 8 heads on 4 key/value heads, vocabulary
1024) and runs in seconds.

Pruning, in one process on the model as built:

* ``pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5,
  example_inputs=(prompt,), group_filter=..., mask_storage="packed")`` (one
  bit per mask entry) on the MLP-neuron groups
  (each layer's ``mlp.gate_proj`` and ``up_proj`` rows with ``down_proj``'s
  columns): half the neurons of every layer;
* the same with ``amount=0.25`` on the attention-head groups (each layer's
  key/value heads, each with the query heads it serves: ``q/k/v_proj`` rows
  and ``o_proj`` columns): 4 key/value heads keep 3, 32 query heads keep 24;
* ``pruneplug.compact(model)``, which removes the masked channels, checks
  the compacted model's logits against the masked model's on the prompt
  (rolling back on a mismatch) and rewrites ``model.config``.

The groups are picked by their ``part`` (``"neurons"``, ``"heads"``); the
hidden size (the residual stream) is not pruned. Tracing and the output check run on the
same prompt: batch 1, 16 random token ids. Each call's wall time is
reported; ``prune_channels`` traces the model itself, and
``pruneplug.trace_channels`` alone is timed once, on the dense model, for
information.

Memory: the extra peak resident memory (RSS) of each call over the RSS just
before the first ``prune_channels`` call, as a multiple of the bytes of the
dense model's weights (parameters and buffers; the target is 0.5 times or less).
The peak is the kernel's ``VmHWM`` in ``/proc/self/status``, reset before
each call by writing ``5`` to ``/proc/self/clear_refs`` (Linux; elsewhere,
or when the reset is refused, memory is not reported). The RSS left after
compaction is reported the same way.

Then a second dense model is built from the same seed (the first was pruned
in place) and compared with the compacted one:

* CPU latency of one prefill forward, batch 1 x 512 random token ids, under
  ``torch.inference_mode`` on a fixed number of torch threads: one warm-up
  each, then ``--repeats`` rounds (5) in which the two models take turns, so
  a change in the machine's load hits both; the median and best of each,
  and the speed-up as the median over rounds of the ratio within a round;
* MACs of that forward, counted on fake tensors by
  :func:`pruneplug.compaction.macs.count_macs` (matrix products, attention's
  two included), and parameters;
* ``save_pretrained`` of the compacted model into a temporary folder and
  ``LlamaForCausalLM.from_pretrained`` back (both timed); the reloaded
  model's logits on the prompt must equal the compacted model's exactly.
  transformers 5 refuses a LLaMA config whose hidden size is not a multiple
  of its number of heads (2048 and 24 here, though the model runs with its
  explicit ``head_dim``), so ``compact`` keeps the head counts out of the
  config and says so (``report.config_mismatches``); then the model is
  loaded the documented way instead -- built from the saved config, the saved
  weights given to ``pruneplug.load_compacted`` -- and the table says so.

Usage::

    python benchmarks/transformers.py                # several minutes on 2 cores, about 14 GB of memory
    python benchmarks/transformers.py --quick        # the small model, seconds
    python benchmarks/transformers.py --threads 2    # torch's intra-op threads (default: the CPUs it may use)
    python benchmarks/transformers.py --write-docs   # also rewrite the transformers table in docs/benchmarks.md
    python benchmarks/transformers.py --json out.json  # the raw numbers elsewhere

It prints markdown tables and writes the raw numbers to
``benchmarks/results/transformers.json``. It needs ``transformers`` (the
``test`` extra).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from _docs import write_between  # benchmarks/ is the script's folder, first on sys.path
from _llama import FULL, QUICK, weight_bytes
from _machine import machine
from _memory import peak_reset_works, proc_status, reset_peak
from torch import Tensor, nn

import pruneplug
from pruneplug.compaction.macs import count_macs, count_params

HERE = Path(__file__).resolve().parent
# This script bears the name of the library it measures, and its folder comes first on sys.path when it
# runs: `import transformers` would import the script again. The folder is needed no more (_docs is in).
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
try:
    from safetensors.torch import load_file
    from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM
except ImportError:  # the test extra is not installed
    AutoConfig = LlamaConfig = LlamaForCausalLM = load_file = None

ROOT = HERE.parent
DOCS = ROOT / "docs" / "benchmarks.md"
MARKERS = ("<!-- table:transformers:start -->", "<!-- table:transformers:end -->")
SEED = 0
PROMPT_TOKENS = 16
PREFILL_TOKENS = 512
MLP_AMOUNT = 0.5
HEAD_AMOUNT = 0.25
MEMORY_TARGET = 0.5


# --- memory -------------------------------------------------------------------------------------


@dataclass
class Call:
    """One measured call: wall seconds, peak RSS over the RSS before pruning started, RSS after."""

    name: str
    seconds: float
    peak_extra: int | None = None  # bytes
    rss_after: int | None = None  # bytes


@contextmanager
def measured(name: str, calls: list[Call], baseline: int | None, memory: bool) -> Iterator[None]:
    """Time the block; with ``memory``, its peak RSS over ``baseline`` and the RSS it leaves."""
    gc.collect()
    if memory:
        reset_peak()
    start = time.perf_counter()
    yield
    seconds = time.perf_counter() - start
    call = Call(name, seconds)
    if memory and baseline is not None:
        peak = proc_status("VmHWM")
        call.peak_extra = None if peak is None else peak - baseline
        call.rss_after = proc_status("VmRSS")
    calls.append(call)
    print(f"  {name}: {seconds:.2f} s", file=sys.stderr)


# --- the model ------------------------------------------------------------------------------------


def build(shape: dict[str, Any]) -> nn.Module:
    """A ``LlamaForCausalLM`` of ``shape`` with random weights drawn from ``SEED``, in eval mode."""
    torch.manual_seed(SEED)
    return LlamaForCausalLM(LlamaConfig(**shape)).eval()


def _part(part: str) -> Callable[[Any], bool]:
    """A group filter: the groups the channel graph names ``part`` (``"neurons"``, ``"heads"``)."""

    def pick(group: Any) -> bool:
        return getattr(group, "part", None) == part

    return pick


MLP_GROUPS = _part("neurons")
HEAD_GROUPS = _part("heads")


def logits(model: nn.Module, ids: Tensor) -> Tensor:
    with torch.inference_mode():
        return model(ids).logits


# --- the run ------------------------------------------------------------------------------------


def prune_and_compact(
    model: nn.Module, prompt: Tensor, memory: bool
) -> tuple[list[Call], int | None, dict[str, Any], int]:
    """Prune ``model`` in place (MLP neurons, then heads) and compact it, measuring each call.

    Returns the calls, the RSS before pruning, the compaction report and the
    number of groups ``trace_channels`` found.
    """
    calls: list[Call] = []
    gc.collect()
    baseline = proc_status("VmRSS") if memory else None
    with measured("trace_channels (alone, for information)", calls, baseline, memory):
        graph = pruneplug.trace_channels(model, (prompt,))
    groups = len(graph.prunable)
    del graph
    gc.collect()
    baseline = proc_status("VmRSS") if memory else None
    for what, amount, part in (("MLP neurons", MLP_AMOUNT, MLP_GROUPS), ("attention heads", HEAD_AMOUNT, HEAD_GROUPS)):
        with torch.enable_grad(), measured(f"prune_channels, {what}", calls, baseline, memory):
            pruneplug.prune_channels(
                model,
                "ln_structured",
                n=2,
                amount=amount,
                example_inputs=(prompt,),
                group_filter=part,
                mask_storage="packed",
            )
    with torch.enable_grad(), measured("compact", calls, baseline, memory):
        report = pruneplug.compact(model)
    return calls, baseline, report.model_dump(), groups


def measure_latency(models: dict[str, nn.Module], ids: Tensor, repeats: int) -> dict[str, list[float]]:
    """Seconds of one forward of ``ids`` for each model; one warm-up each, then the models take turns."""
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for name, model in models.items():
            model(ids)
            print(f"  {name}: warmed up", file=sys.stderr)
        for index in range(repeats):
            for name, model in models.items():
                start = time.perf_counter()
                model(ids)
                times[name].append(time.perf_counter() - start)
            print(f"  latency round {index + 1}/{repeats} done", file=sys.stderr)
    return times


def round_trip(model: nn.Module, prompt: Tensor, report: Any) -> dict[str, Any]:  # (a report or its dump)
    """``save_pretrained`` ``model`` and load it back, timed; the reloaded logits on ``prompt`` must be equal.

    With ``from_pretrained`` when the config describes the compacted model;
    else (``report.config_mismatches``: transformers 5's ``LlamaConfig``
    refuses 24 heads on a hidden size of 2048, so ``compact`` kept them out
    of the config) the documented way: the model built from the saved config
    and ``pruneplug.load_compacted`` on the saved weights (the build is not
    timed).
    """
    expected = logits(model, prompt)
    mismatches = report["config_mismatches"] if isinstance(report, dict) else report.config_mismatches
    refused = mismatches[0] if mismatches else None
    with tempfile.TemporaryDirectory(prefix="pruneplug-bench-") as folder:
        start = time.perf_counter()
        model.save_pretrained(folder)
        save_seconds = time.perf_counter() - start
        if refused is None:
            method = "save_pretrained / from_pretrained"
            start = time.perf_counter()
            loaded = LlamaForCausalLM.from_pretrained(folder).eval()
            load_seconds = time.perf_counter() - start
        else:
            print(f"  the config cannot state the model ({refused}): load_compacted instead", file=sys.stderr)
            method = "save_pretrained / load_compacted"
            fresh = LlamaForCausalLM(AutoConfig.from_pretrained(folder)).eval()
            start = time.perf_counter()
            state = {}
            for file in sorted(Path(folder).glob("*.safetensors")):
                state.update(load_file(file))
            loaded = pruneplug.load_compacted(fresh, state).eval()
            load_seconds = time.perf_counter() - start
        size = sum(path.stat().st_size for path in Path(folder).iterdir())
    got = logits(loaded, prompt)
    if not torch.equal(expected, got):
        diff = (expected - got).abs().max().item()
        raise SystemExit(
            f"{method}: the reloaded model computes other logits than the saved one (max |diff| {diff:.3g})"
        )
    return {
        "method": method,
        "config_refused": refused,
        "save_seconds": save_seconds,
        "load_seconds": load_seconds,
        "bytes_on_disk": size,
    }


def run(quick: bool, repeats: int) -> dict[str, Any]:
    shape = QUICK if quick else FULL
    memory = peak_reset_works()
    if not memory:
        print("VmHWM cannot be reset here (Linux only): memory is not reported", file=sys.stderr)
    generator = torch.Generator().manual_seed(SEED)
    prompt = torch.randint(0, shape["vocab_size"], (1, PROMPT_TOKENS), generator=generator)
    prefill = torch.randint(0, shape["vocab_size"], (1, PREFILL_TOKENS), generator=generator)

    start = time.perf_counter()
    model = build(shape)
    build_seconds = time.perf_counter() - start
    print(f"  built in {build_seconds:.1f} s", file=sys.stderr)
    dense_bytes = weight_bytes(model)
    dense_params = count_params(model)
    dense_logits = logits(model, prompt)

    calls, baseline, report, groups = prune_and_compact(model, prompt, memory)
    compact_params = count_params(model)
    compact_bytes = weight_bytes(model)

    start = time.perf_counter()
    dense = build(shape)
    rebuild_seconds = time.perf_counter() - start
    if not torch.equal(logits(dense, prompt), dense_logits):
        raise SystemExit("the second dense model, built from the same seed, differs from the first")
    macs = {"dense": count_macs(dense, (prefill,)), "compacted": count_macs(model, (prefill,))}
    latency = measure_latency({"dense": dense, "compacted": model}, prefill, repeats)
    del dense
    gc.collect()
    saved = round_trip(model, prompt, report)

    speedup = statistics.median(a / b for a, b in zip(latency["dense"], latency["compacted"]))
    return {
        "shape": shape,
        "quick": quick,
        "prompt_tokens": PROMPT_TOKENS,
        "prefill_tokens": PREFILL_TOKENS,
        "build_seconds": build_seconds,
        "rebuild_seconds": rebuild_seconds,
        "memory_measured": memory,
        "rss_before_pruning": baseline,
        "weight_bytes": {"dense": dense_bytes, "compacted": compact_bytes},
        "params": {"dense": dense_params, "compacted": compact_params},
        "trace_groups": groups,
        "calls": [asdict(call) for call in calls],
        "report": report,
        "macs": macs,
        "latency": latency,
        "speedup": speedup,
        "macs_reduction": macs["dense"] / macs["compacted"],
        "round_trip": saved,
    }


# --- reporting ----------------------------------------------------------------------------------


def _times(value: int | None, of: int) -> str:
    return "—" if value is None else f"{value / of:.2f}×"


def _gb(value: int | None) -> str:
    return "—" if value is None else f"{value / 1e9:.2f} GB"


def render(result: dict[str, Any], about: dict[str, Any]) -> str:
    shape, weights = result["shape"], result["weight_bytes"]["dense"]
    pruning = [call for call in result["calls"] if not call["name"].startswith("trace_channels")]
    peaks = [call["peak_extra"] for call in pruning if call["peak_extra"] is not None]
    peak = max(peaks) if peaks else None
    total = sum(call["seconds"] for call in pruning)
    report = result["report"]
    memory_gb = "" if about["memory_bytes"] is None else f", {about['memory_bytes'] / 2**30:.0f} GiB of memory"
    lines = [
        f"Machine: {about['cpus']} CPUs ({about['cpu']}){memory_gb}, torch on {about['threads']} threads, "
        f"Python {about['python']}, torch {about['torch']}, transformers {about['transformers']}; "
        f"load average {about['load_average']:.1f} when the run started, {about['load_average_end']:.1f} "
        "when it ended" + ("; --quick." if result["quick"] else "."),
        "",
        f"Model: `LlamaForCausalLM`, hidden size {shape['hidden_size']}, {shape['num_hidden_layers']} layers, "
        f"MLP width {shape['intermediate_size']}, {shape['num_attention_heads']} heads on "
        f"{shape['num_key_value_heads']} key/value heads, vocabulary {shape['vocab_size']}: "
        f"{result['params']['dense'] / 1e9:.3f} B parameters, {_gb(weights)} of fp32 weights "
        f"(built in {result['build_seconds']:.0f} s, not counted). Pruned: {MLP_AMOUNT:.0%} of the MLP neurons "
        f"and {HEAD_AMOUNT:.0%} of the key/value heads (with their query heads) of every layer; "
        f"prompt of {result['prompt_tokens']} tokens.",
        "",
        "| call | wall time | extra peak memory (× weights) | memory after (× weights) |",
        "| --- | ---: | ---: | ---: |",
    ]
    baseline = result["rss_before_pruning"]
    for call in result["calls"]:
        after = None if call["rss_after"] is None or baseline is None else call["rss_after"] - baseline
        after_cell = "—" if after is None else f"{after / weights:+.2f}×"
        lines.append(
            f"| `{call['name']}` | {call['seconds']:.1f} s | {_times(call['peak_extra'], weights)} "
            f"({_gb(call['peak_extra'])}) | {after_cell} |"
        )
    lines.append(
        f"| **prune + compact** | **{total:.1f} s** | **{_times(peak, weights)}** (target ≤ {MEMORY_TARGET}×) | |"
    )
    lat, macs, params = result["latency"], result["macs"], result["params"]
    rounds = len(lat["dense"])
    lines += [
        "",
        f"| model | parameters | MACs, {result['prefill_tokens']} tokens | prefill latency, batch 1 × "
        f"{result['prefill_tokens']}: median of {rounds} (best) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name in ("dense", "compacted"):
        lines.append(
            f"| {name} | {params[name] / 1e6:,.1f} M | {macs[name] / 1e9:,.1f} G "
            f"| {statistics.median(lat[name]):.2f} s ({min(lat[name]):.2f} s) |"
        )
    trip = result["round_trip"]
    lines += [
        "",
        f"Speed-up {result['speedup']:.2f}× (median over rounds of the ratio within a round) for "
        f"{result['macs_reduction']:.2f}× fewer MACs ({result['speedup'] / result['macs_reduction']:.2f} of "
        f"the saving shows as time) and {params['dense'] / params['compacted']:.2f}× fewer parameters.",
        f"Compaction report: {report['groups_compacted']} groups compacted, "
        f"{sum(report['channels_removed'].values()):,} channels removed, logits within "
        f"{report['max_abs_diff']:.2g} of the masked model's (tolerance {report['tolerance']:.2g}), traced "
        f"by {report['tracer'].split(' ')[0]}; config: "
        + (", ".join(f"{key}={value}" for key, value in report["config_sizes"].items()) or "unchanged (below)")
        + ".",
    ]
    saving, loading = (f"`{name.strip()}`" for name in trip["method"].split("/"))
    if trip["config_refused"] is not None:
        lines.append(
            f"The config cannot state the compacted model ({trip['config_refused']}), so `compact` kept its old"
            f" head counts in it: `from_pretrained` cannot rebuild the model; saved with {saving}, loaded with"
            f" {loading} (into the model built from the saved config)."
        )
    lines.append(
        f"{saving}: {trip['save_seconds']:.1f} s ({_gb(trip['bytes_on_disk'])}), {loading}: "
        f"{trip['load_seconds']:.1f} s; the reloaded model's logits equal the compacted model's exactly."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small LLaMA (seconds)")
    parser.add_argument("--repeats", type=int, default=None, help="timed forwards per model (default 5, quick 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the usable CPUs)")
    parser.add_argument(
        "--json", type=Path, default=HERE / "results" / "transformers.json", help="where the raw numbers go"
    )
    parser.add_argument("--write-docs", action="store_true", help="rewrite its table in docs/benchmarks.md")
    args = parser.parse_args(argv)
    if LlamaForCausalLM is None:
        raise SystemExit("this benchmark needs transformers (pip install 'pruneplug[test]')")
    threads = args.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    torch.set_num_threads(threads)
    about = machine(torch.get_num_threads())
    print(f"torch threads: {torch.get_num_threads()}", file=sys.stderr)

    result = run(args.quick, args.repeats or (3 if args.quick else 5))
    about["load_average_end"] = os.getloadavg()[0]
    text = render(result, about)
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": about, **result}, indent=2) + "\n")
    if args.write_docs:
        write_between(MARKERS, text, DOCS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
