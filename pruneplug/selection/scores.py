"""Importance scores: *how to score*, kept apart from *how to pick*.

An :class:`ImportanceScore` says how important each entry of a tensor is
(higher = more important). Plugins hand scores over through the
``pruneplug_add_importance_scores`` hook, and every picking mode can use any
score by name:

* ``pruneplug.prune(m, "weight", "scored_unstructured", score="taylor", amount=0.3)``
* ``pruneplug.prune(m, "weight", "scored_structured", score="taylor", amount=2, dim=0)``
* ``pruneplug.prune_global(targets, "scored_unstructured", score="taylor", amount=0.3)``

Scores that need more than the tensor's values (a gradient, activation
statistics) read the :class:`ScoreTarget` -- the module and tensor being
scored -- which the core sets while it computes a mask.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from torch import Tensor, nn

from ..errors import InvalidParametersError

__all__ = ["ImportanceScore", "ScoreTarget", "current_target", "scoring", "BUILTIN_SCORES"]


@dataclass(frozen=True)
class ScoreTarget:
    """The tensor being scored: ``module.<name>``, whose parameter is ``parameter``."""

    module: nn.Module
    name: str
    parameter: Tensor


_target: contextvars.ContextVar[ScoreTarget | None] = contextvars.ContextVar("pruneplug_score_target", default=None)


def current_target() -> ScoreTarget | None:
    """The module and tensor whose mask is being computed, if the core is computing one."""
    return _target.get()


@contextmanager
def scoring(module: nn.Module, name: str, parameter: Tensor) -> Iterator[None]:
    """Make ``module.<name>`` the current :class:`ScoreTarget` for the duration of a block."""
    token = _target.set(ScoreTarget(module, name, parameter))
    try:
        yield
    finally:
        _target.reset(token)


@dataclass(frozen=True)
class ImportanceScore:
    """A named way of scoring entries; higher scores are kept, lower pruned first.

    Attributes:
        name: the name strategies refer to it by (``score="taylor"``).
        compute: ``compute(values, target) -> scores`` of the same shape as
            ``values`` (the tensor's current values, or the importance scores
            given to ``prune``); ``target`` is the :class:`ScoreTarget`, or
            ``None`` when scoring a bare tensor.
        elementwise: each entry's score depends on that entry alone, so it
            can be computed chunk by chunk (and never held whole).
        summary: one line for ``pruneplug list`` and the docs.
    """

    name: str
    compute: Callable[[Tensor, ScoreTarget | None], Tensor]
    elementwise: bool = False
    summary: str = ""


def _magnitude(values: Tensor, target: ScoreTarget | None) -> Tensor:
    return values.abs()


def _taylor(values: Tensor, target: ScoreTarget | None) -> Tensor:
    grad = None if target is None else target.parameter.grad
    if grad is None:
        where = f"{type(target.module).__name__}.{target.name}" if target is not None else "the tensor"
        raise InvalidParametersError(
            f"score 'taylor' needs the gradient of {where}: run a backward pass before pruning"
        )
    return (values * grad.to(values.dtype)).abs()


BUILTIN_SCORES = (
    ImportanceScore("magnitude", _magnitude, elementwise=True, summary="|w|: the entry's absolute value"),
    ImportanceScore(
        "taylor", _taylor, summary="|w * dL/dw|: first-order Taylor estimate of the loss change (needs .grad)"
    ),
)
