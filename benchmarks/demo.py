"""How long ``pruneplug demo`` and ``pruneplug demo --quick`` take, run as a newcomer runs them.

Each run is a fresh ``python -m pruneplug -q demo`` subprocess -- imports,
the digits, training, the sweep, the tables, results.json and the plot --
timed from outside: wall time, and the CPU time (user + system) of the
subprocess, which a busy machine disturbs much less than the wall time.

The first run of each command starts with an empty matplotlib cache (it
builds its font list then, as on a newcomer's first run) and is reported on
its own; the medians are of ``--repeats`` more runs with a warm cache.

Usage::

    python benchmarks/demo.py                 # a first run and 3 more of each command
    python benchmarks/demo.py --repeats 1     # a first run and 1 more
    python benchmarks/demo.py --write-docs    # also rewrite the demo's table in docs/benchmarks.md

It prints a markdown table and writes the raw numbers to
``benchmarks/results/demo.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from _docs import write_between  # benchmarks/ is the script's folder, first on sys.path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOCS = ROOT / "docs" / "benchmarks.md"
MARKERS = ("<!-- table:demo:start -->", "<!-- table:demo:end -->")
COMMANDS = {"pruneplug demo": ["demo"], "pruneplug demo --quick": ["demo", "--quick"]}


@dataclass(frozen=True)
class Run:
    """One timed subprocess."""

    command: str
    first: bool
    wall_s: float
    cpu_s: float


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_run(command: str, matplotlib_cache: Path, first: bool) -> Run:
    """Run ``command`` once in a fresh interpreter, into a fresh output folder; fails if it fails."""
    with tempfile.TemporaryDirectory(prefix="pruneplug-demo-") as out:
        argv = [sys.executable, "-m", "pruneplug", "-q", *COMMANDS[command], "--out", out]
        env = {**os.environ, "MPLCONFIGDIR": str(matplotlib_cache), "PYTHONPATH": str(ROOT)}
        cpu, started = _children_cpu(), time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - started
    return Run(command, first, round(wall, 2), round(_children_cpu() - cpu, 2))


def measure(repeats: int) -> list[Run]:
    """A first run (empty matplotlib cache) and ``repeats`` warm runs of each command."""
    runs = []
    for command in COMMANDS:
        with tempfile.TemporaryDirectory(prefix="matplotlib-") as cache:
            for index in range(1 + repeats):
                run = time_run(command, Path(cache), first=index == 0)
                which = f"{command} (first run)" if run.first else command
                print(f"{which}: {run.wall_s} s wall, {run.cpu_s} s CPU", flush=True)
                runs.append(run)
    return runs


def table(runs: list[Run], load: float) -> str:
    """The markdown table of ``runs``: the first run of each command, then the medians of the others."""
    import torch

    lines = [
        f"Machine: {os.cpu_count()} CPUs ({platform.machine()}), Python {platform.python_version()}, "
        f"torch {torch.__version__}; load average {load:.1f} when the runs started.",
        "",
        "| command | run | wall time | CPU time (user + system) |",
        "| --- | --- | --- | --- |",
    ]
    for command in COMMANDS:
        first = next(r for r in runs if r.command == command and r.first)
        warm = [r for r in runs if r.command == command and not r.first]
        lines.append(f"| `{command}` | first (empty matplotlib cache) | {first.wall_s:.0f} s | {first.cpu_s:.0f} s |")
        if warm:
            wall, cpu = statistics.median(r.wall_s for r in warm), statistics.median(r.cpu_s for r in warm)
            lines.append(f"| `{command}` | median of {len(warm)} more | {wall:.0f} s | {cpu:.0f} s |")
    return "\n".join(lines)


def write_docs(text: str) -> None:
    """Put ``text`` between the demo's markers in docs/benchmarks.md (the other tables are left alone)."""
    write_between(MARKERS, text, DOCS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=3, help="warm runs of each command after the first")
    parser.add_argument("--write-docs", action="store_true", help="rewrite the demo's table in docs/benchmarks.md")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    runs = measure(args.repeats)
    text = table(runs, load)
    print(text)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "demo.json").write_text(json.dumps({"load": load, "runs": [asdict(r) for r in runs]}, indent=2) + "\n")
    if args.write_docs:
        write_docs(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
