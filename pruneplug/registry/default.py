"""The default registry: the one the public API uses, created on first use.

:func:`get_registry` creates it -- and so loads the plugins -- on first use,
never at ``import pruneplug``; :func:`use_registry` swaps in another for a
``with`` block (tests use a fresh one).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .manager import Registry

__all__ = ["get_registry", "use_registry"]

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
