"""A rich progress bar on stderr for long commands, silenced by ``--quiet``.

Commands count their steps (load, one per rule, save) through :class:`Steps`;
with ``--quiet`` the same calls do nothing. The bar is transient: it
disappears when the command ends, leaving only the command's output, and
none is drawn when stderr is not a terminal (logs and pipes stay clean).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ._app import err_console, state

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

__all__ = ["Steps", "steps"]


class Steps:
    """The current command's progress: ``start(description)``, then ``advance()``."""

    def __init__(self, bar: Progress | None = None, task: TaskID | None = None) -> None:
        self._bar = bar
        self._task = task

    def start(self, description: str) -> None:
        """Name the step now running."""
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, description=description)

    def advance(self, count: int = 1) -> None:
        """Count ``count`` steps as done."""
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, count)


@contextmanager
def steps(total: int) -> Iterator[Steps]:
    """A progress bar of ``total`` steps for the ``with`` block (none under ``--quiet``)."""
    if state.quiet or not err_console.is_terminal:
        yield Steps()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        yield Steps(bar, bar.add_task("starting", total=total))
