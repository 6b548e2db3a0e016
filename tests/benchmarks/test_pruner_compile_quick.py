"""``benchmarks/pruner_compile.py``: its ``--quick`` run end to end (Dynamo's eager backend), and the docs markers.

Times depend on the machine; what is checked is that the counts are
consistent (every graph compiled is on some forward, none on a forward that
follows no pruning step) and that the quick run stays under Dynamo's
recompile limit, so that every forward ran compiled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "pruner_compile.py"


@pytest.fixture
def bench(load_benchmark: Callable[[Path, str], ModuleType]) -> ModuleType:
    return load_benchmark(SCRIPT, "bench_pruner_compile")


def test_quick_run_counts_the_recompilations_of_each_storage(tmp_path: Path, bench: ModuleType) -> None:
    out = tmp_path / "pruner_compile.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--backend", "eager", "--threads", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    setup = bench.QUICK
    assert result["quick"] and result["backend"] == "eager" and "load_average_end" in result["machine"]
    assert list(result["storages"]) == list(bench.STORAGES) == ["bool", "packed", "in_place"]
    for storage, run in result["storages"].items():
        summary, steps = run["summary"], run["compiled_steps"]
        assert len(steps) == len(run["eager_steps"]) == setup.steps, storage
        assert summary["pruning_steps"] == sum(step["pruned"] for step in steps) == setup.steps // setup.every
        assert steps[0]["compiled"] == 1  # the dense model at the first forward
        assert summary["graphs_compiled"] == 1 + sum(summary["recompiles_after_pruning"]), storage
        assert summary["recompiles_other_steps"] == 0, storage
        assert all(count <= 1 for count in summary["recompiles_after_pruning"]), storage
        assert summary["forwards_compiled"] == setup.steps and summary["eager_from_step"] is None, storage
        assert summary["median_eager"] > 0 and summary["median_compiled"] > 0, storage
        assert bool(summary["guards"]) == (summary["graphs_compiled"] > 1), storage
    assert result["storages"]["in_place"]["summary"]["graphs_compiled"] == 1  # plain weights: nothing to guard
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 2 + len(bench.STORAGES) and "| graphs compiled |" in table[0]


def test_docs_have_the_markers_write_docs_fills(bench: ModuleType) -> None:
    start, end = bench.MARKERS
    text = bench.DOCS.read_text()
    assert text.index(start) < text.index(end)
