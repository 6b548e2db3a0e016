"""``benchmarks/calibration.py``: its ``--quick`` run end to end, and the pieces of its model and data."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "calibration.py"


@pytest.fixture
def bench(load_benchmark: Callable[[Path, str], ModuleType]) -> ModuleType:
    return load_benchmark(SCRIPT, "bench_calibration")


@pytest.fixture
def charlm(load_benchmark: Callable[[Path, str], ModuleType]) -> ModuleType:
    return load_benchmark(ROOT / "benchmarks" / "_charlm.py", "bench_charlm")


def test_quick_run_trains_prunes_every_row_and_writes_the_json(tmp_path: Path, bench: ModuleType) -> None:
    out = tmp_path / "calibration.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--no-cache", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["quick"] and result["model"]["d_model"] == bench.QUICK.model["d_model"]
    assert not result["train"]["cached"]
    keys = [method.key for method in bench.methods()]
    assert [row["key"] for row in result["rows"]] == keys
    assert all(row["skipped"] is None for row in result["rows"])
    assert all(row["perplexity"] > 1 and 0 <= row["sparsity"] <= 1 for row in result["rows"])
    assert all(row["seconds"] > 0 for row in result["rows"] if row["key"] != "dense")
    assert len(result["targets"]) == 6 * bench.QUICK.model["blocks"]
    for row in result["rows"][1:]:  # each CalibrationReport, as plain JSON
        assert set(row["report"]["layers"]) == set(result["targets"]), row["key"]
        reported = {name: layer["sparsity"] for name, layer in row["report"]["layers"].items()}
        assert reported == pytest.approx(row["layer_sparsity"]), row["key"]  # the report agrees with the zeros
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 2 + len(keys)  # the header, its rule, a line per row
    assert "| held-out perplexity |" in table[0]


def test_rows_option_runs_only_the_rows_named(tmp_path: Path, bench: ModuleType) -> None:
    out = tmp_path / "dense.json"
    threads = torch.get_num_threads()  # main sets torch's threads for the process
    try:
        assert bench.main(["--quick", "--no-cache", "--threads", "1", "--rows", "dense", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    rows = json.loads(out.read_text())["rows"]
    assert [row["key"] for row in rows] == ["dense"] and rows[0]["sparsity"] < 0.01
    with pytest.raises(SystemExit, match="no row wanda-60"):
        bench.main(["--quick", "--rows", "dense,wanda-60"])


def test_the_splits_are_contiguous_disjoint_and_cover_the_text(charlm: ModuleType) -> None:
    data = charlm.corpus()
    whole = torch.cat([data.train, data.calibration, data.test])
    text = "\n\n".join(charlm.topics[key] for key in sorted(charlm.topics))
    assert len(whole) == len(text) and "".join(data.vocab[i] for i in whole[:200].tolist()) == text[:200]
    assert len(data.train) == int(len(text) * 0.9) and abs(len(data.calibration) - len(data.test)) <= 1


def test_perplexity_counts_every_test_id_once(charlm: ModuleType) -> None:
    class Fixed(nn.Module):
        """Predicts character 0 with probability 1/2 and the other 9 with 1/18 each, whatever came before."""

        def forward(self, ids: Tensor) -> Tensor:
            logits = torch.full((*ids.shape, 10), math.log(1 / 18))
            logits[..., 0] = math.log(1 / 2)
            return logits

    ids = torch.tensor([3] + [0] * 40 + [1] * 30)  # 70 predicted ids: 40 zeros, 30 others; 2 full windows and 6 more
    expected = math.exp(-(40 * math.log(1 / 2) + 30 * math.log(1 / 18)) / 70)
    assert charlm.perplexity(Fixed(), ids, context=32, batch=1) == pytest.approx(expected)


def test_calibration_windows_are_drawn_from_the_split_the_same_way_each_time(charlm: ModuleType) -> None:
    ids = torch.arange(1000)
    batches = charlm.calibration_batches(ids, 10, 16, 4, seed=1)
    assert [tuple(b.shape) for b in batches] == [(4, 16), (4, 16), (2, 16)]
    windows = torch.cat(batches)
    assert torch.equal(windows - windows[:, :1], torch.arange(16).expand(10, 16))  # contiguous ranges of ids
    assert torch.equal(windows, torch.cat(charlm.calibration_batches(ids, 10, 16, 4, seed=1)))


def test_the_blocks_are_one_module_list_of_one_class(charlm: ModuleType) -> None:
    model = charlm.CharLM(charlm.CharLMConfig(vocab_size=11, context=8, d_model=16, heads=2, blocks=3))
    assert isinstance(model.blocks, nn.ModuleList) and len({type(b) for b in model.blocks}) == 1
    assert model(torch.zeros(2, 8, dtype=torch.long)).shape == (2, 8, 11)
    with pytest.raises(ValueError, match="more than the model's context of 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_the_cache_is_used_only_for_the_same_configuration(charlm: ModuleType, tmp_path: Path) -> None:
    data = charlm.corpus()
    shape = charlm.CharLMConfig(vocab_size=len(data.vocab), context=8, d_model=16, heads=2, blocks=1)
    cache = tmp_path / "lm.pt"
    lines: list[str] = []
    first, info = charlm.load_or_train(shape, data, charlm.TrainConfig(steps=2, batch=2, warmup=1), cache, lines.append)
    again, info_again = charlm.load_or_train(
        shape, data, charlm.TrainConfig(steps=2, batch=2, warmup=1), cache, lines.append
    )
    assert not info["cached"] and info_again["cached"]
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    _, other = charlm.load_or_train(shape, data, charlm.TrainConfig(steps=3, batch=2, warmup=1), cache, lines.append)
    assert not other["cached"] and any("another configuration" in line for line in lines)


def test_both_docs_pages_have_the_markers_write_docs_fills(bench: ModuleType) -> None:
    start, end = bench.MARKERS
    for page in (bench.DOCS, bench.DATA_AWARE):
        text = page.read_text()
        assert text.index(start) < text.index(end)
