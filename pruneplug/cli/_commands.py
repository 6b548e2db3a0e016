"""The whole command line: the app of :mod:`pruneplug.cli._app` with every command on it.

Each command module adds its commands to the app when imported; importing
them all here, above the app, keeps the app itself free of its commands.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence

from . import EXIT_BAD_INPUT, EXIT_OK, _apply, _demo, _list, _report, _schema  # noqa: F401 - importing a command module registers it
from ._app import _show_warning, app

__all__ = ["app", "run"]


def run(argv: Sequence[str]) -> int:
    """Run the app with ``argv``; return the exit status (usage errors give 2)."""
    with warnings.catch_warnings():
        if "--debug" not in argv:  # --debug keeps Python's form, source location included
            warnings.showwarning = _show_warning
        try:
            app(args=list(argv), prog_name="pruneplug")
        except SystemExit as done:
            code = done.code
            return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_BAD_INPUT)
    return EXIT_OK


def entry_point() -> None:  # pragma: no cover - the console script
    sys.exit(run(sys.argv[1:]))
