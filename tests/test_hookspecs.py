"""pruneplug.hookspecs: what pluggy sees, and what a registry does with what a hook returns.

The hook docstrings promise when each hook is called, how the results of
every implementation combine, and what a plugin that raises or hands over the
wrong thing causes; these tests hold the registry to those promises, for
every hook.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import pruneplug
from pruneplug import hookspecs
from pruneplug.hookspecs import StrategyItem, hookimpl
from pruneplug.schedules.builtin import Cubic
from pruneplug.selection.scores import BUILTIN_SCORES

HOOKS = (
    "pruneplug_add_strategies",
    "pruneplug_add_importance_scores",
    "pruneplug_add_statistics",
    "pruneplug_add_schedules",
)


def _strategy(name: str) -> type[pruneplug.BasePruningMethod]:
    """A concrete strategy class registered as ``name`` (it prunes nothing)."""

    def compute_mask(self: pruneplug.BasePruningMethod, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        return default_mask

    title = "".join(part.title() for part in name.split("_"))
    return type(
        title,
        (pruneplug.BasePruningMethod,),
        {"name": name, "PRUNING_TYPE": "unstructured", "compute_mask": compute_mask},
    )


def _score(name: str) -> pruneplug.ImportanceScore:
    return pruneplug.ImportanceScore(name, lambda values, target: values.abs(), elementwise=True)


class _Norms:
    """A statistic's accumulator: the running maximum of |x| per input feature."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.rows = 0
        self.value = torch.zeros(module.in_features)

    def add(self, inputs: torch.Tensor) -> None:
        self.rows += inputs.reshape(-1, inputs.shape[-1]).shape[0]
        self.value = torch.maximum(self.value, inputs.abs().reshape(-1, inputs.shape[-1]).amax(0))

    def result(self) -> torch.Tensor:
        return self.value


def _statistic(name: str) -> pruneplug.Statistic:
    return pruneplug.Statistic(name, _Norms, summary="max |x_j|")


def _schedule(name: str) -> type[pruneplug.Schedule]:
    """A schedule class registered as ``name``: a linear ramp."""

    def sparsity(self: pruneplug.Schedule, step: int, initial: float, final: float) -> float:
        return initial + (final - initial) * self.progress(step)

    return type(name.title().replace("_", ""), (pruneplug.Schedule,), {"name": name, "sparsity": sparsity})


def _plugin(**hooks: Callable[[], object]) -> types.SimpleNamespace:
    """A plugin object whose hooks (by name) do what the given functions do."""
    implementations = {}
    for name, body in hooks.items():

        def implementation(body: Callable[[], object] = body) -> object:
            return body()

        implementation.__name__ = name
        implementations[name] = hookimpl(implementation)
    return types.SimpleNamespace(**implementations)


def test_pluggy_sees_each_spec_with_the_flags_its_docstring_states() -> None:
    registry = pruneplug.Registry(load_entry_points=False)
    callers = {name: caller for name, caller in vars(registry.plugin_manager.hook).items() if caller.has_spec()}
    specs = [name for name, obj in vars(hookspecs).items() if callable(obj) and hasattr(obj, "pruneplug_spec")]
    assert specs and all(name.startswith("pruneplug_") for name in specs), specs
    assert sorted(callers) == sorted(HOOKS) == sorted(n for n in hookspecs.__all__ if n.startswith("pruneplug_"))
    for name, caller in callers.items():
        assert caller.spec is not None
        doc = inspect.getdoc(caller.spec.function) or ""
        assert caller.spec.opts["firstresult"] is False and caller.spec.opts["historic"] is False, name
        assert "neither ``firstresult`` nor historic" in doc and "Every implementation is called" in doc, name
        assert caller.spec.argnames == (), f"{name} takes arguments, but the docs say hooks take none"
        # "The built-ins come through this same hook, from the plugin pruneplug."
        assert [impl.plugin_name for impl in caller.get_hookimpls()] == ["pruneplug"], name


class _Recorder:
    """A plugin that notes each call of its hooks, and hands over one strategy and one score named after it."""

    def __init__(self, name: str, calls: list[tuple[str, str]]) -> None:
        self.name = name
        self.calls = calls

    @hookimpl
    def pruneplug_add_strategies(self) -> list[StrategyItem]:
        self.calls.append((self.name, "strategies"))
        return [_strategy(f"{self.name}_strategy")]

    @hookimpl
    def pruneplug_add_importance_scores(self) -> list[pruneplug.ImportanceScore]:
        self.calls.append((self.name, "scores"))
        return [_score(f"{self.name}_score")]

    @hookimpl
    def pruneplug_add_statistics(self) -> list[pruneplug.Statistic]:
        self.calls.append((self.name, "statistics"))
        return [_statistic(f"{self.name}_statistic")]

    @hookimpl
    def pruneplug_add_schedules(self) -> list[type[pruneplug.Schedule]]:
        self.calls.append((self.name, "schedules"))
        return [_schedule(f"{self.name}_schedule")]


def test_each_hook_is_called_once_per_registry_at_first_use_and_every_result_is_kept() -> None:
    calls: list[tuple[str, str]] = []
    registry = pruneplug.Registry(load_entry_points=False)
    for name in ("first", "second"):
        registry.plugin_manager.register(_Recorder(name, calls), name=name)
    assert calls == []  # not when the registry is made
    assert {"first_strategy", "second_strategy", "l1_unstructured"} <= set(registry.names())
    assert {"first_score", "second_score", "magnitude"} <= set(registry.score_names())
    registry.get("second_strategy")
    registry.get_score("first_score")
    assert {"first_statistic", "second_statistic", "input_hessian"} <= set(registry.statistic_names())
    assert isinstance(registry.get_statistic("second_statistic"), pruneplug.Statistic)
    assert {"first_schedule", "second_schedule", "cubic"} <= set(registry.schedule_names())
    assert registry.get_schedule("first_schedule")(final=0.5, end=4).at(2) == 0.25
    # Once each, every implementation, in registration order: strategies, scores, statistics, then schedules.
    assert calls == [
        ("first", "strategies"),
        ("second", "strategies"),
        ("first", "scores"),
        ("second", "scores"),
        ("first", "statistics"),
        ("second", "statistics"),
        ("first", "schedules"),
        ("second", "schedules"),
    ]
    impls = registry.plugin_manager.hook.pruneplug_add_strategies.get_hookimpls()
    assert [impl.plugin_name for impl in impls] == ["pruneplug", "first", "second"]  # the built-ins first

    another = pruneplug.Registry(load_entry_points=False)
    another.plugin_manager.register(_Recorder("first", calls), name="first")
    assert "first_strategy" in another
    assert calls[8:] == [("first", "strategies"), ("first", "scores"), ("first", "statistics"), ("first", "schedules")]


@dataclass(frozen=True)
class Returns:
    """What a plugin named ``bad`` does in one hook, and how the registry must report it."""

    hook: str
    does: Callable[[], object]
    reason: str | None  # the warning after "pruneplug plugin bad: " (a regex); None: no warning
    kept: tuple[str, ...] = ()  # the plugin's names that stay usable
    status: str = "broken"


def _raise() -> object:
    raise RuntimeError("nothing today")


CASES = {
    "strategies-tuple": Returns(HOOKS[0], lambda: (_strategy("kept"),), None, ("kept",), "ok"),
    "strategies-raises": Returns(HOOKS[0], _raise, r"pruneplug_add_strategies raised RuntimeError: nothing today"),
    "strategies-a-set": Returns(
        HOOKS[0], lambda: {_strategy("kept")}, r"pruneplug_add_strategies must return a list, got set"
    ),
    "strategies-wrong-item": Returns(
        HOOKS[0],
        lambda: ["l1_unstructured", _strategy("kept")],
        r"it handed over something that is not a strategy: .*got 'l1_unstructured'",
        ("kept",),
    ),
    "strategies-bad-name": Returns(
        HOOKS[0],
        lambda: [_strategy("Kept")],
        r"it handed over something that is not a strategy: strategy name 'Kept' of Kept must be lowercase .*",
    ),
    "strategies-built-in-name": Returns(
        HOOKS[0],
        lambda: [_strategy("l1_unstructured")],
        r"it tries to replace the built-in strategy 'l1_unstructured'",
    ),
    "scores-tuple": Returns(HOOKS[1], lambda: (_score("kept"),), None, ("kept",), "ok"),
    "scores-raises": Returns(HOOKS[1], _raise, r"pruneplug_add_importance_scores raised RuntimeError: nothing today"),
    "scores-none": Returns(HOOKS[1], lambda: None, r"pruneplug_add_importance_scores must return a list, got NoneType"),
    "scores-wrong-item": Returns(
        HOOKS[1],
        lambda: [_strategy("squared"), _score("kept")],
        r"it handed over something that is not an importance score: expected a pruneplug.ImportanceScore, "
        r"got <class '.*Squared'>",
        ("kept",),
    ),
    "scores-bad-name": Returns(
        HOOKS[1],
        lambda: [_score("Squared"), _score("kept")],
        r"it handed over something that is not an importance score: importance score 'Squared' needs a lowercase "
        r"name and a callable compute",
        ("kept",),
    ),
    "scores-built-in-name": Returns(
        HOOKS[1], lambda: [_score("magnitude")], r"it tries to replace the built-in importance score 'magnitude'"
    ),
    "statistics-tuple": Returns(HOOKS[2], lambda: (_statistic("kept"),), None, ("kept",), "ok"),
    "statistics-raises": Returns(HOOKS[2], _raise, r"pruneplug_add_statistics raised RuntimeError: nothing today"),
    "statistics-wrong-item": Returns(
        HOOKS[2],
        lambda: [_score("squared"), _statistic("kept")],
        r"it handed over something that is not a statistic: expected a pruneplug.Statistic, got .*squared.*",
        ("kept",),
    ),
    "statistics-bad-name": Returns(
        HOOKS[2],
        lambda: [_statistic("Max"), _statistic("kept")],
        r"it handed over something that is not a statistic: statistic 'Max' needs a lowercase name and a callable "
        r"create",
        ("kept",),
    ),
    "statistics-built-in-name": Returns(
        HOOKS[2], lambda: [_statistic("input_hessian")], r"it tries to replace the built-in statistic 'input_hessian'"
    ),
    "schedules-tuple": Returns(HOOKS[3], lambda: (_schedule("kept"),), None, ("kept",), "ok"),
    "schedules-raises": Returns(HOOKS[3], _raise, r"pruneplug_add_schedules raised RuntimeError: nothing today"),
    "schedules-a-dict": Returns(
        HOOKS[3], lambda: {"kept": _schedule("kept")}, r"pruneplug_add_schedules must return a list, got dict"
    ),
    "schedules-wrong-item": Returns(
        HOOKS[3],
        lambda: [_schedule("kept")(end=3), _schedule("kept")],
        r"it handed over something that is not a schedule: expected a subclass of pruneplug.Schedule, got .*",
        ("kept",),
    ),
    "schedules-abstract": Returns(
        HOOKS[3],
        lambda: [pruneplug.Schedule, _schedule("kept")],
        r"it handed over something that is not a schedule: schedule class Schedule is abstract: implement sparsity",
        ("kept",),
    ),
    "schedules-bad-name": Returns(
        HOOKS[3],
        lambda: [_schedule("Sine"), _schedule("kept")],
        r"it handed over something that is not a schedule: schedule name 'Sine' of Sine must be lowercase .*",
        ("kept",),
    ),
    "schedules-built-in-name": Returns(
        HOOKS[3], lambda: [_schedule("cubic")], r"it tries to replace the built-in schedule 'cubic'"
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_what_a_hook_returns_is_kept_or_reported_as_its_docstring_says(case: Returns) -> None:
    """Wrong results leave out what is wrong, with a PluginLoadWarning naming the plugin; the plugin is
    marked broken, its other items stay usable, and other plugins are untouched."""
    registry = pruneplug.Registry(load_entry_points=False)
    registry.plugin_manager.register(_plugin(**{case.hook: case.does}), name="bad")
    registry.plugin_manager.register(
        _plugin(
            pruneplug_add_strategies=lambda: [_strategy("bystander")],
            pruneplug_add_importance_scores=lambda: [_score("bystander")],
            pruneplug_add_statistics=lambda: [_statistic("bystander")],
            pruneplug_add_schedules=lambda: [_schedule("bystander")],
        ),
        name="bystander",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plugins = {info.name: info for info in registry.plugins()}
    messages = [str(w.message) for w in caught if issubclass(w.category, pruneplug.PluginLoadWarning)]
    if case.reason is None:
        assert messages == []
    else:
        assert len(messages) == 1 and re.fullmatch(f"pruneplug plugin bad: {case.reason}", messages[0]), messages
        assert re.fullmatch(case.reason, plugins["bad"].error or ""), plugins["bad"].error
    assert plugins["bad"].status == case.status
    assert plugins["bystander"].status == "ok" and plugins["bystander"].error is None
    names, listed = {
        HOOKS[0]: (registry.names(), plugins["bad"].strategies),
        HOOKS[1]: (registry.score_names(), plugins["bad"].scores),
        HOOKS[2]: (registry.statistic_names(), plugins["bad"].statistics),
        HOOKS[3]: (registry.schedule_names(), plugins["bad"].schedules),
    }[case.hook]
    assert listed == list(case.kept)
    assert set(case.kept) <= set(names) and "bystander" in names
    assert registry.get("l1_unstructured").provider == "pruneplug"
    assert registry.get_score("magnitude") is next(s for s in BUILTIN_SCORES if s.name == "magnitude")
    assert registry.get_schedule("cubic") is Cubic


def test_a_score_two_plugins_claim_is_unusable_and_both_are_marked_conflict() -> None:
    registry = pruneplug.Registry(load_entry_points=False)
    for name in ("one", "two"):
        registry.plugin_manager.register(_plugin(pruneplug_add_importance_scores=lambda: [_score("shared")]), name=name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert "shared" not in registry.score_names()
    assert sorted(str(w.message) for w in caught if issubclass(w.category, pruneplug.PluginLoadWarning)) == [
        f"pruneplug plugin {plugin}: importance score 'shared' is also provided by {other}; it is unusable until "
        "one of them is uninstalled or blocked"
        for plugin, other in (("one", "two"), ("two", "one"))
    ]
    with pytest.raises(pruneplug.StrategyConflictError, match="shared"):
        registry.get_score("shared")
    assert {p.name: p.status for p in registry.plugins()} == {"pruneplug": "ok", "one": "conflict", "two": "conflict"}


def test_a_schedule_two_plugins_claim_is_unusable_and_the_error_says_schedule() -> None:
    registry = pruneplug.Registry(load_entry_points=False)
    for name in ("one", "two"):
        registry.plugin_manager.register(_plugin(pruneplug_add_schedules=lambda: [_schedule("shared")]), name=name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert "shared" not in registry.schedule_names()
    assert sorted(str(w.message) for w in caught if issubclass(w.category, pruneplug.PluginLoadWarning)) == [
        f"pruneplug plugin {plugin}: schedule 'shared' is also provided by {other}; it is unusable until "
        "one of them is uninstalled or blocked"
        for plugin, other in (("one", "two"), ("two", "one"))
    ]
    with pytest.raises(pruneplug.StrategyConflictError, match="schedule name 'shared' is provided by more than one"):
        registry.get_schedule("shared")
    with pruneplug.use_registry(registry), pytest.raises(pruneplug.StrategyConflictError, match="'shared'"):
        pruneplug.make_schedule("shared", end=3)


def test_the_module_imports_neither_pruneplug_nor_torch_at_run_time() -> None:
    """hookspecs.py is layer 0: the item types are imported for type checkers only."""
    path = Path(hookspecs.__file__)
    script = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('standalone_hookspecs', {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] in ('pruneplug', 'torch', 'pydantic')))\n"
        "print(module.StrategyItem)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]", "type[torch.nn.utils.prune.BasePruningMethod] | StrategySpec"]
