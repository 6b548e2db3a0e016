"""``pruneplug schema``: the JSON Schema of plan files, for editors.

Every installed strategy is a variant of the rule union, discriminated by
``strategy``, with its own parameter model, so an editor completes
``params`` for the strategy chosen. Save it and point the plan at it::

    pruneplug schema > pruneplug-plan.schema.json

``--schedule`` prints instead the JSON Schema of a pruning schedule's mapping
form (``{"name": "cubic", ...}``), one variant per installed schedule.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ..api import schedule_schema
from ..plans import plan_schema
from ._app import command

__all__ = ["schema_command"]


@command("schema")
def schema_command(
    indent: Annotated[int, typer.Option("--indent", min=0, help="Spaces per indentation level (0: one line).")] = 2,
    schedule: Annotated[
        bool,
        typer.Option("--schedule", help="Print the schema of a pruning schedule ({'name': 'cubic', ...}) instead."),
    ] = False,
) -> None:
    """Print the JSON Schema of plan files, with every installed strategy's parameters."""
    schema = schedule_schema() if schedule else plan_schema()
    typer.echo(json.dumps(schema, indent=indent or None, ensure_ascii=False))
