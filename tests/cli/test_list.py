"""``pruneplug list``: tables and JSON built from the registry and the pydantic models."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pruneplug.cli import main


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pruneplug", *args], capture_output=True, text=True, check=False)


def test_list_json_describes_every_strategy_from_its_model() -> None:
    done = run("list", "--json")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    by_name = {s["name"]: s for s in payload["strategies"]}
    assert {"identity", "l1_unstructured", "ln_structured", "random_structured", "random_unstructured"} <= set(by_name)
    ln = by_name["ln_structured"]
    assert ln["kind"] == "structured" and ln["provider"] == "pruneplug" and ln["status"] == "ok"
    assert [(p["name"], p["required"], p["default"]) for p in ln["parameters"]] == [
        ("amount", True, None),
        ("n", True, None),
        ("dim", False, -1),
        ("prune_bias", False, False),
    ]
    assert [s["name"] for s in payload["scores"]] == ["magnitude", "taylor"]
    builtin = next(p for p in payload["plugins"] if p["name"] == "pruneplug")
    assert builtin["status"] == "ok" and "l1_unstructured" in builtin["strategies"]


def test_list_table_and_console_script() -> None:
    script = shutil.which("pruneplug", path=str(Path(sys.executable).parent))
    assert script is not None, "the pruneplug console script is not installed next to this Python"
    done = subprocess.run([script, "list"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "l1_unstructured" in done.stdout and "Plugins" in done.stdout


def test_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    assert main(["no-such-command"]) == 2
    assert main(["list", "--no-such-option"]) == 2
    capsys.readouterr()
