"""``benchmarks/pruner_overhead.py``: its ``--quick`` run end to end, and the docs markers ``--write-docs`` fills.

The times depend on the machine, so what is checked is that every variant
and ratio is measured, consistent with the medians, and that each model was
in the state its variant says (masked at 50 %, pruned further at every step).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "pruner_overhead.py"


@pytest.fixture
def bench(load_benchmark: Callable[[Path, str], ModuleType]) -> ModuleType:
    return load_benchmark(SCRIPT, "bench_pruner_overhead")


def test_quick_run_times_every_variant_and_writes_the_ratios(tmp_path: Path, bench: ModuleType) -> None:
    out = tmp_path / "pruner_overhead.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    setup = bench.QUICK
    assert result["quick"] and result["machine"]["threads"] == 1 and "load_average_end" in result["machine"]
    assert list(result["rounds"]) == list(bench.VARIANTS)
    assert bench.VARIANTS == ("dense", "masked", "masked+step", "pruning", "in_place+step", "in_place pruning")
    for name, times in result["rounds"].items():
        assert len(times) == setup.rounds and all(t > 0 for t in times), name
        assert result["median"][name] == pytest.approx(statistics.median(times)), name
    median, ratios = result["median"], result["ratios"]
    assert ratios == pytest.approx(
        {
            "bookkeeping": median["masked+step"] / median["masked"],
            "masked_forward": median["masked"] / median["dense"],
            "non_pruning_step": median["masked+step"] / median["dense"],
            "pruning_step": median["pruning"] / median["dense"],
            "in_place_non_pruning_step": median["in_place+step"] / median["dense"],
            "in_place_pruning_step": median["in_place pruning"] / median["dense"],
        }
    )
    assert result["meets_target"] == {key: value <= 1.05 for key, value in ratios.items()}
    assert result["sparsity"]["masked"] == pytest.approx(0.5, abs=1e-3)  # held at step 0's 50 % throughout
    assert result["sparsity"]["pruning"] == pytest.approx(0.9, abs=1e-3)  # the ramp ends at the last step timed
    assert result["pruning_steps"] == 1 + setup.warmup + setup.rounds * setup.steps
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 2 + len(bench.ROWS) and "| ratio |" in table[0]


def test_docs_have_the_markers_write_docs_fills(bench: ModuleType) -> None:
    start, end = bench.MARKERS
    text = bench.DOCS.read_text()
    assert text.index(start) < text.index(end)
