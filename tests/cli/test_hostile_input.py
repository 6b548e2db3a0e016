"""Input that used to slip past the CLI: rich markup in names, dtypes that would be cast, factories
that exit or build lazy/meta models, narrow dtypes in reports, file modes (in-process, through
``pruneplug.cli.main``)."""

from __future__ import annotations

import json
import os
import stat
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

LENET = "pruneplug.models:LeNet"


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory holding LeNet weights and a factory module ``nets``."""
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in LeNet().state_dict().items()}, tmp_path / "lenet.safetensors")
    (tmp_path / "nets.py").write_text(
        textwrap.dedent(
            """
            import sys
            import torch
            from pruneplug.models import LeNet

            def half():
                return LeNet().half()

            def exits():
                sys.exit(3)

            def lazy():
                return torch.nn.Sequential(torch.nn.LazyLinear(4))

            def meta():
                with torch.device("meta"):
                    return LeNet()
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("nets", None)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["-q", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_brackets_and_emoji_codes_are_printed_as_written(
    folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Names that look like rich markup are data: nothing vanishes, nothing crashes after writing."""
    monkeypatch.setattr(console, "_width", 300)  # whole table cells on one line
    (folder / "plan.toml").write_text(
        textwrap.dedent(
            """
            [[rules]]
            description = "[/bold] trim :fire:"
            strategy = "l1_unstructured"
            scope = "global"
            types = ["Linear"]
            params = { amount = 0.5 }
            """
        )
    )
    output = folder / "out[v2].safetensors"
    status, out, err = run(capsys, "apply", "plan.toml", "-m", LENET, "-w", "lenet.safetensors", "-o", str(output))
    assert status == 0, err
    assert "[/bold] trim :fire:" in out and f"Wrote {output}" in out
    status, out, err = run(capsys, "report", str(output))
    assert status == 0, err
    assert "[global over 3 tensors]" in out and "out[v2].safetensors" in out


def test_a_checkpoint_in_another_dtype_is_refused_not_cast(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "plan.toml").write_text('[[rules]]\nstrategy = "l1_unstructured"\nparams = { amount = 0.5 }\n')
    status, _, err = run(capsys, "apply", "plan.toml", "-m", "nets:half", "-w", "lenet.safetensors", "-o", "o.pt")
    assert status == 2
    assert "lenet.safetensors" in err and "conv1.weight: checkpoint torch.float32 vs model torch.float16" in err
    assert not (folder / "o.pt").exists()


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        ("nets:exits", "called sys.exit(3)"),
        ("nets:lazy", "uninitialized (lazy) tensors: 0.weight"),
        ("nets:meta", "meta device"),
    ],
)
def test_factories_that_cannot_give_a_model_are_bad_input(
    folder: Path, capsys: pytest.CaptureFixture[str], factory: str, expected: str
) -> None:
    status, _, err = run(capsys, "report", "lenet.safetensors", "-m", factory)
    assert status == 2, err
    assert expected in err and factory in err and "Traceback" not in err


def test_report_reads_float8_checkpoints(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weight = torch.tensor([[0.0, 1.0], [2.0, 0.0]]).to(torch.float8_e4m3fn)
    save_file({"weight": weight}, folder / "fp8.safetensors")
    status, out, err = run(capsys, "report", "fp8.safetensors", "--json")
    assert status == 0, err
    assert json.loads(out)["tensors"][0]["zeros"] == 2
    mask = torch.tensor([[True, False], [True, True]])
    save_file({"weight_orig": weight, "weight_mask": mask}, folder / "fp8-masked.safetensors")
    status, out, err = run(capsys, "report", "fp8-masked.safetensors", "--json")
    assert status == 0, err
    (tensor,) = json.loads(out)["tensors"]
    assert (tensor["name"], tensor["zeros"], tensor["status"]) == ("weight", 3, "masked")


def test_report_without_a_model_counts_a_stored_masked_copy_once(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orig, mask = torch.randn(3, 4), (torch.rand(3, 4) > 0.5).float()
    save_file({"w": orig * mask, "w_orig": orig, "w_mask": mask}, folder / "masked.safetensors")
    status, out, err = run(capsys, "report", "masked.safetensors", "--json")
    assert status == 0, err
    assert [t["name"] for t in json.loads(out)["tensors"]] == ["w"]
    save_file({"w_orig": orig, "w_mask": mask * 0.5}, folder / "halves.safetensors")
    status, _, err = run(capsys, "report", "halves.safetensors")
    assert status == 2 and "w_mask holds values other than 0 and 1" in err


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_outputs_get_the_umask_mode(folder: Path, capsys: pytest.CaptureFixture[str], suffix: str) -> None:
    (folder / "plan.toml").write_text('[[rules]]\nstrategy = "identity"\n')
    old = os.umask(0o022)
    try:
        status, _, err = run(capsys, "apply", "plan.toml", "-m", LENET, "-o", "out" + suffix)
    finally:
        os.umask(old)
    assert status == 0, err
    assert stat.S_IMODE((folder / ("out" + suffix)).stat().st_mode) == 0o644


def test_a_failing_writer_is_reported_and_leaves_nothing(
    folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer's own error (safetensors or torch.save on a full disk) is exit 2, naming the output."""

    def full_disk(*args: object, **kwargs: object) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc] . No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    (folder / "plan.toml").write_text('[[rules]]\nstrategy = "identity"\n')
    status, _, err = run(capsys, "apply", "plan.toml", "-m", LENET, "-o", "out.pt")
    assert status == 2 and "out.pt: cannot write the checkpoint" in err and "No space left" in err
    assert sorted(p.name for p in folder.iterdir()) == ["lenet.safetensors", "nets.py", "plan.toml"]


def test_pruned_outputs_load_back(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The refusals above do not get in the way of a normal resume: bool masks, float weights."""
    (folder / "plan.toml").write_text('[[rules]]\nstrategy = "l1_unstructured"\nparams = { amount = 0.5 }\n')
    status, _, err = run(capsys, "apply", "plan.toml", "-m", LENET, "-w", "lenet.safetensors", "-o", "a.safetensors")
    assert status == 0, err
    status, _, err = run(capsys, "apply", "plan.toml", "-m", LENET, "-w", "a.safetensors", "-o", "b.safetensors")
    assert status == 0, err
    model = LeNet()
    pruneplug.load_pruned_state_dict(model, load_file(folder / "b.safetensors"))
    assert int((~model.conv1.weight_mask).sum()) == 75 + 38


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--input-shape", ""], ["--input-shape ''", "positive whole numbers separated by commas"]),
        (["--input-shape", "1,,28,28"], ["--input-shape '1,,28,28'", "separated by commas"]),
        (["--input-shape", "1x1x28x28"], ["separated by commas"]),
        (["--input-shape", "1 1 28 28"], ["separated by commas"]),
        (["--input-shape", "1,-1,28,28"], ["separated by commas"]),
        (["--input-shape", "1,1.5,28"], ["separated by commas"]),
        (["--input-shape", "[1,1,28,28]"], ["separated by commas"]),
        (["--input-shape", "\uff11,1,28,28"], ["separated by commas"]),  # a full-width digit
        (["--input-shape", "1,0,28,28"], ["every size must be at least 1"]),
        (["--input-shape", "1,1,28,28,1,1,1,1,1"], ["at most 8"]),
        (["--input-shape", "100000,100000,100"], ["1,000,000,000,000 entries", "more than the 268,435,456"]),
        (["--input-shape", "1,1,28,28", "--input-dtype", "flaot32"], ["'flaot32' is not one of", "'float32'"]),
        (["--input-dtype", "float32"], ["--input-dtype needs --input-shape"]),
    ],
)
def test_bad_input_shapes_and_dtypes_name_the_flag(
    folder: Path, capsys: pytest.CaptureFixture[str], flags: list[str], words: list[str]
) -> None:
    (folder / "plan.toml").write_text(
        '[[rules]]\nstrategy = "ln_structured"\nchannels = true\nparams = { amount = 0.5, n = 2 }\n'
    )
    status, _, err = run(capsys, "apply", "plan.toml", "-m", LENET, "-o", "out.safetensors", "--compact", *flags)
    assert status == 2, err
    for word in words:
        assert word in err, err
    assert "Traceback" not in err and not (folder / "out.safetensors").exists()


@pytest.mark.parametrize(
    ("rule", "where"),
    [
        ('strategy = "ln_structured"\nchannels = true\ntensors = ["weight"]\nparams = { amount = 0.5, n = 2 }',
         "rules[0].tensors: a channel rule prunes every tensor coupled"),
        ('strategy = "l1_unstructured"\nchannels = true\nparams = { amount = 0.5 }',
         "rules[0].strategy: a channel rule (channels = true) ranks whole channels"),
        ('strategy = "ln_structured"\nchannels = true\nparams = { amount = 0.5, n = 2, dim = 0 }',
         "rules[0].params.dim: a channel rule takes no 'dim'"),
        ('strategy = "ln_structured"\nchannels = true\nparams = { amount = 0.5, n = 2 }',
         "example_input: rules[0] prunes channels"),
    ],
)  # fmt: skip
def test_bad_channel_rules_are_bad_input(
    folder: Path, capsys: pytest.CaptureFixture[str], rule: str, where: str
) -> None:
    (folder / "plan.toml").write_text(f"[[rules]]\n{rule}\n")
    status, _, err = run(capsys, "apply", "plan.toml", "-m", LENET, "-w", "lenet.safetensors", "-o", "out.pt")
    assert status == 2, err
    assert f"plan.toml: {where}" in err and "Traceback" not in err
    assert not (folder / "out.pt").exists()
