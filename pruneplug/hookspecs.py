"""The hooks through which strategies reach pruneplug -- built-in and third-party alike.

A plugin is a module (or object) with functions marked ``@pruneplug.hookimpl``
whose names are the hooks below. Installed distributions announce their
plugin under the ``pruneplug`` entry-point group::

    [project.entry-points.pruneplug]
    alternating = "pruneplug_alternating.plugin"

pruneplug's own strategies are registered by the plugin
``pruneplug.strategies`` through exactly these hooks, so nothing a plugin can
do is reserved to the built-ins.
"""

from __future__ import annotations

from typing import Any

import pluggy

__all__ = ["PROJECT_NAME", "hookspec", "hookimpl", "pruneplug_add_strategies", "pruneplug_add_importance_scores"]

PROJECT_NAME = "pruneplug"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
"""Marker for hook specifications (used only in this module)."""

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Marker for hook implementations: decorate your plugin's ``pruneplug_*`` functions with it."""


@hookspec
def pruneplug_add_strategies() -> list[Any]:
    """Return the pruning strategies this plugin provides.

    Each item is one of:

    * a subclass of :class:`pruneplug.BasePruningMethod` with a ``name``
      class attribute (and, if it takes parameters, a pydantic ``Params``
      model) -- typically a subclass of :class:`pruneplug.UnstructuredStrategy`
      or :class:`pruneplug.StructuredStrategy`;
    * a subclass of ``torch.nn.utils.prune.BasePruningMethod`` written for
      torch, wrapped with :func:`pruneplug.strategy_spec` to give it a name;
    * a :class:`pruneplug.StrategySpec`.

    Called once when the registry is first used. Every name must be unique
    across installed plugins; a name clash is reported, never silently
    resolved, and no plugin can replace a built-in strategy.

    Returns:
        A list of strategies (may be empty).
    """
    raise NotImplementedError  # pragma: no cover - a specification, never called


@hookspec
def pruneplug_add_importance_scores() -> list[Any]:
    """Return the importance scores this plugin provides.

    Each item is a :class:`pruneplug.ImportanceScore`: a name, and a function
    ``compute(values, target)`` returning one score per entry (higher = more
    important). A score is not tied to a way of picking: every registered
    score works with ``"scored_unstructured"`` (entries), ``"scored_structured"``
    (whole slices, reducing entry scores per slice) and global pruning across
    tensors::

        pruneplug.prune(model.fc1, "weight", "scored_structured", score="taylor", amount=8, dim=0)

    ``target`` (a :class:`pruneplug.ScoreTarget`) names the module and tensor
    being scored and gives its parameter, e.g. for gradient-based scores;
    it is ``None`` when a bare tensor is scored (``pruneplug.compute_mask``).
    Mark a score ``elementwise=True`` when each entry's score depends on that
    entry alone: it is then computed chunk by chunk, never held whole.

    Called once when the registry is first used. Names must be unique; a
    plugin cannot replace a built-in score (``magnitude``, ``taylor``).

    Returns:
        A list of :class:`pruneplug.ImportanceScore` (may be empty).
    """
    raise NotImplementedError  # pragma: no cover - a specification, never called
