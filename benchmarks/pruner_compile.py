"""Pruning while training a compiled model: what ``pruneplug.Pruner`` costs ``torch.compile`` in recompilations.

An MLP defined here (784 → 512 → 512 → 10, ReLU, a fixed batch of 128
random inputs and labels) is trained with AdamW and a Pruner whose linear
schedule prunes its three Linear weights globally (L1) from 50 % at step 0
to 90 %, every ``every`` steps, for bool and for packed masks and for
``masking="in_place"`` (plain weights, the masks the pruner's): two copies,
one eager and one through ``torch.compile`` (inductor when a C++ compiler
is found, else aot_eager; ``--backend`` to choose), step by step in turn
(which goes first alternates) so that the load of a shared machine hits
both alike. The backend is wrapped to count
the graphs it compiles and every call of a compiled graph, so that each
step's forward is known to have recompiled, run compiled, or run eagerly
(Dynamo gives up on a frame after ``torch._dynamo.config.recompile_limit``
recompilations and runs it as plain Python). The guard that failed at each
recompilation is read from ``torch._dynamo.utils.guard_failures``.

A step's forward runs before its ``pruner.step()``: the masks a pruning step
changes are first seen by the next step's forward, which is where a
recompilation shows. Reported, per mask storage: the graphs compiled, the
recompilations on forwards after a pruning step and on the others, how many
forwards ran compiled, the step from which Dynamo ran the model eagerly, the
distinct guard failures, and the median step times: eager, compiled (steps
that neither compiled nor fell back), the steps that recompiled and the
steps after Dynamo gave up, and the first step's (the first compilation).

Usage::

    python benchmarks/pruner_compile.py                  # 60 steps, a pruning step every 5 (a few minutes: inductor)
    python benchmarks/pruner_compile.py --quick          # a small MLP, 24 steps: seconds with --backend eager
    python benchmarks/pruner_compile.py --backend aot_eager
    python benchmarks/pruner_compile.py --write-docs     # also rewrite its table in docs/benchmarks.md

It prints a markdown table and writes the raw numbers to
``benchmarks/results/pruner_compile.json`` (``--json`` elsewhere).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch._dynamo
from _docs import write_between  # benchmarks/ is the script's folder, first on sys.path
from _machine import machine
from torch import Tensor, nn
from torch._dynamo.backends.registry import lookup_backend
from torch._dynamo.utils import guard_failures

import pruneplug

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs" / "benchmarks.md"
MARKERS = ("<!-- pruner-compile:start -->", "<!-- pruner-compile:end -->")
STORAGES = ("bool", "packed", "in_place")  # the masks: stored as bool or packed, or held by the pruner
RULES = [{"types": ["Linear"], "strategy": "l1_unstructured", "scope": "global", "params": {"amount": 0.9}}]


@dataclass(frozen=True)
class Setup:
    """The model's widths, the batch, the steps and how often the schedule prunes."""

    widths: tuple[int, ...]
    batch: int
    steps: int
    every: int


FULL = Setup((784, 512, 512, 10), batch=128, steps=60, every=5)
QUICK = Setup((64, 128, 10), batch=32, steps=24, every=4)


def mlp(widths: tuple[int, ...]) -> nn.Sequential:
    """Linear layers of ``widths`` with ReLU between them."""
    layers: list[nn.Module] = []
    for index, (width_in, width_out) in enumerate(itertools.pairwise(widths)):
        if index:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(width_in, width_out))
    return nn.Sequential(*layers)


def default_backend() -> str:
    """Inductor when a C compiler is on the PATH (it compiles C++ for the CPU), else aot_eager."""
    return "inductor" if shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++") else "aot_eager"


@dataclass
class Counting:
    """Wraps a Dynamo backend: counts the graphs it compiles and the calls of the compiled code."""

    backend: str
    compiled: int = 0
    calls: int = 0

    def __call__(self, graph: torch.fx.GraphModule, inputs: list[Any]) -> Callable[..., Any]:
        self.compiled += 1
        run = lookup_backend(self.backend)(graph, inputs)

        def counted(*args: Any) -> Any:
            self.calls += 1
            return run(*args)

        return counted


@dataclass
class Step:
    """One training step: its seconds, whether its ``pruner.step()`` pruned, what its forward did."""

    seconds: float
    pruned: bool
    compiled: int = 0  # graphs compiled during its forward
    ran_compiled: bool = False


@dataclass
class Run:
    steps: list[Step] = field(default_factory=list)
    guards: list[str] = field(default_factory=list)  # the distinct guard failures, in order of first sight


def _guard(reason: str) -> str:
    """A guard failure's first line without its compile id, numbers that differ each time as ``N``."""
    first = reason.splitlines()[0]
    first = re.sub(r"^\[?\d+/\d+\]?:\s*", "", first)
    first = re.sub(r"(==|___check_type_id\([^,]+,) \d+", r"\1 N", first)
    return first.split("  #", 1)[0].strip()


class Trainer:
    """The MLP, its AdamW and a Pruner, compiled with a counted backend (``None``: run eagerly)."""

    def __init__(self, setup: Setup, storage: str, backend: str | None) -> None:
        torch.manual_seed(0)
        self.model = mlp(setup.widths)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=0.01)
        end = (setup.steps - 1) // setup.every * setup.every
        schedule = {"name": "linear", "initial": 0.5, "final": 0.9, "start": 0, "end": end, "every": setup.every}
        self.pruner = pruneplug.Pruner(
            self.model,
            RULES,
            schedule=schedule,
            optimizer=self.optimizer,
            mask_storage=None if storage == "in_place" else storage,  # type: ignore[arg-type]
            masking="in_place" if storage == "in_place" else "reparametrize",
        )
        self.counting = Counting(backend) if backend is not None else None
        self.forward = self.model if self.counting is None else torch.compile(self.model, backend=self.counting)
        self.run = Run()

    def step(self, inputs: Tensor, labels: Tensor) -> None:
        """One training step with ``pruner.step()``, timed, and what its forward did."""
        counting = self.counting
        compiled, calls = (counting.compiled, counting.calls) if counting is not None else (0, 0)
        pruning = self.pruner.schedules[0].prunes_at(self.pruner.current_step)
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(self.forward(inputs), labels).backward()
        self.optimizer.step()
        self.pruner.step()
        step = Step(time.perf_counter() - start, pruning)
        if counting is not None:
            step.compiled = counting.compiled - compiled
            step.ran_compiled = counting.calls > calls
        self.run.steps.append(step)


def train(setup: Setup, storage: str, backend: str) -> tuple[Run, Run]:
    """An eager and a compiled run of the same training, step by step in turn (the first of each pair rotated)."""
    torch._dynamo.reset()
    guard_failures.clear()
    eager, compiled = Trainer(setup, storage, None), Trainer(setup, storage, backend)
    torch.manual_seed(1)
    inputs, labels = torch.randn(setup.batch, setup.widths[0]), torch.randint(0, setup.widths[-1], (setup.batch,))
    for index in range(setup.steps):
        for trainer in (eager, compiled) if index % 2 else (compiled, eager):
            trainer.step(inputs, labels)
    seen: set[str] = set()
    for reasons in guard_failures.values():
        for reason in reasons:
            kind = _guard(reason)
            if kind not in seen:
                seen.add(kind)
                compiled.run.guards.append(kind)
    torch._dynamo.reset()
    return eager.run, compiled.run


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(eager: Run, compiled: Run) -> dict[str, Any]:
    """The counts and medians of one storage's two runs (see the module docstring)."""
    steps = compiled.steps
    after_prune = [index for index in range(1, len(steps)) if steps[index - 1].pruned]
    others = [index for index in range(1, len(steps)) if not steps[index - 1].pruned]
    fallback = next((index for index, step in enumerate(steps) if not step.ran_compiled), None)
    masks_changed = sum(step.pruned for step in steps[:-1])
    return {
        "graphs_compiled": sum(step.compiled for step in steps),
        "pruning_steps": sum(step.pruned for step in steps),
        "recompiles_after_pruning": [steps[index].compiled for index in after_prune],
        "recompiles_other_steps": sum(steps[index].compiled for index in others),
        "forwards_compiled": sum(step.ran_compiled for step in steps),
        "eager_from_step": fallback,
        "recompile_limit": int(torch._dynamo.config.recompile_limit),
        "masks_changed_before_last_forward": masks_changed,
        "guards": compiled.guards,
        "median_eager": _median([step.seconds for step in eager.steps[1:] if not step.pruned]),
        "median_compiled": _median(
            [s.seconds for s in steps[1:] if s.ran_compiled and not s.compiled and not s.pruned]
        ),
        "median_recompiling": _median([s.seconds for s in steps[1:] if s.compiled]),
        "median_fallback": _median([s.seconds for s in steps if not s.ran_compiled and not s.pruned]),
        "first_step_compiled": steps[0].seconds,
    }


def measure(setup: Setup, backend: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Both storages, eagerly and compiled: their steps and the summary of each."""
    result: dict[str, Any] = {"setup": asdict(setup), "backend": backend, "storages": {}}
    for storage in STORAGES:
        eager, compiled = train(setup, storage, backend)
        log(f"{storage}: done")
        result["storages"][storage] = {
            "summary": summarize(eager, compiled),
            "eager_steps": [asdict(step) for step in eager.steps],
            "compiled_steps": [asdict(step) for step in compiled.steps],
        }
    return result


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:.2f} ms"


def render(result: dict[str, Any], about: dict[str, Any], quick: bool) -> str:
    setup = result["setup"]
    threads = f"{about['threads']} thread" + ("" if about["threads"] == 1 else "s")
    lines = [
        f"Machine: {about['cpus']} CPUs ({about['cpu']}), torch on {threads}, Python {about['python']}, "
        f"torch {about['torch']}; load average {about['load_average']:.1f} when the run started, "
        f"{about['load_average_end']:.1f} when it ended" + ("; --quick." if quick else "."),
        "",
        f"Model: MLP {' → '.join(map(str, setup['widths']))}, batch {setup['batch']}, AdamW, "
        f"{setup['steps']} steps, a pruning step every {setup['every']} (50 % → 90 % global L1), "
        f"`torch.compile(backend={result['backend']!r})`; Dynamo's recompile_limit "
        f"{result['storages'][STORAGES[0]]['summary']['recompile_limit']}. Medians over steps.",
        "",
        "| masks | graphs compiled | recompiles on the forward after each pruning step | recompiles on other "
        "forwards | forwards run compiled | eager from step | eager step | compiled step | recompiling step "
        "| step after the fallback | first step |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for storage in STORAGES:
        s = result["storages"][storage]["summary"]
        after = ", ".join(map(str, s["recompiles_after_pruning"]))
        eager_from = "never" if s["eager_from_step"] is None else str(s["eager_from_step"])
        lines.append(
            f"| {storage} | {s['graphs_compiled']} | {after} | {s['recompiles_other_steps']} "
            f"| {s['forwards_compiled']} of {setup['steps']} | {eager_from} | {_ms(s['median_eager'])} "
            f"| {_ms(s['median_compiled'])} | {_ms(s['median_recompiling'])} | {_ms(s['median_fallback'])} "
            f"| {s['first_step_compiled']:.1f} s |"
        )
    guards = dict.fromkeys(g for storage in STORAGES for g in result["storages"][storage]["summary"]["guards"])
    lines += ["", "Guard failures that caused the recompilations (compile ids and numbers left out):", ""]
    lines += [f"- `{guard}`" for guard in guards]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small MLP, 24 steps")
    parser.add_argument(
        "--backend",
        default=None,
        help="torch.compile's backend (default: inductor with a C++ compiler, else aot_eager)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the usable CPUs)")
    parser.add_argument(
        "--json", type=Path, default=HERE / "results" / "pruner_compile.json", help="where the raw numbers go"
    )
    parser.add_argument("--write-docs", action="store_true", help="rewrite its table in docs/benchmarks.md")
    args = parser.parse_args(argv)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(args.threads or usable)
    about = machine(torch.get_num_threads())
    backend: str = args.backend or default_backend()

    def log(line: str) -> None:
        print(line, file=sys.stderr)

    result = measure(QUICK if args.quick else FULL, backend, log)
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
