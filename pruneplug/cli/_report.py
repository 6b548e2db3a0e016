"""``pruneplug report CHECKPOINT [--model MODULE:FACTORY] [--json | --markdown]``: sparsity of a checkpoint.

Without ``--model`` the checkpoint is described alone (each ``_orig`` +
``_mask`` pair is one masked tensor; every other floating-point tensor
counts); with it, the checkpoint is loaded into the model, which also checks
that it fits, and only parameters count. A compacted checkpoint resizes the
freshly built model to its shapes first (:func:`pruneplug.load_compacted`).
With ``--input-shape`` (and ``--input-dtype``) the report also gives the
model's parameters and the MACs of one forward on such an input
(:func:`pruneplug.count_params`, :func:`pruneplug.count_macs`): ``size`` in
the JSON.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..compaction import count_macs, count_params
from ..io.checkpoints import load_checkpoint
from ..io.report import report, report_state_dict
from ..io.tables import FittedTable
from ..plans import ExampleInput, example_tensor
from ._app import BadInput, command, console
from ._factory import build_model
from ._inputs import InputDtype, InputShape, example_input
from ._weights import load_weights

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
    input_shape: InputShape = None,
    input_dtype: InputDtype = None,
) -> None:
    """Report per-tensor and global sparsity of a checkpoint (with --input-shape: its parameters and MACs)."""
    if as_json and markdown:
        raise BadInput("--json and --markdown exclude each other; pass one")
    given = example_input(input_shape, input_dtype)
    if given is not None and model is None:
        raise BadInput("--input-shape needs --model MODULE:FACTORY: MACs are counted by running the model")
    loaded = load_checkpoint(checkpoint, allow_pickle=allow_pickle)
    size: Size | None = None
    if model is not None:
        net = build_model(model)
        result = report(net, history=load_weights(net, loaded), source=str(checkpoint))
        if given is not None:
            size = _size(net, given)
    else:
        result = report_state_dict(loaded.state_dict, history=loaded.history, source=str(checkpoint))
    if as_json:
        data = json.loads(result.to_json())
        if size is not None:
            data["size"] = size.model_dump()
        typer.echo(json.dumps(data, indent=2))
    elif markdown:
        typer.echo(result.to_markdown() + ("" if size is None else f"\n{size.to_markdown()}"))
    else:
        console.print(result.to_rich())
        if size is not None:
            console.print(size.to_rich())


class Size(BaseModel):
    """What running the model costs: its parameters, and the multiply-accumulates of one forward."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: str = Field(description="The input counted on: shape and dtype, e.g. '[1, 3, 224, 224] float32'.")
    parameters: int = Field(description="Parameters of the model (pruneplug.count_params; masked ones count).")
    macs: int = Field(description="Multiply-accumulates of one forward on the input (pruneplug.count_macs).")

    def _rows(self) -> list[tuple[str, str]]:
        return [("parameters", f"{self.parameters:,}"), ("MACs", f"{self.macs:,}")]

    def to_markdown(self) -> str:
        """A Markdown table: parameters and MACs, headed by the input."""
        rows = [f"| {name} | {value} |" for name, value in self._rows()]
        return "\n".join([f"| on {self.input} | count |", "| --- | ---: |", *rows]) + "\n"

    def to_rich(self) -> FittedTable:
        """The same as a rich table (names never cut)."""
        return FittedTable("Size", (f"on {self.input}", "count"), self._rows(), justify={"count": "right"})


def _size(model: nn.Module, spec: ExampleInput) -> Size:
    """The model's parameters and MACs on the input ``spec`` describes (the model must run on it)."""
    device = next((tensor.device for tensor in itertools.chain(model.parameters(), model.buffers())), None)
    inputs = example_tensor(spec, device)
    try:
        macs = count_macs(model, (inputs,))
    except Exception as error:
        raise BadInput(
            f"--input-shape: the model does not run on a {spec.describe()} input ({type(error).__name__}: {error})"
        ) from error
    return Size(input=spec.describe(), parameters=count_params(model), macs=macs)
