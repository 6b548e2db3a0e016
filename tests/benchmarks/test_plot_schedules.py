"""``benchmarks/plot_schedules.py``: it runs, and docs/images/schedules.svg is what it draws now."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import matplotlib
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "plot_schedules.py"
COMMITTED = ROOT / "docs" / "images" / "schedules.svg"


def test_the_committed_plot_is_what_the_script_draws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("bench_plot_schedules", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_plot_schedules", module)
    spec.loader.exec_module(module)
    drawn = module.plot(tmp_path / "schedules.svg").read_text(encoding="utf-8")
    for label in module.SCHEDULES:
        assert f">{label}<" in drawn, label
    committed = COMMITTED.read_text(encoding="utf-8")
    made_by = re.search(r"Matplotlib v([\w.]+)", committed)
    if made_by is None or made_by[1] != matplotlib.__version__:
        pytest.skip(f"the committed plot was drawn by another matplotlib ({made_by and made_by[1]})")
    assert drawn == committed, "docs/images/schedules.svg is out of date: run python benchmarks/plot_schedules.py"
