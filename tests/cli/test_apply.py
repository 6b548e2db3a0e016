"""``pruneplug apply`` end to end: the real console script, in subprocesses, on real files.

Starting Python and torch takes seconds, so the subprocesses this module
needs are started once, up front, two at a time (the apply -> report ->
resume -> --remove pipeline in order on one worker, the bad-input cases on
the other); each test then checks one result. Quicker checks call the same
app in-process through ``pruneplug.cli.main``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pruneplug.cli import main
from pruneplug.io.checkpoints import load_checkpoint
from pruneplug.models import LeNet

SCRIPT = shutil.which("pruneplug", path=str(Path(sys.executable).parent))
LENET = "pruneplug.models:LeNet"

PLAN = """
description = "structured convs, then global magnitude on the classifier"

[[rules]]
description = "a third of each conv's output channels"
strategy = "ln_structured"
types = ["Conv2d"]
params = { amount = 0.33, n = 2, dim = 0 }

[[rules]]
strategy = "l1_unstructured"
scope = "global"
types = ["Linear"]
exclude = ["fc3"]
params = { amount = 0.5 }
"""

MORE = """
rules:
  - strategy: l1_unstructured
    scope: global
    modules: ["fc*", "conv2"]
    params: {amount: 0.2}
"""

Run = subprocess.CompletedProcess[str]


def cli(cwd: Path, *args: str) -> Run:
    assert SCRIPT is not None, "the pruneplug console script is not installed next to this Python"
    return subprocess.run([SCRIPT, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=120)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    weights = {k: v.contiguous() for k, v in LeNet().state_dict().items()}
    save_file(weights, root / "lenet.safetensors")
    data = (root / "lenet.safetensors").read_bytes()
    (root / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    save_file(
        {k: v.contiguous() for k, v in nn.Sequential(nn.Linear(4, 2)).state_dict().items()}, root / "mlp.safetensors"
    )
    torch.save(LeNet(), root / "whole-model.pt")
    (root / "plan.toml").write_text(PLAN)
    (root / "more.yaml").write_text(MORE)
    (root / "unknown.json").write_text(json.dumps({"rules": [{"strategy": "l1_unstructurd", "params": {"amount": 1}}]}))
    (root / "typo.toml").write_text(PLAN.replace('scope = "global"', 'scoep = "global"'))
    return root


@pytest.fixture(scope="module")
def runs(work: Path) -> dict[str, Run]:
    apply = ["apply", "--model", LENET]

    def pipeline() -> dict[str, Run]:
        done = {"apply": cli(work, *apply, "plan.toml", "--weights", "lenet.safetensors", "-o", "step1.safetensors")}
        done["report"] = cli(work, "report", "step1.safetensors", "--json")
        done["resume"] = cli(work, *apply, "more.yaml", "-w", "step1.safetensors", "-o", "step2.safetensors")
        done["remove"] = cli(work, *apply, "more.yaml", "-w", "step2.safetensors", "-o", "final.pt", "--remove")
        done["final report"] = cli(work, "report", "final.pt", "--model", LENET, "--markdown")
        return done

    singles: dict[str, tuple[str, ...]] = {
        "truncated": (*apply, "plan.toml", "-w", "truncated.safetensors", "-o", "bad1.safetensors"),
        "other model": (*apply, "plan.toml", "-w", "mlp.safetensors", "-o", "bad2.safetensors"),
        "pickle": (*apply, "plan.toml", "-w", "whole-model.pt", "-o", "bad3.safetensors"),
        "unknown strategy": (*apply, "unknown.json", "-w", "lenet.safetensors", "-o", "bad4.safetensors"),
        "typo": (*apply, "typo.toml", "-w", "lenet.safetensors", "-o", "bad5.safetensors"),
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        chain = pool.submit(pipeline)
        started: dict[str, Future[Run]] = {name: pool.submit(cli, work, *args) for name, args in singles.items()}
        return {**chain.result(), **{name: future.result() for name, future in started.items()}}


def ok(run: Run) -> Run:
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    return run


def test_apply_prunes_and_keeps_the_masks(work: Path, runs: dict[str, Run]) -> None:
    out = ok(runs["apply"]).stdout
    assert "ln_structured" in out and "Wrote step1.safetensors" in out and "resume" in out
    saved = load_file(work / "step1.safetensors")
    assert saved["conv1.weight_mask"].dtype == torch.bool
    assert int((~saved["conv1.weight_mask"]).any(dim=(1, 2, 3)).sum()) == 2  # round(0.33 * 6) channels
    assert "fc3.weight_mask" not in saved and "fc3.weight" in saved
    # the same as applying the plan in-process
    from pruneplug.plans import apply_plan

    model = LeNet()
    model.load_state_dict(load_file(work / "lenet.safetensors"))
    apply_plan(model, work / "plan.toml")
    for key, value in model.state_dict().items():
        assert torch.equal(saved[key], value), key


def test_report_json_describes_the_checkpoint(runs: dict[str, Run]) -> None:
    payload = json.loads(ok(runs["report"]).stdout)
    tensors = {t["name"]: t for t in payload["tensors"]}
    assert tensors["conv1.weight"]["status"] == "masked" and tensors["conv1.weight"]["zeros"] == 50
    assert tensors["fc1.weight"]["history"] == ["l1_unstructured(amount=0.5) [global over 2 tensors]"]
    assert tensors["fc3.weight"]["status"] == "dense"
    assert payload["totals"]["masked_tensors"] == 4 and payload["source"] == "step1.safetensors"


def test_a_second_plan_resumes_from_the_masks(work: Path, runs: dict[str, Run]) -> None:
    ok(runs["resume"])
    first, second = load_file(work / "step1.safetensors"), load_file(work / "step2.safetensors")
    for key in ("conv1.weight_mask", "fc1.weight_mask", "fc2.weight_mask"):  # pruned stays pruned
        assert not bool((second[key] & ~first.get(key, torch.ones_like(second[key]))).any()), key
    assert int(second["fc1.weight_mask"].sum()) < int(first["fc1.weight_mask"].sum())
    assert "conv2.weight_mask" in second and "fc3.weight_mask" in second
    history = load_checkpoint(work / "step2.safetensors").history
    assert history["conv2.weight"] == (
        "ln_structured(amount=0.33, n=2, dim=0)",
        "l1_unstructured(amount=0.2) [global over 4 tensors]",
    )


def test_remove_writes_plain_weights(work: Path, runs: dict[str, Run]) -> None:
    assert "permanent" in ok(runs["remove"]).stdout
    final = torch.load(work / "final.pt", weights_only=True)
    assert not any(key.endswith(("_mask", "_orig")) for key in final)
    LeNet().load_state_dict(final)  # a plain model takes it as it is
    markdown = ok(runs["final report"]).stdout
    assert (
        "| conv1.weight | Conv2d | 6x1x5x5 |" in markdown and "| zeroed |" in markdown and "| masked |" not in markdown
    )


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("truncated", ["truncated.safetensors", "truncated or corrupt"]),
        ("other model", ["mlp.safetensors", "does not fit the model", "missing keys"]),
        ("pickle", ["whole-model.pt", "full pickle", "--allow-pickle"]),
        ("unknown strategy", ["unknown.json: rules[0].strategy:", "Did you mean 'l1_unstructured'"]),
        ("typo", ["typo.toml: rules[1].scoep: unknown field 'scoep'", "Did you mean 'scope'?"]),
    ],
)
def test_bad_input_exits_2_with_one_clear_message(
    work: Path, runs: dict[str, Run], case: str, words: list[str]
) -> None:
    run = runs[case]
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert "Traceback" not in run.stderr and run.stderr.startswith("pruneplug: error: ")
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    for word in words:
        assert word in run.stderr
    assert not list(work.glob("bad*")) and not list(work.glob(".*.tmp"))


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_dry_run_shows_the_rules_and_writes_nothing(
    work: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work)
    args = ("apply", "plan.toml", "-m", LENET, "-w", "lenet.safetensors", "-o", "dry.safetensors", "--dry-run")
    status, out, err = in_process(capsys, *args)
    assert status == 0, err
    assert "dry run" in out.lower() and "fc1.weight" in out and "50.00%" in out
    assert "-o had no effect" in out
    assert not (work / "dry.safetensors").exists()


def test_argument_errors(work: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(work)
    checks: list[tuple[tuple[str, ...], str]] = [
        (("apply", "plan.toml", "-m", LENET), "needs --output"),
        (("apply", "plan.toml", "-m", LENET, "-o", "lenet.safetensors"), "lenet.safetensors: the output exists"),
        (("apply", "plan.toml", "-m", LENET, "-o", "out.bin"), "use .safetensors"),
        (("apply", "plan.toml", "-m", "pruneplug.models", "-o", "x.pt"), "expected MODULE:FACTORY"),
        (("apply", "plan.toml", "-m", "pruneplug.models:LeNot", "-o", "x.pt"), "Did you mean 'LeNet'?"),
        (("apply", "plan.toml", "-m", "no_such_module:f", "-o", "x.pt"), "cannot import 'no_such_module'"),
        (("apply", "plan.toml", "-m", "torch:zeros", "-o", "x.pt"), "calling zeros() raised"),
        (("apply", "plan.toml", "-m", "math:pi", "-o", "x.pt"), "not a model factory"),
        (("apply", "missing.toml", "-m", LENET, "-o", "x.pt"), "missing.toml: cannot read the plan"),
        (("report", "lenet.safetensors", "--json", "--markdown"), "exclude each other"),
        (("apply", "big.json", "-m", LENET, "-o", "x.pt"), "big.json: rules[0].params.amount: amount=900 is more than"),
    ]
    (work / "big.json").write_text(
        '{"rules": [{"strategy": "l1_unstructured", "modules": ["fc3"], "params": {"amount": 900}}]}'
    )
    for args, words in checks:
        status, _, err = in_process(capsys, *args)
        assert status == 2 and words in err and "Traceback" not in err, (args, err)
    assert not (work / "x.pt").exists()


def test_force_replaces_and_allow_pickle_reads(
    work: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work)
    target = work / "forced.safetensors"
    target.write_text("old")
    args = ("-q", "apply", "more.yaml", "-m", LENET, "-w", "whole-model.pt", "-o", str(target))
    assert in_process(capsys, *args)[0] == 2
    status, out, _ = in_process(capsys, *args, "--allow-pickle", "--force")
    assert status == 0 and "Wrote" in out
    assert "fc1.weight_mask" in load_file(target)


def test_debug_shows_the_traceback(
    work: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work)
    status, _, err = in_process(capsys, "--debug", "apply", "typo.toml", "-m", LENET, "-o", "x.pt")
    assert status == 2 and "Traceback" in err and "unknown field 'scoep'" in err


def test_a_factory_from_the_current_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_nets.py").write_text(
        textwrap.dedent(
            """
            import torch
            def tiny():
                return torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Linear(4, 2))
            """
        )
    )
    (tmp_path / "plan.json").write_text('{"rules": [{"strategy": "l1_unstructured", "params": {"amount": 0.5}}]}')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "my_nets", raising=False)
    status, _, err = in_process(capsys, "apply", "plan.json", "-m", "my_nets:tiny", "-o", "tiny.safetensors")
    assert status == 0, err
    assert set(load_file(tmp_path / "tiny.safetensors")) == {
        "0.weight_orig",
        "0.weight_mask",
        "0.bias",
        "1.weight_orig",
        "1.weight_mask",
        "1.bias",
    }


def test_progress_bar_on_a_terminal_and_quiet(
    work: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from rich.console import Console

    from pruneplug.cli import _progress

    monkeypatch.chdir(work)
    terminal = io.StringIO()
    monkeypatch.setattr(_progress, "err_console", Console(file=terminal, force_terminal=True, width=100))
    args = ("apply", "plan.toml", "-m", LENET, "-w", "lenet.safetensors", "--dry-run")
    assert in_process(capsys, *args)[0] == 0
    assert "3/3" in terminal.getvalue()
    terminal.seek(0)
    terminal.truncate()
    assert in_process(capsys, "--quiet", *args)[0] == 0
    assert terminal.getvalue() == ""


def test_a_plan_with_packed_masks_writes_the_same_checkpoint(
    work: Path, runs: dict[str, Run], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mask_storage = "packed"`` changes how masks are held while applying, not what is written: the
    checkpoint holds the same bool masks and weights as the bool run (resuming from a pruned checkpoint)."""
    ok(runs["resume"])
    monkeypatch.chdir(work)
    (work / "more-packed.yaml").write_text("mask_storage: packed\n" + MORE)
    args = ("apply", "more-packed.yaml", "-m", LENET, "-w", "step1.safetensors", "-o", "packed.safetensors")
    status, _, err = in_process(capsys, *args)
    assert status == 0, err
    packed, plain = load_file(work / "packed.safetensors"), load_file(work / "step2.safetensors")
    assert packed.keys() == plain.keys()
    for key, value in plain.items():
        assert packed[key].dtype == value.dtype and torch.equal(packed[key], value), key


def test_a_plan_with_schedules_is_applied_at_their_end_and_says_so(
    work: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work)
    (work / "scheduled.toml").write_text(
        'schedule = { name = "cubic", end = 1000, every = 100 }\n\n'
        '[[rules]]\nstrategy = "l1_unstructured"\ntypes = ["Linear"]\nparams = { amount = 0.5 }\n',
        encoding="utf-8",
    )
    args = ("apply", "scheduled.toml", "-m", LENET, "-w", "lenet.safetensors", "--dry-run")
    status, out, err = in_process(capsys, *args)
    assert status == 0, err
    assert "pruned at once to their final sparsity" in " ".join(out.split()) and "cubic(" in out
    status, out, err = in_process(capsys, *args, "--json")
    assert status == 0, err
    report = json.loads(out)
    assert report["schedules"] == {
        "0": "cubic(initial=0.0, final=None, start=0, end=1000, every=100): final sparsity 0.5"
    }
    assert report["rules"][0]["sparsity_after"] == pytest.approx(0.5, abs=0.01)
