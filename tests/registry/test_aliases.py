"""Deprecated strategy names: a renamed strategy keeps its old names, which still work with a warning.

A strategy declares them in ``deprecated_names``; looking one up -- by
``prune``, ``get_strategy``, a plan or the CLI -- finds the strategy under its
current name, with a :class:`pruneplug.StrategyDeprecationWarning` pointing at
the caller's line. Old names are not listed as strategies, and an old name
colliding with any other name is an error naming both providers.
"""

from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from torch import nn

import pruneplug
from pruneplug.cli import main
from pruneplug.cli._list import strategies_payload
from pruneplug.hookspecs import hookimpl
from pruneplug.plans import plan_schema

DEPRECATION = "strategy 'halfs' is deprecated, use 'halves' (renamed by register())"


class Halves(pruneplug.UnstructuredStrategy):
    """Prune by position: the first entries go first."""

    name: ClassVar[str | None] = "halves"
    deprecated_names: ClassVar[tuple[str, ...]] = ("halfs", "first_entries")

    def scores(self, t: torch.Tensor, alive: torch.Tensor | None) -> torch.Tensor:
        return torch.arange(t.numel(), dtype=torch.float32).reshape(t.shape)


def _next_line() -> int:
    """The number of the line after the caller's."""
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno + 1


def _blamed(caught: pytest.WarningsRecorder) -> tuple[str, int]:
    [warning] = [w for w in caught.list if issubclass(w.category, pruneplug.StrategyDeprecationWarning)]
    assert str(warning.message) == DEPRECATION
    return warning.filename, warning.lineno


@pytest.fixture
def halves(registry: pruneplug.Registry) -> pruneplug.StrategySpec:
    """``Halves``, registered (with its deprecated names) in a fresh default registry."""
    return registry.register(Halves)


def test_a_deprecated_name_finds_the_strategy_with_a_warning_at_the_callers_line(
    registry: pruneplug.Registry, halves: pruneplug.StrategySpec
) -> None:
    assert issubclass(pruneplug.StrategyDeprecationWarning, FutureWarning)  # shown to users by default
    assert halves.deprecated_names == ("halfs", "first_entries")
    with pytest.warns(pruneplug.StrategyDeprecationWarning) as caught:
        line = _next_line()
        assert pruneplug.get_strategy("halfs") is halves
    assert _blamed(caught) == (__file__, line)
    layer = nn.Linear(4, 1)
    with pytest.warns(pruneplug.StrategyDeprecationWarning) as caught:
        line = _next_line()
        pruneplug.prune(layer, "weight", "halfs", amount=2)
    assert _blamed(caught) == (__file__, line)
    assert layer.weight_mask.tolist() == [[False, False, True, True]]
    assert [method.describe() for method in pruneplug.pruning_history(layer, "weight")] == ["halves(amount=2)"]
    with pytest.warns(pruneplug.StrategyDeprecationWarning, match="'first_entries' is deprecated, use 'halves'"):
        assert registry.get("first_entries") is halves
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert registry.get("halves") is halves  # the current name: no warning
        assert "halfs" not in pruneplug.list_strategies() and "halfs" not in registry.names()
        assert "halfs" in registry and registry.deprecated_names() == {"first_entries": halves, "halfs": halves}


def test_unregistering_removes_the_deprecated_names_too(registry: pruneplug.Registry) -> None:
    with registry.registered(Halves):
        assert "halfs" in registry
    assert "halfs" not in registry and registry.deprecated_names() == {}
    with pytest.raises(pruneplug.StrategyNotFoundError, match="no strategy named 'halfs'"):
        registry.get("halfs")


def test_a_plan_naming_a_deprecated_strategy_loads_and_applies(halves: pruneplug.StrategySpec, tmp_path: Path) -> None:
    """The plan loads with one warning at the caller's line, holds the current name, and applies unchanged."""
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"rules": [{"strategy": "halfs", "types": ["Linear"], "params": {"amount": 2}}]}))
    with pytest.warns(pruneplug.StrategyDeprecationWarning) as caught:
        line = _next_line()
        plan = pruneplug.load_plan(path)
    assert _blamed(caught) == (__file__, line)
    assert plan.rules[0].strategy == "halves"
    model = nn.Sequential(nn.Linear(4, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pruneplug.apply_plan(model, plan)
    assert model[0].weight_mask.tolist() == [[False, False, True, True]]
    with pytest.warns(pruneplug.StrategyDeprecationWarning) as caught:
        line = _next_line()
        rule = pruneplug.Rule(strategy="halfs", params={"amount": 1})
    assert _blamed(caught) == (__file__, line) and rule.strategy == "halves"


def test_the_plan_schema_accepts_a_deprecated_name_marked_deprecated(halves: pruneplug.StrategySpec) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = plan_schema()
    mapping = schema["properties"]["rules"]["items"]["discriminator"]["mapping"]
    old = schema["$defs"][mapping["halfs"].rpartition("/")[2]]
    assert old["deprecated"] is True and "use 'halves'" in old["description"]
    assert "deprecated" not in schema["$defs"][mapping["halves"].rpartition("/")[2]]
    jsonschema.Draft202012Validator(schema).validate({"rules": [{"strategy": "halfs", "params": {"amount": 1}}]})


def test_pruneplug_list_shows_deprecated_names(
    halves: pruneplug.StrategySpec, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "halfs" not in {s["name"] for s in data["strategies"]}
    assert data["deprecated_names"] == [
        {"name": "first_entries", "use": "halves", "provider": "register()"},
        {"name": "halfs", "use": "halves", "provider": "register()"},
    ]
    assert main(["list"]) == 0
    table = capsys.readouterr().out
    assert "Deprecated names" in table and "halfs" in table


@pytest.mark.parametrize(
    ("names", "error", "message"),
    [
        (("Halfs",), ValueError, "deprecated name 'Halfs' of Renamed must be lowercase"),
        (("renamed",), ValueError, "'renamed' is Renamed's own name"),
        (("halfs", "halfs"), ValueError, "'halfs' is given twice"),
        ("halfs", TypeError, "deprecated_names of Renamed must be a tuple or list of names"),
    ],
)
def test_deprecated_names_are_checked(names: object, error: type[Exception], message: str) -> None:
    renamed = type("Renamed", (Halves,), {"name": "renamed", "deprecated_names": names})
    with pytest.raises(error, match=message):
        pruneplug.strategy_spec(renamed)


def test_deprecated_names_are_not_inherited() -> None:
    """A subclass under a name of its own is another strategy: its parent's old names stay the parent's."""
    subclass = type("Thirds", (Halves,), {"name": "thirds"})
    assert pruneplug.strategy_spec(subclass).deprecated_names == ()
    spec = pruneplug.strategy_spec(subclass, deprecated_names=["tierces"])  # also given directly, as to a torch class
    assert spec.deprecated_names == ("tierces",)


# --- collisions -----------------------------------------------------------------------------------


def _plugin(strategy: type) -> object:
    class Plugin:
        @staticmethod
        @hookimpl
        def pruneplug_add_strategies() -> list[type]:
            return [strategy]

    return Plugin()


def _renamed(name: str, *old: str) -> type:
    return type(name.title(), (Halves,), {"name": name, "deprecated_names": old})


def _load(*plugins: tuple[str, type]) -> tuple[pruneplug.Registry, list[str]]:
    registry = pruneplug.Registry(load_entry_points=False)
    for plugin_name, strategy in plugins:
        registry.plugin_manager.register(_plugin(strategy), name=plugin_name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry.names()
    return registry, [str(w.message) for w in caught if issubclass(w.category, pruneplug.PluginLoadWarning)]


def _status(registry: pruneplug.Registry, plugin: str) -> str:
    return next(p.status for p in registry.plugins() if p.name == plugin)


def test_a_deprecated_name_claimed_twice_is_a_conflict_naming_both_plugins() -> None:
    registry, messages = _load(("one", _renamed("first", "old")), ("two", _renamed("second", "old")))
    assert sorted(messages) == [
        "pruneplug plugin one: deprecated name 'old' (for 'first') is also provided by two (deprecated name for "
        "'second'); it is unusable until one of them is uninstalled or blocked",
        "pruneplug plugin two: deprecated name 'old' (for 'second') is also provided by one (deprecated name for "
        "'first'); it is unusable until one of them is uninstalled or blocked",
    ]
    with pytest.raises(pruneplug.StrategyConflictError) as caught:
        registry.get("old")
    assert sorted(caught.value.providers) == ["one (deprecated name for 'first')", "two (deprecated name for 'second')"]
    assert {"first", "second"} <= set(registry.names()) and _status(registry, "one") == "conflict"
    with pruneplug.use_registry(registry):
        [conflict] = strategies_payload()["conflicts"]
    assert sorted(conflict["providers"]) == ["one (deprecated name for 'first')", "two (deprecated name for 'second')"]


def test_a_deprecated_name_that_is_another_plugins_strategy_is_a_conflict() -> None:
    registry, messages = _load(("one", _renamed("first", "second")), ("two", _renamed("second")))
    one, two = sorted(messages)
    assert one.startswith("pruneplug plugin one: deprecated name 'second' (for 'first') is also provided by two;")
    assert two.startswith(
        "pruneplug plugin two: strategy 'second' is also provided by one (deprecated name for 'first')"
    )
    with pytest.raises(pruneplug.StrategyConflictError, match=r"'second' is provided by more than one plugin \(one"):
        registry.get("second")
    assert "first" in registry.names() and "second" not in registry.names()


def test_a_deprecated_name_cannot_take_a_builtins_name() -> None:
    registry, messages = _load(("one", _renamed("first", "l1_unstructured")))
    assert messages == [
        "pruneplug plugin one: its deprecated name 'l1_unstructured' (for 'first') is the built-in strategy "
        "'l1_unstructured'"
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert registry.get("l1_unstructured").provider == "pruneplug"
    assert registry.get("first").provider == "one" and _status(registry, "one") == "broken"


def test_register_refuses_a_name_or_deprecated_name_that_is_taken(registry: pruneplug.Registry) -> None:
    registry.register(Halves)
    with pytest.raises(pruneplug.StrategyConflictError) as caught:
        registry.register(_renamed("other", "halfs"))
    assert caught.value.name == "halfs" and caught.value.providers == ["register() (deprecated name for 'halves')"]
    with pytest.raises(pruneplug.StrategyConflictError, match="'l1_unstructured' is already provided by pruneplug"):
        registry.register(_renamed("other", "l1_unstructured"))
    with pytest.raises(pruneplug.StrategyConflictError, match="'first_entries' is already provided by register"):
        registry.register(_renamed("first_entries"))
    assert "other" not in registry and "first_entries" in registry
