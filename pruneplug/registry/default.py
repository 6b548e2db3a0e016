"""pruneplug's registry: :class:`Registry`, with pruneplug's strategies built in, and the default instance.

The one module of the registry that knows the built-in strategies: it hands
:mod:`pruneplug.strategies` (strategies, scores, statistics) and
:mod:`pruneplug.schedules` (schedules) to :class:`~.manager.StrategyRegistry`
as its built-in plugin, :data:`BUILTINS`. :func:`get_registry` creates the default registry -- and so
loads the plugins -- on first use, never at ``import pruneplug``;
:func:`use_registry` swaps in another for a ``with`` block (tests use a fresh one).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import ModuleType, SimpleNamespace

from .. import schedules, strategies
from .manager import StrategyRegistry

__all__ = ["BUILTINS", "Registry", "get_registry", "use_registry"]


def _one_plugin(*modules: ModuleType) -> SimpleNamespace:
    """The hook implementations of ``modules`` as one plugin (pluggy registers one plugin per name)."""
    hooks: dict[str, object] = {}
    for module in modules:
        for name in module.__all__:
            if name.startswith("pruneplug_"):
                if name in hooks:
                    raise RuntimeError(f"the built-in hook {name} is implemented twice, again in {module.__name__}")
                hooks[name] = getattr(module, name)
    return SimpleNamespace(**hooks)


BUILTINS = _one_plugin(strategies, schedules)
"""pruneplug's built-in plugin, registered as ``"pruneplug"``: the hooks of :mod:`pruneplug.strategies` (strategies,
importance scores, calibration statistics) and of :mod:`pruneplug.schedules` (pruning schedules)."""


class Registry(StrategyRegistry):
    """Strategies by name, from the built-ins, installed plugins and :meth:`register`.

    Args:
        builtins: the built-in plugin -- a module or object with
            ``@pruneplug.hookimpl`` functions, registered as ``"pruneplug"``:
            it cannot be blocked, and no other plugin can take its names.
            Default: pruneplug's own strategies, scores and statistics
            (:mod:`pruneplug.strategies`) and schedules
            (:mod:`pruneplug.schedules`), as :data:`BUILTINS`; ``None``: none.
        load_entry_points: load plugins from the ``pruneplug`` entry-point
            group. Default: yes, unless ``PRUNEPLUG_DISABLE_PLUGIN_AUTOLOAD``
            is set to a non-empty value.
        blocked: plugin names (entry-point or distribution names) not to
            load, in addition to those in ``PRUNEPLUG_BLOCK_PLUGINS``
            (comma-separated). The built-in plugin cannot be blocked.
        allowed: if given, load only the plugins so named, and those in
            ``PRUNEPLUG_PLUGINS`` (comma-separated; when it is set, only those
            are loaded even without this argument). The others show as
            blocked; the built-ins always load. A name both allowed and
            blocked is blocked.

    Each strategy it hands out validates and is built with this registry's
    importance scores, whichever registry is the default.
    """

    def __init__(
        self,
        *,
        builtins: object | None = BUILTINS,
        load_entry_points: bool | None = None,
        blocked: Iterable[str] = (),
        allowed: Iterable[str] | None = None,
    ) -> None:
        super().__init__(builtins=builtins, load_entry_points=load_entry_points, blocked=blocked, allowed=allowed)


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
