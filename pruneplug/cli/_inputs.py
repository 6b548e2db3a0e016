"""``--input-shape 1,3,224,224 --input-dtype float32``: the example input, from the command line.

``pruneplug apply`` uses it for channel rules and compaction (it replaces
the plan's ``example_input``, or gives one to a plan without); ``pruneplug
report`` to count MACs. Only the shape and dtype can be given here: the
value range stays the plan's (``[0, 1)`` by default, zeros for token ids).
Every problem is the user's input, reported as
:class:`~pruneplug.cli._app.BadInput` naming the flag.
"""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError

from ..errors import close_matches_hint
from ..plans import INPUT_DTYPES, ExampleInput
from ._app import BadInput

__all__ = ["InputShape", "InputDtype", "parse_shape", "example_input"]

InputShape = Annotated[
    str | None,
    typer.Option(
        "--input-shape",
        metavar="N,C,H,W",
        help="The shape of the model's input, batch included, e.g. 1,3,224,224.",
    ),
]
InputDtype = Annotated[
    str | None,
    typer.Option(
        "--input-dtype",
        metavar="DTYPE",
        help=f"The input's dtype: {', '.join(INPUT_DTYPES)} (default float32; int64 for token ids).",
    ),
]


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` as ``(1, 3, 224, 224)``; raises :class:`BadInput` naming ``--input-shape``.

    >>> parse_shape(" 1, 3,224 ,224")
    (1, 3, 224, 224)
    """
    parts = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not part.isdigit() or not part.isascii() for part in parts):
        raise BadInput(f"--input-shape {text!r}: expected positive whole numbers separated by commas, e.g. 1,3,224,224")
    shape = tuple(int(part) for part in parts)
    if 0 in shape:
        raise BadInput(f"--input-shape {text!r}: every size must be at least 1")
    return shape


def _dtype(text: str) -> str:
    if text not in INPUT_DTYPES:
        raise BadInput(
            f"--input-dtype {text!r} is not one of {', '.join(INPUT_DTYPES)}.{close_matches_hint(text, INPUT_DTYPES)}"
        )
    return text


def example_input(shape: str | None, dtype: str | None, planned: ExampleInput | None = None) -> ExampleInput | None:
    """The example input the flags give, over ``planned`` (the plan's); ``None`` when neither gives one."""
    if shape is None and dtype is None:
        return planned
    fields: dict[str, object] = {} if planned is None else planned.model_dump(exclude_none=True)
    if shape is not None:
        fields["shape"] = parse_shape(shape)
    if dtype is not None:
        fields["dtype"] = _dtype(dtype)
    if "shape" not in fields:
        raise BadInput("--input-dtype needs --input-shape too (the plan has no example_input to take the shape from)")
    try:
        return ExampleInput.model_validate(fields)
    except ValidationError as error:
        flags = " ".join(
            f"{flag} {value}" for flag, value in (("--input-shape", shape), ("--input-dtype", dtype)) if value
        )
        problems = "; ".join(str(item["msg"]).removeprefix("Value error, ") for item in error.errors())
        raise BadInput(f"{flags}: {problems}") from None
