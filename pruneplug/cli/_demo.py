"""``pruneplug demo``: train LeNet on the digits, prune it with every strategy, compare accuracy.

The work is done by :mod:`pruneplug.demo`; this module turns the options
into a :class:`~pruneplug.demo.DemoConfig`, draws progress bars (silenced by
``--quiet``), prints the tables and says where the files went. Without the
``demo`` extra it says which extra to install (exit status 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..demo import DemoConfig, DemoError, prepare_output_folder, require_extra, run_demo, write_outputs
from ..demo._run import MEASURED_SECONDS
from ..demo._table import accuracy_tables
from ._app import BadInput, command, console
from ._progress import steps

__all__ = ["demo_command", "DEFAULT_OUT"]

DEFAULT_OUT = Path("pruneplug-demo")
_QUICK = DemoConfig.quick()
_QUICK_HELP = (
    f"A much shorter run (about {MEASURED_SECONDS['quick']} s): {_QUICK.epochs} epochs, sparsities "
    + ", ".join(f"{100 * amount:g}%" for amount in _QUICK.amounts)
    + "."
)
_TIMES = (
    f"It takes about {MEASURED_SECONDS['full']} s on two CPU cores (--quick: about {MEASURED_SECONDS['quick']} s); "
    "see docs/benchmarks.md."
)


@command("demo", epilog=_TIMES)
def demo_command(
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Folder for results.json, accuracy-vs-sparsity.png and gradual-vs-one-shot.* (created)."
        ),
    ] = DEFAULT_OUT,
    seed: Annotated[
        int, typer.Option("--seed", min=0, help="Seed of the initial weights, batches and random strategies.")
    ] = 0,
    quick: Annotated[bool, typer.Option("--quick", help=_QUICK_HELP)] = False,
) -> None:
    """Train LeNet on scikit-learn's digits, prune it with every strategy, and compare test accuracy.

    Every registered strategy that applies (built-ins and installed plugins)
    and global L1 pruning prune copies of the trained network at rising
    sparsity, with and without a short fine-tune. Then whole coupled channels
    are pruned and removed (compaction), and the smaller networks' CPU latency
    is measured against the dense one's. Last, gradual pruning while training
    (cubic schedule) is compared with one-shot pruning and fine-tuning at 90%
    and 95% sparsity, with the same number of training steps, over 3 seeds
    (1 with --quick).
    Prints tables, and writes the raw numbers (JSON), the plots (PNG) and the
    comparison's table (markdown) into --out. Needs the 'demo' extra:
    pip install 'pruneplug[demo]'.
    """
    try:
        require_extra()
        prepare_output_folder(out)
        config = DemoConfig.quick(seed) if quick else DemoConfig.full(seed)
        result = run_demo(config, phases=steps)
        written = write_outputs(result, out)
    except DemoError as error:
        raise BadInput(str(error)) from None
    # Piped output is not squeezed to rich's default of 80 columns: the tables need about 100.
    wide = (
        console
        if console.is_terminal
        else Console(file=console.file, width=max(console.width, 110), highlight=False, markup=False, emoji=False)
    )
    wide.print(accuracy_tables(result))
    paths = [str(path) for path in written.values()]
    console.print(
        f"Wrote {', '.join(paths[:-1])} and {paths[-1]} in {result.seconds['total']:.1f} s.",
        markup=False,
    )
