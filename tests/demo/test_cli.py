"""``pruneplug demo`` on the command line: options, output, the missing extra, and one real run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pruneplug.cli import _demo, main
from pruneplug.demo import PLOT_FILE, RESULTS_FILE, DemoConfig, DemoResult


def test_options_reach_the_demo_and_the_results_are_printed_and_written(
    quick_result: DemoResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[DemoConfig] = []

    def fake_run(config: DemoConfig, **_: object) -> DemoResult:
        seen.append(config)
        return quick_result

    monkeypatch.setattr(_demo, "run_demo", fake_run)
    status = main(["--quiet", "demo", "--quick", "--seed", "7", "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert seen == [DemoConfig.quick(seed=7)]
    assert "global l1_unstructured" in out and "right after pruning" in out and "skipped identity" in out
    assert "ln_structured channels: test accuracy (%)" in out
    assert (tmp_path / "out" / PLOT_FILE).exists() and (tmp_path / "out" / RESULTS_FILE).exists()


def test_without_the_demo_extra_it_says_which_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes `import sklearn` fail
    status = main(["demo", "--quick", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.strip().count("\n") == 0, err  # one line
    assert "scikit-learn" in err and "pip install 'pruneplug[demo]'" in err
    assert not (tmp_path / "out").exists()


def test_an_unusable_out_fails_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    assert main(["demo", "--out", str(tmp_path / "file")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_quick_demo_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("sklearn", reason="the demo needs the 'demo' extra (scikit-learn)")
    pytest.importorskip("matplotlib", reason="the demo needs the 'demo' extra (matplotlib)")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "pruneplug", "--quiet", "demo", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "global l1_unstructured" in done.stdout and done.stderr == ""
    assert "ln_structured channels, compacted: size and CPU latency" in done.stdout
    payload = json.loads((out / RESULTS_FILE).read_text())
    assert payload["settings"]["mode"] == "quick" and payload["baseline"]["accuracy"] > 0.8
    assert [point["amount"] for point in payload["channels"]["points"]] == [0.0, 0.5, 0.9]
    assert (out / PLOT_FILE).stat().st_size > 10_000
