"""``pruneplug report CHECKPOINT [--model MODULE:FACTORY] [--json | --markdown]``: sparsity of a checkpoint.

Without ``--model`` the checkpoint is described alone (each ``_orig`` +
``_mask`` pair is one masked tensor; every other floating-point tensor
counts); with it, the checkpoint is loaded into the model, which also checks
that it fits, and only parameters count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..io.checkpoints import load_checkpoint, load_into
from ..io.report import report, report_state_dict
from ._app import BadInput, command, console
from ._factory import build_model

__all__ = ["report_command"]


@command("report")
def report_command(
    checkpoint: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="A .safetensors, .pt or .pth file.")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            metavar="MODULE:FACTORY",
            help="Load into this model (checks the fit; only parameters count).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print Markdown tables.")] = False,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Read a .pt/.pth that is a full pickle (only for files you trust).")
    ] = False,
) -> None:
    """Report per-tensor and global sparsity of a checkpoint."""
    if as_json and markdown:
        raise BadInput("--json and --markdown exclude each other; pass one")
    loaded = load_checkpoint(checkpoint, allow_pickle=allow_pickle)
    if model is not None:
        net = build_model(model)
        result = report(net, history=load_into(net, loaded), source=str(checkpoint))
    else:
        result = report_state_dict(loaded.state_dict, history=loaded.history, source=str(checkpoint))
    if as_json:
        typer.echo(result.to_json())
    elif markdown:
        typer.echo(result.to_markdown())
    else:
        console.print(result.to_rich())
