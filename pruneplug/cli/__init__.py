"""The ``pruneplug`` command line (also ``python -m pruneplug``).

Commands live in small modules next to this one and register themselves on
the Typer app of :mod:`pruneplug.cli._app`; :mod:`pruneplug.cli._commands`
imports them all. The CLI needs the ``cli`` extra (``pip install
'pruneplug[cli]'``: Typer and Rich); without it, this says so.

Exit status: 0 on success, 2 on bad input (a plan, model, checkpoint,
strategy or argument that cannot be used -- one message naming what was
wrong, no traceback unless ``--debug``), 1 on an internal error.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main", "EXIT_OK", "EXIT_INTERNAL", "EXIT_BAD_INPUT"]

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        from ._commands import run
    except ImportError as error:  # the cli extra is missing
        print(
            f"pruneplug: the command line needs the 'cli' extra ({error.name or error} is not installed).\n"
            "Install it with: pip install 'pruneplug[cli]'",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    return run(args)
