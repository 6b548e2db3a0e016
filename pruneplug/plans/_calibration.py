"""A plan's calibration section: where the data for data-aware rules comes from, and loading it.

A plan file cannot hold tensors, so it names Python code that gives them::

    [calibration]
    batches = "mypkg.data:calibration_batches"   # called with no arguments
    loss = "mypkg.data:loss"                     # optional: loss(output, batch) -> scalar tensor
    sequential = true                            # block by block (the default)
    blocks = "model.layers"                      # optional: the blocks' ModuleList

``batches`` is ``MODULE:FUNCTION`` (attributes may follow the colon:
``mypkg.data:loaders.calibration``). The function is called with no
arguments, once per application of the plan, and returns what
:func:`pruneplug.prune_calibrated` takes as ``calibration``: an iterable of
batches (a Tensor runs as ``model(batch)``, a tuple or list as
``model(*batch)``, a mapping as ``model(**batch)``) or a callable
``run(model)``. ``loss`` names the loss function itself (it is not called
until gradients are computed).

Only the form of the names is checked when a plan is read: importing runs
the user's code, which happens when a plan that needs it is applied, before
anything is pruned -- so a module that does not import, an attribute that is
missing or not callable, or a function that raises is a :class:`PlanError`
naming ``calibration.batches`` (or ``calibration.loss``) and the model is
untouched.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StringConstraints
from pydantic_core import PydanticCustomError
from torch import Tensor, nn

from ..errors import close_matches_hint
from ._errors import PlanError

__all__ = [
    "CalibrationSource",
    "CalibrationData",
    "Batches",
    "Loss",
    "SPEC_PATTERN",
    "import_callable",
    "load_calibration",
]

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
SPEC_PATTERN = re.compile(rf"{_IDENTIFIER}(?:\.{_IDENTIFIER})*:{_IDENTIFIER}(?:\.{_IDENTIFIER})*")
"""``MODULE:FUNCTION``: a dotted module name, a colon, and a dotted attribute path."""

Batches = Iterable[Any] | Callable[[nn.Module], object]
"""What calibration is: an iterable of batches, or a callable ``run(model)``."""

Loss = Callable[[Any, Any], Tensor]
"""``loss(output, batch) -> scalar tensor``."""


def _check_spec(value: str) -> str:
    if not SPEC_PATTERN.fullmatch(value):
        raise PydanticCustomError(
            "calibration_spec",
            "must be MODULE:FUNCTION, a Python module and a function in it, e.g. 'mypkg.data:calibration_batches'",
        )
    return value


Spec = Annotated[
    str,
    StringConstraints(strict=True),
    AfterValidator(_check_spec),
    Field(json_schema_extra={"pattern": f"^{SPEC_PATTERN.pattern}$"}),
]
Name = Annotated[str, StringConstraints(strict=True)]


class CalibrationSource(BaseModel):
    """A plan's ``calibration`` section: the data data-aware rules run on, named as Python code.

    >>> CalibrationSource(batches="mypkg.data:calibration_batches").sequential
    True
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    batches: Spec = Field(
        description="MODULE:FUNCTION: a function, called with no arguments, returning the calibration batches "
        "(an iterable: a tensor runs as model(batch), a tuple or list as model(*batch), a mapping as "
        "model(**batch)) or a callable run(model). E.g. 'mypkg.data:calibration_batches'."
    )
    loss: Spec | None = Field(
        default=None,
        description="MODULE:FUNCTION: the loss function loss(output, batch) -> scalar tensor, for rules whose "
        "score reads gradients (scored_unstructured/scored_structured with score = 'taylor'). Without it, "
        "those rules read the .grad the model already has.",
    )
    sequential: StrictBool = Field(
        default=True,
        description="Calibrate block by block, each block on the outputs of the blocks pruned before it (as the "
        "Wanda and SparseGPT papers do); false: the whole model in one pass (needed for a rule with "
        "scope 'global', and for models without a list of blocks).",
    )
    blocks: Name | tuple[Name, ...] | None = Field(
        default=None,
        description="The blocks when sequential: the qualified name of a ModuleList ('model.layers'), or the "
        "blocks' names in the order the forward runs them. Default: the longest ModuleList of modules of one "
        "class.",
    )


@dataclass(frozen=True)
class CalibrationData:
    """A calibration section loaded: the batches (or ``run(model)``) and the loss, ready for
    :func:`pruneplug.prune_calibrated`."""

    batches: Batches
    loss: Loss | None
    sequential: bool
    blocks: str | tuple[str, ...] | None


def _describe(value: object) -> str:
    return f"a {type(value).__name__}"


def import_callable(spec: str, field: str) -> Callable[..., Any]:
    """The callable ``spec`` (``"package.module:function"``) names; raises :class:`PlanError` naming ``field``.

    >>> import_callable("math:sqrt", "calibration.batches")(4.0)
    2.0
    """
    if not SPEC_PATTERN.fullmatch(spec):
        raise PlanError(
            f"{spec!r} is not MODULE:FUNCTION, a Python module and a function in it, e.g. "
            "'mypkg.data:calibration_batches'",
            field=field,
        )
    module_name, _, attributes = spec.partition(":")
    try:
        found: object = importlib.import_module(module_name)
    except ImportError as error:
        raise PlanError(
            f"{spec!r}: cannot import {module_name!r}: {error} (is it on the Python path?)", field=field
        ) from error
    except (Exception, SystemExit) as error:  # the user's module raised (or exited) while importing
        raise PlanError(
            f"{spec!r}: importing {module_name!r} raised {type(error).__name__}: {error}", field=field
        ) from error
    for attribute in attributes.split("."):
        if not hasattr(found, attribute):
            names = [name for name in dir(found) if not name.startswith("_")]
            raise PlanError(
                f"{spec!r}: {module_name!r} has no attribute {attribute!r}.{close_matches_hint(attribute, names)}",
                field=field,
            )
        found = getattr(found, attribute)
    if not callable(found):
        raise PlanError(f"{spec!r} is {_describe(found)}, not a function", field=field)
    return found


def _batches(spec: str) -> Batches:
    """Call the batches function ``spec`` names and check what it returns."""
    field = "calibration.batches"
    function = import_callable(spec, field)
    name = spec.partition(":")[2]
    try:
        value: object = function()
    except (Exception, SystemExit) as error:
        raise PlanError(f"{spec!r}: calling {name}() raised {type(error).__name__}: {error}", field=field) from error
    single = isinstance(value, (Tensor, Mapping))
    if not single and not isinstance(value, (str, bytes)):
        if callable(value):
            return value
        if isinstance(value, Iterable):
            return value
    why = " (a single batch: return a list of batches, e.g. [batch])" if single else ""
    raise PlanError(
        f"{spec!r}: {name}() returned {_describe(value)}{why}; it must return an iterable of batches "
        "(tensors, tuples or dicts of model inputs) or a callable run(model)",
        field=field,
    )


def load_calibration(
    source: CalibrationSource | None,
    *,
    batches: Batches | None = None,
    loss: Loss | None = None,
    passes: int = 1,
) -> CalibrationData | None:
    """Import and call what ``source`` names -- ``batches`` and ``loss`` given in Python replace its own.

    ``passes`` is how many rules will run the batches: a one-shot iterator
    (a generator) is then read into a list, so that every rule sees the same
    batches. Returns ``None`` when there is neither a source nor ``batches``.

    Raises:
        PlanError: naming ``calibration.batches`` or ``calibration.loss``:
            not importable, not callable, or the function raised or returned
            something that is not calibration.
    """
    if batches is None:
        if source is None:
            return None
        batches = _batches(source.batches)
    if loss is None and source is not None and source.loss is not None:
        loss = import_callable(source.loss, "calibration.loss")
    if loss is not None and not callable(loss):
        raise PlanError(
            f"the loss must be a callable loss(output, batch), got {_describe(loss)}", field="calibration.loss"
        )
    if passes > 1 and not callable(batches) and iter(batches) is batches:
        try:
            batches = list(batches)
        except Exception as error:
            raise PlanError(
                f"reading the calibration batches raised {type(error).__name__}: {error}", field="calibration.batches"
            ) from error
    return CalibrationData(
        batches=batches,
        loss=loss,
        sequential=True if source is None else source.sequential,
        blocks=None if source is None else source.blocks,
    )
