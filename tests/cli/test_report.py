"""``pruneplug report``: tables, JSON and Markdown, with or without the model (in-process; the
console script itself runs in tests/cli/test_apply.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import pruneplug
from pruneplug.cli import main
from pruneplug.cli._commands import app
from pruneplug.io.checkpoints import save_checkpoint
from pruneplug.io.report import tensor_histories
from pruneplug.models import LeNet

LENET = "pruneplug.models:LeNet"


@pytest.fixture
def checkpoint(registry: pruneplug.Registry, tmp_path: Path) -> Path:
    model = LeNet()
    pruneplug.prune(model.conv2, "weight", "ln_structured", amount=4, n=1, dim=0)
    pruneplug.prune(model.fc1, "weight", "random_unstructured", amount=0.25)
    return save_checkpoint(tmp_path / "pruned.safetensors", model.state_dict(), history=tensor_histories(model))


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_table(checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "report", str(checkpoint))
    assert status == 0, err
    assert "conv2.weight" in out and "masked" in out and "Global sparsity" in out


def test_json_with_and_without_the_model(checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alone = json.loads(run(capsys, "report", str(checkpoint), "--json")[1])
    loaded = json.loads(run(capsys, "report", str(checkpoint), "--json", "--model", LENET)[1])
    assert alone["totals"] == loaded["totals"]
    assert alone["totals"]["zeros"] == 4 * 150 + round(0.25 * 30720)
    by_name = {t["name"]: t for t in loaded["tensors"]}
    assert by_name["conv2.weight"]["module_type"] == "Conv2d"
    assert by_name["conv2.weight"]["history"] == ["ln_structured(amount=4, n=1, dim=0)"]
    assert by_name["fc1.weight"]["history"] == ["random_unstructured(amount=0.25)"]
    assert {t["name"]: t["history"] for t in alone["tensors"]} == {t["name"]: t["history"] for t in loaded["tensors"]}


def test_markdown(checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run(capsys, "report", str(checkpoint), "--markdown")[1]
    assert out.startswith("| tensor | type | shape | zeros | sparsity | status | history |")
    assert "| conv2.weight | - | 16x6x5x5 | 600/2400 | 25.00% | masked | ln_structured(amount=4, n=1, dim=0) |" in out


def test_a_plain_pt_state_dict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "plain.pt"
    torch.save(LeNet().state_dict(), path)
    payload = json.loads(run(capsys, "report", str(path), "--json", "-m", LENET)[1])
    assert payload["totals"]["parameters"] == 44426 and payload["totals"]["masked_tensors"] == 0


def test_errors(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(checkpoint.read_bytes()[:100])
    status, _, err = run(capsys, "report", str(broken))
    assert status == 2 and "broken.safetensors" in err and "Traceback" not in err
    status, _, err = run(capsys, "report", str(checkpoint), "-m", "pruneplug.models:LeNet.forward")
    assert status == 2 and "LeNet.forward() raised TypeError" in err
    status, _, err = run(capsys, "report", str(tmp_path / "nothing.safetensors"))
    assert status == 2 and "cannot read the checkpoint" in err


# --- at any width: names whole, free text wrapped between words -----------------------------------


def invoke(width: int, *args: str) -> str:
    """A command through typer's CliRunner (stdout not a terminal, as in a pipe) at ``width`` columns."""
    done = CliRunner().invoke(app, list(args), env={"COLUMNS": str(width)})
    assert done.exit_code == 0, done.output
    return done.output


@pytest.mark.parametrize("width", [200, 80, 60])
def test_tensor_names_and_history_stay_whole(checkpoint: Path, width: int) -> None:
    """No tensor name cut, no history folded mid-word ('ln_struct' / 'ured(amou'), no line over the width."""
    out = invoke(width, "report", str(checkpoint), "--model", LENET)
    words = set(out.split())
    assert {name for name, _ in LeNet().named_parameters()} <= {word.rstrip(";") for word in words}
    assert "ln_structured(amount=4," in words and "random_unstructured(amount=0.25)" in {w.rstrip(";") for w in words}
    assert "…" not in out
    assert max(len(line) for line in out.splitlines() if line.strip() != str(checkpoint)) <= width  # a path: one word


def test_the_type_column_only_with_the_model(checkpoint: Path) -> None:
    """Without --model no type is known: no column of '-'."""
    alone = invoke(200, "report", str(checkpoint)).splitlines()
    header = next(line for line in alone if "tensor" in line and "shape" in line)
    assert "type" not in header
    loaded = invoke(200, "report", str(checkpoint), "--model", LENET).splitlines()
    assert "type" in next(line for line in loaded if "tensor" in line and "shape" in line)
    assert any("Conv2d" in line for line in loaded)


@pytest.mark.parametrize("width", [200, 80, 60])
def test_the_rules_table_keeps_strategy_and_tensor_names_whole(
    tmp_path: Path, width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "plan.toml").write_text(
        '[[rules]]\ndescription = "a third of each conv\'s output channels"\nstrategy = "random_structured"\n'
        'types = ["Conv2d"]\nparams = { amount = 0.33, dim = 0 }\n'
        '[[rules]]\nstrategy = "random_unstructured"\nscope = "global"\ntypes = ["Linear"]\nparams = { amount = 0.2 }\n'
    )
    out = invoke(width, "-q", "apply", str(tmp_path / "plan.toml"), "--model", LENET, "--dry-run")
    words = {word.strip(",;") for word in out.split()}
    assert {"random_structured", "random_unstructured", "conv1.weight", "conv2.weight", "fc3.weight"} <= words
    assert "…" not in out
    assert max(len(line) for line in out.splitlines() if not line.startswith("Dry run:")) <= width
