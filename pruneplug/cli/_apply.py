"""``pruneplug apply PLAN --model MODULE:FACTORY [--weights IN] -o OUT``: prune a checkpoint by a plan.

The steps: check the output can be written (before any work), read the plan,
build the model from its factory, load the weights (re-creating any masks
they hold, so pruning resumes where it stopped; a compacted checkpoint
resizes the model first), apply the plan atomically -- compacting it after
the rules with ``--compact`` or the plan's ``compact = true`` -- optionally
make the pruning permanent (``--remove``), and write the result through a
temporary file. ``--input-shape``/``--input-dtype`` give the example input
that channel rules and compaction run the model on (over the plan's).
``--dry-run`` stops after applying: it prints what each rule selects, the
sparsity it would give and what compaction would give, and writes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..api import remove as remove_pruning
from ..io.checkpoints import check_output, load_checkpoint, save_checkpoint
from ..io.report import report, tensor_histories
from ..plans import apply_plan, load_plan
from ._app import BadInput, command, console
from ._factory import build_model
from ._inputs import InputDtype, InputShape, example_input
from ._progress import steps
from ._weights import load_weights

__all__ = ["apply_command"]


@command("apply")
def apply_command(
    plan: Annotated[Path, typer.Argument(metavar="PLAN", help="The plan: a .toml, .yaml/.yml or .json file.")],
    model: Annotated[
        str,
        typer.Option("--model", "-m", metavar="MODULE:FACTORY", help="Builds the model, e.g. pruneplug.models:LeNet."),
    ],
    weights: Annotated[
        Path | None,
        typer.Option(
            "--weights",
            "-w",
            metavar="IN",
            help="Checkpoint to start from (.safetensors, .pt, .pth; pruned ones resume). "
            "Default: the factory's own weights.",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="OUT", help="Where to write the result (.safetensors, .pt or .pth)."),
    ] = None,
    remove: Annotated[
        bool, typer.Option("--remove", help="Make the pruning permanent: plain weights, no masks.")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Show what each rule selects and the sparsity it would give; write nothing."),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Read a .pt/.pth that is a full pickle (only for files you trust).")
    ] = False,
    compact: Annotated[
        bool,
        typer.Option(
            "--compact",
            help="After the plan, remove the pruned channels for real: smaller tensors, checked against the masked "
            "model (as the plan's compact = true; needs an example input).",
        ),
    ] = False,
    input_shape: InputShape = None,
    input_dtype: InputDtype = None,
) -> None:
    """Apply a pruning plan to a model's weights and save the result."""
    if not dry_run:
        if output is None:
            raise BadInput("apply needs --output/-o OUT (or --dry-run to write nothing)")
        check_output(output, overwrite=force)
    loaded = load_plan(plan)
    given = example_input(input_shape, input_dtype, loaded.example_input)
    if given is not loaded.example_input:
        loaded = loaded.model_copy(update={"example_input": given})
    compacting = compact or loaded.compact
    net = build_model(model)
    earlier: dict[str, tuple[str, ...]] = {}
    history: dict[str, list[str]] = {}
    rules = len(loaded.rules)

    with steps(rules + (1 if dry_run else 2) + (1 if compacting else 0)) as progress:

        def advance(done: int, total: int) -> None:
            progress.advance()
            if done == total and compacting:
                progress.start("compacting")

        if weights is not None:
            progress.start(f"loading {weights}")
            checkpoint = load_checkpoint(weights, allow_pickle=allow_pickle)
            earlier = load_weights(net, checkpoint, mask_storage=loaded.mask_storage)
        progress.advance()
        progress.start("applying the plan")
        result = apply_plan(
            net, loaded, dry_run=dry_run, progress=advance, source=str(plan), compact=True if compact else None
        )
        if compacting:
            progress.advance()
        if output is not None and not dry_run:
            history = tensor_histories(net, earlier)  # before --remove takes the hooks away
            if remove:
                remove_pruning(net)
            progress.start(f"writing {output}")
            save_checkpoint(output, net.state_dict(), history=history, overwrite=force)
            progress.advance()
    if dry_run:
        console.print(result.to_rich(tensors=False))
        what = "the sparsity the plan would give" + (", and its compaction" if result.compaction else "")
        console.print(f"Dry run: that is {what}; nothing was changed or written.")
        ignored = [
            flag for flag, used in (("-o", output is not None), ("--remove", remove), ("--force", force)) if used
        ]
        if ignored:
            console.print(f"(--dry-run writes nothing, so {', '.join(ignored)} had no effect.)")
        return
    final = report(net, history=history, rules=result.rules)
    console.print(final.to_rich(tensors=False))
    if result.compaction is not None:
        console.print(result.compaction.to_rich())
    masks = "pruning made permanent (no masks)" if remove else "masks kept: apply another plan to resume"
    if result.compaction is not None:
        compacted = f"compacted: --model {model} loads it, resized to it"
        masks = f"{compacted}; {masks}" if remove or final.totals.masked_tensors else f"{compacted}; no masks left"
    console.print(f"Wrote {output}; {masks}.")
