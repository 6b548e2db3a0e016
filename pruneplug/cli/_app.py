"""The Typer app, its global options, and the mapping from errors to exit statuses.

Commands register with :func:`command` (not ``app.command``), which turns a
:class:`BadInput` or :class:`~pruneplug.PruneplugError` into an error on
stderr (a line per problem) and exit status 2, and anything unexpected into
exit status 1 -- with the traceback only under ``--debug``.

The library's messages are written for Python callers too, and name the
keyword argument next to the CLI flag (``pass --force (overwrite=True)``);
the CLI shows only its flags. Warnings (a plugin that failed to load, say)
are printed as ``pruneplug: <Category>: message``, without Python's source
location, which points into pruneplug's or click's code and means nothing
to a command-line user.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar

import typer
from rich.console import Console

from .. import __version__
from ..errors import PruneplugError
from . import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_OK
from ._tour import main as tour

__all__ = ["app", "command", "state", "console", "err_console", "BadInput"]

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

# The library's Python keyword arguments and the CLI flags that set them: errors name both for Python
# callers ("pass --force (overwrite=True)"), the CLI only its flag.
_FLAGS = {"overwrite=True": "--force", "allow_pickle=True": "--allow-pickle"}


class BadInput(Exception):
    """A command's input cannot be used; the message names the file, field or argument."""


@dataclass
class _State:
    debug: bool = False
    quiet: bool = False


state = _State()


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"pruneplug {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """PyTorch pruning in which every strategy is a plugin.

    With no command, lists the strategies and prunes the tutorial's LeNet.
    """
    state.debug = debug
    state.quiet = quiet
    if ctx.invoked_subcommand is None:
        raise typer.Exit(tour([]))


def cli_wording(message: str) -> str:
    """``message`` with the library's Python keyword arguments replaced by the CLI's flags.

    >>> cli_wording("out.pt: the output exists; pass --force (overwrite=True) to replace it")
    'out.pt: the output exists; pass --force to replace it'
    """
    for argument, flag in _FLAGS.items():
        message = message.replace(f"{flag} ({argument})", flag).replace(argument, flag)
    return message


def fail(message: str, status: int, kind: str = "error") -> typer.Exit:
    """Print ``message`` on stderr, ``pruneplug: <kind>: `` before each of its lines; return the exit to raise."""
    for line in cli_wording(message).splitlines() or [""]:
        err_console.print(f"pruneplug: {kind}: {line}")
    return typer.Exit(status)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` for the CLI: ``pruneplug: PluginLoadWarning: ...``, no source location."""
    text = cli_wording(str(message)).removeprefix("pruneplug: ")
    for part in text.splitlines() or [""]:
        err_console.print(f"pruneplug: {category.__name__}: {part}")


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
                raise fail(str(error), EXIT_BAD_INPUT) from None
            except Exception as error:
                if state.debug:
                    traceback.print_exc()
                raise fail(
                    f"{type(error).__name__}: {error} (rerun with --debug for the traceback)",
                    EXIT_INTERNAL,
                    kind="internal error",
                ) from None

        app.command(name, **options)(guarded)
        return function

    return register
