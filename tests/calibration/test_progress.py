"""Progress per block: rich when installed and wanted, nothing otherwise."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

import pytest

import pruneplug
from pruneplug.calibration.progress import block_progress

_spec = importlib.util.spec_from_file_location("calibration_helpers", Path(__file__).with_name("helpers.py"))
assert _spec is not None and _spec.loader is not None
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_shown_on_a_terminal_by_default_and_never_when_silenced(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rich")
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with block_progress(3, None) as bar:
        assert not bar.shown
    monkeypatch.setattr(sys, "stderr", Terminal())
    with block_progress(3, None) as bar:
        assert bar.shown
        bar.start("block 1/3")
        bar.advance()
    with block_progress(3, False) as bar:
        assert not bar.shown


def test_progress_true_shows_it_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rich")
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with block_progress(2, True) as bar:
        assert bar.shown


def test_without_rich_calibration_runs_and_progress_true_warns(
    monkeypatch: pytest.MonkeyPatch, registry: pruneplug.Registry
) -> None:
    monkeypatch.setitem(sys.modules, "rich.progress", None)  # import rich.progress raises ImportError
    monkeypatch.setitem(sys.modules, "rich.console", None)
    monkeypatch.setattr(sys, "stderr", Terminal())
    with block_progress(2, None) as bar:
        assert not bar.shown
    model = helpers.Stack(depth=2)
    with pytest.warns(UserWarning, match=r"progress=True needs rich"):
        report = pruneplug.prune_calibrated(
            model, "l1_unstructured", amount=0.5, calibration=helpers.feature_batches(), progress=True
        )
    assert len(report.blocks) == 2
