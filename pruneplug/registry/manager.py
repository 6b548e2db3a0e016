"""The strategy registry: one pluggy plugin manager, built-ins and plugins alike.

A :class:`StrategyRegistry` owns a :class:`pluggy.PluginManager` for the
project ``pruneplug``. The built-in plugin is given to it (``builtins=``;
:class:`pruneplug.Registry` gives :mod:`pruneplug.strategies`); installed
distributions add theirs via the ``pruneplug`` entry-point group
(:mod:`.plugins`); scripts and notebooks use :meth:`StrategyRegistry.register`.
Every strategy ends up as a :class:`~.spec.StrategySpec`, which carries the
registry's importance scores to its parameter validation.

A misbehaving plugin never breaks the others: a plugin that fails to import,
has a malformed hook, raises in its hook or hands over something that is not
a strategy is recorded as *broken* (with a warning naming its distribution,
version and entry point) and everything else still loads. Name clashes are
never resolved silently: a plugin cannot take a built-in's name, and a name
claimed by two plugins raises :class:`~pruneplug.StrategyConflictError` on lookup.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

import pluggy

from .. import hookspecs
from ..errors import (
    ScheduleNotFoundError,
    ScoreNotFoundError,
    StatisticNotFoundError,
    StrategyConflictError,
    StrategyNotFoundError,
)
from ..schedules.base import Schedule, schedule_class
from ..selection.scores import ImportanceScore
from ..statistics.spec import Statistic
from .claims import Claim, gather
from .plugins import PluginInfo, PluginSwitches, load_entry_points, normalized, version_of, warn_at_caller
from .spec import BUILTIN_PLUGIN, NAME_PATTERN, StrategyDeprecationWarning, StrategySpec, strategy_spec

__all__ = ["StrategyRegistry"]


class StrategyRegistry:
    """Strategies by name, from the built-in plugin it is given, installed plugins and :meth:`register`.

    :class:`pruneplug.Registry` is this class with pruneplug's own strategies
    as the built-ins: use that one. The arguments are that class's (where
    they are documented), but ``builtins`` defaults to ``None``, no built-ins.

    Each strategy it hands out validates and is built with this registry's
    importance scores (:attr:`StrategySpec.context <pruneplug.StrategySpec>`),
    whichever registry is the default.
    """

    def __init__(
        self,
        *,
        builtins: object | None = None,
        load_entry_points: bool | None = None,
        blocked: Iterable[str] = (),
        allowed: Iterable[str] | None = None,
    ) -> None:
        self._switches = PluginSwitches.read(
            load_entry_points=load_entry_points, blocked=blocked, allowed=allowed, builtin=BUILTIN_PLUGIN
        )
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._plugins: dict[str, PluginInfo] = {}
        if builtins is not None:
            self._pm.register(builtins, name=BUILTIN_PLUGIN)
            self._plugins[BUILTIN_PLUGIN] = PluginInfo(BUILTIN_PLUGIN, "pruneplug", version_of("pruneplug"))
        for name in self._switches.blocked:
            self._pm.set_blocked(name)
        # What the specs handed out give their parameter validators (StrategySpec.context).
        self._context: Mapping[str, Any] = MappingProxyType({"scores": self.get_score})
        # Each name (a strategy's own or deprecated) -> the claim holding it; names two plugins claim -> the claims.
        self._claims: dict[str, Claim] = {}
        self._conflicts: dict[str, list[Claim]] = {}
        self._score_claims: dict[str, Claim] = {}
        self._score_conflicts: dict[str, list[Claim]] = {}
        self._statistic_claims: dict[str, Claim] = {}
        self._statistic_conflicts: dict[str, list[Claim]] = {}
        self._schedule_claims: dict[str, Claim] = {}
        self._schedule_conflicts: dict[str, list[Claim]] = {}
        self._manual: dict[str, StrategySpec] = {}  # each name a register()ed strategy holds -> its spec
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
                if self._switches.load_entry_points:
                    load_entry_points(self._pm, self._plugins, self._switches, self._broken)
                self._collect()
                self._ready = True
            finally:
                self._loading = False

    def _broken(self, info: PluginInfo, reason: str, *, status: str = "broken") -> None:
        if info.status != "broken":
            info.status = status
        info.error = reason if info.error is None else f"{info.error}; {reason}"
        warn_at_caller(f"pruneplug plugin {info.label}: {reason}")

    def _collect(self) -> None:
        def to_spec(item: Any, info: PluginInfo) -> StrategySpec:
            if isinstance(item, StrategySpec):  # made with strategy_spec(): credited to whoever hands it over
                item = dataclasses.replace(
                    item, provider=info.name, distribution=info.distribution, version=info.version
                )
            spec = strategy_spec(item, provider=info.name, distribution=info.distribution, version=info.version)
            return dataclasses.replace(spec, context=self._context)

        def to_score(item: Any, info: PluginInfo) -> ImportanceScore:
            if not isinstance(item, ImportanceScore):
                raise TypeError(f"expected a pruneplug.ImportanceScore, got {item!r}")
            if not NAME_PATTERN.match(item.name) or not callable(item.compute):
                raise ValueError(f"importance score {item.name!r} needs a lowercase name and a callable compute")
            return item

        claims, self._conflicts = gather(
            self._pm.hook.pruneplug_add_strategies,
            to_spec,
            lambda spec: (spec.name, *spec.deprecated_names),
            self._plugins,
            self._broken,
            noun="strategy",
            listing="strategies",
        )

        def stands_for_its_strategy(claim: Claim) -> bool:
            """A deprecated name whose strategy lost its own name to a built-in must not lead to the built-in."""
            current = claims.get(claim.item.name)
            return (current is not None and current.item is claim.item) or claim.item.name in self._conflicts

        self._claims = {name: claim for name, claim in claims.items() if stands_for_its_strategy(claim)}
        self._score_claims, self._score_conflicts = gather(
            self._pm.hook.pruneplug_add_importance_scores,
            to_score,
            lambda score: (score.name,),
            self._plugins,
            self._broken,
            noun="importance score",
            listing="scores",
        )

        def to_statistic(item: Any, info: PluginInfo) -> Statistic:
            if not isinstance(item, Statistic):
                raise TypeError(f"expected a pruneplug.Statistic, got {item!r}")
            if not NAME_PATTERN.match(item.name) or not callable(item.create):
                raise ValueError(f"statistic {item.name!r} needs a lowercase name and a callable create")
            return item

        self._statistic_claims, self._statistic_conflicts = gather(
            self._pm.hook.pruneplug_add_statistics,
            to_statistic,
            lambda statistic: (statistic.name,),
            self._plugins,
            self._broken,
            noun="statistic",
            listing="statistics",
        )
        self._schedule_claims, self._schedule_conflicts = gather(
            self._pm.hook.pruneplug_add_schedules,
            lambda item, info: schedule_class(item),
            lambda schedule: (schedule.name,),
            self._plugins,
            self._broken,
            noun="schedule",
            listing="schedules",
        )

    # --- lookup ------------------------------------------------------------------------

    def get(self, name: str) -> StrategySpec:
        """The strategy registered as ``name``.

        A deprecated name of a strategy finds that strategy, with a
        :class:`~pruneplug.StrategyDeprecationWarning` pointing at the caller.

        Raises:
            StrategyNotFoundError: no such name (the message lists close matches).
            StrategyConflictError: two plugins claim the name.
        """
        self._ensure_ready()
        if not isinstance(name, str):
            raise StrategyNotFoundError(repr(name), self.names())
        spec = self._current(name)
        if spec.name != name:
            current = self._current(spec.name)
            warn_at_caller(
                f"strategy {name!r} is deprecated, use {spec.name!r} (renamed by {current.provider_label})",
                StrategyDeprecationWarning,
            )
            return current
        return spec

    def _holder(self, name: str) -> StrategySpec | None:
        """The strategy holding ``name`` (its own or a deprecated name), if any."""
        claim = self._claims.get(name)
        return self._manual.get(name) or (claim.item if claim is not None else None)

    def _current(self, name: str) -> StrategySpec:
        """The strategy holding ``name``, without a warning; raises as :meth:`get` does."""
        if name in self._conflicts:
            raise StrategyConflictError(name, self._providers(name))
        spec = self._holder(name)
        if spec is None:
            extra = self._blocked_hint(name)
            broken = [p.label for p in self._plugins.values() if p.status == "broken"]
            if broken:
                extra += " Broken plugins (see `pruneplug list`): " + ", ".join(broken) + "."
            raise StrategyNotFoundError(name, self.names(), extra=extra)
        return spec

    def _providers(self, name: str) -> list[str]:
        """Who holds or claims strategy name ``name``: ``["pruneplug-nm 0.1.0", "x 1.0 (deprecated name for 'y')"]``."""
        if name in self._conflicts:
            return [claim.by(claim.item.provider_label) for claim in self._conflicts[name]]
        spec = self._holder(name)
        return [] if spec is None else [Claim("", name, spec).by(spec.provider_label)]

    def _blocked_hint(self, name: str) -> str:
        """Which blocked plugins may provide strategy ``name``, and what blocked them (or ``""``).

        A blocked plugin is never imported, so its strategies are unknown: every
        blocked plugin is named -- or only those named like the strategy (the
        plugin ``nm`` of ``pruneplug-nm`` most likely provides ``nm``).
        """
        blocked = [info for info in self._plugins.values() if info.status == "blocked"]
        if not blocked:
            return ""

        def named_like(info: PluginInfo) -> bool:
            wanted = normalized(name)
            return normalized(info.name) == wanted or (
                info.distribution is not None and normalized(info.distribution) in (wanted, f"pruneplug-{wanted}")
            )

        def entry(info: PluginInfo) -> str:
            dist = f" ({' '.join(filter(None, (info.distribution, info.version)))})" if info.distribution else ""
            return f"{info.name!r}{dist}, blocked by {info.blocked_by}"

        likely = [entry(info) for info in blocked if named_like(info)]
        if likely:
            return f" It is probably provided by the plugin {'; '.join(likely)}: blocked plugins are not loaded."
        listed = "; ".join(entry(info) for info in blocked)
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
                name, [self._plugins[c.plugin].label for c in self._score_conflicts[name]], kind="importance score"
            )
        claim = self._score_claims.get(name) if isinstance(name, str) else None
        if claim is None:
            raise ScoreNotFoundError(repr(name) if not isinstance(name, str) else name, self.score_names())
        score: ImportanceScore = claim.item
        return score

    def score_names(self) -> list[str]:
        """Sorted names of every usable importance score."""
        self._ensure_ready()
        return sorted(self._score_claims)

    def get_statistic(self, name: str) -> Statistic:
        """The calibration statistic registered as ``name`` (see ``pruneplug_add_statistics``).

        Raises:
            StatisticNotFoundError: no such statistic (the message lists close matches).
            StrategyConflictError: two plugins claim the name.
        """
        self._ensure_ready()
        if name in self._statistic_conflicts:
            raise StrategyConflictError(
                name, [self._plugins[c.plugin].label for c in self._statistic_conflicts[name]], kind="statistic"
            )
        claim = self._statistic_claims.get(name) if isinstance(name, str) else None
        if claim is None:
            raise StatisticNotFoundError(repr(name) if not isinstance(name, str) else name, self.statistic_names())
        statistic: Statistic = claim.item
        return statistic

    def statistic_names(self) -> list[str]:
        """Sorted names of every usable calibration statistic."""
        self._ensure_ready()
        return sorted(self._statistic_claims)

    def get_schedule(self, name: str) -> type[Schedule]:
        """The pruning schedule class registered as ``name`` (see ``pruneplug_add_schedules``).

        Make a schedule with ``registry.get_schedule("cubic")(final=0.9, end=1000)``,
        or :func:`pruneplug.make_schedule`, which looks the name up here.

        Raises:
            ScheduleNotFoundError: no such schedule (the message lists close matches).
            StrategyConflictError: two plugins claim the name.
        """
        self._ensure_ready()
        if isinstance(name, str) and name in self._schedule_conflicts:
            raise StrategyConflictError(
                name, [self._plugins[c.plugin].label for c in self._schedule_conflicts[name]], kind="schedule"
            )
        claim = self._schedule_claims.get(name) if isinstance(name, str) else None
        if claim is None:
            raise ScheduleNotFoundError(repr(name) if not isinstance(name, str) else name, self.schedule_names())
        schedule: type[Schedule] = claim.item
        return schedule

    def schedule_names(self) -> list[str]:
        """Sorted names of every usable pruning schedule."""
        self._ensure_ready()
        return sorted(self._schedule_claims)

    def __contains__(self, name: object) -> bool:
        """Whether :meth:`get` finds a strategy by ``name`` (deprecated names included)."""
        self._ensure_ready()
        return isinstance(name, str) and self._holder(name) is not None

    def names(self) -> list[str]:
        """Sorted names of every usable strategy (conflicting and deprecated names excluded)."""
        self._ensure_ready()
        held = {name: self._holder(name) for name in {*self._claims, *self._manual}}
        return sorted(name for name, spec in held.items() if spec is not None and spec.name == name)

    def deprecated_names(self) -> dict[str, StrategySpec]:
        """Every usable deprecated name, sorted, with the strategy it now stands for."""
        self._ensure_ready()
        held = {name: self._holder(name) for name in sorted({*self._claims, *self._manual})}
        return {
            name: spec
            for name, spec in held.items()
            if spec is not None and spec.name != name and spec.name not in self._conflicts
        }

    def specs(self) -> list[StrategySpec]:
        """Every usable strategy, sorted by name."""
        return [self.get(name) for name in self.names()]

    def conflicts(self) -> dict[str, list[StrategySpec]]:
        """Names claimed by more than one plugin, with every claimant (the strategy, or one with it as an old name)."""
        self._ensure_ready()
        return {name: [claim.item for claim in claims] for name, claims in self._conflicts.items()}

    def plugins(self) -> list[PluginInfo]:
        """Every plugin seen: loaded, broken or blocked."""
        self._ensure_ready()
        return list(self._plugins.values())

    def spec_for(self, strategy: Any, *, provider: str) -> StrategySpec:
        """The spec of a strategy class used without registering it, its parameters validated as this registry's.

        Like :func:`~pruneplug.strategy_spec`, but the spec carries this
        registry's :attr:`~pruneplug.StrategySpec.context` (its importance
        scores), as the specs it hands out do. Raises what ``strategy_spec`` raises.
        """
        return dataclasses.replace(strategy_spec(strategy, provider=provider), context=self._context)

    # --- programmatic registration -----------------------------------------------------

    def register(self, strategy: Any, *, name: str | None = None) -> StrategySpec:
        """Register a strategy defined in a script or notebook; returns its spec.

        Raises :class:`~pruneplug.StrategyConflictError` if the name is taken
        (unregister the old one first).
        """
        self._ensure_ready()
        spec = dataclasses.replace(strategy_spec(strategy, name=name, provider="register()"), context=self._context)
        with self._lock:
            for claimed in (spec.name, *spec.deprecated_names):
                holders = self._providers(claimed)
                if holders:
                    raise StrategyConflictError(claimed, holders, registering=True)
            for claimed in (spec.name, *spec.deprecated_names):
                self._manual[claimed] = spec
        return spec

    def unregister(self, name: str) -> None:
        """Remove a strategy added with :meth:`register` (and its deprecated names)."""
        self._ensure_ready()
        with self._lock:
            spec = self._manual.get(name)
            if spec is None or spec.name != name:
                raise StrategyNotFoundError(
                    name,
                    [held for held, registered in self._manual.items() if registered.name == held],
                    extra=" Only strategies added with register() can be unregistered, by their current name;"
                    " built-ins and plugins stay (block a plugin with PRUNEPLUG_BLOCK_PLUGINS).",
                    listed_as="Strategies added with register()",
                )
            for claimed in (spec.name, *spec.deprecated_names):
                del self._manual[claimed]

    @contextmanager
    def registered(self, strategy: Any, *, name: str | None = None) -> Iterator[StrategySpec]:
        """Register a strategy for the duration of a ``with`` block (handy in tests)."""
        spec = self.register(strategy, name=name)
        try:
            yield spec
        finally:
            self.unregister(spec.name)
