"""Layer 5: the native functions -- prune, prune_global, remove, strategies and schedules by name.

Gathered here for the layers above (plans, the conformance kit, the CLI);
users import them from :mod:`pruneplug`.
"""

from __future__ import annotations

from .catalog import get_strategy, list_strategies, register, registered, unregister
from .global_prune import prune_global
from .prune import compute_mask, is_pruned, prune, pruning_history, refresh, remove
from .schedules import make_schedule, schedule_schema

__all__ = [
    "prune",
    "prune_global",
    "remove",
    "is_pruned",
    "compute_mask",
    "pruning_history",
    "refresh",
    "list_strategies",
    "get_strategy",
    "register",
    "unregister",
    "registered",
    "make_schedule",
    "schedule_schema",
]
