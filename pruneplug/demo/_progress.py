"""How the demo reports progress, without depending on any particular progress bar.

The demo runs in phases (training, the sweep); each phase asks a
:data:`Phases` factory for a :class:`Step` sized to its number of steps.
The command line passes rich progress bars (silenced by ``--quiet``); code
calling the demo directly gets :func:`silent` by default.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

__all__ = ["Step", "Phases", "silent"]


class Step(Protocol):
    """The progress of one phase: name what runs now, count what is done."""

    def start(self, description: str) -> None:
        """Name the step now running."""

    def advance(self, count: int = 1) -> None:
        """Count ``count`` steps as done."""


Phases = Callable[[int], AbstractContextManager[Step]]
"""``phases(total)`` opens the progress of a phase of ``total`` steps for a ``with`` block."""


class _Silent:
    def start(self, description: str) -> None:
        del description

    def advance(self, count: int = 1) -> None:
        del count


def silent(total: int) -> AbstractContextManager[Step]:
    """A phase that reports nothing."""
    del total
    return nullcontext(_Silent())
