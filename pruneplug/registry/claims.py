"""Who gets a name: collecting what each plugin hands over, and settling clashes.

Every plugin's strategies (or importance scores) are gathered through one
hook, each plugin in isolation. Each item *claims* names: a strategy its name
and its deprecated names, a score its name. A name claimed once is the
claimant's; the built-in plugin keeps every name it claims; a name two
plugins claim is nobody's (a *conflict*, reported on lookup). Each plugin
that loses a name is told why, naming the other claimants.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .plugins import PluginInfo
from .spec import BUILTIN_PLUGIN

__all__ = ["Claim", "gather"]


@dataclass(frozen=True)
class Claim:
    """One plugin's claim on a name: its item of that name, or a deprecated name of its item.

    Attributes:
        plugin: the claiming plugin's key in the registry's plugins.
        name: the name claimed.
        item: the strategy spec (or importance score) claiming it.
    """

    plugin: str
    name: str
    item: Any

    @property
    def deprecated(self) -> bool:
        """Whether the name is a deprecated name of the item, not its own."""
        return bool(self.item.name != self.name)

    def what(self, noun: str) -> str:
        """``"strategy 'x'"``, or ``"deprecated name 'x' (for 'y')"``."""
        return f"deprecated name {self.name!r} (for {self.item.name!r})" if self.deprecated else f"{noun} {self.name!r}"

    def by(self, label: str) -> str:
        """``label``, followed by ``" (deprecated name for 'y')"`` for a deprecated name."""
        return f"{label} (deprecated name for {self.item.name!r})" if self.deprecated else label


def gather(
    hook: Any,
    convert: Callable[[Any, PluginInfo], Any],
    names: Callable[[Any], Iterable[str]],
    plugins: dict[str, PluginInfo],
    broken: Callable[..., None],
    *,
    noun: str,
    listing: str,
) -> tuple[dict[str, Claim], dict[str, list[Claim]]]:
    """Call ``hook`` on every plugin, each in isolation; settle the names its items claim.

    ``convert(item, info)`` checks one item a plugin handed over (raising
    ``TypeError``/``ValueError`` for one that is no ``noun``); ``names(item)``
    are the names it claims. Each item's own name is listed in the plugin's
    :class:`PluginInfo` attribute ``listing``. ``broken(info, reason, status=...)``
    is told about each plugin that fails or loses a name.

    Returns ``(usable, conflicts)``: name -> the claim that holds it, and
    name -> every claim on a name two plugins claim.
    """
    claims: dict[str, list[Claim]] = {}
    for impl in hook.get_hookimpls():
        plugin = impl.plugin_name
        info = plugins.setdefault(plugin, PluginInfo(plugin))
        try:
            items = impl.function()
        except Exception as error:
            broken(info, f"{hook.name} raised {type(error).__name__}: {error}")
            continue
        if not isinstance(items, (list, tuple)):
            broken(info, f"{hook.name} must return a list, got {type(items).__name__}")
            continue
        for item in items:
            try:
                value = convert(item, info)
            except (TypeError, ValueError) as error:
                article = "an" if noun[0] in "aeiou" else "a"
                broken(info, f"it handed over something that is not {article} {noun}: {error}")
                continue
            for name in names(value):
                claims.setdefault(name, []).append(Claim(plugin, name, value))
            getattr(info, listing).append(value.name)
    usable: dict[str, Claim] = {}
    conflicts: dict[str, list[Claim]] = {}
    for name, claimants in claims.items():
        builtin = next((claim for claim in claimants if claim.plugin == BUILTIN_PLUGIN), None)
        if builtin is not None:
            usable[name] = builtin
            for claim in claimants:
                if claim.plugin != BUILTIN_PLUGIN:
                    _lost_to_builtin(claim, builtin, plugins[claim.plugin], broken, noun, listing)
        elif len(claimants) == 1:
            usable[name] = claimants[0]
        else:
            conflicts[name] = claimants
            for claim in claimants:
                others = ", ".join(o.by(plugins[o.plugin].label) for o in claimants if o is not claim)
                broken(
                    plugins[claim.plugin],
                    f"{claim.what(noun)} is also provided by {others}; "
                    "it is unusable until one of them is uninstalled or blocked",
                    status="conflict",
                )
    return usable, conflicts


def _lost_to_builtin(
    claim: Claim, builtin: Claim, info: PluginInfo, broken: Callable[..., None], noun: str, listing: str
) -> None:
    """A plugin's claim on a built-in's name: refused, the plugin told why."""
    if claim.deprecated:
        broken(info, f"its {claim.what(noun)} is the built-in {builtin.what(noun)}")
    else:
        broken(info, f"it tries to replace the built-in {builtin.what(noun)}")
        getattr(info, listing).remove(claim.name)
