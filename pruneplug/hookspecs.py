"""The hooks through which strategies reach pruneplug -- built-in and third-party alike.

A plugin is a module (or object) with functions marked ``@pruneplug.hookimpl``
whose names are the hooks below. Installed distributions announce their
plugin under the ``pruneplug`` entry-point group::

    [project.entry-points.pruneplug]
    alternating = "pruneplug_alternating.plugin"

pruneplug's own strategies are registered by the plugin
``pruneplug.strategies`` through exactly these hooks, so nothing a plugin can
do is reserved to the built-ins.

The item types are imported for type checkers only: at run time this module
depends on pluggy alone, so every layer of pruneplug can import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import pluggy

if TYPE_CHECKING:
    import torch.nn.utils.prune

    from .registry import StrategySpec
    from .schedules.base import Schedule
    from .selection.scores import ImportanceScore
    from .statistics.spec import Statistic

__all__ = [
    "PROJECT_NAME",
    "StrategyItem",
    "hookspec",
    "hookimpl",
    "pruneplug_add_strategies",
    "pruneplug_add_importance_scores",
    "pruneplug_add_statistics",
    "pruneplug_add_schedules",
]

PROJECT_NAME = "pruneplug"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
"""Marker for hook specifications (used only in this module)."""

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Marker for hook implementations: decorate your plugin's ``pruneplug_*`` functions with it."""

StrategyItem: TypeAlias = "type[torch.nn.utils.prune.BasePruningMethod] | StrategySpec"
"""One item of :func:`pruneplug_add_strategies`: a strategy class, or a :class:`pruneplug.StrategySpec`.

``pruneplug.BasePruningMethod`` (and so ``UnstructuredStrategy`` and
``StructuredStrategy``) subclasses ``torch.nn.utils.prune.BasePruningMethod``.
At run time this is the annotation's text (the types stay unimported), for use
in annotations: ``def pruneplug_add_strategies() -> list[StrategyItem]``.
"""


@hookspec
def pruneplug_add_strategies() -> list[StrategyItem] | tuple[StrategyItem, ...]:
    """Return the pruning strategies this plugin provides.

    Each item is one of:

    * a subclass of :class:`pruneplug.BasePruningMethod` with a ``name``
      class attribute (and, if it takes parameters, a pydantic ``Params``
      model) -- typically a subclass of :class:`pruneplug.UnstructuredStrategy`
      or :class:`pruneplug.StructuredStrategy`;
    * a subclass of ``torch.nn.utils.prune.BasePruningMethod`` written for
      torch: its ``__init__`` arguments become its parameters, and its name
      is its ``name`` attribute or else its class name in snake_case
      (``MyPruning`` -> ``my_pruning``); wrap it with
      :func:`pruneplug.strategy_spec` (``strategy_spec(cls, name="...")``)
      to choose the name;
    * a :class:`pruneplug.StrategySpec` (credited to the plugin that hands it over).

    A class must be concrete, set ``PRUNING_TYPE`` to ``"unstructured"``,
    ``"structured"`` or ``"global"``, and have a name of lowercase letters,
    digits and underscores starting with a letter. A strategy that was
    renamed lists its old names in ``deprecated_names`` (a class attribute,
    or ``strategy_spec(cls, deprecated_names=[...])``): they keep working,
    with a :class:`pruneplug.StrategyDeprecationWarning`, and compete for
    names as real ones do.

    Called once per :class:`pruneplug.Registry`, when it is first used (a
    lookup, ``pruneplug.prune``, ``pruneplug list``; never at
    ``import pruneplug``), after the entry-point plugins are imported and
    before :func:`pruneplug_add_importance_scores`. The built-in strategies
    come through this same hook, from the plugin ``pruneplug``.

    Every implementation is called, each on its own (not through pluggy's
    hook call, so one plugin's error cannot stop another's), in registration
    order: the built-ins first, then the installed plugins. The hook is
    neither ``firstresult`` nor historic: all the items are collected and
    merged by name, so the order does not change the outcome, and a name
    must be unique across plugins. A name two plugins claim is unusable
    (looking it up raises :class:`pruneplug.StrategyConflictError` naming
    both) until one is uninstalled or blocked, and no plugin can replace a
    built-in strategy (the built-in keeps the name). Strategies added with
    :meth:`pruneplug.Registry.register` do not go through this hook.

    A plugin whose implementation raises, or returns anything but a list or
    tuple, contributes nothing through this hook; an item that is not a
    strategy (the ``TypeError`` or ``ValueError`` of
    :func:`pruneplug.strategy_spec`) is left out, and the plugin's other
    items stay usable. Each of these, like a name clash, emits a
    :class:`pruneplug.PluginLoadWarning` naming the plugin and what it did,
    marks the plugin ``broken`` (``conflict`` for a clash) in
    :meth:`pruneplug.Registry.plugins` and ``pruneplug list``, and leaves
    every other plugin loaded.

    Returns:
        A list (or tuple) of strategies; it may be empty.
    """
    raise NotImplementedError  # pragma: no cover - a specification, never called


@hookspec
def pruneplug_add_importance_scores() -> list[ImportanceScore] | tuple[ImportanceScore, ...]:
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
    Names follow the rules of strategy names (lowercase letters, digits and
    underscores, starting with a letter).

    Called once per :class:`pruneplug.Registry`, when it is first used,
    right after :func:`pruneplug_add_strategies`. The built-in scores
    (``magnitude``, ``taylor``) come through this same hook, from the
    plugin ``pruneplug``.

    Every implementation is called, each on its own, in registration order
    (the built-ins first). The hook is neither ``firstresult`` nor historic:
    all the scores are collected and merged by name; a plugin cannot replace
    a built-in score, and a name two plugins claim is unusable (looking it up raises
    :class:`pruneplug.StrategyConflictError`) until one goes.

    A plugin whose implementation raises, or returns anything but a list or
    tuple, contributes no score; an item that is not an
    :class:`pruneplug.ImportanceScore`, or has a malformed name or a
    ``compute`` that is not callable, is left out and the plugin's other
    scores stay usable. Each emits a :class:`pruneplug.PluginLoadWarning`
    naming the plugin, and marks it ``broken`` (``conflict`` for a clash);
    the other plugins are unaffected.

    Returns:
        A list (or tuple) of :class:`pruneplug.ImportanceScore`; it may be empty.
    """
    raise NotImplementedError  # pragma: no cover - a specification, never called


@hookspec
def pruneplug_add_statistics() -> list[Statistic] | tuple[Statistic, ...]:
    """Return the calibration statistics this plugin provides.

    Each item is a :class:`pruneplug.Statistic`: a name, and a function
    ``create(module)`` returning an accumulator for one layer (an object with
    ``add(inputs)``, ``result()`` and ``rows``; see
    :class:`pruneplug.statistics.spec.Accumulator`). A strategy that reads
    statistics implements ``required_statistics()`` (the
    :class:`pruneplug.NeedsStatistics` contract) and reads them with
    :func:`pruneplug.statistics_for`; :func:`pruneplug.prune_calibrated`
    collects, for each layer it prunes, exactly the statistics the strategy
    names, feeding each accumulator the layer's inputs on the calibration
    data::

        @pruneplug.hookimpl
        def pruneplug_add_statistics():
            return [pruneplug.Statistic("input_abs_max", AbsMax, summary="max |x_j| per input feature")]

    Names follow the rules of strategy names (lowercase letters, digits and
    underscores, starting with a letter).

    Called once per :class:`pruneplug.Registry`, when it is first used, right
    after :func:`pruneplug_add_importance_scores`. The built-in statistics
    (``input_sq_norms``, ``input_hessian``) come through this same hook, from
    the plugin ``pruneplug``.

    Every implementation is called, each on its own, in registration order
    (the built-ins first). The hook is neither ``firstresult`` nor historic:
    all the statistics are collected and merged by name; a plugin cannot
    replace a built-in statistic, and a name two plugins claim is unusable
    (looking it up raises :class:`pruneplug.StrategyConflictError`) until
    one goes.

    A plugin whose implementation raises, or returns anything but a list or
    tuple, contributes no statistic; an item that is not a
    :class:`pruneplug.Statistic`, or has a malformed name or a ``create``
    that is not callable, is left out and the plugin's other statistics stay
    usable. Each emits a :class:`pruneplug.PluginLoadWarning` naming the
    plugin, and marks it ``broken`` (``conflict`` for a clash); the other
    plugins are unaffected.

    Returns:
        A list (or tuple) of :class:`pruneplug.Statistic`; it may be empty.
    """
    raise NotImplementedError  # pragma: no cover - a specification, never called


@hookspec
def pruneplug_add_schedules() -> list[type[Schedule]] | tuple[type[Schedule], ...]:
    """Return the pruning schedules this plugin provides.

    Each item is a subclass of :class:`pruneplug.Schedule` (a frozen pydantic
    model) with a ``name`` class attribute and a ``sparsity(step, initial,
    final)`` method giving the target sparsity at a pruning step between
    ``start`` and ``end``; its fields beyond the common ``initial``,
    ``final``, ``start``, ``end`` and ``every`` are its parameters, and its
    docstring's first line is its summary. :func:`pruneplug.make_schedule`
    makes one by name (``{"name": "sine", "final": 0.9, "end": 1000}``)::

        class Sine(pruneplug.Schedule):  # half a sine wave from initial to final
            name = "sine"

            def sparsity(self, step, initial, final):
                return initial + (final - initial) * math.sin(math.pi / 2 * self.progress(step))

        @pruneplug.hookimpl
        def pruneplug_add_schedules():
            return [Sine]

    Names follow the rules of strategy names (lowercase letters, digits and
    underscores, starting with a letter).

    Called once per :class:`pruneplug.Registry`, when it is first used, right
    after :func:`pruneplug_add_statistics`. The built-in schedules
    (``cubic``, ``linear``, ``exponential``, ``milestones``, ``constant``,
    ``one_shot``) come through this same hook, from the plugin ``pruneplug``.

    Every implementation is called, each on its own, in registration order
    (the built-ins first). The hook is neither ``firstresult`` nor historic:
    all the schedules are collected and merged by name; a plugin cannot
    replace a built-in schedule, and a name two plugins claim is unusable
    (looking it up raises :class:`pruneplug.StrategyConflictError`) until
    one goes.

    A plugin whose implementation raises, or returns anything but a list or
    tuple, contributes no schedule; an item that is not a concrete subclass
    of :class:`pruneplug.Schedule`, or has a malformed name, is left out and
    the plugin's other schedules stay usable. Each emits a
    :class:`pruneplug.PluginLoadWarning` naming the plugin, and marks it
    ``broken`` (``conflict`` for a clash); the other plugins are unaffected.

    Returns:
        A list (or tuple) of :class:`pruneplug.Schedule` subclasses; it may be empty.
    """
    raise NotImplementedError  # pragma: no cover - a specification, never called
