"""The demo's optional dependencies (the ``demo`` extra), checked up front.

The demo needs scikit-learn (for its handwritten digits) and matplotlib (for
the plot). Neither is a dependency of pruneplug itself, so the demo imports
them lazily and :func:`require_extra` checks both before any work starts:
a missing one gives one clear message naming the extra to install, instead
of a traceback halfway through a run.
"""

from __future__ import annotations

import importlib

__all__ = ["EXTRA", "REQUIREMENTS", "DemoError", "MissingExtraError", "require_extra"]

EXTRA = "demo"
REQUIREMENTS = {"sklearn": "scikit-learn", "matplotlib": "matplotlib"}
"""Import name -> distribution name of every package the demo needs beyond pruneplug's own."""


class DemoError(Exception):
    """The demo cannot run as asked (a missing extra, an unusable output folder)."""


class MissingExtraError(DemoError, ImportError):
    """A package of the ``demo`` extra is not installed; the message says how to install it."""


def require_extra() -> None:
    """Raise :class:`MissingExtraError` unless every package of the ``demo`` extra imports."""
    missing = []
    for module, distribution in REQUIREMENTS.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(distribution)
    if missing:
        raise MissingExtraError(
            f"the demo needs the '{EXTRA}' extra ({' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed); "
            f"install it with: pip install 'pruneplug[{EXTRA}]'"
        )
