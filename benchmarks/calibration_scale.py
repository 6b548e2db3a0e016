"""SparseGPT on a 1.1 B-parameter LLaMA block by block: peak memory, time per block, each layer against a reference.

The model is ``transformers``' ``LlamaForCausalLM`` in TinyLlama-1.1B's shape
(hidden size 2048, 22 layers, MLP width 5632, 32 query heads sharing 4
key/value heads, vocabulary 32000, untied LM head; 1.10 B parameters, 4.4 GB
in fp32), built from its config with random weights (``torch.manual_seed``,
nothing downloaded) and put in eval mode. Building it is timed apart and
counted nowhere else. ``--quick`` takes a small model of the same family
(hidden 256, 4 layers, MLP 704, 8 heads on 4 key/value heads, vocabulary
1024) and runs in seconds.

Calibration: ``--samples`` sequences (4) of ``--seq-len`` random token ids
(512), one sequence per batch as the papers' code runs them (quick: 4 of
64). The papers use 128 sequences of 2048 tokens; the table states what that
would hold in memory, and roughly what it would take in time.

1. Memory and time per block, in one process on the model as built::

       pruneplug.prune_calibrated(model, "sparsegpt", amount=0.5, calibration=batches,
                                  sequential=True, progress=False, blocks=first_blocks,
                                  mask_storage="packed")  # --mask-storage

   on the first ``--blocks`` decoder layers (3 of the 22; quick: 2 of 4;
   ``--blocks 0``: all of them, the default blocks): each is calibrated on
   what the pruned blocks before it give, its 7 linear layers pruned by
   SparseGPT. The extra peak resident memory (RSS) over the RSS just before
   the call is compared with the target: one block's weights, plus its
   layers' Hessians (one ``d_in x d_in`` fp32 matrix each), plus the
   calibration activations the pipeline holds (each sequence's block inputs
   and block outputs: ``samples x seq-len x hidden x 4 B x 2``). The peak is
   the kernel's ``VmHWM`` in ``/proc/self/status``, reset before the call by
   writing ``5`` to ``/proc/self/clear_refs`` (Linux; elsewhere, or when the
   reset is refused, memory is not reported). The RSS when each block first
   runs is recorded too (a forward pre-hook on every decoder layer): what it
   grows by from block to block is what the pipeline keeps per block pruned
   (its masks: one bit per weight with the default ``--mask-storage packed``,
   one byte with ``bool``) plus memory the C allocator keeps after it
   is freed, and the RSS after the call what the prune leaves. The peak for
   all 22 blocks is projected as the peak measured plus the masks of the
   blocks not run. The time per
   block is the median of the report's ``BlockResult.seconds`` (statistics,
   pruning, and the block's two replays).

2. SparseGPT per layer against a reference, on the first block not pruned
   above (its inputs: what the pruned blocks give it, captured as the
   pipeline does): its 7 ``nn.Linear`` weights, each with its
   ``input_hessian`` statistic collected from those inputs by pruneplug's
   registered statistic. Per layer, in ``--rounds`` rounds (3) taking turns,
   so that a change in the machine's load hits all of them:

   * ``pruneplug.prune(layer, "weight", "sparsegpt", amount=0.5)`` inside
     ``pruneplug.using_statistics({layer: {"input_hessian": H}})``, on a fresh
     copy of the layer each time (the whole public path: planning, the mask,
     the values written into ``weight_orig``);
   * ``pruneplug.strategies.obs_prune(W, H, amount=0.5)``, the pure function;
   * ``reference_sparsegpt_from_hessian(W, H, sparsity=0.5)`` of
     ``tests/calibration/reference.py`` (loaded by path), an independent
     implementation following the official code (IST-DASLab/sparsegpt),

   all with block size 128 and dampening 0.01. Each round's time is the sum
   over the 7 layers; the table gives the median over rounds and the median
   over rounds of the ratio within a round (target: pruneplug no slower than
   the reference, ratio <= 1). The weights are compared too: the largest
   absolute difference between pruneplug's pruned weight and the reference's,
   their relative Frobenius distance, how many mask entries differ, and each
   one's relative output error ``‖XWᵀ - XŴᵀ‖ / ‖XWᵀ‖`` on the layer's inputs
   from the first calibration sequence.

The time per block the papers' calibration would take is estimated from
these: the 7 layers' SparseGPT time (``obs_prune``'s median) as it is, the
rest of a block's time (statistics and replays) scaled by the tokens.

Usage::

    python benchmarks/calibration_scale.py --threads 1    # 4 to 8 minutes on 2 shared cores, about 6 GB of memory
    python benchmarks/calibration_scale.py --quick        # the small model, seconds
    python benchmarks/calibration_scale.py --blocks 0     # prune every block (22: 10 to 20 minutes on 2 cores)
    python benchmarks/calibration_scale.py --samples 16   # more calibration (sequences of --seq-len tokens)
    python benchmarks/calibration_scale.py --threads 1 --write-docs  # also rewrite the table in docs/benchmarks.md
    python benchmarks/calibration_scale.py --json out.json  # the raw numbers elsewhere

``--threads`` sets torch's intra-op threads (default: the CPUs it may use).
SparseGPT's column loop is hundreds of small operations per block of
columns, whose threads wait on each other: on a machine other processes
share, one thread is several times faster (the reference's loop even more
so), and the numbers in the docs are measured so.

It prints markdown tables and writes the raw numbers to
``benchmarks/results/calibration_scale.json``. It needs ``transformers`` (the
``test`` extra) and the repository's ``tests/calibration/reference.py``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from _docs import write_between  # benchmarks/ is the script's folder, first on sys.path
from _llama import FULL, QUICK, weight_bytes
from _machine import machine
from _memory import peak_reset_works, proc_status, reset_peak
from torch import Tensor, nn

import pruneplug
from pruneplug.calibration.running import capture_inputs, run_block
from pruneplug.strategies import obs_prune

HERE = Path(__file__).resolve().parent
# benchmarks/transformers.py, in this script's folder (first on sys.path), would be imported as `transformers`:
# the folder is needed no more (_docs, _machine and _memory are in).
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
try:
    from transformers import LlamaConfig, LlamaForCausalLM
except ImportError:  # the test extra is not installed
    LlamaConfig = LlamaForCausalLM = None

ROOT = HERE.parent
DOCS = ROOT / "docs" / "benchmarks.md"
REFERENCE = ROOT / "tests" / "calibration" / "reference.py"
MARKERS = ("<!-- table:calibration-scale:start -->", "<!-- table:calibration-scale:end -->")
SEED = 0
AMOUNT = 0.5
BLOCK_SIZE = 128
DAMP = 0.01
FP32 = 4  # bytes
PAPER_SAMPLES, PAPER_SEQ_LEN = 128, 2048  # SparseGPT's and Wanda's calibration: 128 C4 sequences of 2048 tokens

# (samples, seq_len, blocks pruned, rounds) unless given on the command line
DEFAULTS = {"full": (4, 512, 3, 3), "quick": (4, 64, 2, 3)}


# --- memory -------------------------------------------------------------------------------------


# --- the model and its calibration ----------------------------------------------------------------


def build(shape: dict[str, Any]) -> nn.Module:
    """A ``LlamaForCausalLM`` of ``shape`` with random weights drawn from ``SEED``, in eval mode."""
    torch.manual_seed(SEED)
    return LlamaForCausalLM(LlamaConfig(**shape)).eval()


def linears(block: nn.Module) -> dict[str, nn.Linear]:
    """The block's ``nn.Linear`` layers by their name inside it (``self_attn.q_proj``, ..., ``mlp.down_proj``)."""
    return {name: module for name, module in block.named_modules() if isinstance(module, nn.Linear)}


def calibration_batches(shape: dict[str, Any], samples: int, seq_len: int) -> list[Tensor]:
    """``samples`` batches of one sequence of ``seq_len`` random token ids each."""
    generator = torch.Generator().manual_seed(SEED)
    return [torch.randint(0, shape["vocab_size"], (1, seq_len), generator=generator) for _ in range(samples)]


def load_reference() -> ModuleType:
    """``tests/calibration/reference.py``, loaded by path (the test folders are not packages)."""
    spec = importlib.util.spec_from_file_location("calibration_reference", REFERENCE)
    if spec is None or spec.loader is None or not REFERENCE.is_file():
        raise SystemExit(f"{REFERENCE} is missing: this benchmark compares with the reference SparseGPT there")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- 1. memory and time per block -----------------------------------------------------------------


def memory_target(block: nn.Module, samples: int, seq_len: int, hidden: int) -> dict[str, int]:
    """The target's terms, in bytes: one block's weights, its layers' Hessians, the calibration activations."""
    hessians = sum(layer.in_features**2 * FP32 for layer in linears(block).values())
    activations = samples * seq_len * hidden * FP32 * 2  # each sequence's block inputs and block outputs
    weights = weight_bytes(block)
    return {
        "block_weights": weights,
        "hessians": hessians,
        "activations": activations,
        "total": weights + hessians + activations,
    }


def stored_bytes(mask: Tensor) -> int:
    """The bytes a mask takes as stored: a packed mask's bits, a plain one's elements."""
    packed = getattr(mask, "packed", None)
    stored = packed if isinstance(packed, Tensor) else mask
    return stored.numel() * stored.element_size()


def prune_blocks(
    model: nn.Module, batches: list[Tensor], count: int, memory: bool, mask_storage: str
) -> dict[str, Any]:
    """``prune_calibrated`` with SparseGPT on the first ``count`` blocks (0: all), masks stored so, measured."""
    layers = model.model.layers
    chosen = list(layers) if count == 0 else list(layers)[:count]
    first_run: dict[int, int | None] = {}

    def recorder(index: int) -> Any:
        def hook(module: nn.Module, args: Any) -> None:
            if index not in first_run:
                first_run[index] = proc_status("VmRSS") if memory else None

        return hook

    handles = [block.register_forward_pre_hook(recorder(index)) for index, block in enumerate(chosen)]
    gc.collect()
    baseline = proc_status("VmRSS") if memory else None
    if memory:
        reset_peak()
    start = time.perf_counter()
    try:
        report = pruneplug.prune_calibrated(
            model,
            "sparsegpt",
            amount=AMOUNT,
            calibration=batches,
            sequential=True,
            progress=False,
            blocks=None if count == 0 else chosen,
            mask_storage=mask_storage,
        )
    finally:
        for handle in handles:
            handle.remove()
    seconds = time.perf_counter() - start
    gc.collect()
    after = proc_status("VmRSS") if memory else None
    # read last: the high-water mark covers the call and the RSS read just before (the
    # collection may touch a fresh page, which read first would put the peak under it)
    peak = proc_status("VmHWM") if memory else None
    pruned = [layer for block in chosen for layer in linears(block).values()]
    at_start = [first_run.get(index) for index in range(len(chosen))]
    growth = [
        b - a
        for a, b in itertools.pairwise(at_start[1:])  # from block 1 on: block 0's first run is the capture
        if a is not None and b is not None
    ]
    print(f"  prune_calibrated on {len(chosen)} blocks: {seconds:.1f} s", file=sys.stderr)
    return {
        "blocks_pruned": len(chosen),
        "mask_storage": mask_storage,
        "seconds": seconds,
        "rss_before": baseline,
        "peak_extra": None if peak is None or baseline is None else peak - baseline,
        "rss_after_extra": None if after is None or baseline is None else after - baseline,
        "rss_at_block_start_extra": [None if r is None or baseline is None else r - baseline for r in at_start],
        "growth_per_block": statistics.median(growth) if growth else None,
        # what the driver's rollback copies (each updated weight, for as long as the call runs) and the masks
        "pruned_weight_bytes": sum(layer.weight_orig.numel() * layer.weight_orig.element_size() for layer in pruned),
        "mask_bytes": sum(stored_bytes(layer.weight_mask) for layer in pruned),
        "block_seconds": [block.seconds for block in report.blocks],
        "block_relative_errors": [block.relative_error for block in report.blocks],
        "sparsity": report.sparsity,
        "rows": report.rows,
        "batches": report.batches,
    }


# --- 2. SparseGPT per layer against the reference -------------------------------------------------


def layer_hessians(
    model: nn.Module, index: int, batches: list[Tensor]
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
    """Block ``index``'s linear weights (copies), their ``input_hessian`` from its inputs on ``batches``, and
    each layer's inputs on the first batch (rows x d_in).

    The inputs are captured as the sequential pipeline captures them (the
    forward stops at the block), then the block runs on them with the
    registered statistic's accumulators fed by forward hooks.
    """
    block = model.model.layers[index]
    name = f"model.layers.{index}"
    statistic = pruneplug.get_registry().get_statistic("input_hessian")
    layers = linears(block)
    accumulators = {key: statistic.create(layer) for key, layer in layers.items()}
    first: dict[str, Tensor] = {}

    def feed(key: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            accumulators[key].add(args[0].detach())
            if key not in first:
                first[key] = args[0].detach().reshape(-1, args[0].shape[-1]).clone()

        return hook

    with torch.no_grad():
        inputs = capture_inputs(model, block, name, batches)
        handles = [layer.register_forward_hook(feed(key)) for key, layer in layers.items()]
        try:
            for item in inputs:
                run_block(block, item, name)
        finally:
            for handle in handles:
                handle.remove()
    weights = {key: layer.weight.detach().clone() for key, layer in layers.items()}
    return weights, {key: accumulator.result() for key, accumulator in accumulators.items()}, first


def _timed(function: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = function()
    return time.perf_counter() - start, out


def output_error(weight: Tensor, pruned: Tensor, inputs: Tensor) -> float:
    """``‖X Wᵀ - X Ŵᵀ‖ / ‖X Wᵀ‖`` on the rows ``inputs``: the layer-wise loss SparseGPT minimises."""
    dense = inputs @ weight.t()
    return float(torch.linalg.norm(dense - inputs @ pruned.t()) / torch.linalg.norm(dense))


def compare_layers(
    weights: dict[str, Tensor], hessians: dict[str, Tensor], inputs: dict[str, Tensor], rounds: int
) -> dict[str, Any]:
    """Each layer pruned by pruneplug (public path, and ``obs_prune``) and by the reference, taking turns."""
    reference = load_reference()
    times: dict[str, dict[str, list[float]]] = {key: {"prune": [], "obs_prune": [], "reference": []} for key in weights}
    results: dict[str, dict[str, Any]] = {}
    for round_index in range(rounds):
        for key, weight in weights.items():
            hessian = hessians[key]
            layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
            with torch.no_grad():
                layer.weight.copy_(weight)
            with pruneplug.using_statistics({layer: {"input_hessian": hessian}}):
                seconds, _ = _timed(
                    lambda layer=layer: pruneplug.prune(
                        layer, "weight", "sparsegpt", amount=AMOUNT, block_size=BLOCK_SIZE, damp=DAMP
                    )
                )
            times[key]["prune"].append(seconds)
            seconds, theirs = _timed(
                lambda weight=weight, hessian=hessian: reference.reference_sparsegpt_from_hessian(
                    weight, hessian, sparsity=AMOUNT, blocksize=BLOCK_SIZE, percdamp=DAMP
                )
            )
            times[key]["reference"].append(seconds)
            seconds, direct = _timed(
                lambda weight=weight, hessian=hessian: obs_prune(
                    weight, hessian, amount=AMOUNT, block_size=BLOCK_SIZE, damp=DAMP
                )
            )
            times[key]["obs_prune"].append(seconds)
            if round_index == 0:
                ours = layer.weight.detach()
                keep = layer.weight_mask.bool()
                results[key] = {
                    "shape": list(weight.shape),
                    "max_abs_diff": float((ours - theirs[0]).abs().max()),
                    "relative_diff": float(torch.linalg.norm(ours - theirs[0]) / torch.linalg.norm(theirs[0])),
                    "mask_mismatches": int((keep != theirs[1]).sum()),
                    "sparsity": 1.0 - float(keep.float().mean()),
                    "obs_prune_equals_prune": bool(torch.equal(direct[0], keep) and torch.equal(direct[1], ours)),
                    "output_error": output_error(weight, ours, inputs[key]),
                    "reference_output_error": output_error(weight, theirs[0], inputs[key]),
                }
            del layer, theirs, direct
        done = {kind: sum(times[key][kind][-1] for key in weights) for kind in ("prune", "obs_prune", "reference")}
        print(
            f"  round {round_index + 1}/{rounds}: prune {done['prune']:.1f} s, obs_prune {done['obs_prune']:.1f} s, "
            f"reference {done['reference']:.1f} s",
            file=sys.stderr,
        )
    per_round = {
        kind: [sum(times[key][kind][r] for key in weights) for r in range(rounds)]
        for kind in ("prune", "obs_prune", "reference")
    }
    return {
        "rounds": rounds,
        "layers": {key: {**results[key], "seconds": times[key]} for key in weights},
        "per_round": per_round,
        "ratio_prune": statistics.median(a / b for a, b in zip(per_round["prune"], per_round["reference"])),
        "ratio_obs_prune": statistics.median(a / b for a, b in zip(per_round["obs_prune"], per_round["reference"])),
    }


# --- the run ------------------------------------------------------------------------------------


def run(
    quick: bool, samples: int, seq_len: int, blocks: int, rounds: int, mask_storage: str = "packed"
) -> dict[str, Any]:
    shape = QUICK if quick else FULL
    layers = shape["num_hidden_layers"]
    if not 0 <= blocks < layers:
        raise SystemExit(
            f"--blocks must be 0 (all) or fewer than the model's {layers} layers (the next one is compared per layer)"
            if blocks >= layers
            else "--blocks must be >= 0"
        )
    memory = peak_reset_works()
    if not memory:
        print("VmHWM cannot be reset here (Linux only): memory is not reported", file=sys.stderr)
    batches = calibration_batches(shape, samples, seq_len)

    start = time.perf_counter()
    model = build(shape)
    build_seconds = time.perf_counter() - start
    print(f"  built in {build_seconds:.1f} s", file=sys.stderr)
    dense_bytes = weight_bytes(model)
    params = sum(p.numel() for p in model.parameters())
    target = memory_target(model.model.layers[0], samples, seq_len, shape["hidden_size"])

    pruning = prune_blocks(model, batches, blocks, memory, mask_storage)
    # per layer: the first block not pruned, on what the pruned ones give it (all pruned: the last one of a new model)
    compared = blocks if blocks else layers - 1
    if not blocks:
        del model
        gc.collect()
        model = build(shape)
    weights, hessians, inputs = layer_hessians(model, compared, batches)
    del model
    gc.collect()
    layers_result = compare_layers(weights, hessians, inputs, rounds)

    return {
        "shape": shape,
        "quick": quick,
        "calibration": {"samples": samples, "seq_len": seq_len, "tokens": samples * seq_len, "batch": 1},
        "build_seconds": build_seconds,
        "memory_measured": memory,
        "weight_bytes": dense_bytes,
        "params": params,
        "target": target,
        "paper_calibration": {
            "samples": PAPER_SAMPLES,
            "seq_len": PAPER_SEQ_LEN,
            "activations": PAPER_SAMPLES * PAPER_SEQ_LEN * shape["hidden_size"] * FP32 * 2,
        },
        "pruning": pruning,
        "compared_block": f"model.layers.{compared}",
        "per_layer": layers_result,
    }


# --- reporting ----------------------------------------------------------------------------------


def _gb(value: float | None) -> str:
    return "—" if value is None else f"{value / 1e9:.2f} GB"


def _mb(value: float) -> str:
    return f"{value / 1e6:.0f} MB"


def render(result: dict[str, Any], about: dict[str, Any]) -> str:
    shape, target, pruning = result["shape"], result["target"], result["pruning"]
    calibration, paper = result["calibration"], result["paper_calibration"]
    hidden, total_blocks, done = shape["hidden_size"], shape["num_hidden_layers"], pruning["blocks_pruned"]
    memory_gb = "" if about["memory_bytes"] is None else f", {about['memory_bytes'] / 2**30:.0f} GiB of memory"
    lines = [
        f"Machine: {about['cpus']} CPUs ({about['cpu']}){memory_gb}, torch on {about['threads']} threads, "
        f"Python {about['python']}, torch {about['torch']}, transformers {about['transformers']}; "
        f"load average {about['load_average']:.1f} when the run started, {about['load_average_end']:.1f} "
        "when it ended" + ("; --quick." if result["quick"] else "."),
        "",
        f"Model: `LlamaForCausalLM`, hidden size {hidden}, {total_blocks} layers, MLP width "
        f"{shape['intermediate_size']}, {shape['num_attention_heads']} heads on {shape['num_key_value_heads']} "
        f"key/value heads, vocabulary {shape['vocab_size']}: {result['params'] / 1e9:.3f} B parameters, "
        f"{_gb(result['weight_bytes'])} of fp32 weights (built in {result['build_seconds']:.0f} s, not counted). "
        f"Calibration: {calibration['samples']} sequences × {calibration['seq_len']} random tokens "
        f"({calibration['tokens']:,} rows per layer), one sequence per batch. `sparsegpt`, amount {AMOUNT}, "
        f"block size {BLOCK_SIZE}, damp {DAMP}, on the first {done} of the {total_blocks} decoder layers "
        f"({7 * done} linear layers; sparsity reached {pruning['sparsity']:.1%}); masks stored "
        f"`mask_storage={pruning['mask_storage']!r}`.",
        "",
    ]
    hessian_terms = "; ".join(f"{count} × {width}² × 4 B" for width, count in sorted(_hessian_widths(shape).items()))
    lines += [
        f"Target for the extra peak: one block's weights ({_mb(target['block_weights'])}) + its 7 layers' Hessians "
        f"({hessian_terms} = {_mb(target['hessians'])}) + the calibration activations (block inputs and outputs, "
        f"{calibration['samples']} × {calibration['seq_len']} × {hidden} × 4 B × 2 = {_mb(target['activations'])}) "
        f"= **{_gb(target['total'])}**. With the papers' calibration ({paper['samples']} × {paper['seq_len']} "
        f"tokens) the activations alone would be {_gb(paper['activations'])}, the target "
        f"{_gb(target['total'] - target['activations'] + paper['activations'])}.",
        "",
        "| measure | value |",
        "| --- | ---: |",
        f"| `prune_calibrated`, {done} blocks | {pruning['seconds']:.0f} s |",
    ]
    seconds = pruning["block_seconds"]
    lines.append(
        f"| time per block, median of {len(seconds)} (least to most) | **{statistics.median(seconds):.1f} s** "
        f"({min(seconds):.1f}–{max(seconds):.1f} s) |"
    )
    layers = result["per_layer"]
    sparsegpt = statistics.median(layers["per_round"]["obs_prune"])  # one block's 7 layers, SparseGPT alone
    rest = max(statistics.median(seconds) - sparsegpt, 0.0)  # statistics and replays: in proportion to the tokens
    scale = paper["samples"] * paper["seq_len"] / calibration["tokens"]
    lines.append(
        f"| time per block with the papers' calibration, rough estimate (SparseGPT's {sparsegpt:.1f} s + the rest "
        f"× {scale:.0f}) | {sparsegpt + rest * scale:.0f} s |"
    )
    peak, after, growth = pruning["peak_extra"], pruning["rss_after_extra"], pruning["growth_per_block"]
    if peak is not None:
        lines.append(
            f"| extra peak RSS over the RSS before the call | **{_gb(peak)}** "
            f"({peak / target['total']:.2f}× the target, {peak / result['weight_bytes']:.2f}× the weights) |"
        )
    if after is not None:
        lines.append(
            f"| RSS left after the call (the masks: {_gb(pruning['mask_bytes'])}, stored "
            f"`mask_storage={pruning['mask_storage']!r}`) | {_gb(after)} |"
        )
    per_block_weights = pruning["pruned_weight_bytes"] / done
    per_block_masks = pruning["mask_bytes"] / done
    if growth is not None:
        lines.append(
            f"| RSS growth from one block's start to the next's, median | {_gb(growth)} (a block's linear weights: "
            f"{_gb(per_block_weights)}, its masks: {_gb(per_block_masks)}) |"
        )
    if peak is not None and done < total_blocks:
        lines.append(
            f"| extra peak projected for all {total_blocks} blocks (+ a block's masks per block) "
            f"| {_gb(peak + (total_blocks - done) * per_block_masks)} |"
        )
    rounds = layers["per_round"]
    after = "after the pruned blocks" if done < total_blocks else "in a new, dense model"
    lines += [
        "",
        f"SparseGPT per layer on `{result['compared_block']}`'s 7 linear layers (its Hessians from its inputs "
        f"{after}), {layers['rounds']} rounds taking turns; seconds per round summed over the 7 layers, "
        "median (least to most):",
        "",
        "| implementation | seconds, 7 layers | vs reference (median ratio) |",
        "| --- | ---: | ---: |",
        f'| `pruneplug.prune(..., "sparsegpt")` in `using_statistics` | {_spread(rounds["prune"])} '
        f"| **{layers['ratio_prune']:.2f}×** (target ≤ 1) |",
        f"| `pruneplug.strategies.obs_prune` | {_spread(rounds['obs_prune'])} | {layers['ratio_obs_prune']:.2f}× |",
        f"| reference (`tests/calibration/reference.py`) | {_spread(rounds['reference'])} | 1 |",
        "",
        f"Per layer: median seconds; the pruned weights compared (largest absolute difference, relative "
        f"Frobenius distance, mask entries that differ); and each one's relative output error "
        f"‖XWᵀ − XŴᵀ‖/‖XWᵀ‖ on the first calibration sequence ({result['calibration']['seq_len']} rows):",
        "",
        "| layer | weight | pruneplug | reference | max abs diff | relative diff | mask entries differing "
        "| output error, pruneplug / reference |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, layer in layers["layers"].items():
        rows, columns = layer["shape"]
        lines.append(
            f"| `{key}` | {rows} × {columns} | {statistics.median(layer['seconds']['prune']):.2f} s "
            f"| {statistics.median(layer['seconds']['reference']):.2f} s | {layer['max_abs_diff']:.2g} "
            f"| {layer['relative_diff']:.2g} | {layer['mask_mismatches']:,} of {rows * columns:,} "
            f"| {layer['output_error']:.5f} / {layer['reference_output_error']:.5f} |"
        )
    same = all(layer["obs_prune_equals_prune"] for layer in layers["layers"].values())
    lines += [
        "",
        "`obs_prune` gave " + ("exactly" if same else "NOT exactly") + " the mask and weights of the public path.",
    ]
    return "\n".join(lines)


def _hessian_widths(shape: dict[str, Any]) -> dict[int, int]:
    """How many of a LLaMA block's 7 linear layers take each input width (q, k, v, o, gate, up: hidden; down: MLP)."""
    hidden, mlp = shape["hidden_size"], shape["intermediate_size"]
    return {hidden: 6, mlp: 1} if hidden != mlp else {hidden: 7}


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} s ({min(values):.1f}–{max(values):.1f} s)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small LLaMA (seconds)")
    parser.add_argument("--samples", type=int, default=None, help="calibration sequences (default 4)")
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default 512, quick 64)")
    parser.add_argument("--blocks", type=int, default=None, help="blocks pruned, 0: all (default 3, quick 2)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of the per-layer comparison (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the usable CPUs)")
    parser.add_argument(
        "--json", type=Path, default=HERE / "results" / "calibration_scale.json", help="where the raw numbers go"
    )
    parser.add_argument(
        "--mask-storage",
        choices=("packed", "bool"),
        default="packed",
        help="how the masks are kept (default packed: 1 bit per weight; bool: 1 byte)",
    )
    parser.add_argument("--write-docs", action="store_true", help="rewrite its table in docs/benchmarks.md")
    args = parser.parse_args(argv)
    if LlamaForCausalLM is None:
        raise SystemExit("this benchmark needs transformers (pip install 'pruneplug[test]')")
    threads = args.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    torch.set_num_threads(threads)
    about = machine(torch.get_num_threads())
    print(f"torch threads: {torch.get_num_threads()}", file=sys.stderr)

    samples, seq_len, blocks, rounds = DEFAULTS["quick" if args.quick else "full"]
    result = run(
        args.quick,
        args.samples or samples,
        args.seq_len or seq_len,
        blocks if args.blocks is None else args.blocks,
        args.rounds or rounds,
        args.mask_storage,
    )
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
