"""Pydantic building blocks for strategy parameters.

Every strategy declares one frozen, ``extra="forbid"``, strict pydantic model
of its parameters (a subclass of :class:`StrategyParams`). The native API, plan
files and the CLI all validate through that model before anything is touched,
and docs and ``pruneplug list`` read their parameter tables from it.

Field types shared by the built-in strategies live here: :data:`AmountField`
(an int count or a float fraction, never a bool or NaN), :data:`DimField`,
:data:`NormOrderField` (every ``p`` that :func:`torch.norm` takes) and
:data:`GeneratorField` (an optional :class:`torch.Generator`, kept out of the
JSON Schema because files cannot hold one).
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Mapping
from typing import Annotated, Any

import torch
from pydantic import BaseModel, ConfigDict, PlainValidator, ValidationError, WithJsonSchema, create_model
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from .errors import InvalidParametersError, close_matches_hint

__all__ = [
    "StrategyParams",
    "NoParams",
    "AmountField",
    "DimField",
    "NormOrderField",
    "GeneratorField",
    "validate_params",
    "params_model_from_signature",
]


class StrategyParams(BaseModel):
    """Base class of every strategy's parameter model: frozen, strict, no extras."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, arbitrary_types_allowed=True)


class NoParams(StrategyParams):
    """Parameters of a strategy that takes none."""


def _amount(value: object) -> int | float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise PydanticCustomError(
            "amount_type",
            "amount must be an int (a count) or a float in [0, 1] (a fraction), got {kind} {value}",
            {"kind": type(value).__name__, "value": repr(value)},
        )
    if isinstance(value, numbers.Integral):
        if int(value) < 0:
            raise PydanticCustomError(
                "amount_range", "amount={value} is a negative count; use an int >= 0", {"value": int(value)}
            )
        return int(value)
    fraction = float(value)
    if not math.isfinite(fraction) or not 0.0 <= fraction <= 1.0:
        raise PydanticCustomError(
            "amount_range",
            "amount={value} is not a fraction in [0, 1] (a float is a fraction; use an int for a count)",
            {"value": fraction},
        )
    return fraction


AmountField = Annotated[
    int | float,
    PlainValidator(_amount),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0, "description": "number of entries (or slices) to prune"},
                {"type": "number", "minimum": 0.0, "maximum": 1.0, "description": "fraction to prune"},
            ],
            "title": "Amount",
        }
    ),
]
"""``amount``: an int is a count, a float in [0, 1] a fraction of what is still unpruned."""


def _dim(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise PydanticCustomError(
            "dim_type", "dim must be an int, got {kind} {value}", {"kind": type(value).__name__, "value": repr(value)}
        )
    return int(value)


DimField = Annotated[int, PlainValidator(_dim), WithJsonSchema({"type": "integer", "title": "Dim"})]
"""``dim``: the axis whose slices are pruned (negative counts from the end)."""

_NAMED_NORMS: dict[str, float | str] = {"fro": "fro", "nuc": "nuc", "inf": math.inf, "-inf": -math.inf}


def _norm_order(value: object) -> int | float | str:
    if isinstance(value, str):
        if value in _NAMED_NORMS:
            return _NAMED_NORMS[value]
        raise PydanticCustomError(
            "norm_order",
            "n={value} is not a norm order; use a number, 'inf', '-inf', 'fro' or 'nuc'",
            {"value": repr(value)},
        )
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise PydanticCustomError(
            "norm_order",
            "n must be a number or 'fro'/'nuc', got {kind} {value}",
            {"kind": type(value).__name__, "value": repr(value)},
        )
    if isinstance(value, numbers.Integral):
        return int(value)
    if math.isnan(float(value)):
        raise PydanticCustomError("norm_order", "n=nan is not a norm order", {})
    return float(value)


NormOrderField = Annotated[
    int | float | str,
    PlainValidator(_norm_order),
    WithJsonSchema(
        {
            "anyOf": [{"type": "number"}, {"enum": ["fro", "nuc", "inf", "-inf"]}],
            "title": "Norm order",
            "description": "any p torch.norm takes: a number, inf, -inf, 'fro' or 'nuc'",
        }
    ),
]
"""``n``: the norm order, as :func:`torch.norm`'s ``p``."""


def _generator(value: object) -> torch.Generator | None:
    if value is None or isinstance(value, torch.Generator):
        return value
    raise PydanticCustomError(
        "generator_type", "generator must be a torch.Generator or None, got {kind}", {"kind": type(value).__name__}
    )


GeneratorField = SkipJsonSchema[Annotated[torch.Generator | None, PlainValidator(_generator)]]
"""``generator``: a :class:`torch.Generator` for random strategies (default: torch's global RNG)."""


def _describe_error(error: dict[str, Any], fields: list[str]) -> str:
    location = ".".join(str(part) for part in error.get("loc", ()))
    kind = error.get("type")
    if kind == "extra_forbidden":
        hint = close_matches_hint(location, fields)
        accepted = ", ".join(fields) if fields else "none"
        return f"unknown parameter {location!r}.{hint} Accepted parameters: {accepted}"
    if kind == "missing":
        return f"missing required parameter {location!r}"
    return f"{location}: {error.get('msg')}" if location else str(error.get("msg"))


def validate_params(
    model: type[BaseModel],
    params: dict[str, Any],
    *,
    strategy: str | None = None,
    context: Mapping[str, Any] | None = None,
) -> BaseModel:
    """Validate ``params`` with ``model``; raise :class:`InvalidParametersError` naming each problem.

    ``context`` reaches the model's validators as pydantic's ``info.context``:
    the registry validating the parameters passes what it provides there
    (see :attr:`pruneplug.StrategySpec.context`).
    """
    try:
        return model.model_validate(params, context=context)
    except ValidationError as error:
        fields = list(model.model_fields)
        problems = [_describe_error(dict(e), fields) for e in error.errors()]
        raise InvalidParametersError(
            "invalid parameters: " + "; ".join(problems),
            errors=[dict(e) for e in error.errors(include_url=False)],
            strategy=strategy,
        ) from None


def params_model_from_signature(cls: type) -> type[StrategyParams]:
    """Derive a parameter model from a class's ``__init__`` signature.

    This lets a ``torch.nn.utils.prune.BasePruningMethod`` subclass written
    for torch be registered as it is: its constructor arguments become the
    model's fields (typed by their annotations where present).
    """
    try:
        signature = inspect.signature(cls.__init__)  # type: ignore[misc]
    except (TypeError, ValueError):
        return NoParams
    fields: dict[str, Any] = {}
    for name, parameter in list(signature.parameters.items())[1:]:
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        annotation = Any if parameter.annotation is inspect.Parameter.empty else parameter.annotation
        if isinstance(annotation, str):
            annotation = Any  # postponed annotations of foreign code: accept, the class validates
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[name] = (annotation, default)
    if not fields:
        return NoParams
    return create_model(  # type: ignore[call-overload,no-any-return]
        f"{cls.__name__}Params",
        __base__=StrategyParams,
        __module__=getattr(cls, "__module__", __name__),
        **fields,
    )
