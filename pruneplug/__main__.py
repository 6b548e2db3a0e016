"""``python -m pruneplug``: the tour with no arguments, the command line otherwise."""

from __future__ import annotations

import sys

if __name__ == "__main__":
    if len(sys.argv) > 1:
        from .cli import main

        sys.exit(main(sys.argv[1:]))
    from .cli._tour import main as tour

    sys.exit(tour(sys.argv[1:]))
