"""Progress per block on stderr, with rich when it is installed (it is optional).

Shown when stderr is a terminal, or always with ``progress=True``; never
with ``progress=False``. Without rich nothing is drawn (``progress=True``
warns once that rich is missing). The bar is transient: it disappears when
the calibration ends.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["BlockProgress", "block_progress"]


class BlockProgress:
    """The running calibration's progress: ``start(description)``, then ``advance()`` per block."""

    def __init__(self, bar: Any = None, task: Any = None) -> None:
        self._bar = bar
        self._task = task

    @property
    def shown(self) -> bool:
        """Whether a bar is drawn."""
        return self._bar is not None

    def start(self, description: str) -> None:
        """Name the block now being calibrated."""
        if self._bar is not None:
            self._bar.update(self._task, description=description)

    def advance(self) -> None:
        """Count one block as done."""
        if self._bar is not None:
            self._bar.advance(self._task, 1)


def _wanted(progress: bool | None) -> bool:
    if progress is None:
        return sys.stderr is not None and sys.stderr.isatty()
    return progress


@contextmanager
def block_progress(total: int, progress: bool | None) -> Iterator[BlockProgress]:
    """A bar of ``total`` blocks for the ``with`` block, if wanted and rich is installed."""
    if not _wanted(progress):
        yield BlockProgress()
        return
    try:
        # rich is an optional dependency: imported only when a bar is wanted.
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:
        if progress:
            warnings.warn(
                "progress=True needs rich (pip install rich); calibrating without a progress bar", stacklevel=4
            )
        yield BlockProgress()
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        yield BlockProgress(bar, bar.add_task("calibrating", total=total))
