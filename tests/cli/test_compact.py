"""``pruneplug apply --compact`` and ``--input-shape``/``--input-dtype``, and ``pruneplug report`` of compacted
checkpoints with parameters and MACs (in-process, through ``pruneplug.cli.main``)."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import pruneplug
from pruneplug.cli import main
from pruneplug.cli._app import console
from pruneplug.models import LeNet
from pruneplug.plans import ExampleInput, apply_plan, example_tensor, load_plan

LENET = "pruneplug.models:LeNet"
CHANNELS = """
[[rules]]
strategy = "ln_structured"
channels = true
types = ["Conv2d"]
params = { amount = 0.5, n = 2 }
"""
SHAPE = ("--input-shape", "1,1,28,28")


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory with LeNet weights, the channel plan, and a factory module ``nets``."""
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in LeNet().state_dict().items()}, tmp_path / "lenet.safetensors")
    (tmp_path / "plan.toml").write_text(CHANNELS)
    (tmp_path / "nets.py").write_text(
        textwrap.dedent(
            """
            import torch
            from pruneplug.models import LeNet

            class HardCoded(LeNet):
                def forward(self, x):
                    x = self.maxpool(torch.relu(self.conv1(x)))
                    x = self.maxpool(torch.relu(self.conv2(x)))
                    x = torch.relu(self.fc1(x.reshape(-1, 256)))
                    return self.fc3(torch.relu(self.fc2(x)))
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(console, "_width", 200)
    yield tmp_path
    sys.modules.pop("nets", None)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["-q", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def apply(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    return run(capsys, "apply", "-m", LENET, "-w", "lenet.safetensors", *args)


def compacted_lenet(path: Path) -> LeNet:
    return pruneplug.load_compacted(LeNet(), load_file(path))  # type: ignore[return-value]


# -- apply --------------------------------------------------------------------------------------


def test_compact_writes_the_smaller_model(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = apply(capsys, "plan.toml", "-o", "small.safetensors", "--compact", *SHAPE)
    assert status == 0, err
    state = load_file(folder / "small.safetensors")
    assert state["conv1.weight"].shape == (3, 1, 5, 5) and state["fc1.weight"].shape == (120, 128)
    assert not any(key.endswith("_mask") for key in state)  # every mask was of removed channels
    assert "Compaction" in out and "44,426" in out and "27,180" in out and "281,640" in out
    assert "Wrote small.safetensors; compacted: --model pruneplug.models:LeNet loads it" in out
    in_python = LeNet()
    in_python.load_state_dict(load_file(folder / "lenet.safetensors"))
    apply_plan(in_python, load_plan(folder / "plan.toml"), example_inputs=torch.rand(1, 1, 28, 28), compact=True)
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(compacted_lenet(folder / "small.safetensors")(x), in_python(x))


def test_the_plan_s_own_compact_and_example_input(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "own.toml").write_text("compact = true\nexample_input = { shape = [2, 1, 28, 28] }\n" + CHANNELS)
    status, out, err = apply(capsys, "own.toml", "-o", "small.pt")
    assert status == 0, err
    assert torch.load(folder / "small.pt")["conv2.weight"].shape == (8, 3, 5, 5) and "Compaction" in out


def test_input_flags_override_the_plan_s_example_input(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "wrong.toml").write_text("example_input = { shape = [1, 3, 32, 32], dtype = 'int64' }\n" + CHANNELS)
    status, _, err = apply(capsys, "wrong.toml", "-o", "a.safetensors")
    assert status == 2 and "example_input: cannot trace the model on example_input [1, 3, 32, 32] int64" in err
    status, _, err = apply(capsys, "wrong.toml", "-o", "a.safetensors", *SHAPE)
    assert status == 2 and "[1, 1, 28, 28] int64" in err  # the shape replaced, the dtype still the plan's
    status, _, err = apply(capsys, "wrong.toml", "-o", "a.safetensors", *SHAPE, "--input-dtype", "float32")
    assert status == 0, err
    assert load_file(folder / "a.safetensors")["conv1.weight_mask"].shape == (6, 1, 5, 5)  # masked, not compacted


def test_a_dry_run_shows_the_compaction_and_writes_nothing(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = apply(capsys, "plan.toml", "--dry-run", "--compact", *SHAPE)
    assert status == 0, err
    assert "Compaction" in out and "27,180" in out and "and its compaction; nothing was changed" in out
    assert sorted(p.name for p in folder.iterdir()) == ["lenet.safetensors", "nets.py", "plan.toml"]


def test_a_failed_compaction_writes_nothing(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(
        capsys, "apply", "plan.toml", "-m", "nets:HardCoded", "-o", "small.safetensors", "--compact", *SHAPE
    )
    assert status == 2, err
    assert "plan.toml: compact: the compaction failed:" in err and "Traceback" not in err
    assert not (folder / "small.safetensors").exists()


def test_compact_without_an_example_input(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "plain.toml").write_text('[[rules]]\nstrategy = "l1_unstructured"\nparams = { amount = 0.5 }\n')
    for plan in ("plain.toml", "plan.toml"):
        status, _, err = apply(capsys, plan, "-o", "small.safetensors", "--compact")
        assert status == 2 and f"{plan}: example_input: " in err and "--input-shape" in err, err
    assert not (folder / "small.safetensors").exists()


def test_a_compacted_checkpoint_is_a_starting_point(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert apply(capsys, "plan.toml", "-o", "small.safetensors", "--compact", *SHAPE)[0] == 0
    status, _, err = run(
        capsys, "apply", "plan.toml", "-m", LENET, "-w", "small.safetensors", "-o", "smaller.safetensors", "--compact",
        *SHAPE,
    )  # fmt: skip
    assert status == 0, err
    assert compacted_lenet(folder / "smaller.safetensors").conv2.out_channels == 4


# -- report -------------------------------------------------------------------------------------


def test_report_counts_parameters_and_macs(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert apply(capsys, "plan.toml", "-o", "small.safetensors", "--compact", *SHAPE)[0] == 0
    model = compacted_lenet(folder / "small.safetensors")
    x = example_tensor(ExampleInput(shape=(1, 1, 28, 28)))
    expected = {"input": "[1, 1, 28, 28] float32", "parameters": 27180, "macs": pruneplug.count_macs(model, x)}
    assert expected["parameters"] == pruneplug.count_params(model)
    status, out, err = run(capsys, "report", "small.safetensors", "-m", LENET, *SHAPE, "--json")
    assert status == 0, err
    data = json.loads(out)
    assert data["size"] == expected and data["totals"]["parameters"] == 27180
    assert {t["name"]: t["shape"] for t in data["tensors"]}["conv1.weight"] == [3, 1, 5, 5]
    status, out, err = run(capsys, "report", "small.safetensors", "-m", LENET, *SHAPE)
    assert status == 0 and "Size" in out and f"{expected['macs']:,}" in out and "27,180" in out, err
    status, out, err = run(capsys, "report", "small.safetensors", "-m", LENET, *SHAPE, "--markdown")
    assert status == 0 and "| on [1, 1, 28, 28] float32 | count |" in out and "| parameters | 27,180 |" in out


def test_report_of_a_compacted_checkpoint_without_an_input(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert apply(capsys, "plan.toml", "-o", "small.safetensors", "--compact", *SHAPE)[0] == 0
    status, out, err = run(capsys, "report", "small.safetensors", "-m", LENET, "--json")
    assert status == 0, err
    assert "size" not in json.loads(out) and json.loads(out)["totals"]["parameters"] == 27180
    assert err.startswith(
        "pruneplug: note: small.safetensors is compacted; the model was resized to it (conv1.bias, conv1.weight,"
    )
    status, out, err = run(capsys, "report", "lenet.safetensors", "-m", LENET, *SHAPE, "--json")
    assert status == 0 and json.loads(out)["size"]["parameters"] == 44426, err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["lenet.safetensors", *SHAPE], ["--input-shape needs --model"]),
        (["lenet.safetensors", "-m", LENET, "--input-shape", "1,3,28,28"], ["does not run on a [1, 3, 28, 28]"]),
        (["lenet.safetensors", "-m", LENET, "--input-dtype", "int64"], ["--input-dtype needs --input-shape"]),
    ],
)
def test_report_input_flags_that_cannot_work(
    folder: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: list[str]
) -> None:
    status, _, err = run(capsys, "report", *args)
    assert status == 2, err
    for word in words:
        assert word in err
    assert "Traceback" not in err
