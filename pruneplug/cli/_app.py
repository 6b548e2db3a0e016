"""The Typer app, its global options, and the mapping from errors to exit statuses.

Commands register with :func:`command` (not ``app.command``), which turns a
:class:`BadInput` or :class:`~pruneplug.PruneplugError` into one line on
stderr and exit status 2, and anything unexpected into exit status 1 -- with
the traceback only under ``--debug``.
"""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import typer
from rich.console import Console

from .._errors import PruneplugError
from . import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_OK

__all__ = ["app", "command", "run", "state", "console", "err_console", "BadInput"]

app = typer.Typer(
    name="pruneplug",
    help="PyTorch pruning in which every strategy is a plugin.",
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
# Everything printed comes from users' files and models (paths, rule descriptions, strategy
# names): never read it as rich markup or emoji codes.
console = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)

F = TypeVar("F", bound=Callable[..., Any])


class BadInput(Exception):
    """A command's input cannot be used; the message names the file, field or argument."""


@dataclass
class _State:
    debug: bool = False
    quiet: bool = False


state = _State()


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """PyTorch pruning in which every strategy is a plugin.

    With no command, lists the strategies and prunes the tutorial's LeNet.
    """
    state.debug = debug
    state.quiet = quiet
    if ctx.invoked_subcommand is None:
        from .._tour import main as tour

        raise typer.Exit(tour([]))


def fail(message: str, status: int) -> typer.Exit:
    """Print ``message`` on stderr and return the exit to raise."""
    err_console.print(f"pruneplug: {message}")
    return typer.Exit(status)


def command(name: str | None = None, **options: Any) -> Callable[[F], F]:
    """Register a command on the app, with pruneplug's error handling."""

    def register(function: F) -> F:
        @functools.wraps(function)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except typer.Exit:
                raise
            except (BadInput, PruneplugError) as error:
                if state.debug:
                    traceback.print_exc()
                raise fail(f"error: {error}", EXIT_BAD_INPUT) from None
            except Exception as error:
                if state.debug:
                    traceback.print_exc()
                raise fail(
                    f"internal error: {type(error).__name__}: {error} (rerun with --debug for the traceback)",
                    EXIT_INTERNAL,
                ) from None

        app.command(name, **options)(guarded)
        return function

    return register


def _register_commands() -> None:
    # Each module adds its commands to ``app`` when imported.
    from . import _apply, _demo, _list, _report, _schema  # noqa: F401


def run(argv: Sequence[str]) -> int:
    """Run the app with ``argv``; return the exit status (usage errors give 2)."""
    _register_commands()
    try:
        app(args=list(argv), prog_name="pruneplug")
    except SystemExit as done:
        code = done.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_BAD_INPUT)
    return EXIT_OK


def entry_point() -> None:  # pragma: no cover - the console script
    sys.exit(run(sys.argv[1:]))
