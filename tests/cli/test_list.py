"""``pruneplug list``: tables and JSON built from the registry and the pydantic models."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pruneplug import get_registry
from pruneplug.cli import main
from pruneplug.cli._commands import app


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


# --- at any width: names whole, lines within the width ------------------------------------------

WIDTHS = (200, 80, 60, 40)


def list_at(width: int) -> str:
    """``pruneplug list`` through typer's CliRunner (stdout not a terminal, as in a pipe) at ``width`` columns."""
    done = CliRunner().invoke(app, ["list"], env={"COLUMNS": str(width)})
    assert done.exit_code == 0, done.output
    return done.output


def sections(output: str) -> dict[str, str]:
    """The output cut at the titles: Strategies, Kinds, Importance scores, Plugins."""
    found = re.split(r"^(Strategies|Kinds:|Importance scores|Plugins)", output, flags=re.MULTILINE)
    return {title: text for title, text in zip(found[1::2], found[2::2])}


def whole_words(text: str) -> set[str]:
    return set(re.findall(r"[\w.-]+", text))


@pytest.mark.parametrize("width", WIDTHS)
def test_list_never_cuts_a_name(width: int) -> None:
    """At 80 columns in a pipe (and 60, 40): every strategy and plugin name is whole, no line is too long."""
    output = list_at(width)
    parts = sections(output)
    registry = get_registry()
    names = set(registry.names())
    assert names <= whole_words(parts["Strategies"]), parts["Strategies"]
    plugins = whole_words(parts["Plugins"])
    assert {p.name for p in registry.plugins()} | names <= plugins
    assert {p.distribution for p in registry.plugins() if p.distribution} <= plugins
    assert "…" not in output
    assert max(len(line) for line in output.splitlines()) <= width


def test_list_explains_the_kinds() -> None:
    """'global' is a kind (a mask from the whole tensor) and a scope (ranking across tensors): the legend and
    the JSON say that kind global cannot be used for global pruning."""
    legend = " ".join(sections(list_at(100))["Kinds:"].split())
    assert "global: computes each tensor's mask from the whole tensor at once" in legend
    assert "despite the name, not usable with global pruning, which needs kind unstructured" in legend
    payload = json.loads(run("list", "--json").stdout)
    kinds = {kind["name"]: kind for kind in payload["kinds"]}
    assert list(kinds) == ["unstructured", "structured", "global"]
    assert [kind["global_pruning"] for kind in kinds.values()] == [True, False, False]
    assert {"strategies", "conflicts", "scores", "plugins"} <= set(payload)  # what was there stays


def test_list_shows_each_schedule_with_the_parameters_it_takes() -> None:
    """Schedules in the JSON and in a table of their own; the fields a schedule sets itself are not parameters."""
    payload = json.loads(run("list", "--json").stdout)
    by_name = {s["name"]: s for s in payload["schedules"]}
    assert {"constant", "cubic", "exponential", "linear", "milestones", "one_shot"} <= set(by_name)
    cubic = by_name["cubic"]
    assert [(p["name"], p["required"], p["default"]) for p in cubic["parameters"]] == [
        ("initial", False, 0.0),
        ("final", False, None),
        ("start", False, 0),
        ("end", True, None),
        ("every", False, 1),
    ]
    assert (
        cubic["summary"].startswith("Zhu & Gupta's gradual pruning (AGP)")
        and cubic["provider"].split()[0] == "pruneplug"
    )
    assert [p["name"] for p in by_name["one_shot"]["parameters"]] == ["initial", "final", "start"]
    assert [p["name"] for p in by_name["milestones"]["parameters"]] == ["initial", "milestones"]
    assert [p["name"] for p in by_name["constant"]["parameters"]] == ["final", "start"]
    builtin = next(p for p in payload["plugins"] if p["name"] == "pruneplug")
    assert "cubic" in builtin["schedules"]
    table = list_at(120).split("Pruning schedules")[1].split("Plugins")[0]
    assert set(by_name) <= whole_words(table) and "end: int" in table and "every: int = 1" in table
