"""``pruneplug apply`` with data-aware rules: the plan's calibration section, ``--calibration``, and failures.

The calibration functions and the model's factory live in modules in the
directory the command runs from, imported from there (the calibration's as
``--model`` factories are).
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pruneplug.cli import main
from pruneplug.plans import apply_plan

NETS = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(8, 16)
            self.fc2 = nn.Linear(16, 8)

        def forward(self, x):
            return x + self.fc2(torch.relu(self.fc1(x)))

    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([Block(), Block()])
            self.head = nn.Linear(8, 4)

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            return self.head(x)

    def build():
        torch.manual_seed(0)
        return Stack()
    """
)

DATA = textwrap.dedent(
    """
    import torch

    def batches():
        generator = torch.Generator().manual_seed(1)
        return [torch.randn(6, 8, generator=generator) * torch.logspace(-1, 1, 8) for _ in range(3)]

    def other_batches():
        generator = torch.Generator().manual_seed(2)
        return [torch.randn(6, 8, generator=generator) for _ in range(3)]

    def raises():
        raise RuntimeError("no calibration data today")

    def fails_at_the_second_batch():
        yield batches()[0]
        raise OSError("the disk went away")
    """
)

PLAN = """
calibration:
  batches: calib_cli_data:batches
rules:
  - strategy: wanda
    params: {amount: 0.5}
  - strategy: sparsegpt
    modules: ["blocks.1.*"]
    params: {keep_n: 2, of_m: 4}
"""

MODEL = ["--model", "calib_cli_nets:build"]


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding the code and the plans; the command runs there."""
    (tmp_path / "calib_cli_nets.py").write_text(NETS)
    (tmp_path / "calib_cli_data.py").write_text(DATA)
    (tmp_path / "plan.yaml").write_text(PLAN)
    (tmp_path / "one.yaml").write_text(PLAN.split("  - strategy: sparsegpt")[0])  # wanda only
    (tmp_path / "bare.yaml").write_text("rules:" + PLAN.split("rules:", 1)[1])  # no calibration section
    monkeypatch.chdir(tmp_path)
    for name in ("calib_cli_nets", "calib_cli_data"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["-q", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def expected(plan: Path, batches: str = "batches") -> dict[str, torch.Tensor]:
    """What applying the plan in Python gives (the same code, imported from the working directory)."""
    sys.path.insert(0, str(plan.parent))
    try:
        import calib_cli_data  # type: ignore[import-not-found]
        import calib_cli_nets  # type: ignore[import-not-found]

        model = calib_cli_nets.build()
        apply_plan(model, plan, calibration=getattr(calib_cli_data, batches)())
    finally:
        sys.path.remove(str(plan.parent))
    return model.state_dict()


def test_a_plan_with_a_calibration_section_runs_end_to_end(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "apply", "plan.yaml", *MODEL, "-o", "out.safetensors")
    assert status == 0, err
    assert "wanda" in out and "sparsegpt" in out and "Wrote out.safetensors" in out
    saved = load_file(folder / "out.safetensors")
    assert saved["blocks.0.fc1.weight_mask"].float().mean() == 0.5 and "head.weight_mask" not in saved
    for key, value in expected(folder / "plan.yaml").items():
        assert torch.equal(saved[key], value), key


def test_calibration_option_adds_or_replaces_the_source(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "apply", "bare.yaml", *MODEL, "--calibration", "calib_cli_data:batches", "-o", "a.pt")
    assert status == 0, err
    for key, value in expected(folder / "plan.yaml").items():
        assert torch.equal(torch.load(folder / "a.pt")[key], value), key
    status, _, err = run(
        capsys, "apply", "plan.yaml", *MODEL, "--calibration", "calib_cli_data:other_batches", "-o", "b.pt"
    )
    assert status == 0, err
    for key, value in expected(folder / "plan.yaml", "other_batches").items():
        assert torch.equal(torch.load(folder / "b.pt")[key], value), key


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (
            ("plan.yaml", "--calibration", "calib_cli_data"),
            ["--calibration 'calib_cli_data': expected MODULE:FUNCTION"],
        ),
        (
            ("plan.yaml", "--calibration", "calib_cli_data:raises"),
            ["plan.yaml: calibration.batches: 'calib_cli_data:raises': calling raises() raised RuntimeError"],
        ),
        (
            ("plan.yaml", "--calibration", "calib_cli_data:fails_at_the_second_batch"),
            ["plan.yaml: calibration.batches: reading the calibration batches raised OSError: the disk went away"],
        ),
        (
            ("one.yaml", "--calibration", "calib_cli_data:fails_at_the_second_batch"),
            ["one.yaml: rules[0].calibration.batches:", "the disk went away"],
        ),
        (("bare.yaml",), ["bare.yaml: rules[0].strategy: 'wanda' runs on calibration data", "--calibration"]),
    ],
)
def test_a_failed_run_writes_nothing(
    folder: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], words: list[str]
) -> None:
    status, _, err = run(capsys, "apply", *args, *MODEL, "-o", "out.safetensors")
    assert status == 2, err
    assert err.startswith("pruneplug: error: ") and "Traceback" not in err
    for word in words:
        assert word in err
    assert sorted(path.name for path in folder.iterdir() if path.name != "__pycache__") == [
        "bare.yaml",
        "calib_cli_data.py",
        "calib_cli_nets.py",
        "one.yaml",
        "plan.yaml",
    ]


def test_the_output_sums_up_each_calibrated_rule_and_json_has_it_whole(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "apply", "plan.yaml", *MODEL, "-o", "a.safetensors", "--json")
    assert status == 0, err
    data = json.loads(out)  # nothing else on stdout
    assert "Wrote a.safetensors" in err and (folder / "a.safetensors").exists()
    assert [rule["strategy"] for rule in data["rules"]] == ["wanda", "sparsegpt"]
    assert sorted(data["calibration"]) == ["0", "1"]
    wanda = data["calibration"]["0"]
    assert wanda["strategy"] == "wanda" and (wanda["batches"], wanda["rows"]) == (3, 18)
    assert {name: layer["sparsity"] for name, layer in wanda["layers"].items()} == {
        name: 0.5 for name in ("blocks.0.fc1", "blocks.0.fc2", "blocks.1.fc1", "blocks.1.fc2")
    }
    assert [block["name"] for block in wanda["blocks"]] == ["blocks.0", "blocks.1"]
    assert data["calibration"]["1"]["layers"]["blocks.1.fc2"]["amount"] is None  # 2:4: the strategy's own
    worst = max(wanda["blocks"], key=lambda block: block["relative_error"])

    status, out, err = run(capsys, "apply", "plan.yaml", *MODEL, "-o", "b.safetensors")
    assert status == 0, err
    assert "Calibration" in out and "worst block" in out and "Wrote b.safetensors" in out
    assert f"{worst['relative_error']:.4f}" in out and f"({worst['name']})" in out  # (a cell may wrap)

    status, out, err = run(capsys, "apply", "plan.yaml", *MODEL, "--dry-run", "--json")
    assert status == 0, err
    preview = json.loads(out)
    assert preview["dry_run"] and preview["calibration"]["0"]["layers"] == wanda["layers"]
    assert not (folder / "c.safetensors").exists()
