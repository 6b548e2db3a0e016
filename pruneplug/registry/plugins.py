"""Entry-point plugins: finding them, the switches that skip them, and what is known about each.

Installed distributions announce a plugin under the ``pruneplug`` entry-point
group. :func:`load_entry_points` imports each one and registers it with a
registry's pluggy manager -- unless a switch says otherwise
(:class:`PluginSwitches`: ``PRUNEPLUG_DISABLE_PLUGIN_AUTOLOAD``, the allowlist
``PRUNEPLUG_PLUGINS``, the blocklist ``PRUNEPLUG_BLOCK_PLUGINS``, which wins
over the allowlist) -- and records it as a :class:`PluginInfo`. A
plugin that cannot be imported or registered is recorded as broken; it never
stops the others from loading.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pluggy

from .. import hookspecs

__all__ = [
    "ENTRY_POINT_GROUP",
    "DISABLE_AUTOLOAD_ENV",
    "BLOCK_PLUGINS_ENV",
    "PLUGINS_ENV",
    "PluginLoadWarning",
    "PluginInfo",
    "PluginSwitches",
    "load_entry_points",
    "normalized",
    "version_of",
    "warn_at_caller",
]

ENTRY_POINT_GROUP = "pruneplug"
DISABLE_AUTOLOAD_ENV = "PRUNEPLUG_DISABLE_PLUGIN_AUTOLOAD"
BLOCK_PLUGINS_ENV = "PRUNEPLUG_BLOCK_PLUGINS"
PLUGINS_ENV = "PRUNEPLUG_PLUGINS"


class PluginLoadWarning(UserWarning):
    """A plugin could not be loaded or used; the other strategies are unaffected."""


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
        statistics: the calibration statistic names it registered.
        schedules: the pruning schedule names it registered.
        blocked_by: for a blocked plugin, the switch that blocked it
            (``"'nm' in PRUNEPLUG_BLOCK_PLUGINS"``, or
            ``"PRUNEPLUG_PLUGINS, which names only 'alternating'"``).
    """

    name: str
    distribution: str | None = None
    version: str | None = None
    entry_point: str | None = None
    status: str = "ok"
    error: str | None = None
    strategies: list[str] = field(default_factory=list)
    scores: list[str] = field(default_factory=list)
    statistics: list[str] = field(default_factory=list)
    schedules: list[str] = field(default_factory=list)
    blocked_by: str | None = None

    @property
    def label(self) -> str:
        where = f"{self.distribution} {self.version}" if self.distribution else self.name
        if self.entry_point:
            where += f" (entry point {self.entry_point!r})"
        return where


def normalized(distribution: str) -> str:
    """A distribution name as pip compares them (PEP 503): ``PrunePlug_NM`` is ``pruneplug-nm``."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _env_list(variable: str) -> list[str]:
    return [item.strip() for item in os.environ.get(variable, "").split(",") if item.strip()]


@dataclass(frozen=True)
class PluginSwitches:
    """Which entry-point plugins a registry loads, and which switch said so.

    Attributes:
        load_entry_points: whether to load entry-point plugins at all.
        blocked: names not to load (entry-point or distribution names), each
            with the switch that names it (``PRUNEPLUG_BLOCK_PLUGINS`` or
            ``Registry(blocked=...)``), for messages.
        allowed: if not ``None``, the only names to load, each with the switch
            that names it (``PRUNEPLUG_PLUGINS`` or ``Registry(allowed=...)``).
            A name both allowed and blocked is blocked.
    """

    load_entry_points: bool
    blocked: dict[str, str]
    allowed: dict[str, str] | None = None

    @classmethod
    def read(
        cls,
        *,
        load_entry_points: bool | None,
        blocked: Iterable[str],
        allowed: Iterable[str] | None = None,
        builtin: str,
    ) -> PluginSwitches:
        """The switches from a registry's arguments and the environment; ``builtin`` is never blocked nor listed."""
        if load_entry_points is None:
            load_entry_points = not os.environ.get(DISABLE_AUTOLOAD_ENV)
        allowlist = None
        if allowed is not None or _env_list(PLUGINS_ENV):  # an empty variable is no allowlist
            allowlist = _named(allowed or (), PLUGINS_ENV, "Registry(allowed=...)", builtin)
        return cls(load_entry_points, _named(blocked, BLOCK_PLUGINS_ENV, "Registry(blocked=...)", builtin), allowlist)

    def excluded_by(self, entry_point: str, distribution: str) -> tuple[str | None, str] | None:
        """What keeps this entry point from loading: ``(the name that matched, or None, the reason)``, or ``None``.

        A blocked name matching its entry point's or distribution's name
        (spelt any way pip accepts) blocks it; so does an allowlist naming
        neither. The blocklist wins over the allowlist.
        """
        blocked = _matching(self.blocked, entry_point, distribution)
        if blocked is not None:
            return blocked, f"{blocked!r} in {self.blocked[blocked]}"
        if self.allowed is None or _matching(self.allowed, entry_point, distribution) is not None:
            return None
        return None, _allowlist_text(self.allowed)


def _allowlist_text(allowed: dict[str, str]) -> str:
    """``"PRUNEPLUG_PLUGINS, which names only 'a', 'b'"``: why a plugin an allowlist leaves out is blocked."""
    where = " and ".join(dict.fromkeys(allowed[name] for name in sorted(allowed))) or "Registry(allowed=...)"
    names = ", ".join(repr(name) for name in sorted(allowed))
    return f"{where}, which names only {names}" if names else f"{where}, which names no plugin"


def _named(names: Iterable[str], variable: str, argument: str, builtin: str) -> dict[str, str]:
    """Each of ``names`` and of the environment ``variable``'s names, with where it was named (not ``builtin``)."""
    from_env = _env_list(variable)
    where = {name: variable if name in from_env else argument for name in [*names, *from_env]}
    return {name: switch for name, switch in where.items() if name != builtin}


def _matching(names: dict[str, str], entry_point: str, distribution: str) -> str | None:
    """The one of ``names`` that is this entry point's name or its distribution's (as pip compares them)."""
    if entry_point in names:
        return entry_point
    wanted = normalized(distribution)
    return next((name for name in sorted(names) if normalized(name) == wanted), None)


def load_entry_points(
    pm: pluggy.PluginManager,
    plugins: dict[str, PluginInfo],
    switches: PluginSwitches,
    broken: Callable[[PluginInfo, str], None],
) -> None:
    """Register every plugin of the ``pruneplug`` entry-point group with ``pm``, recording each in ``plugins``.

    ``plugins`` maps a key (the entry point's name; ``"name (distribution)"``
    when two distributions use one name) to its :class:`PluginInfo`; a
    blocked plugin (or one the allowlist leaves out) is recorded but never
    imported. ``broken(info, reason)`` is told about each plugin that fails.
    A blocked or allowed name that matches no installed plugin is reported
    with a :class:`PluginLoadWarning`.
    """
    seen: set[tuple[str, str, str]] = set()
    matched: set[str] = set()
    try:
        for dist in importlib.metadata.distributions():
            for ep in dist.entry_points:
                if ep.group != ENTRY_POINT_GROUP:
                    continue
                dist_name = dist.metadata["Name"]
                if (dist_name, ep.name, ep.value) in seen:
                    continue  # the same distribution found twice on sys.path
                seen.add((dist_name, ep.name, ep.value))
                _load_one(pm, plugins, switches, broken, matched, ep, dist_name, dist.version)
    finally:
        named = {**(switches.allowed or {}), **switches.blocked}
        for name in sorted(set(named) - matched):
            installed = ", ".join(sorted(p for p, info in plugins.items() if info.entry_point)) or "none"
            warn_at_caller(
                f"pruneplug: {named[name]} names {name!r}, which is no installed plugin's "
                f"entry point or distribution (installed plugins: {installed})"
            )


def _load_one(
    pm: pluggy.PluginManager,
    plugins: dict[str, PluginInfo],
    switches: PluginSwitches,
    broken: Callable[[PluginInfo, str], None],
    matched: set[str],
    ep: importlib.metadata.EntryPoint,
    dist_name: str,
    version: str,
) -> None:
    info = PluginInfo(ep.name, dist_name, version, f"{ep.name} = {ep.value}")
    earlier = plugins.get(ep.name)
    if earlier is not None and earlier.status == "blocked":
        # A blocked plugin does not hold its name against another distribution's.
        plugins[f"{ep.name} ({earlier.distribution})"] = plugins.pop(ep.name)
        earlier = None
    allowed = _matching(switches.allowed or {}, ep.name, dist_name)
    if allowed is not None:
        matched.add(allowed)
    excluded = switches.excluded_by(ep.name, dist_name)
    if excluded is not None:
        blocked, info.blocked_by = excluded
        info.status = "blocked"
        if blocked is not None:
            matched.add(blocked)
        plugins[ep.name if earlier is None else f"{ep.name} ({dist_name})"] = info
        return
    if earlier is not None:
        broken(info, f"plugin name {ep.name!r} is already taken by {earlier.label}")
        plugins[f"{ep.name} ({dist_name})"] = info
        return
    plugins[ep.name] = info
    try:
        plugin = ep.load()
    except Exception as error:
        broken(info, f"importing it failed: {type(error).__name__}: {error}")
        return
    try:
        pm.register(plugin, name=ep.name)
    except Exception as error:
        broken(info, f"its hooks are invalid: {error}")
        return
    unknown = [caller.name for caller in pm.get_hookcallers(plugin) or [] if not caller.has_spec()]
    if unknown:
        pm.unregister(plugin)
        known = ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("pruneplug_")))
        broken(info, f"it implements unknown hooks {', '.join(unknown)} (a typo? the hooks are: {known})")


# Code that runs between the user's line and a warning: pruneplug itself, pydantic (validating a plan calls back
# into pruneplug) and contextlib (``with pruneplug.registered(...)``).
_NOT_THE_CALLER = frozenset({"pruneplug", "pydantic", "pydantic_core", "contextlib"})


def warn_at_caller(message: str, category: type[Warning] = PluginLoadWarning) -> None:
    """Warn, attributed to the first caller outside pruneplug (and the libraries it calls back through).

    Plugins load on a registry's first use, and strategies are looked up by
    name, many calls deep inside pruneplug: a fixed ``stacklevel`` would point
    at pruneplug's own code, not at the user's line that did it.
    """
    level = 1
    frame = sys._getframe(0)
    while frame.f_back is not None and str(frame.f_globals.get("__name__")).partition(".")[0] in _NOT_THE_CALLER:
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


def version_of(distribution: str) -> str | None:
    """The installed version of ``distribution``, or ``None``."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
