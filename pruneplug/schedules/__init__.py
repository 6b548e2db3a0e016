"""Layer 2 (beside :mod:`pruneplug.selection`): pruning schedules, the target sparsity over training steps.

* :mod:`.base` -- :class:`~.base.Schedule`, the frozen pydantic base of every schedule: :meth:`~.base.Schedule.at`
  (the target sparsity at a step), :meth:`~.base.Schedule.prunes_at` and :meth:`~.base.Schedule.steps` (the
  pruning steps), and :func:`~.base.schedule_class`, which checks what a plugin hands over;
* :mod:`.builtin` -- ``cubic`` (Zhu & Gupta's AGP), ``linear``, ``exponential``, ``milestones``, ``constant``
  and ``one_shot``.

The built-ins reach the registry through the ``pruneplug_add_schedules`` hook below, as a plugin's would
(the registry's built-in plugin holds this hook beside those of :mod:`pruneplug.strategies`). Internal: the
public names are exported by :mod:`pruneplug`.
"""

from __future__ import annotations

from ..hookspecs import hookimpl
from .base import Schedule
from .builtin import BUILTIN_SCHEDULES

__all__ = ["pruneplug_add_schedules"]


@hookimpl
def pruneplug_add_schedules() -> list[type[Schedule]]:
    """Hand the built-in schedules (cubic, linear, exponential, milestones, constant, one_shot) to the registry."""
    return list(BUILTIN_SCHEDULES)
