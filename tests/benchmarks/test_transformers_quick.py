"""``benchmarks/transformers.py``: its ``--quick`` run end to end, and its save/load round trip both ways.

The script shares its name with the library it measures, so it is run as a
script (as people run it) or loaded under another module name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

import pruneplug

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "transformers.py"


def test_quick_run_prunes_compacts_times_and_reloads_the_small_llama(tmp_path: Path) -> None:
    out = tmp_path / "transformers.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--repeats", "1", "--threads", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["quick"] and result["shape"]["hidden_size"] == 256
    # Half the MLP neurons and a quarter of the key/value heads (with their query heads) of every layer;
    # 256 is no multiple of 6 heads: transformers refuses that config, so compact keeps it out.
    assert result["report"]["config_sizes"] == {}
    assert "not a multiple of the number of attention heads" in result["report"]["config_mismatches"][0]
    assert result["report"]["groups_compacted"] == 8
    assert result["report"]["max_abs_diff"] <= result["report"]["tolerance"]
    assert [call["name"].split(",")[0].split(" ")[0] for call in result["calls"]] == [
        "trace_channels",
        "prune_channels",
        "prune_channels",
        "compact",
    ]
    assert all(call["seconds"] > 0 for call in result["calls"])
    if result["memory_measured"]:
        assert all(call["peak_extra"] is not None for call in result["calls"])
    assert result["params"]["compacted"] < result["params"]["dense"]
    assert result["macs"]["dense"] / result["macs"]["compacted"] == pytest.approx(result["macs_reduction"])
    assert result["macs_reduction"] > 1.4
    assert len(result["latency"]["dense"]) == len(result["latency"]["compacted"]) == 1
    assert result["round_trip"]["method"] == "save_pretrained / load_compacted"
    assert "not a multiple of the number of attention heads" in result["round_trip"]["config_refused"]
    assert "| call | wall time |" in done.stdout and "| **prune + compact** |" in done.stdout


@pytest.fixture
def bench(load_benchmark: Callable[[Path, str], ModuleType]) -> ModuleType:
    """The script as a module named ``bench_transformers`` (its folder on sys.path for ``_docs``)."""
    return load_benchmark(SCRIPT, "bench_transformers")


def _tiny(bench: ModuleType, heads_amount: float) -> tuple[torch.nn.Module, torch.Tensor, Any]:
    shape = {**bench.QUICK, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2}
    model = bench.build(shape)
    prompt = torch.randint(0, shape["vocab_size"], (1, 8), generator=torch.Generator().manual_seed(0))
    pruneplug.prune_channels(
        model, "ln_structured", n=2, amount=heads_amount, example_inputs=(prompt,), group_filter=bench.HEAD_GROUPS
    )
    return model, prompt, pruneplug.compact(model)


def test_round_trip_uses_from_pretrained_when_the_config_states_the_model(bench: ModuleType) -> None:
    model, prompt, report = _tiny(bench, 0.5)  # 8 heads keep 4: 64 is a multiple of 4
    assert model.config.num_attention_heads == 4
    trip = bench.round_trip(model, prompt, report)
    assert trip["method"] == "save_pretrained / from_pretrained" and trip["config_refused"] is None
    assert trip["bytes_on_disk"] > 0


def test_round_trip_goes_through_load_compacted_when_the_config_cannot_state_the_model(bench: ModuleType) -> None:
    model, prompt, report = _tiny(bench, 0.25)  # 8 heads keep 6: 64 is no multiple of 6
    assert report.config_mismatches and model.config.num_attention_heads == 8
    trip = bench.round_trip(model, prompt, report)
    assert trip["method"] == "save_pretrained / load_compacted"


def test_the_docs_page_has_the_markers_write_docs_fills(bench: ModuleType) -> None:
    text = bench.DOCS.read_text()
    start, end = bench.MARKERS
    assert text.index(start) < text.index(end)
