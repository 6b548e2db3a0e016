"""``pruneplug apply PLAN (--model MODULE:FACTORY [--weights IN] | --hf DIR) -o OUT``: prune a model by a plan.

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
The output sums up each data-aware rule's calibration in a line (its layers
and blocks, the worst block's relative output error); ``--json`` prints the
whole plan report as JSON instead, every calibration report included, with
the other messages on stderr.
``--calibration MODULE:FUNCTION`` names the function giving the batches of
data-aware rules (``wanda``, ``sparsegpt``), over the plan's
``calibration.batches`` (or as a plan's calibration section of its own); the
plan's calibration functions, as the factory, are imported with the current
directory first on the path.

``--hf DIR`` takes a Hugging Face transformers model directory instead of
``--model``/``--weights`` (:mod:`~pruneplug.cli._hf`): the model is loaded
with ``from_pretrained``, its example input defaults to token ids when its
config has a vocabulary, the pruning is always made permanent (a directory
``from_pretrained`` reads holds no masks), and ``-o`` names the directory
``save_pretrained`` writes, through a temporary directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from ..api import remove as remove_pruning
from ..compaction import CompactionReport
from ..io.checkpoints import check_output, load_checkpoint, save_checkpoint
from ..io.report import report, tensor_histories
from ..plans import CalibrationSource, Plan, PlanReport, apply_plan, load_plan
from ._app import BadInput, command, console, err_console
from ._factory import build_model, cwd_importable
from ._hf import check_norms, check_output_dir, load_hf, save_hf, token_input
from ._inputs import InputDtype, InputShape, example_input
from ._progress import steps
from ._weights import load_weights

__all__ = ["apply_command"]


@command("apply")
def apply_command(
    plan: Annotated[Path, typer.Argument(metavar="PLAN", help="The plan: a .toml, .yaml/.yml or .json file.")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            metavar="MODULE:FACTORY",
            help="Builds the model, e.g. pruneplug.models:LeNet (or give --hf).",
        ),
    ] = None,
    hf: Annotated[
        Path | None,
        typer.Option(
            "--hf",
            metavar="DIR",
            help="Instead of --model and --weights: a Hugging Face transformers model directory, loaded with "
            "from_pretrained (the class its config.json names); -o is then the directory save_pretrained writes, "
            "with plain weights (as --remove). Default example input: 16 token ids, when the config has a vocab_size.",
        ),
    ] = None,
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
        typer.Option(
            "--output",
            "-o",
            metavar="OUT",
            help="Where to write the result (.safetensors, .pt or .pth; with --hf, a directory).",
        ),
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
    calibration: Annotated[
        str | None,
        typer.Option(
            "--calibration",
            metavar="MODULE:FUNCTION",
            help="The function giving the calibration batches of data-aware rules (wanda, sparsegpt), called with "
            "no arguments; replaces the plan's calibration.batches (or gives the plan a calibration section). "
            "Imported with the current directory on the path, e.g. my_data:calibration_batches.",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the plan's report as JSON (the rules, the tensors, each data-aware rule's calibration report "
            "and the compaction), and nothing else on stdout.",
        ),
    ] = False,
) -> None:
    """Apply a pruning plan to a model's weights and save the result."""
    if (model is None) == (hf is None):
        both = " (not both)" if model is not None else ""
        raise BadInput(f"apply needs the model: --model MODULE:FACTORY or --hf DIR{both}")
    if hf is not None and weights is not None:
        raise BadInput(f"--weights cannot be used with --hf: the weights are those in {hf}")
    if not dry_run:
        if output is None:
            raise BadInput("apply needs --output/-o OUT (or --dry-run to write nothing)")
        if hf is not None:
            check_output_dir(output, overwrite=force)
        else:
            check_output(output, overwrite=force)
    loaded = _with_calibration(load_plan(plan), calibration)
    given = example_input(input_shape, input_dtype, loaded.example_input)
    compacting = compact or loaded.compact
    built = build_model(str(model)) if hf is None else None  # (an --hf model loads below, as a step)
    earlier: dict[str, tuple[str, ...]] = {}
    history: dict[str, list[str]] = {}
    rules = len(loaded.rules)

    with steps(rules + (1 if dry_run else 2) + (1 if compacting else 0)) as progress:

        def advance(done: int, total: int) -> None:
            progress.advance()
            if done == total and compacting:
                progress.start("compacting")

        if built is None:
            assert hf is not None
            progress.start(f"loading {hf}")
            net = load_hf(hf)
            given = token_input(net, given)
        else:
            net = built
        if weights is not None:
            progress.start(f"loading {weights}")
            checkpoint = load_checkpoint(weights, allow_pickle=allow_pickle)
            earlier = load_weights(net, checkpoint, mask_storage=loaded.mask_storage)
        progress.advance()
        if given is not loaded.example_input:
            loaded = loaded.model_copy(update={"example_input": given})
        progress.start("applying the plan")
        with cwd_importable():  # the plan's calibration functions, as the factory
            result = apply_plan(
                net, loaded, dry_run=dry_run, progress=advance, source=str(plan), compact=True if compact else None
            )
        if compacting:
            progress.advance()
        if output is not None and not dry_run:
            history = tensor_histories(net, earlier)  # before --remove takes the hooks away
            if hf is not None:
                check_norms(net)
            if remove or hf is not None:
                remove_pruning(net)
            progress.start(f"writing {output}")
            if hf is not None:
                save_hf(net, output, overwrite=force)
            else:
                save_checkpoint(output, net.state_dict(), history=history, overwrite=force)
            progress.advance()
    notes = err_console if as_json else console  # with --json, stdout holds the JSON alone
    if dry_run:
        _show(result, as_json)
        what = "the sparsity the plan would give" + (", and its compaction" if result.compaction else "")
        notes.print(f"Dry run: that is {what}; nothing was changed or written.")
        ignored = [
            flag for flag, used in (("-o", output is not None), ("--remove", remove), ("--force", force)) if used
        ]
        if ignored:
            notes.print(f"(--dry-run writes nothing, so {', '.join(ignored)} had no effect.)")
        return
    final = report(net, history=history, rules=result.rules)
    _show(PlanReport(**dict(final), compaction=result.compaction, calibration=result.calibration), as_json)
    if hf is not None:
        notes.print(f"Wrote {output}; {_hf_outcome(result.compaction)}.")
        return
    masks = "pruning made permanent (no masks)" if remove else "masks kept: apply another plan to resume"
    if result.compaction is not None:
        compacted = f"compacted: --model {model} loads it, resized to it"
        masks = f"{compacted}; {masks}" if remove or final.totals.masked_tensors else f"{compacted}; no masks left"
    notes.print(f"Wrote {output}; {masks}.")


def _show(result: PlanReport, as_json: bool) -> None:
    """The plan's report on stdout: JSON, or the rules, the calibrated rules, totals and compaction as tables."""
    if as_json:
        typer.echo(result.to_json())
    else:
        console.print(result.to_rich(tensors=False))


def _with_calibration(plan: Plan, spec: str | None) -> Plan:
    """``plan`` with ``--calibration``'s function as its calibration batches (the rest of its section kept)."""
    if spec is None:
        return plan
    section = {} if plan.calibration is None else plan.calibration.model_dump()
    try:
        source = CalibrationSource.model_validate({**section, "batches": spec})
    except ValidationError:
        raise BadInput(
            f"--calibration {spec!r}: expected MODULE:FUNCTION, a Python module and a function in it returning the "
            "calibration batches, e.g. my_data:calibration_batches"
        ) from None
    return plan.model_copy(update={"calibration": source})


def _hf_outcome(compaction: CompactionReport | None) -> str:
    """What the directory ``--hf`` wrote holds, and how to load it."""
    if compaction is not None and (compaction.per_layer_sizes or compaction.config_mismatches):
        return (
            "compacted, with sizes its config cannot state (see above): from_pretrained cannot rebuild it; "
            "build the model from its config and load the weights with pruneplug.load_compacted"
        )
    what = "compacted" if compaction is not None else "pruned entries are zeros"
    return f"{what}, plain weights: from_pretrained loads it"
