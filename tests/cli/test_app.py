"""What every command shares (``pruneplug.cli._app``): --version, how errors and warnings are printed.

In-process, through ``pruneplug.cli.main``: the CLI speaks in its flags (not
the library's Python arguments), lists every problem of a plan on a line of
its own, and prints warnings without Python's source location.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import pruneplug
from pruneplug.cli import main
from pruneplug.models import LeNet

LENET = "pruneplug.models:LeNet"


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory with LeNet weights, a whole pickled model, and a plan."""
    save_file({k: v.contiguous() for k, v in LeNet().state_dict().items()}, tmp_path / "lenet.safetensors")
    torch.save(LeNet(), tmp_path / "whole-model.pt")
    (tmp_path / "plan.toml").write_text('[[rules]]\nstrategy = "l1_unstructured"\nparams = { amount = 0.5 }\n')
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["-q", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--version") == (0, f"pruneplug {pruneplug.__version__}\n", "")


def test_errors_name_the_cli_flags_not_python_arguments(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "apply", "plan.toml", "-m", LENET, "-o", "lenet.safetensors")
    assert (status, err) == (2, "pruneplug: error: lenet.safetensors: the output exists; pass --force to replace it\n")
    status, _, err = run(capsys, "report", "whole-model.pt")
    assert status == 2 and "If you trust its source, pass --allow-pickle; better, re-save it" in err
    assert "allow_pickle" not in err


def test_every_problem_of_a_plan_is_a_line(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "bad.toml").write_text(
        '[[rules]]\nstrategy = "l1_unstructured"\nparams = { amount = "lots" }\n'
        '[[rules]]\nstratgy = "identity"\n'
        '[[rules]]\nstrategy = "identity"\nscope = "nowhere"\n'
    )
    status, _, err = run(capsys, "apply", "bad.toml", "-m", LENET, "--dry-run")
    assert status == 2
    assert [line.split(": ")[:3] for line in err.splitlines()] == [
        ["pruneplug", "error", "bad.toml"],
        ["pruneplug", "error", "bad.toml"],
        ["pruneplug", "error", "bad.toml"],
        ["pruneplug", "error", "bad.toml"],
    ]
    assert [line.split(": ")[3] for line in err.splitlines()] == [
        "rules[0].params.amount",
        "rules[1].stratgy",
        "rules[1].strategy",
        "rules[2].scope",
    ]
    assert err.splitlines()[-1].endswith("must be 'local' or 'global', got 'nowhere'")


def test_a_blocked_strategy_says_so(
    folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The installed plugin ``nm``, blocked: the error says which plugin and which switch."""
    monkeypatch.setenv("PRUNEPLUG_BLOCK_PLUGINS", "nm")
    (folder / "nm.toml").write_text('[[rules]]\nstrategy = "nm"\n')
    with pruneplug.use_registry(pruneplug.Registry()):
        status, _, err = run(capsys, "apply", "nm.toml", "-m", LENET, "--dry-run")
    assert status == 2 and "no strategy named 'nm'" in err
    assert "probably provided by the plugin 'nm' (pruneplug-nm " in err
    assert "blocked by 'nm' in PRUNEPLUG_BLOCK_PLUGINS" in err


def test_warnings_read_as_cli_messages(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """No '/path/to/file.py:123: PluginLoadWarning:' and source line: one line naming the category."""
    monkeypatch.setenv("PRUNEPLUG_BLOCK_PLUGINS", "no-such-plugin")
    with pruneplug.use_registry(pruneplug.Registry()):
        status, _, err = run(capsys, "list", "--json")
    assert status == 0
    assert err.startswith(
        "pruneplug: PluginLoadWarning: PRUNEPLUG_BLOCK_PLUGINS names 'no-such-plugin', which is no installed plugin"
    )
    assert len(err.splitlines()) == 1 and ".py" not in err
