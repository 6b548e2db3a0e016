"""Pruning while training: what ``pruneplug.Pruner`` adds to a training step.

A training step (``zero_grad``, forward, cross-entropy, backward, AdamW's
``step``) of an MLP defined here (784 → 1024 → 1024 → 1024 → 10, ReLU;
2.86 M parameters, a fixed batch of 128 random inputs and labels) is timed
in four variants, interleaved in rounds (their order rotated from round to
round) so that whatever else runs on the machine hits all of them alike:

- ``dense``: the plain model, no pruning at all;
- ``masked``: a copy whose four Linear weights a Pruner has pruned to 50 %
  global L1 at step 0 (masks installed, ``weight = weight_orig * weight_mask``),
  trained *without* calling ``pruner.step()``;
- ``masked+step``: the same masked model, with ``pruner.step()`` after
  ``optimizer.step()`` on a step where the schedule does not prune (what a
  training loop with a Pruner attached does on almost every step);
- ``pruning``: a step where the schedule prunes: another masked copy whose
  Pruner's linear schedule goes from 50 % to 90 % with ``every=1``, so that
  each of its steps ranks all four weights globally again and prunes a few
  more entries (the optimizer's state zeroed there too), reaching 90 % at
  the last step timed;
- ``in_place+step`` and ``in_place pruning``: ``masked+step`` and
  ``pruning`` with ``Pruner(..., masking="in_place")``: plain weights, the
  pruner multiplying them by its masks after each optimizer step.

Each variant's time in a round is the mean of its steps in that round; the
medians over rounds are reported, and the ratios: ``masked+step / masked``
(the Pruner's bookkeeping on a non-pruning step), ``masked / dense`` (a
masked forward and backward against a dense one), ``masked+step / dense``
(a non-pruning step with the Pruner attached against a plain training step,
the issue's target of at most 1.05 times), ``pruning / dense``, and the
same two for masking in place.

Usage::

    python benchmarks/pruner_overhead.py                # 30 rounds of 5 steps of each variant
    python benchmarks/pruner_overhead.py --quick        # a small MLP, a few rounds: seconds
    python benchmarks/pruner_overhead.py --threads 1    # torch's intra-op threads (default: the usable CPUs)
    python benchmarks/pruner_overhead.py --write-docs   # also rewrite its table in docs/benchmarks.md

It prints a markdown table and writes the raw numbers to
``benchmarks/results/pruner_overhead.json`` (``--json`` elsewhere).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from _docs import write_between  # benchmarks/ is the script's folder, first on sys.path
from _machine import machine
from torch import Tensor, nn

import pruneplug

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs" / "benchmarks.md"
MARKERS = ("<!-- pruner-overhead:start -->", "<!-- pruner-overhead:end -->")
VARIANTS = ("dense", "masked", "masked+step", "pruning", "in_place+step", "in_place pruning")
TARGET = 1.05  # the bound on a non-pruning step with the Pruner attached


@dataclass(frozen=True)
class Setup:
    """The model's widths, the batch, and how many rounds of how many steps of each variant."""

    widths: tuple[int, ...]
    batch: int
    rounds: int
    steps: int
    warmup: int


FULL = Setup((784, 1024, 1024, 1024, 10), batch=128, rounds=30, steps=5, warmup=3)
QUICK = Setup((64, 128, 128, 10), batch=32, rounds=4, steps=2, warmup=1)


def mlp(widths: tuple[int, ...]) -> nn.Sequential:
    """Linear layers of ``widths`` with ReLU between them."""
    layers: list[nn.Module] = []
    for index, (width_in, width_out) in enumerate(itertools.pairwise(widths)):
        if index:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(width_in, width_out))
    return nn.Sequential(*layers)


RULES = [{"types": ["Linear"], "strategy": "l1_unstructured", "scope": "global", "params": {"amount": 0.5}}]


class Variant:
    """A model, its AdamW and maybe a Pruner: one training step of it, timed."""

    def __init__(self, model: nn.Module, pruner: pruneplug.Pruner | None, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.pruner, self.optimizer = model, pruner, optimizer

    def step(self, inputs: Tensor, labels: Tensor) -> float:
        """One training step (with ``pruner.step()`` if there is a pruner); its seconds."""
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(self.model(inputs), labels).backward()
        self.optimizer.step()
        if self.pruner is not None:
            self.pruner.step()
        return time.perf_counter() - start


def _adamw(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)


def _pruned(dense: nn.Module, schedule: dict[str, Any], masking: pruneplug.Masking) -> Variant:
    """A copy of ``dense`` with its AdamW and a Pruner, after the pruner's step 0 (50 %)."""
    model = copy.deepcopy(dense)
    optimizer = _adamw(model)
    pruner = pruneplug.Pruner(model, RULES, schedule=schedule, optimizer=optimizer, masking=masking)
    pruner.step()
    return Variant(model, pruner, optimizer)


def variants(setup: Setup) -> dict[str, Variant]:
    """The variants, each with a model of the same initial weights (``masked`` and ``masked+step`` share one)."""
    torch.manual_seed(0)
    dense = mlp(setup.widths)
    # prunes to 50 % at step 0, next at step 10**9: every step timed is a non-pruning one
    hold = {"name": "linear", "initial": 0.5, "final": 0.9, "start": 0, "end": 10**9, "every": 10**9}
    # 50 % at step 0, then a little more at every step, reaching 90 % at the last step timed
    end = setup.warmup + setup.rounds * setup.steps
    ramp = {"name": "linear", "initial": 0.5, "final": 0.9, "start": 0, "end": end, "every": 1}
    masked = _pruned(dense, hold, "reparametrize")
    return {
        "dense": Variant(dense, None, _adamw(dense)),
        "masked": Variant(masked.model, None, masked.optimizer),
        "masked+step": masked,
        "pruning": _pruned(dense, ramp, "reparametrize"),
        "in_place+step": _pruned(dense, hold, "in_place"),
        "in_place pruning": _pruned(dense, ramp, "in_place"),
    }


def measure(setup: Setup, log: Callable[[str], None]) -> dict[str, Any]:
    """Every variant's seconds per step in each round, the medians over rounds and the ratios."""
    torch.manual_seed(1)
    inputs, labels = torch.randn(setup.batch, setup.widths[0]), torch.randint(0, setup.widths[-1], (setup.batch,))
    runs = variants(setup)
    for run in runs.values():
        for _ in range(setup.warmup):
            run.step(inputs, labels)
    rounds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for index in range(setup.rounds):
        shift = index % len(VARIANTS)
        for name in VARIANTS[shift:] + VARIANTS[:shift]:
            seconds = [runs[name].step(inputs, labels) for _ in range(setup.steps)]
            rounds[name].append(sum(seconds) / len(seconds))
        log(f"round {index + 1}/{setup.rounds}: " + ", ".join(f"{n} {rounds[n][-1] * 1e3:.1f} ms" for n in VARIANTS))
    median = {name: statistics.median(times) for name, times in rounds.items()}
    pruner = runs["masked+step"].pruner
    pruning = runs["pruning"].pruner
    in_place = runs["in_place pruning"].pruner
    assert pruner is not None and pruning is not None and in_place is not None
    assert in_place.sparsity() == pruning.sparsity()  # the same run, masked the other way
    ratios = {
        "bookkeeping": median["masked+step"] / median["masked"],
        "masked_forward": median["masked"] / median["dense"],
        "non_pruning_step": median["masked+step"] / median["dense"],
        "pruning_step": median["pruning"] / median["dense"],
        "in_place_non_pruning_step": median["in_place+step"] / median["dense"],
        "in_place_pruning_step": median["in_place pruning"] / median["dense"],
    }
    return {
        "setup": asdict(setup),
        "parameters": sum(p.numel() for p in runs["dense"].model.parameters()),
        "rounds": rounds,
        "median": median,
        "ratios": ratios,
        "meets_target": {key: value <= TARGET for key, value in ratios.items()},
        "sparsity": {"masked": pruner.sparsity()[0], "pruning": pruning.sparsity()[0]},
        "pruning_steps": pruning.current_step,
    }


ROWS = (
    ('non-pruning step, `masking="in_place"` / plain step', "in_place+step", "dense", "in_place_non_pruning_step"),
    ('pruning step, `masking="in_place"` / plain step', "in_place pruning", "dense", "in_place_pruning_step"),
    ("non-pruning step, reparametrized (default) / plain step", "masked+step", "dense", "non_pruning_step"),
    ("`pruner.step()` bookkeeping (same reparametrized model)", "masked+step", "masked", "bookkeeping"),
    ("reparametrized model / dense model (no `pruner.step()`)", "masked", "dense", "masked_forward"),
    ("pruning step, reparametrized / plain step", "pruning", "dense", "pruning_step"),
)


def render(result: dict[str, Any], about: dict[str, Any], quick: bool) -> str:
    setup, median = result["setup"], result["median"]
    threads = f"{about['threads']} thread" + ("" if about["threads"] == 1 else "s")
    lines = [
        f"Machine: {about['cpus']} CPUs ({about['cpu']}), torch on {threads}, Python {about['python']}, "
        f"torch {about['torch']}; load average {about['load_average']:.1f} when the run started, "
        f"{about['load_average_end']:.1f} when it ended" + ("; --quick." if quick else "."),
        "",
        f"Model: MLP {' → '.join(map(str, setup['widths']))}, {result['parameters'] / 1e6:.2f} M parameters, "
        f"batch {setup['batch']}, AdamW; {setup['rounds']} rounds of {setup['steps']} steps of each variant, "
        f"medians over rounds. Masked sparsity {result['sparsity']['masked']:.1%}; the pruning variant reached "
        f"{result['sparsity']['pruning']:.2%} after {result['pruning_steps']} pruning steps.",
        "",
        "| comparison | measured | baseline | ratio | within 1.05× |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for label, measured, baseline, key in ROWS:
        ratio = result["ratios"][key]
        lines.append(
            f"| {label} | {median[measured] * 1e3:.2f} ms | {median[baseline] * 1e3:.2f} ms | {ratio:.3f}× "
            f"| {'yes' if ratio <= TARGET else 'no'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small MLP, a few rounds (seconds)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the usable CPUs)")
    parser.add_argument(
        "--json", type=Path, default=HERE / "results" / "pruner_overhead.json", help="where the raw numbers go"
    )
    parser.add_argument("--write-docs", action="store_true", help="rewrite its table in docs/benchmarks.md")
    args = parser.parse_args(argv)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads: int = args.threads or usable
    torch.set_num_threads(threads)
    about = machine(torch.get_num_threads())

    def log(line: str) -> None:
        print(line, file=sys.stderr)

    result = measure(QUICK if args.quick else FULL, log)
    about["load_average_end"] = os.getloadavg()[0]
    text = render(result, about, args.quick)
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": about, "quick": args.quick, **result}, indent=2) + "\n")
    if args.write_docs:
        write_between(MARKERS, text, DOCS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
