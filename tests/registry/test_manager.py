"""The registry: built-ins through the pluggy hook, lookup, programmatic registration."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from pydantic import BaseModel

import pruneplug
from pruneplug.strategies import BUILTIN_STRATEGIES, L1Unstructured

BUILTIN_NAMES = [
    "custom_from_mask",
    "identity",
    "l1_unstructured",
    "ln_structured",
    "magnitude",
    "random_structured",
    "random_unstructured",
    "scored_structured",
    "scored_unstructured",
    "sparsegpt",
    "wanda",
]


def test_builtins_arrive_through_the_plugin_hook(registry: pruneplug.Registry) -> None:
    """Built-ins are registered by a pluggy plugin through pruneplug_add_strategies, like any plugin."""
    impls = registry.plugin_manager.hook.pruneplug_add_strategies.get_hookimpls()
    assert [impl.plugin_name for impl in impls] == ["pruneplug"]
    assert registry.names() == BUILTIN_NAMES
    assert pruneplug.list_strategies() == BUILTIN_NAMES
    builtin = next(p for p in registry.plugins() if p.name == "pruneplug")
    assert sorted(builtin.strategies) == BUILTIN_NAMES and builtin.status == "ok"


def test_registry_is_created_on_first_use_not_at_import() -> None:
    """Importing pruneplug must not build a plugin manager or load entry points."""
    import subprocess
    import sys

    code = "import pruneplug, pruneplug.registry.default as r; print(r._default_registry is None)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_specs_describe_kind_params_and_provider(registry: pruneplug.Registry) -> None:
    """Each spec carries its kind, a pydantic params model and the provider."""
    kinds = {spec.name: spec.kind for spec in registry.specs()}
    assert kinds == {
        "custom_from_mask": "global",
        "identity": "unstructured",
        "l1_unstructured": "unstructured",
        "ln_structured": "structured",
        "magnitude": "unstructured",
        "random_structured": "structured",
        "random_unstructured": "unstructured",
        "scored_structured": "structured",
        "scored_unstructured": "unstructured",
        "sparsegpt": "global",
        "wanda": "unstructured",
    }
    for spec in registry.specs():
        assert issubclass(spec.params_model, BaseModel)
        assert spec.params_model.model_config.get("extra") == "forbid"
        assert spec.params_model.model_config.get("frozen") is True
        assert spec.provider == "pruneplug" and spec.summary
    ln = registry.get("ln_structured")
    params = {p.name: p for p in ln.parameters()}
    assert list(params) == ["amount", "n", "dim", "prune_bias"]
    assert params["amount"].required and params["n"].required
    assert params["dim"].default == -1 and not params["dim"].required
    assert params["amount"].type == "int | float"


def test_unknown_name_lists_close_matches(registry: pruneplug.Registry) -> None:
    with pytest.raises(pruneplug.StrategyNotFoundError) as caught:
        pruneplug.get_strategy("l1_unstructurd")
    message = str(caught.value)
    assert "'l1_unstructured'" in message and "Did you mean" in message
    assert isinstance(caught.value, LookupError)
    assert caught.value.available == BUILTIN_NAMES


def test_list_strategies_filters(registry: pruneplug.Registry) -> None:
    assert pruneplug.list_strategies("*_structured") == ["ln_structured", "random_structured", "scored_structured"]
    assert pruneplug.list_strategies(kind="global") == ["custom_from_mask", "sparsegpt"]
    assert pruneplug.list_strategies("l1*", kind="structured") == []


def test_register_unregister_and_context_manager(registry: pruneplug.Registry) -> None:
    class Everything(pruneplug.UnstructuredStrategy):
        """Score every entry the same (so position decides)."""

        name = "everything"

        def scores(self, t: torch.Tensor, alive: torch.Tensor | None) -> torch.Tensor:
            return torch.zeros_like(t)

    with pruneplug.registered(Everything) as spec:
        assert spec.name == "everything" and spec.provider == "register()"
        assert "everything" in pruneplug.list_strategies()
        layer = torch.nn.Linear(4, 2)
        pruneplug.prune(layer, "weight", "everything", amount=3)
        assert layer.weight_mask.flatten().tolist() == [False, False, False, True, True, True, True, True]
    assert "everything" not in pruneplug.list_strategies()
    with pytest.raises(pruneplug.StrategyNotFoundError):
        pruneplug.unregister("everything")


def test_register_refuses_a_taken_name(registry: pruneplug.Registry) -> None:
    class Impostor(L1Unstructured):
        name = "l1_unstructured"

    with pytest.raises(pruneplug.StrategyConflictError) as caught:
        pruneplug.register(Impostor)
    assert "pruneplug" in str(caught.value) and "register()" in str(caught.value)
    assert registry.get("l1_unstructured").strategy_class is L1Unstructured


@pytest.mark.parametrize(
    ("thing", "message"),
    [
        (42, "must be a subclass"),
        (torch.nn.Linear, "must be a subclass"),
        (type("NoType", (pruneplug.BasePruningMethod,), {"compute_mask": lambda self, t, d: d}), "PRUNING_TYPE"),
        (
            type(
                "Bad", (pruneplug.BasePruningMethod,), {"PRUNING_TYPE": "diagonal", "compute_mask": lambda s, t, d: d}
            ),
            "PRUNING_TYPE",
        ),
        (
            type("Abstract", (pruneplug.BasePruningMethod,), {"PRUNING_TYPE": "global"}),
            "abstract: implement compute_mask",
        ),
    ],
)
def test_register_rejects_what_is_not_a_strategy(registry: pruneplug.Registry, thing: object, message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        pruneplug.register(thing)


def test_register_rejects_bad_names(registry: pruneplug.Registry) -> None:
    with pytest.raises(ValueError, match="lowercase"):
        pruneplug.register(L1Unstructured, name="L1 Magnitude")


def test_torch_class_params_come_from_its_signature(registry: pruneplug.Registry) -> None:
    """A torch-written class with constructor arguments gets a params model from its signature."""

    class Threshold(torch_prune.BasePruningMethod):
        PRUNING_TYPE = "unstructured"

        def __init__(self, threshold: float, keep_sign: bool = False) -> None:
            self.threshold = threshold
            self.keep_sign = keep_sign

        def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
            return default_mask * (t.abs() > self.threshold).to(default_mask.dtype)

    spec = pruneplug.register(Threshold)
    assert spec.name == "threshold"
    assert [p.name for p in spec.parameters()] == ["threshold", "keep_sign"]
    layer = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, -0.5, 0.9]]))
    pruneplug.prune(layer, "weight", "threshold", threshold=0.4)
    assert layer.weight_mask.tolist() == [[False, True, True]]
    with pytest.raises(pruneplug.InvalidParametersError, match="threshold"):
        pruneplug.prune(torch.nn.Linear(3, 1), "weight", "threshold", thresold=0.4)


def test_strategy_classes_and_instances_work_without_registering(registry: pruneplug.Registry) -> None:
    layer = torch.nn.Linear(5, 5)
    pruneplug.prune(layer, "weight", L1Unstructured, amount=5)
    pruneplug.prune(layer, "weight", L1Unstructured(amount=5))
    assert int((~layer.weight_mask).sum()) == 10
    with pytest.raises(pruneplug.InvalidParametersError, match="already configured"):
        pruneplug.prune(layer, "weight", L1Unstructured(amount=1), amount=2)
    with pytest.raises(pruneplug.StrategyNotFoundError):
        pruneplug.prune(layer, "weight", 3.5)  # type: ignore[arg-type]


def test_builtin_strategy_tuple_is_what_the_hook_returns() -> None:
    from pruneplug import strategies

    assert strategies.pruneplug_add_strategies() == list(BUILTIN_STRATEGIES)


# --- blocked plugins ------------------------------------------------------------------------------


def _install_unimportable(root: Path, distribution: str, entry_point: str) -> None:
    """A distribution whose plugin module fails if imported: blocking must keep it unimported."""
    dist_info = root / f"{distribution.replace('-', '_')}-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(f"[pruneplug]\n{entry_point} = pp_{entry_point}\n")
    (root / f"pp_{entry_point}.py").write_text('raise RuntimeError("a blocked plugin was imported")\n')


@pytest.fixture
def blockable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The plugin ``halves`` of ``pruneplug-halves``, installed in a site on sys.path; its name."""
    _install_unimportable(tmp_path, "pruneplug-halves", "halves")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("PRUNEPLUG_BLOCK_PLUGINS", raising=False)
    return "halves"


def test_a_strategy_of_a_blocked_plugin_says_it_is_blocked(blockable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not just 'no strategy named ...': the blocked plugin named like it, and what blocked it."""
    registry = pruneplug.Registry(blocked=[blockable])
    with pytest.raises(pruneplug.StrategyNotFoundError) as caught:
        registry.get("halves")
    assert caught.value.extra == (
        " It is probably provided by the plugin 'halves' (pruneplug-halves 1.0), blocked by 'halves' in "
        "Registry(blocked=...): blocked plugins are not loaded."
    )
    with pytest.raises(pruneplug.StrategyNotFoundError, match="may provide it: 'halves' .*PRUNEPLUG_BLOCK_PLUGINS"):
        monkeypatch.setenv("PRUNEPLUG_BLOCK_PLUGINS", "pruneplug-halves")  # its distribution's name blocks it too
        pruneplug.Registry().get("quarters")
    monkeypatch.delenv("PRUNEPLUG_BLOCK_PLUGINS")
    with pytest.raises(pruneplug.StrategyNotFoundError) as unblocked:
        pruneplug.Registry(load_entry_points=False).get("quarters")
    assert "blocked" not in str(unblocked.value)


def _next_line() -> int:
    """The number of the line after the caller's."""
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno + 1


def test_an_unknown_blocked_name_warns_at_the_callers_line(blockable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The warning points at the line that used the registry, not into pruneplug, and names the switch used."""
    for switch in ("Registry(blocked=...)", "PRUNEPLUG_BLOCK_PLUGINS"):
        if switch == "PRUNEPLUG_BLOCK_PLUGINS":
            monkeypatch.setenv(switch, f"{blockable},halfs")
            registry = pruneplug.Registry()
        else:
            registry = pruneplug.Registry(blocked=[blockable, "halfs"])
        with pytest.warns(pruneplug.PluginLoadWarning) as caught:
            line = _next_line()
            registry.names()
        [warning] = caught.list
        assert str(warning.message).startswith(f"pruneplug: {switch} names 'halfs', which is no installed plugin")
        assert (warning.filename, warning.lineno) == (__file__, line)


def test_a_load_warning_through_the_public_api_points_at_the_callers_line(blockable: str) -> None:
    """Loading triggered several calls deep inside pruneplug (api, then registry) still blames the user's line."""
    with (
        pruneplug.use_registry(pruneplug.Registry(blocked=[blockable, "halfs"])),
        pytest.warns(pruneplug.PluginLoadWarning) as caught,
    ):
        line = _next_line()
        pruneplug.list_strategies()
    [warning] = caught.list
    assert (warning.filename, warning.lineno) == (__file__, line)
