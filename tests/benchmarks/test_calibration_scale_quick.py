"""``benchmarks/calibration_scale.py``: its ``--quick`` run end to end, and the docs markers ``--write-docs`` fills.

The script is run as people run it (its folder holds ``transformers.py``,
which it must not import as the library); the numbers depend on the machine,
so what is checked is that every measurement is there and consistent.
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

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "calibration_scale.py"
LAYERS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]
LAYERS += ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def test_quick_run_measures_memory_time_per_block_and_each_layer_against_the_reference(tmp_path: Path) -> None:
    out = tmp_path / "calibration_scale.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--blocks",
            "3",
            "--rounds",
            "1",
            "--threads",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result) == {
        "machine",
        "shape",
        "quick",
        "calibration",
        "build_seconds",
        "memory_measured",
        "weight_bytes",
        "params",
        "target",
        "paper_calibration",
        "pruning",
        "compared_block",
        "per_layer",
    }
    assert result["quick"] and result["shape"]["hidden_size"] == 256
    assert {"load_average", "load_average_end", "threads"} <= set(result["machine"])
    assert result["machine"]["threads"] == 1
    assert result["calibration"] == {"samples": 4, "seq_len": 64, "tokens": 256, "batch": 1}
    target = result["target"]
    assert target["total"] == target["block_weights"] + target["hessians"] + target["activations"]
    assert target["hessians"] == (6 * 256**2 + 704**2) * 4
    assert target["activations"] == 4 * 64 * 256 * 4 * 2

    pruning = result["pruning"]
    assert pruning["blocks_pruned"] == 3 and len(pruning["block_seconds"]) == 3
    assert pruning["sparsity"] == pytest.approx(0.5)
    assert pruning["rows"] == 256 and pruning["batches"] == 4
    assert pruning["mask_storage"] == "packed"  # the default: one bit per weight
    assert pruning["mask_bytes"] == 3 * sum((256 * 256, 128 * 256, 128 * 256, 256 * 256, 3 * 704 * 256)) // 8
    assert len(pruning["rss_at_block_start_extra"]) == 3
    if result["memory_measured"]:
        assert pruning["peak_extra"] is not None and pruning["peak_extra"] >= pruning["rss_after_extra"]
        assert pruning["growth_per_block"] is not None  # from block 1's start to block 2's

    assert result["compared_block"] == "model.layers.3"
    layers = result["per_layer"]
    assert list(layers["layers"]) == LAYERS
    for layer in layers["layers"].values():
        assert set(layer["seconds"]) == {"prune", "obs_prune", "reference"}
        assert all(len(times) == 1 and times[0] > 0 for times in layer["seconds"].values())
        assert layer["sparsity"] == pytest.approx(0.5)
        assert layer["obs_prune_equals_prune"]
        assert layer["mask_mismatches"] >= 0 and layer["max_abs_diff"] >= 0
    assert layers["ratio_prune"] > 0 and layers["ratio_obs_prune"] > 0
    assert "| time per block, median of 3" in done.stdout
    assert '| `pruneplug.prune(..., "sparsegpt")` in `using_statistics` |' in done.stdout


@pytest.fixture
def bench(load_benchmark: Callable[[Path, str], ModuleType]) -> ModuleType:
    """The script as a module (its folder on sys.path for ``_docs`` and ``_machine``)."""
    return load_benchmark(SCRIPT, "bench_calibration_scale")


def test_the_docs_page_has_the_markers_write_docs_fills(bench: ModuleType) -> None:
    text = bench.DOCS.read_text()
    start, end = bench.MARKERS
    assert text.index(start) < text.index(end)


def test_blocks_must_leave_a_block_to_compare(bench: ModuleType) -> None:
    with pytest.raises(SystemExit, match="fewer than the model's 4 layers"):
        bench.run(True, 4, 64, 4, 1)
