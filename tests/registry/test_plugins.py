"""Plugins through the real entry-point machinery: installed distributions and throwaway ones.

The two plugin distributions in ``plugins/`` must be installed in the test
environment (``pip install ./plugins/pruneplug-alternating ./plugins/pruneplug-nm``,
as CI does); a fresh :class:`pruneplug.Registry` then finds them through
``importlib.metadata`` like any user's installation.

Misbehaving plugins are *throwaway distributions* built at test time: a
directory holding a ``*.dist-info`` (``METADATA`` + ``entry_points.txt``) and a
module, put on ``sys.path`` (or ``PYTHONPATH`` for a subprocess). That is
real discovery -- nothing in ``importlib.metadata`` is patched.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import pruneplug
from pruneplug.models import LeNet
from pruneplug.strategies import L1Unstructured
from pruneplug.testing import assert_unchanged, snapshot

INSTALL = "pip install ./plugins/pruneplug-alternating ./plugins/pruneplug-nm"
BUILTINS = set(pruneplug.Registry(load_entry_points=False).names())
INSTALLED = {"alternating": "pruneplug-alternating", "nm": "pruneplug-nm"}
ROOT = Path(__file__).resolve().parents[2]


# --- throwaway distributions -------------------------------------------------------------------


@dataclass(frozen=True)
class FakePlugin:
    """A distribution ``pruneplug-<slug>`` whose entry point ``<slug>`` names the module ``pp_<slug>``."""

    slug: str
    source: str
    status: str = "broken"
    reason: str = ""
    version: str = "0.0.1"
    strategies: tuple[str, ...] = ()

    @property
    def plugin(self) -> str:
        return self.slug.replace("-", "_")

    @property
    def module(self) -> str:
        return "pp_" + self.plugin

    @property
    def distribution(self) -> str:
        return "pruneplug-" + self.slug

    @property
    def entry_point(self) -> str:
        return f"{self.plugin} = {self.module}"

    def write(self, root: Path) -> None:
        """Install it into ``root`` as pip would: a ``.dist-info`` directory and the module."""
        install(root, self.distribution, self.version, {self.plugin: self.module}, {f"{self.module}.py": self.source})


def install(root: Path, distribution: str, version: str, entry_points: dict[str, str], files: dict[str, str]) -> None:
    """Write a distribution into the site directory ``root``: its files and a ``.dist-info`` announcing them."""
    dist_info = root / f"{distribution.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n", encoding="utf-8"
    )
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (dist_info / "entry_points.txt").write_text(f"[pruneplug]\n{lines}", encoding="utf-8")
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(textwrap.dedent(text), encoding="utf-8")


STRATEGY_HEADER = """
    import torch
    import pruneplug

    class Keep(pruneplug.BasePruningMethod):
        PRUNING_TYPE = "unstructured"

        def compute_mask(self, t, default_mask):
            return default_mask
"""

RAISES_ON_IMPORT = FakePlugin(
    "raises-on-import",
    'raise RuntimeError("broken on purpose")\n',
    reason=r"importing it failed: RuntimeError: broken on purpose",
)
NOT_A_STRATEGY = FakePlugin(
    "not-a-strategy",
    STRATEGY_HEADER
    + """
    class Fine(Keep):
        name = "fine_but_in_bad_company"

    @pruneplug.hookimpl
    def pruneplug_add_strategies():
        return ["not a strategy", Fine]
    """,
    reason=r"it handed over something that is not .*'not a strategy'",
    strategies=("fine_but_in_bad_company",),
)
NOT_A_LIST = FakePlugin(
    "not-a-list",
    STRATEGY_HEADER
    + """
    class Lonely(Keep):
        name = "lonely"

    @pruneplug.hookimpl
    def pruneplug_add_strategies():
        return Lonely
    """,
    reason=r"pruneplug_add_strategies must return a list",
)
WRONG_SIGNATURE = FakePlugin(
    "wrong-signature",
    """
    import pruneplug

    @pruneplug.hookimpl
    def pruneplug_add_strategies(config):
        return []
    """,
    reason=r"its hooks are invalid: .*pruneplug_add_strategies\(config\)",
)
RAISES_IN_HOOK = FakePlugin(
    "raises-in-hook",
    """
    import pruneplug

    @pruneplug.hookimpl
    def pruneplug_add_strategies():
        raise KeyError("no strategies today")
    """,
    reason=r"pruneplug_add_strategies raised KeyError: 'no strategies today'",
)
TAKES_A_PLUGINS_NAME = FakePlugin(
    "takes-a-plugins-name",
    STRATEGY_HEADER
    + """
    class Impostor(Keep):
        name = "alternating"

    @pruneplug.hookimpl
    def pruneplug_add_strategies():
        return [Impostor]
    """,
    status="conflict",
    reason=r"strategy 'alternating' is also provided by pruneplug-alternating",
    strategies=("alternating",),
)
REPLACES_A_BUILTIN = FakePlugin(
    "replaces-a-builtin",
    STRATEGY_HEADER
    + """
    class Impostor(Keep):
        name = "l1_unstructured"

    @pruneplug.hookimpl
    def pruneplug_add_strategies():
        return [Impostor]
    """,
    reason=r"it tries to replace the built-in strategy 'l1_unstructured'",
)
BAD_MASKS = FakePlugin(
    "bad-masks",
    STRATEGY_HEADER
    + """
    class BadShape(Keep):
        name = "bad_shape"

        def compute_mask(self, t, default_mask):
            return torch.ones(t.numel() + 1, dtype=torch.bool)

    class BadValues(Keep):
        name = "bad_values"

        def compute_mask(self, t, default_mask):
            return default_mask.float() * 2

    class Unprune(Keep):
        PRUNING_TYPE = "global"
        name = "bad_unprune"

        def compute_mask(self, t, default_mask):
            return torch.ones_like(default_mask)

    @pruneplug.hookimpl
    def pruneplug_add_strategies():
        return [BadShape, BadValues, Unprune]
    """,
    status="ok",
    strategies=("bad_shape", "bad_unprune", "bad_values"),
)
LOAD_FAILURES = [
    RAISES_ON_IMPORT,
    NOT_A_STRATEGY,
    NOT_A_LIST,
    WRONG_SIGNATURE,
    RAISES_IN_HOOK,
    TAKES_A_PLUGINS_NAME,
    REPLACES_A_BUILTIN,
]


@dataclass
class Site:
    """A directory on ``sys.path`` to install throwaway distributions into."""

    root: Path
    added: list[FakePlugin] = field(default_factory=list)

    def add(self, *plugins: FakePlugin) -> None:
        for plugin in plugins:
            plugin.write(self.root)
            self.added.append(plugin)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    """A fresh site directory on ``sys.path``; the modules imported from it are forgotten afterwards."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    yield Site(root)
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", "") or "").startswith(str(root)):
            del sys.modules[name]


@pytest.fixture(scope="module")
def installed() -> dict[str, str]:
    """The versions of the two plugin distributions; they must be installed (CI installs them)."""
    versions = {}
    for distribution in INSTALLED.values():
        try:
            versions[distribution] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{distribution} is not installed in this environment; run: {INSTALL}")
    return versions


def load(*, expect_warnings: bool) -> tuple[pruneplug.Registry, list[str]]:
    """A fresh registry, loaded now; returns it with the PluginLoadWarning messages it emitted."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry = pruneplug.Registry()
        registry.names()
    messages = [str(w.message) for w in caught if issubclass(w.category, pruneplug.PluginLoadWarning)]
    assert bool(messages) == expect_warnings, messages
    return registry, messages


def plugin_info(registry: pruneplug.Registry, name: str) -> pruneplug.PluginInfo:
    """The registry's record of the plugin (entry point) ``name``."""
    return next(p for p in registry.plugins() if p.name == name)


def prunes_fine(registry: pruneplug.Registry, names: set[str]) -> None:
    """Each strategy in ``names`` prunes a LeNet layer through ``registry`` (a built-in, structured, or a plugin's)."""
    known: dict[str, dict[str, Any]] = {
        "l1_unstructured": {"amount": 0.5},
        "ln_structured": {"amount": 1, "n": 2, "dim": 0},
        "nm": {},
        "alternating": {},
    }
    with pruneplug.use_registry(registry):
        model = LeNet()
        for name in sorted(names):
            pruneplug.prune(model.fc1, "weight", name, **known[name])
        assert len(pruneplug.pruning_history(model.fc1, "weight")) == len(names)


# --- the installed plugins --------------------------------------------------------------------


def test_a_fresh_registry_finds_the_installed_plugins(installed: dict[str, str]) -> None:
    """Both distributions are found through their entry points, with distribution name and version."""
    registry, _ = load(expect_warnings=False)
    for name, distribution in INSTALLED.items():
        spec = registry.get(name)
        assert (spec.provider, spec.distribution, spec.version) == (name, distribution, installed[distribution])
        assert spec.provider_label == f"{distribution} {installed[distribution]}"
        info = plugin_info(registry, name)
        assert info.status == "ok" and info.error is None and info.strategies == [name]
        assert info.entry_point == f"{name} = pruneplug_{name}.plugin"
    assert registry.get("nm").kind == "global" and registry.get("alternating").kind == "unstructured"
    assert BUILTINS | set(INSTALLED) <= set(registry.names())


def test_prune_by_name_needs_no_registration_code(installed: dict[str, str]) -> None:
    """``pruneplug.prune(..., "alternating" / "nm")`` works once the distributions are installed."""
    with pruneplug.use_registry(pruneplug.Registry()):
        model = LeNet()
        pruneplug.prune(model.fc1, "bias", "alternating")
        assert model.fc1.bias_mask.tolist() == [False, True] * 60
        pruneplug.prune(model.fc2, "weight", "nm")
        groups = model.fc2.weight_mask.reshape(-1, 4)
        assert ((~groups).sum(dim=1) == 2).all()
        with pytest.raises(pruneplug.InvalidParametersError, match="Linear.weight, strategy 'nm': m=4 does not"):
            pruneplug.prune(nn.Linear(6, 2), "weight", "nm")


# --- misbehaving plugins ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", LOAD_FAILURES, ids=lambda p: p.slug)
def test_a_misbehaving_plugin_is_isolated_and_named(site: Site, installed: dict[str, str], bad: FakePlugin) -> None:
    """The plugin is marked broken (or conflict) with a warning naming distribution, version and entry point;
    every other strategy still loads and prunes."""
    site.add(bad)
    registry, messages = load(expect_warnings=True)
    mine = [m for m in messages if f"{bad.distribution} {bad.version} (entry point '{bad.entry_point}')" in m]
    assert mine, messages
    assert any(re.search(bad.reason, m, re.DOTALL) for m in mine), mine
    info = plugin_info(registry, bad.plugin)
    assert (info.status, info.distribution, info.version) == (bad.status, bad.distribution, bad.version)
    assert info.error is not None and re.search(bad.reason, info.error, re.DOTALL)
    assert sorted(info.strategies) == sorted(bad.strategies)
    usable = BUILTINS | {"nm"} | ({"alternating"} if bad is not TAKES_A_PLUGINS_NAME else set())
    assert usable <= set(registry.names())
    usable &= {"l1_unstructured", "ln_structured", "nm", "alternating"}
    for name in INSTALLED:
        expected = "conflict" if bad is TAKES_A_PLUGINS_NAME and name == "alternating" else "ok"
        assert plugin_info(registry, name).status == expected
    prunes_fine(registry, usable)


def test_a_name_taken_by_another_plugin_is_a_conflict_on_lookup(site: Site, installed: dict[str, str]) -> None:
    """Neither claimant wins: the lookup raises StrategyConflictError naming both providers."""
    site.add(TAKES_A_PLUGINS_NAME)
    registry, _ = load(expect_warnings=True)
    with pytest.raises(pruneplug.StrategyConflictError) as caught:
        registry.get("alternating")
    providers = [f"pruneplug-alternating {installed['pruneplug-alternating']}", "pruneplug-takes-a-plugins-name 0.0.1"]
    assert sorted(caught.value.providers) == providers
    assert all(p in str(caught.value) for p in providers)
    claimants = sorted(s.distribution or "" for s in registry.conflicts()["alternating"])
    assert claimants == ["pruneplug-alternating", "pruneplug-takes-a-plugins-name"]
    assert "alternating" not in registry.names()
    with pruneplug.use_registry(registry), pytest.raises(pruneplug.StrategyConflictError):
        pruneplug.prune(nn.Linear(2, 2), "weight", "alternating")


def test_a_plugin_cannot_replace_a_builtin(site: Site, installed: dict[str, str]) -> None:
    """The built-in keeps its name and class; the plugin is broken."""
    site.add(REPLACES_A_BUILTIN)
    registry, _ = load(expect_warnings=True)
    spec = registry.get("l1_unstructured")
    assert spec.strategy_class is L1Unstructured and spec.provider == "pruneplug"
    assert plugin_info(registry, REPLACES_A_BUILTIN.plugin).strategies == []
    with pruneplug.use_registry(registry):
        layer = nn.Linear(4, 2)
        pruneplug.prune(layer, "weight", "l1_unstructured", amount=3)
        assert int((~layer.weight_mask).sum()) == 3


@pytest.mark.parametrize(
    ("strategy", "fragment"),
    [
        ("bad_shape", r"mask of shape \(6,\)"),
        ("bad_values", "values other than 0 and 1"),
        ("bad_unprune", "would un-prune 3 entries"),
    ],
)
def test_a_plugin_returning_a_bad_mask_is_refused_at_prune(
    site: Site, installed: dict[str, str], strategy: str, fragment: str
) -> None:
    """A bad mask only shows when used: InvalidMaskError names the strategy and the model is unchanged."""
    site.add(BAD_MASKS)
    registry, _ = load(expect_warnings=False)  # it loads fine: masks are checked when computed
    assert plugin_info(registry, BAD_MASKS.plugin).status == "ok"
    with pruneplug.use_registry(registry):
        layer = nn.Linear(4, 2)
        pruneplug.prune(layer, "weight", "l1_unstructured", amount=3)
        before = snapshot(layer)
        with pytest.raises(pruneplug.InvalidMaskError, match=fragment) as caught:
            pruneplug.prune(layer, "weight", strategy)
        assert caught.value.strategy == strategy
        assert str(caught.value).startswith(f"Linear.weight, strategy '{strategy}': ")
        assert_unchanged(before, layer)
        prunes_fine(registry, {"l1_unstructured", "nm", "alternating"})


def test_a_misspelt_hook_is_reported(site: Site, installed: dict[str, str]) -> None:
    """``pruneplug_add_strategy`` (singular) is no hook: the plugin should be broken, not silently empty."""
    site.add(
        FakePlugin(
            "misspelt-hook",
            """
            import pruneplug

            @pruneplug.hookimpl
            def pruneplug_add_strategy():
                return []
            """,
        )
    )
    registry, _ = load(expect_warnings=True)
    info = plugin_info(registry, "misspelt_hook")
    assert info.status == "broken" and "unknown hooks pruneplug_add_strategy" in (info.error or "")


# --- switches: disable, block, programmatic registration ----------------------------------------


def test_disabling_autoload_leaves_only_the_builtins(
    installed: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """PRUNEPLUG_DISABLE_PLUGIN_AUTOLOAD=1: no entry point is loaded, not even well-behaved ones."""
    monkeypatch.setenv("PRUNEPLUG_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry, _ = load(expect_warnings=False)
    assert set(registry.names()) == BUILTINS
    assert [p.name for p in registry.plugins()] == ["pruneplug"]
    with pytest.raises(pruneplug.StrategyNotFoundError, match="no strategy named 'nm'"):
        registry.get("nm")


def test_blocking_a_plugin_by_name(site: Site, installed: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """PRUNEPLUG_BLOCK_PLUGINS=name: the plugin is listed as blocked and never imported; the others load.

    Blocking is also how a user silences a broken plugin until it is fixed.
    """
    site.add(RAISES_ON_IMPORT)
    monkeypatch.setenv("PRUNEPLUG_BLOCK_PLUGINS", f"nm, {RAISES_ON_IMPORT.plugin}")
    registry, _ = load(expect_warnings=False)
    for name in ("nm", RAISES_ON_IMPORT.plugin):
        info = plugin_info(registry, name)
        assert info.status == "blocked" and info.strategies == [] and info.error is None
    assert RAISES_ON_IMPORT.module not in sys.modules
    assert "nm" not in registry.names() and "alternating" in registry.names()
    with pytest.raises(pruneplug.StrategyNotFoundError):
        registry.get("nm")
    monkeypatch.delenv("PRUNEPLUG_BLOCK_PLUGINS")
    programmatic = pruneplug.Registry(blocked=["alternating", RAISES_ON_IMPORT.plugin])
    assert plugin_info(programmatic, "alternating").status == "blocked"
    assert "nm" in programmatic.names() and "alternating" not in programmatic.names()


def test_blocking_by_distribution_name_and_unknown_names(site: Site, installed: dict[str, str]) -> None:
    """A distribution's name blocks its plugins; a name matching nothing is reported, not ignored."""
    site.add(RAISES_ON_IMPORT)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry = pruneplug.Registry(blocked=[RAISES_ON_IMPORT.distribution, "pruneplug-no-such-thing"])
        names = registry.names()
    assert plugin_info(registry, RAISES_ON_IMPORT.plugin).status == "blocked" and "nm" in names
    messages = [str(w.message) for w in caught if issubclass(w.category, pruneplug.PluginLoadWarning)]
    assert len(messages) == 1 and "names 'pruneplug-no-such-thing', which is no installed plugin" in messages[0]
    spelt_otherwise, _ = load_blocking(["PrunePlug_NM"])  # distribution names compare as pip compares them
    assert plugin_info(spelt_otherwise, "nm").status == "blocked"


def load_blocking(blocked: list[str], allowed: list[str] | None = None) -> tuple[pruneplug.Registry, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry = pruneplug.Registry(blocked=blocked, allowed=allowed)
        registry.names()
    return registry, [str(w.message) for w in caught if issubclass(w.category, pruneplug.PluginLoadWarning)]


def test_blocking_one_of_two_distributions_with_one_entry_point_name(site: Site, installed: dict[str, str]) -> None:
    """Two distributions both naming their entry point ``dup``: block either by its distribution name."""
    for letter in "ab":
        source = f"""
            import pruneplug

            class Dup{letter.upper()}(pruneplug.BasePruningMethod):
                PRUNING_TYPE = "unstructured"
                name = "dup_{letter}"

                def compute_mask(self, t, default_mask):
                    return default_mask

            @pruneplug.hookimpl
            def pruneplug_add_strategies():
                return [Dup{letter.upper()}]
            """
        install(site.root, f"dist-{letter}", "1.0", {"dup": f"dup_{letter}"}, {f"dup_{letter}.py": source})
    both, messages = load_blocking([])
    assert len([n for n in both.names() if n.startswith("dup_")]) == 1 and "already taken" in messages[0]
    for blocked, kept in (("dist-a", "dup_b"), ("dist-b", "dup_a")):
        registry, messages = load_blocking([blocked])
        assert messages == [] and [n for n in registry.names() if n.startswith("dup_")] == [kept]
        statuses = sorted((p.distribution, p.status) for p in registry.plugins() if p.name.startswith("dup"))
        assert statuses == sorted([(blocked, "blocked"), ("dist-" + kept[-1], "ok")])


def test_an_allowlist_loads_only_the_plugins_it_names(
    site: Site, installed: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """PRUNEPLUG_PLUGINS=nm: only ``nm`` is loaded (and the built-ins); the others show as blocked, never imported."""
    site.add(RAISES_ON_IMPORT)
    monkeypatch.setenv("PRUNEPLUG_PLUGINS", "nm")
    registry, _ = load(expect_warnings=False)
    assert set(registry.names()) == BUILTINS | {"nm"}
    assert plugin_info(registry, "nm").status == "ok"
    for name in ("alternating", RAISES_ON_IMPORT.plugin):
        info = plugin_info(registry, name)
        assert (info.status, info.blocked_by) == ("blocked", "PRUNEPLUG_PLUGINS, which names only 'nm'")
    assert RAISES_ON_IMPORT.module not in sys.modules
    with pytest.raises(pruneplug.StrategyNotFoundError) as caught:
        registry.get("alternating")
    assert caught.value.extra == (
        f" It is probably provided by the plugin 'alternating' (pruneplug-alternating "
        f"{installed['pruneplug-alternating']}), blocked by PRUNEPLUG_PLUGINS, which names only 'nm': "
        "blocked plugins are not loaded."
    )
    monkeypatch.setenv("PRUNEPLUG_PLUGINS", "PrunePlug_Alternating")  # a distribution name, spelt as pip allows
    registry, _ = load(expect_warnings=False)
    assert set(registry.names()) == BUILTINS | {"alternating"}
    monkeypatch.delenv("PRUNEPLUG_PLUGINS")
    programmatic = pruneplug.Registry(allowed=["nm"])
    assert set(programmatic.names()) == BUILTINS | {"nm"}
    assert plugin_info(programmatic, "alternating").blocked_by == "Registry(allowed=...), which names only 'nm'"
    assert set(pruneplug.Registry(allowed=[]).names()) == BUILTINS


def test_an_allowlisted_name_not_installed_is_reported(installed: dict[str, str]) -> None:
    """A name in the allowlist that no installed plugin has is a warning naming it and what is installed."""
    registry, messages = load_blocking([], allowed=["nm", "n_m"])
    assert set(registry.names()) == BUILTINS | {"nm"}
    [message] = messages
    assert message.startswith("pruneplug: Registry(allowed=...) names 'n_m', which is no installed plugin's entry ")
    assert re.search(r"\(installed plugins: .*alternating, .*nm.*\)$", message), message


def test_a_blocked_plugin_stays_blocked_when_allowed_too(
    installed: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Named in both the allowlist and the blocklist, a plugin is blocked: block wins."""
    monkeypatch.setenv("PRUNEPLUG_PLUGINS", "nm,alternating")
    monkeypatch.setenv("PRUNEPLUG_BLOCK_PLUGINS", "nm")
    registry, _ = load(expect_warnings=False)
    assert set(registry.names()) == BUILTINS | {"alternating"}
    assert plugin_info(registry, "nm").blocked_by == "'nm' in PRUNEPLUG_BLOCK_PLUGINS"
    monkeypatch.setenv("PRUNEPLUG_DISABLE_PLUGIN_AUTOLOAD", "1")  # and disabling autoload still loads none
    registry, _ = load(expect_warnings=False)
    assert set(registry.names()) == BUILTINS and [p.name for p in registry.plugins()] == ["pruneplug"]


SPEC_HANDED_OVER = FakePlugin(
    "spec-handed-over",
    """
    import torch.nn.utils.prune as torch_prune
    import pruneplug

    class EveryOther(torch_prune.BasePruningMethod):
        PRUNING_TYPE = "unstructured"

        def compute_mask(self, t, default_mask):
            mask = default_mask.clone()
            mask.view(-1)[::2] = 0
            return mask

    @pruneplug.hookimpl
    def pruneplug_add_strategies():
        return [pruneplug.strategy_spec(EveryOther, name="every_other_spec")]
    """,
    status="ok",
    strategies=("every_other_spec",),
)


def test_a_spec_handed_over_is_credited_to_its_plugin(site: Site, installed: dict[str, str]) -> None:
    site.add(SPEC_HANDED_OVER)
    registry, _ = load(expect_warnings=False)
    spec = registry.get("every_other_spec")
    assert (spec.provider, spec.distribution, spec.version) == (
        SPEC_HANDED_OVER.plugin,
        SPEC_HANDED_OVER.distribution,
        SPEC_HANDED_OVER.version,
    )


def test_register_and_registered_next_to_installed_plugins(installed: dict[str, str]) -> None:
    """Programmatic registration cannot take a plugin's name; ``registered`` scopes a strategy to a block."""

    class Halves(pruneplug.UnstructuredStrategy):
        """Prune by position: the first entries go first."""

        name = "halves"

        def scores(self, t: torch.Tensor, alive: torch.Tensor | None) -> torch.Tensor:
            return torch.arange(t.numel(), dtype=torch.float32).reshape(t.shape)

    class Impostor(L1Unstructured):
        name = "nm"

    with pruneplug.use_registry(pruneplug.Registry()) as registry:
        with pytest.raises(pruneplug.StrategyConflictError) as caught:
            pruneplug.register(Impostor)
        assert caught.value.providers == [f"pruneplug-nm {installed['pruneplug-nm']}"]
        assert caught.value.registering and "register yours under another name" in str(caught.value)
        assert registry.get("nm").distribution == "pruneplug-nm"
        with pytest.raises(pruneplug.StrategyNotFoundError, match="Only strategies added with register"):
            pruneplug.unregister("nm")
        with pruneplug.registered(Halves) as spec:
            assert spec.provider == "register()" and spec.distribution is None
            layer = nn.Linear(4, 1)
            pruneplug.prune(layer, "weight", "halves", amount=2)
            assert layer.weight_mask.tolist() == [[False, False, True, True]]
        assert "halves" not in pruneplug.list_strategies()
        spec = pruneplug.register(Halves, name="positional")
        assert pruneplug.get_strategy("positional") is spec
        pruneplug.unregister("positional")


# --- deprecated names ------------------------------------------------------------------------------

RENAMES = FakePlugin(
    "renames",
    STRATEGY_HEADER
    + """
    class Keeper(Keep):
        name = "keeper"
        deprecated_names = ("keep_all", "nm")

    @pruneplug.hookimpl
    def pruneplug_add_strategies():
        return [Keeper]
    """,
    status="conflict",
    reason=r"deprecated name 'nm' \(for 'keeper'\) is also provided by pruneplug-nm",
    strategies=("keeper",),
)


def test_a_plugin_keeps_a_renamed_strategys_old_name(site: Site, installed: dict[str, str]) -> None:
    """An old name declared by an installed plugin works with a warning naming its distribution; one that is
    another plugin's strategy name makes that name unusable, both plugins named."""
    site.add(RENAMES)
    registry, messages = load(expect_warnings=True)
    assert all(re.search(RENAMES.reason + "|strategy 'nm' is also provided by pruneplug-renames", m) for m in messages)
    with pruneplug.use_registry(registry), pytest.warns(pruneplug.StrategyDeprecationWarning) as caught:
        pruneplug.prune(nn.Linear(2, 2), "weight", "keep_all")
    [warning] = caught.list
    assert (
        str(warning.message) == "strategy 'keep_all' is deprecated, use 'keeper' (renamed by pruneplug-renames 0.0.1)"
    )
    assert "keep_all" not in registry.names() and "keeper" in registry.names()
    with pytest.raises(pruneplug.StrategyConflictError) as conflict:
        registry.get("nm")
    assert sorted(conflict.value.providers) == [
        f"pruneplug-nm {installed['pruneplug-nm']}",
        "pruneplug-renames 0.0.1 (deprecated name for 'keeper')",
    ]
    assert (plugin_info(registry, "nm").status, plugin_info(registry, "renames").status) == ("conflict", "conflict")


# --- pruneplug list --json, as a user runs it ---------------------------------------------------


@pytest.fixture(scope="module")
def cli(
    tmp_path_factory: pytest.TempPathFactory, installed: dict[str, str]
) -> dict[str, subprocess.CompletedProcess[str]]:
    """``pruneplug list --json`` in subprocesses, run side by side: with every misbehaving plugin installed at
    once, with ``nm`` blocked, and with autoloading disabled; plus a script pruning by plugin name."""
    root = tmp_path_factory.mktemp("site")
    elsewhere = tmp_path_factory.mktemp("cwd")  # not the site: the current directory is on sys.path
    for plugin in [*LOAD_FAILURES, BAD_MASKS]:
        plugin.write(root)
    base = {k: v for k, v in os.environ.items() if not k.startswith("PRUNEPLUG_")}
    script = (
        "import torch, pruneplug; layer = torch.nn.Linear(8, 2);"
        "pruneplug.prune(layer, 'weight', 'nm'); pruneplug.prune(layer, 'weight', 'alternating');"
        "print(layer.weight_mask.int().tolist())"
    )
    runs = {
        "misbehaving": ([sys.executable, "-m", "pruneplug", "list", "--json"], {"PYTHONPATH": str(root)}),
        "blocked": ([sys.executable, "-m", "pruneplug", "list", "--json"], {"PRUNEPLUG_BLOCK_PLUGINS": "nm"}),
        "disabled": ([sys.executable, "-m", "pruneplug", "list", "--json"], {"PRUNEPLUG_DISABLE_PLUGIN_AUTOLOAD": "1"}),
        "allowed": ([sys.executable, "-m", "pruneplug", "list", "--json"], {"PRUNEPLUG_PLUGINS": "alternating"}),
        "allowed table": ([sys.executable, "-m", "pruneplug", "list"], {"PRUNEPLUG_PLUGINS": "alternating"}),
        "script": ([sys.executable, "-c", script], {}),
    }
    started = {
        key: subprocess.Popen(
            command, env={**base, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=elsewhere
        )
        for key, (command, env) in runs.items()
    }
    done = {}
    for key, process in started.items():
        out, err = process.communicate(timeout=120)
        done[key] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return done


def payload(run: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON a successful ``pruneplug list --json`` printed."""
    assert run.returncode == 0, run.stderr
    data: dict[str, Any] = json.loads(run.stdout)
    return data


def test_list_json_shows_each_misbehaving_plugin(
    cli: dict[str, subprocess.CompletedProcess[str]], installed: dict[str, str]
) -> None:
    """With every misbehaving plugin installed together, ``pruneplug list --json`` still works and tells which
    plugin is broken or in conflict, and why; the warnings on stderr name them too."""
    run = cli["misbehaving"]
    data = payload(run)
    plugins = {p["name"]: p for p in data["plugins"]}
    for bad in [*LOAD_FAILURES, BAD_MASKS]:
        shown = plugins[bad.plugin]
        assert (shown["status"], shown["distribution"], shown["version"]) == (bad.status, bad.distribution, bad.version)
        assert shown["entry_point"] == bad.entry_point
        assert re.search(bad.reason, shown["error"] or "", re.DOTALL)
        if bad.status != "ok":
            assert f"{bad.distribution} {bad.version} (entry point '{bad.entry_point}')" in run.stderr
            assert "PluginLoadWarning" in run.stderr
    assert plugins["alternating"]["status"] == "conflict" and plugins["nm"]["status"] == "ok"
    names = {s["name"] for s in data["strategies"]}
    assert BUILTINS | {"nm", "bad_shape", "bad_values", "bad_unprune", "fine_but_in_bad_company"} <= names
    assert not {"alternating", "lonely"} & names  # in conflict; handed over outside a list
    [conflict] = data["conflicts"]
    assert (conflict["name"], conflict["status"]) == ("alternating", "conflict")
    assert sorted(conflict["providers"]) == [
        f"pruneplug-alternating {installed['pruneplug-alternating']}",
        "pruneplug-takes-a-plugins-name 0.0.1",
    ]
    l1 = next(s for s in data["strategies"] if s["name"] == "l1_unstructured")
    assert l1["provider"] == "pruneplug"


def test_list_json_shows_installed_blocked_and_disabled_plugins(
    cli: dict[str, subprocess.CompletedProcess[str]], installed: dict[str, str]
) -> None:
    """Installed plugins appear with their distribution and version; blocked ones as blocked, with the switch that
    blocked them (the blocklist, or an allowlist that does not name them); none when disabled."""
    blocked = payload(cli["blocked"])
    plugins = {p["name"]: p for p in blocked["plugins"]}
    assert plugins["nm"]["status"] == "blocked" and plugins["nm"]["distribution"] == "pruneplug-nm"
    alternating = next(s for s in blocked["strategies"] if s["name"] == "alternating")
    assert (alternating["distribution"], alternating["version"], alternating["provider"]) == (
        "pruneplug-alternating",
        installed["pruneplug-alternating"],
        "alternating",
    )
    assert "nm" not in {s["name"] for s in blocked["strategies"]}
    disabled = payload(cli["disabled"])
    assert [p["name"] for p in disabled["plugins"]] == ["pruneplug"]
    assert {s["name"] for s in disabled["strategies"]} == BUILTINS
    allowed = payload(cli["allowed"])
    plugins = {p["name"]: p for p in allowed["plugins"]}
    assert plugins["alternating"]["status"] == "ok" and plugins["alternating"]["blocked_by"] is None
    assert (plugins["nm"]["status"], plugins["nm"]["blocked_by"]) == (
        "blocked",
        "PRUNEPLUG_PLUGINS, which names only 'alternating'",
    )
    assert {s["name"] for s in allowed["strategies"]} == BUILTINS | {"alternating"}
    table = cli["allowed table"]
    assert table.returncode == 0, table.stderr
    assert "PRUNEPLUG_PLUGINS" in table.stdout, table.stdout  # the reason beside the blocked plugin
    blocked_row = next(p for p in payload(cli["blocked"])["plugins"] if p["name"] == "nm")
    assert blocked_row["blocked_by"] == "'nm' in PRUNEPLUG_BLOCK_PLUGINS"


def test_a_script_prunes_with_plugins_by_name(cli: dict[str, subprocess.CompletedProcess[str]]) -> None:
    """A fresh interpreter's default registry loads the installed plugins on first use: 2:4, then alternating."""
    run = cli["script"]
    assert run.returncode == 0, run.stderr
    rows = json.loads(run.stdout)
    assert len(rows) == 2 and all(len(row) == 8 for row in rows)
    for row in rows:
        assert sum(row) == 2  # 4 of 8 kept by 2:4, then every other of those
        assert all(sum(row[i : i + 4]) <= 2 for i in (0, 4))


# --- the docs -----------------------------------------------------------------------------------


def doc_files() -> dict[str, str]:
    """The example plugin's files, as docs/plugins.md shows them: a bold path, then a fenced block."""
    text = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    pattern = re.compile(r"^\*\*`(?P<path>[^`]+)`\*\*\n\n```[a-z]*\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)
    return {m["path"]: m["body"] for m in pattern.finditer(text)}


def test_the_docs_example_plugin_installs_loads_and_passes_its_own_tests(site: Site, installed: dict[str, str]) -> None:
    """The plugin docs/plugins.md builds is complete: installed from its files exactly as shown (package and
    entry points from its pyproject.toml), pruneplug finds it, and the tests the page gives it pass."""
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    files = doc_files()
    folder = "pruneplug-threshold"
    assert set(files) == {
        f"{folder}/pyproject.toml",
        f"{folder}/README.md",
        f"{folder}/src/pruneplug_threshold/__init__.py",
        f"{folder}/tests/test_threshold.py",
    }
    project = tomllib.loads(files[f"{folder}/pyproject.toml"])["project"]
    package = {p.removeprefix(f"{folder}/src/"): body for p, body in files.items() if "/src/" in p}
    install(site.root, project["name"], project["version"], project["entry-points"]["pruneplug"], package)
    registry, _ = load(expect_warnings=False)
    spec = registry.get("threshold")
    assert (spec.distribution, spec.version, spec.provider) == ("pruneplug-threshold", "0.1.0", "threshold")
    assert [p.name for p in spec.parameters()] == ["threshold"]

    tests = site.root / "test_threshold_from_docs.py"
    tests.write_text(files[f"{folder}/tests/test_threshold.py"], encoding="utf-8")
    module = importlib.import_module(tests.stem)
    ran, skipped = [], []
    with pruneplug.use_registry(registry):
        for name, item in vars(module).items():
            if name.startswith("test_") and callable(item):
                item()
                ran.append(name)
            elif name.startswith("Test") and isinstance(item, type):
                for method in sorted(m for m in dir(item) if m.startswith("test_")):
                    try:
                        getattr(item(), method)()
                    except pytest.skip.Exception:
                        skipped.append(f"{name}.{method}")
                    else:
                        ran.append(f"{name}.{method}")
    assert "test_small_entries_go" in ran and "TestThresholdConformance.test_rollback" in ran
    # it has no amount, reads no calibration statistics and does not update values
    assert skipped == [f"TestThresholdConformance.test_{check}" for check in ("calibration", "count", "updates")]


@pytest.mark.parametrize("readme", ["pruneplug-alternating", "pruneplug-nm"])
def test_the_plugin_readmes_examples_run(installed: dict[str, str], readme: str) -> None:
    """Each plugin README's Python examples run as shown (those needing a GPU only where there is one)."""
    text = (ROOT / "plugins" / readme / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    assert blocks
    with pruneplug.use_registry(pruneplug.Registry()):
        for block in blocks:
            if ".cuda()" in block and not (torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)):
                continue  # semi-structured sparse tensors need an Ampere or newer GPU
            exec(compile(block, f"{readme}/README.md", "exec"), {})
