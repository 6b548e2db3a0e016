"""The strategy registry: one pluggy plugin manager, built-ins and plugins alike.

A :class:`Registry` owns a :class:`pluggy.PluginManager` for the project
``pruneplug``. The built-in strategies are the plugin ``pruneplug`` (the
module :mod:`pruneplug.strategies`); installed distributions add theirs via
the ``pruneplug`` entry-point group; scripts and notebooks use
:meth:`Registry.register`. Every strategy ends up as a :class:`StrategySpec`.

A misbehaving plugin never breaks the others: a plugin that fails to import,
has a malformed hook, raises in its hook or hands over something that is not
a strategy is recorded as *broken* (with a warning naming its distribution,
version and entry point) and everything else still loads. Name clashes are
never resolved silently: a plugin cannot take a built-in's name, and a name
claimed by two plugins raises :class:`~pruneplug.StrategyConflictError` on lookup.

The default registry is created on first use, not at import
(:func:`get_registry`); tests swap in a fresh one with :func:`use_registry`.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
import os
import re
import sys
import threading
import types
import typing
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pluggy
from pydantic import BaseModel
from torch.nn.utils import prune as torch_prune

from .. import hookspecs
from ..core.method import BasePruningMethod
from ..errors import (
    PruneplugError,
    ScoreNotFoundError,
    StrategyConflictError,
    StrategyFailedError,
    StrategyNotFoundError,
)
from ..params import NoParams, params_model_from_signature, validate_params
from ..selection.scores import ImportanceScore

__all__ = [
    "ENTRY_POINT_GROUP",
    "DISABLE_AUTOLOAD_ENV",
    "BLOCK_PLUGINS_ENV",
    "BUILTIN_PLUGIN",
    "KINDS",
    "KIND_DESCRIPTIONS",
    "PluginLoadWarning",
    "PluginInfo",
    "ParameterInfo",
    "StrategySpec",
    "Registry",
    "strategy_spec",
    "get_registry",
    "use_registry",
]

ENTRY_POINT_GROUP = "pruneplug"
DISABLE_AUTOLOAD_ENV = "PRUNEPLUG_DISABLE_PLUGIN_AUTOLOAD"
BLOCK_PLUGINS_ENV = "PRUNEPLUG_BLOCK_PLUGINS"
BUILTIN_PLUGIN = "pruneplug"
KINDS = ("unstructured", "structured", "global")
# What each kind means, for `pruneplug list` (table and JSON) and the docs. "global" is torch's PRUNING_TYPE
# for a mask computed from the whole tensor at once; it has nothing to do with global pruning (prune_global,
# a plan's scope "global"), which ranks entries across tensors and so needs an unstructured strategy.
KIND_DESCRIPTIONS = {
    "unstructured": "prunes single entries, ranked within each tensor -- or, with global pruning "
    "(scope 'global' in a plan, pruneplug.prune_global), across all the selected tensors: "
    "the only kind global pruning accepts",
    "structured": "prunes whole slices (output channels, rows) along dim, each tensor on its own",
    "global": "computes each tensor's mask from the whole tensor at once (torch's PRUNING_TYPE 'global'), "
    "e.g. a given mask or N:M groups; despite the name, not usable with global pruning, "
    "which needs kind unstructured",
}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class PluginLoadWarning(UserWarning):
    """A plugin could not be loaded or used; the other strategies are unaffected."""


@dataclass(frozen=True)
class ParameterInfo:
    """One parameter of a strategy, as shown in tables and docs."""

    name: str
    type: str
    required: bool
    default: Any
    description: str


@dataclass(frozen=True)
class StrategySpec:
    """Everything the registry knows about one strategy.

    Attributes:
        name: the registry name (``"l1_unstructured"``).
        strategy_class: the class whose instances compute masks (and act as hooks).
        params_model: pydantic model validating the constructor's keyword arguments.
        kind: ``"unstructured"``, ``"structured"`` or ``"global"`` (torch's
            ``PRUNING_TYPE``). A ``"global"`` strategy computes a tensor's mask
            from the whole tensor at once; it cannot be used for global
            pruning, which needs ``"unstructured"``.
        provider: the plugin that provides it (``"pruneplug"`` for built-ins).
        distribution: the installed distribution providing it, if any.
        version: that distribution's version.
        summary: first line of the class docstring.
        uses_importance_scores: whether ``importance_scores`` affect its masks.
    """

    name: str
    strategy_class: type[torch_prune.BasePruningMethod]
    params_model: type[BaseModel]
    kind: str
    provider: str = BUILTIN_PLUGIN
    distribution: str | None = None
    version: str | None = None
    summary: str = ""
    uses_importance_scores: bool = True

    def validate(self, params: dict[str, Any]) -> BaseModel:
        """Validate parameters with :attr:`params_model` (raises :class:`~pruneplug.InvalidParametersError`)."""
        return validate_params(self.params_model, params, strategy=self.name)

    def create(self, **params: Any) -> torch_prune.BasePruningMethod:
        """Validate ``params`` and build a fresh instance of the strategy."""
        validated = self.validate(params)
        values = {name: getattr(validated, name) for name in type(validated).model_fields}
        try:
            return self.strategy_class(**values)
        except PruneplugError as error:
            error.add_context(strategy=self.name)
            raise
        except Exception as error:
            raise StrategyFailedError(
                f"creating the strategy raised {type(error).__name__}: {error}", strategy=self.name
            ) from error

    def parameters(self) -> list[ParameterInfo]:
        """The parameters, read from the pydantic model (for tables, docs and the CLI)."""
        try:
            schema = self.params_model.model_json_schema()
        except Exception:  # pragma: no cover - a foreign model pydantic cannot render
            schema = {}
        properties = schema.get("properties", {})
        out = []
        for name, info in self.params_model.model_fields.items():
            prop = properties.get(name, {})
            out.append(
                ParameterInfo(
                    name=name,
                    type=_type_text(prop, info.annotation),
                    required=info.is_required(),
                    default=None if info.is_required() else info.default,
                    description=prop.get("description") or info.description or "",
                )
            )
        return out

    @property
    def provider_label(self) -> str:
        """``"name version"`` of the distribution, or the plugin name."""
        if self.distribution:
            return f"{self.distribution} {self.version}" if self.version else self.distribution
        return self.provider


def _type_text(prop: dict[str, Any], annotation: Any) -> str:
    def one(p: dict[str, Any]) -> str:
        if "enum" in p:
            return " | ".join(repr(v) for v in p["enum"])
        kind = p.get("type")
        if kind == "integer":
            return "int"
        if kind == "number":
            return "float"
        if kind == "boolean":
            return "bool"
        if kind == "string":
            return "str"
        if kind == "null":
            return "None"
        return str(kind or "any")

    if "anyOf" in prop:
        return " | ".join(one(p) for p in prop["anyOf"])
    if prop:
        return one(prop)
    return _annotation_text(annotation)


def _annotation_text(annotation: Any) -> str:
    """``torch.Generator | None`` for annotations kept out of the JSON Schema."""
    if annotation is type(None):
        return "None"
    args = [a for a in typing.get_args(annotation) if not isinstance(a, (str, bytes)) and not _is_metadata(a)]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _annotation_text(args[0])
    if args and origin in (typing.Union, types.UnionType):
        return " | ".join(_annotation_text(a) for a in args)
    if isinstance(annotation, type):
        module = "torch" if annotation.__module__.startswith("torch") else annotation.__module__
        return annotation.__name__ if module == "builtins" else f"{module}.{annotation.__name__}"
    return str(annotation).replace("typing.", "")


def _is_metadata(value: Any) -> bool:
    return not (isinstance(value, type) or typing.get_origin(value) is not None or value is type(None))


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def strategy_spec(
    strategy: Any,
    *,
    name: str | None = None,
    provider: str = BUILTIN_PLUGIN,
    distribution: str | None = None,
    version: str | None = None,
) -> StrategySpec:
    """Describe a strategy class (pruneplug's or torch-style) as a :class:`StrategySpec`.

    ``name`` defaults to the class's ``name`` attribute, then to its class
    name in snake_case. A torch ``BasePruningMethod`` subclass works as it is:
    its ``__init__`` arguments become the parameters.
    """
    if isinstance(strategy, StrategySpec):
        spec = strategy
        if name is not None and name != spec.name:
            spec = StrategySpec(**{**spec.__dict__, "name": name})
        return spec
    if not (inspect.isclass(strategy) and issubclass(strategy, torch_prune.BasePruningMethod)):
        raise TypeError(
            f"a strategy must be a subclass of pruneplug.BasePruningMethod (or of torch.nn.utils.prune's), "
            f"or a StrategySpec; got {strategy!r}"
        )
    if inspect.isabstract(strategy):
        missing = ", ".join(sorted(getattr(strategy, "__abstractmethods__", ())))
        raise TypeError(f"strategy class {strategy.__qualname__} is abstract: implement {missing}")
    resolved = name or getattr(strategy, "name", None) or _snake(strategy.__name__)
    if not isinstance(resolved, str) or not _NAME.match(resolved):
        raise ValueError(
            f"strategy name {resolved!r} of {strategy.__qualname__} must be lowercase letters, digits and "
            "underscores, starting with a letter"
        )
    kind = getattr(strategy, "PRUNING_TYPE", None)
    if kind not in KINDS:
        raise TypeError(
            f"strategy class {strategy.__qualname__} must set PRUNING_TYPE to one of {', '.join(KINDS)}; got {kind!r}"
        )
    declared = next((vars(c)["Params"] for c in strategy.__mro__ if "Params" in vars(c)), NoParams)
    own_init = any(
        "__init__" in vars(c) for c in strategy.__mro__[: strategy.__mro__.index(torch_prune.BasePruningMethod)]
    )
    if issubclass(strategy, BasePruningMethod) and (declared is not NoParams or not own_init):
        params_model = declared
    else:
        params_model = params_model_from_signature(strategy)
    doc = inspect.getdoc(strategy) or ""
    return StrategySpec(
        name=resolved,
        strategy_class=strategy,
        params_model=params_model,
        kind=kind,
        provider=provider,
        distribution=distribution,
        version=version,
        summary=doc.strip().splitlines()[0] if doc.strip() else "",
        uses_importance_scores=bool(getattr(strategy, "uses_importance_scores", True)),
    )


@dataclass
class PluginInfo:
    """A plugin as the registry sees it.

    Attributes:
        name: plugin name (the entry point's name, ``"pruneplug"`` for built-ins).
        distribution / version: the installed distribution that ships it.
        entry_point: ``"name = module:attr"`` as declared, if loaded from one.
        status: ``"ok"``, ``"broken"``, ``"conflict"`` (a strategy name clashes
            with another plugin's) or ``"blocked"``.
        error: why it is broken.
        strategies: the strategy names it registered.
        scores: the importance score names it registered.
    """

    name: str
    distribution: str | None = None
    version: str | None = None
    entry_point: str | None = None
    status: str = "ok"
    error: str | None = None
    strategies: list[str] = field(default_factory=list)
    scores: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        where = f"{self.distribution} {self.version}" if self.distribution else self.name
        if self.entry_point:
            where += f" (entry point {self.entry_point!r})"
        return where


def _normalized(distribution: str) -> str:
    """A distribution name as pip compares them (PEP 503): ``PrunePlug_NM`` is ``pruneplug-nm``."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _env_list(variable: str) -> list[str]:
    return [item.strip() for item in os.environ.get(variable, "").split(",") if item.strip()]


class Registry:
    """Strategies by name, from the built-ins, installed plugins and :meth:`register`.

    Args:
        load_entry_points: load plugins from the ``pruneplug`` entry-point
            group. Default: yes, unless ``PRUNEPLUG_DISABLE_PLUGIN_AUTOLOAD``
            is set to a non-empty value.
        blocked: plugin (entry point) names not to load, in addition to those
            in ``PRUNEPLUG_BLOCK_PLUGINS`` (comma-separated). The built-in
            plugin cannot be blocked.
    """

    def __init__(self, *, load_entry_points: bool | None = None, blocked: Iterable[str] = ()) -> None:
        from .. import strategies as builtin_strategies

        if load_entry_points is None:
            load_entry_points = not os.environ.get(DISABLE_AUTOLOAD_ENV)
        self._load_entry_points = load_entry_points
        from_env = _env_list(BLOCK_PLUGINS_ENV)
        self._blocked = {b for b in [*blocked, *from_env] if b != BUILTIN_PLUGIN}
        # Where each blocked name came from, so that messages point at the switch the user set.
        self._blocked_where = {
            b: BLOCK_PLUGINS_ENV if b in from_env else "Registry(blocked=...)" for b in self._blocked
        }
        self._blocked_by: dict[str, str] = {}  # plugin key in _plugins -> the blocked name that matched it
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._pm.register(builtin_strategies, name=BUILTIN_PLUGIN)
        for name in self._blocked:
            self._pm.set_blocked(name)
        self._plugins: dict[str, PluginInfo] = {
            BUILTIN_PLUGIN: PluginInfo(BUILTIN_PLUGIN, "pruneplug", _version("pruneplug"))
        }
        self._specs: dict[str, StrategySpec] = {}
        self._conflicts: dict[str, list[StrategySpec]] = {}
        self._scores: dict[str, ImportanceScore] = {}
        self._score_conflicts: dict[str, list[tuple[str, ImportanceScore]]] = {}
        self._manual: dict[str, StrategySpec] = {}
        self._ready = False
        self._loading = False
        self._lock = threading.RLock()

    # --- loading -----------------------------------------------------------------------

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        """The underlying pluggy manager (for advanced use; prefer this class's methods)."""
        return self._pm

    def _ensure_ready(self) -> None:
        if self._ready:
            return
        with self._lock:
            if self._ready or self._loading:
                return  # (a plugin calling back into the registry while it is being imported)
            self._loading = True
            try:
                if self._load_entry_points:
                    self._load_plugins_from_entry_points()
                self._collect()
                self._ready = True
            finally:
                self._loading = False

    def _broken(self, info: PluginInfo, reason: str, *, status: str = "broken") -> None:
        if info.status != "broken":
            info.status = status
        info.error = reason if info.error is None else f"{info.error}; {reason}"
        _warn(f"pruneplug plugin {info.label}: {reason}")

    def _load_plugins_from_entry_points(self) -> None:
        seen: set[tuple[str, str, str]] = set()
        matched: set[str] = set()
        try:
            self._load_entry_points_of_distributions(seen, matched)
        finally:
            for name in sorted(self._blocked - matched):
                installed = ", ".join(sorted(p for p in self._plugins if p != BUILTIN_PLUGIN)) or "none"
                _warn(
                    f"pruneplug: {self._blocked_where[name]} names {name!r}, which is no installed plugin's "
                    f"entry point or distribution (installed plugins: {installed})"
                )

    def _blocked_entry(self, entry_point: str, distribution: str) -> str | None:
        """The blocked name matching this entry point or its distribution (spelt any way pip accepts)."""
        if entry_point in self._blocked:
            return entry_point
        wanted = _normalized(distribution)
        return next((name for name in sorted(self._blocked) if _normalized(name) == wanted), None)

    def _load_entry_points_of_distributions(self, seen: set[tuple[str, str, str]], matched: set[str]) -> None:
        for dist in importlib.metadata.distributions():
            for ep in dist.entry_points:
                if ep.group != ENTRY_POINT_GROUP:
                    continue
                dist_name = dist.metadata["Name"]
                if (dist_name, ep.name, ep.value) in seen:
                    continue  # the same distribution found twice on sys.path
                seen.add((dist_name, ep.name, ep.value))
                info = PluginInfo(ep.name, dist_name, dist.version, f"{ep.name} = {ep.value}")
                earlier = self._plugins.get(ep.name)
                if earlier is not None and earlier.status == "blocked":
                    # A blocked plugin does not hold its name against another distribution's.
                    moved = f"{ep.name} ({earlier.distribution})"
                    self._plugins[moved] = self._plugins.pop(ep.name)
                    self._blocked_by[moved] = self._blocked_by.pop(ep.name)
                    earlier = None
                blocked_by = self._blocked_entry(ep.name, dist_name)
                if blocked_by is not None:
                    info.status = "blocked"
                    matched.add(blocked_by)
                    key = ep.name if earlier is None else f"{ep.name} ({dist_name})"
                    self._plugins[key] = info
                    self._blocked_by[key] = blocked_by
                    continue
                if earlier is not None:
                    self._broken(info, f"plugin name {ep.name!r} is already taken by {earlier.label}")
                    self._plugins[f"{ep.name} ({dist_name})"] = info
                    continue
                self._plugins[ep.name] = info
                try:
                    plugin = ep.load()
                except Exception as error:
                    self._broken(info, f"importing it failed: {type(error).__name__}: {error}")
                    continue
                try:
                    self._pm.register(plugin, name=ep.name)
                except Exception as error:
                    self._broken(info, f"its hooks are invalid: {error}")
                    continue
                unknown = [caller.name for caller in self._pm.get_hookcallers(plugin) or [] if not caller.has_spec()]
                if unknown:
                    self._pm.unregister(plugin)
                    known = ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("pruneplug_")))
                    self._broken(
                        info, f"it implements unknown hooks {', '.join(unknown)} (a typo? the hooks are: {known})"
                    )

    def _gather(
        self, hook: Any, convert: Callable[[Any, PluginInfo], Any], noun: str, listing: str
    ) -> tuple[dict[str, Any], dict[str, list[tuple[str, Any]]]]:
        """Call one hook on every plugin, each in isolation; resolve names and clashes.

        Returns ``(usable, conflicts)``: name -> item, and name -> ``[(plugin, item), ...]``
        for names two plugins claim. A plugin cannot take a built-in's name.
        """
        claims: dict[str, list[tuple[str, Any]]] = {}
        for impl in hook.get_hookimpls():
            plugin = impl.plugin_name
            info = self._plugins.setdefault(plugin, PluginInfo(plugin))
            try:
                items = impl.function()
            except Exception as error:
                self._broken(info, f"{hook.name} raised {type(error).__name__}: {error}")
                continue
            if not isinstance(items, (list, tuple)):
                self._broken(info, f"{hook.name} must return a list, got {type(items).__name__}")
                continue
            for item in items:
                try:
                    value = convert(item, info)
                except (TypeError, ValueError) as error:
                    article = "an" if noun[0] in "aeiou" else "a"
                    self._broken(info, f"it handed over something that is not {article} {noun}: {error}")
                    continue
                claims.setdefault(value.name, []).append((plugin, value))
                getattr(info, listing).append(value.name)
        usable: dict[str, Any] = {}
        conflicts: dict[str, list[tuple[str, Any]]] = {}
        for name, claimants in claims.items():
            builtin = [item for plugin, item in claimants if plugin == BUILTIN_PLUGIN]
            if builtin:
                usable[name] = builtin[0]
                for plugin, _ in claimants:
                    if plugin != BUILTIN_PLUGIN:
                        self._broken(self._plugins[plugin], f"it tries to replace the built-in {noun} {name!r}")
                        getattr(self._plugins[plugin], listing).remove(name)
            elif len(claimants) == 1:
                usable[name] = claimants[0][1]
            else:
                conflicts[name] = claimants
                for plugin, _ in claimants:
                    others = ", ".join(self._plugins[p].label for p, _ in claimants if p != plugin)
                    self._broken(
                        self._plugins[plugin],
                        f"{noun} {name!r} is also provided by {others}; "
                        "it is unusable until one of them is uninstalled or blocked",
                        status="conflict",
                    )
        return usable, conflicts

    def _collect(self) -> None:
        def to_spec(item: Any, info: PluginInfo) -> StrategySpec:
            if isinstance(item, StrategySpec):  # made with strategy_spec(): credited to whoever hands it over
                item = dataclasses.replace(
                    item, provider=info.name, distribution=info.distribution, version=info.version
                )
            return strategy_spec(item, provider=info.name, distribution=info.distribution, version=info.version)

        def to_score(item: Any, info: PluginInfo) -> ImportanceScore:
            if not isinstance(item, ImportanceScore):
                raise TypeError(f"expected a pruneplug.ImportanceScore, got {item!r}")
            if not _NAME.match(item.name) or not callable(item.compute):
                raise ValueError(f"importance score {item.name!r} needs a lowercase name and a callable compute")
            return item

        self._specs, conflicts = self._gather(self._pm.hook.pruneplug_add_strategies, to_spec, "strategy", "strategies")
        self._conflicts = {name: [spec for _, spec in claimants] for name, claimants in conflicts.items()}
        self._scores, self._score_conflicts = self._gather(
            self._pm.hook.pruneplug_add_importance_scores, to_score, "importance score", "scores"
        )

    # --- lookup ------------------------------------------------------------------------

    def get(self, name: str) -> StrategySpec:
        """The strategy registered as ``name``.

        Raises:
            StrategyNotFoundError: no such name (the message lists close matches).
            StrategyConflictError: two plugins claim the name.
        """
        self._ensure_ready()
        if not isinstance(name, str):
            raise StrategyNotFoundError(repr(name), self.names())
        if name in self._conflicts:
            raise StrategyConflictError(name, [s.provider_label for s in self._conflicts[name]])
        spec = self._manual.get(name) or self._specs.get(name)
        if spec is None:
            extra = self._blocked_hint(name)
            broken = [p.label for p in self._plugins.values() if p.status == "broken"]
            if broken:
                extra += " Broken plugins (see `pruneplug list`): " + ", ".join(broken) + "."
            raise StrategyNotFoundError(name, self.names(), extra=extra)
        return spec

    def _blocked_hint(self, name: str) -> str:
        """Which blocked plugins may provide strategy ``name``, and what blocked them (or ``""``).

        A blocked plugin is never imported, so its strategies are unknown: every
        blocked plugin is named -- or only those named like the strategy (the
        plugin ``nm`` of ``pruneplug-nm`` most likely provides ``nm``).
        """
        blocked = [(key, self._plugins[key]) for key in self._blocked_by]
        if not blocked:
            return ""

        def named_like(info: PluginInfo) -> bool:
            wanted = _normalized(name)
            return _normalized(info.name) == wanted or (
                info.distribution is not None and _normalized(info.distribution) in (wanted, f"pruneplug-{wanted}")
            )

        def entry(key: str, info: PluginInfo) -> str:
            dist = f" ({' '.join(filter(None, (info.distribution, info.version)))})" if info.distribution else ""
            blocked_name = self._blocked_by[key]
            return f"{info.name!r}{dist}, blocked by {blocked_name!r} in {self._blocked_where[blocked_name]}"

        likely = [entry(key, info) for key, info in blocked if named_like(info)]
        if likely:
            return f" It is probably provided by the plugin {'; '.join(likely)}: blocked plugins are not loaded."
        listed = "; ".join(entry(key, info) for key, info in blocked)
        return f" Blocked plugins are not loaded, and may provide it: {listed}."

    def get_score(self, name: str) -> ImportanceScore:
        """The importance score registered as ``name`` (see ``pruneplug_add_importance_scores``).

        Raises:
            ScoreNotFoundError: no such score (the message lists close matches).
            StrategyConflictError: two plugins claim the name.
        """
        self._ensure_ready()
        if name in self._score_conflicts:
            raise StrategyConflictError(
                name, [self._plugins[p].label for p, _ in self._score_conflicts[name]], kind="importance score"
            )
        score = self._scores.get(name) if isinstance(name, str) else None
        if score is None:
            raise ScoreNotFoundError(repr(name) if not isinstance(name, str) else name, self.score_names())
        return score

    def score_names(self) -> list[str]:
        """Sorted names of every usable importance score."""
        self._ensure_ready()
        return sorted(self._scores)

    def __contains__(self, name: object) -> bool:
        self._ensure_ready()
        return name in self._specs or name in self._manual

    def names(self) -> list[str]:
        """Sorted names of every usable strategy (conflicting names excluded)."""
        self._ensure_ready()
        return sorted({*self._specs, *self._manual})

    def specs(self) -> list[StrategySpec]:
        """Every usable strategy, sorted by name."""
        return [self.get(name) for name in self.names()]

    def conflicts(self) -> dict[str, list[StrategySpec]]:
        """Names claimed by more than one plugin, with every claimant."""
        self._ensure_ready()
        return {name: list(specs) for name, specs in self._conflicts.items()}

    def plugins(self) -> list[PluginInfo]:
        """Every plugin seen: loaded, broken or blocked."""
        self._ensure_ready()
        return list(self._plugins.values())

    # --- programmatic registration -----------------------------------------------------

    def register(self, strategy: Any, *, name: str | None = None) -> StrategySpec:
        """Register a strategy defined in a script or notebook; returns its spec.

        Raises :class:`~pruneplug.StrategyConflictError` if the name is taken
        (unregister the old one first).
        """
        self._ensure_ready()
        spec = strategy_spec(strategy, name=name, provider="register()")
        with self._lock:
            taken = self._manual.get(spec.name) or self._specs.get(spec.name)
            if taken is not None or spec.name in self._conflicts:
                holders = [taken.provider_label] if taken else [s.provider_label for s in self._conflicts[spec.name]]
                raise StrategyConflictError(spec.name, holders, registering=True)
            self._manual[spec.name] = spec
        return spec

    def unregister(self, name: str) -> None:
        """Remove a strategy added with :meth:`register`."""
        self._ensure_ready()
        with self._lock:
            if name not in self._manual:
                raise StrategyNotFoundError(
                    name,
                    self._manual,
                    extra=" Only strategies added with register() can be unregistered; built-ins and plugins"
                    " stay (block a plugin with PRUNEPLUG_BLOCK_PLUGINS).",
                    listed_as="Strategies added with register()",
                )
            del self._manual[name]

    @contextmanager
    def registered(self, strategy: Any, *, name: str | None = None) -> Iterator[StrategySpec]:
        """Register a strategy for the duration of a ``with`` block (handy in tests)."""
        spec = self.register(strategy, name=name)
        try:
            yield spec
        finally:
            self.unregister(spec.name)


def _warn(message: str) -> None:
    """Warn with :class:`PluginLoadWarning`, attributed to the first caller outside pruneplug.

    Plugins load on a registry's first use, which may be many calls deep inside
    pruneplug: a fixed ``stacklevel`` would point at pruneplug's own code, not
    at the user's line that triggered the loading.
    """
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # pruneplug/, not registry/
    level = 1
    frame = sys._getframe(0)
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame = frame.f_back
        level += 1
    warnings.warn(message, PluginLoadWarning, stacklevel=level)


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


_default_registry: Registry | None = None
_default_lock = threading.Lock()


def get_registry() -> Registry:
    """The registry the public API uses, created (and plugins loaded) on first use."""
    global _default_registry
    if _default_registry is None:
        with _default_lock:
            if _default_registry is None:
                _default_registry = Registry()
    return _default_registry


@contextmanager
def use_registry(registry: Registry | None = None) -> Iterator[Registry]:
    """Make ``registry`` (default: a fresh one) the default inside a ``with`` block."""
    global _default_registry
    previous = _default_registry
    _default_registry = registry if registry is not None else Registry()
    try:
        yield _default_registry
    finally:
        _default_registry = previous
