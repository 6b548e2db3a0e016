"""The module the ``pruneplug`` entry point names: it hands pruneplug the strategy."""

from __future__ import annotations

import pruneplug
from pruneplug.hookspecs import StrategyItem

from . import Alternating

__all__ = ["pruneplug_add_strategies"]


@pruneplug.hookimpl
def pruneplug_add_strategies() -> list[StrategyItem]:
    """The strategies this plugin provides: ``alternating``."""
    return [Alternating]
