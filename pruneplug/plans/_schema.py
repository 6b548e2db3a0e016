"""The JSON Schema of plan files, with every installed strategy's parameters.

Editors (VS Code's YAML and JSON support, Taplo for TOML, ...) complete and
check plan files from it. Each rule is one variant of a union discriminated
by ``strategy``: choosing ``"ln_structured"`` makes ``params`` that strategy's
own pydantic model (``amount``, ``n``, ``dim``, ``prune_bias``), so the
schema follows whatever strategies are installed, plugins included.

A strategy's deprecated names are variants too, marked ``"deprecated": true``
(editors strike them through), so that old plan files still check. A
strategy whose required parameters cannot be written in a file (such as
``custom_from_mask``, which takes a tensor) is left out; a plugin whose
parameter model pydantic cannot render gets ``params`` as a free-form object.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, create_model

from ..api.schedules import schedule_schema
from ..registry import Registry, StrategySpec, get_registry
from ..storage.formats import MaskStorage
from ._calibration import CalibrationSource
from ._inputs import ExampleInput
from ._model import PLAN_VERSION, Plan, Rule, RuleSelection

__all__ = ["plan_schema", "SCHEMA_DIALECT"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _params_schema(spec: StrategySpec) -> dict[str, Any] | None:
    """The JSON Schema of the strategy's parameters; ``None`` if a file cannot give them."""
    try:
        schema = spec.params_model.model_json_schema()
    except Exception:  # a plugin's model pydantic cannot render: accept any object
        return {"type": "object"}
    shown = set(schema.get("properties", {}))
    required = {name for name, info in spec.params_model.model_fields.items() if info.is_required()}
    if required - shown:
        return None
    return schema


def _literal(value: str) -> Any:
    """``Literal[value]`` for a value known only at run time."""
    return Literal[value]


def _variant(spec: StrategySpec, name: str | None = None) -> type[BaseModel] | None:
    """The rule variant for ``spec``, named ``name`` (a deprecated name: the variant is marked deprecated)."""
    params = _params_schema(spec)
    if params is None:
        return None
    name = name or spec.name
    # The amount may be left to a schedule's final: the plan's conditions (_amount_needed) ask for it otherwise.
    required = any(info.is_required() for key, info in spec.params_model.model_fields.items() if key != "amount")
    params_type: Any = spec.params_model if params.get("type") != "object" or "properties" in params else dict
    default: Any = ... if required else Field(default_factory=dict)
    doc = f"{spec.name}: {spec.summary}" if spec.summary else spec.name
    if name != spec.name:
        doc = f"{name}: deprecated, use {spec.name!r}. {doc}"
    model: type[BaseModel] = create_model(
        f"Rule_{name}",
        __base__=RuleSelection,
        __doc__=doc,
        __config__=ConfigDict(json_schema_extra={"deprecated": True}) if name != spec.name else None,
        strategy=(_literal(name), Field(description=spec.summary or spec.name)),
        params=(params_type, default),
        schedule=(_ScheduleField, Field(None, description=Rule.model_fields["schedule"].description)),
    )
    return model


_PLACEHOLDER = "x-pruneplug-schedule"
_ScheduleField: Any = Annotated[dict[str, Any] | None, WithJsonSchema({_PLACEHOLDER: True})]
"""A schedule's mapping: a placeholder pydantic renders, which :func:`_add_schedules` makes a reference to the
schedules' union (pydantic resolves every ``$ref`` it renders, and ``$defs/Schedule`` is not its)."""


def _refer(value: object) -> None:
    """Replace each placeholder of a schedule in ``value`` by a reference to ``$defs/Schedule`` (or null)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict) and item.get(_PLACEHOLDER):
                description = item.get("description")
                value[key] = {"anyOf": [{"$ref": "#/$defs/Schedule"}, {"type": "null"}]}
                if description is not None:
                    value[key]["description"] = description
            else:
                _refer(item)
    elif isinstance(value, list):
        for item in value:
            _refer(item)


def _gives_final(registry: Registry) -> dict[str, Any]:
    """The JSON Schema of a schedule mapping that gives a final sparsity: ``final``, or a schedule that sets it."""
    own = [name for name in registry.schedule_names() if "final" in registry.get_schedule(name).not_taken]
    options: list[dict[str, Any]] = [{"required": ["final"], "properties": {"final": {"type": "number"}}}]
    if own:
        options.append({"required": ["name"], "properties": {"name": {"enum": own}}})
    return {"anyOf": options}


def _add_schedules(schema: dict[str, Any], registry: Registry, amounts: list[str]) -> None:
    """Put the schedules' union in ``$defs`` and ask for ``params.amount`` where no schedule gives a final.

    ``amounts``: the strategies (by every name a rule may use) that need an amount, which
    :func:`_relax_amounts` no longer requires in their parameters themselves.
    """
    _refer(schema)
    schedules = schedule_schema(registry)
    definitions = schema.setdefault("$defs", {})
    definitions.update(schedules.get("$defs", {}))
    definitions["Schedule"] = {key: value for key, value in schedules.items() if key not in ("$schema", "$defs")}
    if not amounts:  # pragma: no cover - the built-in strategies take amounts
        return
    gives_final = {"required": ["schedule"], "properties": {"schedule": _gives_final(registry)}}
    definitions["AmountNeeded"] = {
        "description": "A rule whose strategy takes an amount gives params.amount, unless its schedule gives final.",
        "if": {"required": ["strategy"], "properties": {"strategy": {"enum": amounts}}, "not": gives_final},
        "then": {"required": ["params"], "properties": {"params": {"required": ["amount"]}}},
    }
    definitions["AmountNeededOwnSchedule"] = {
        "description": (
            "Under a plan schedule that gives final: a rule whose strategy takes an amount and whose own schedule "
            "(which replaces the plan's) gives no final gives params.amount."
        ),
        "if": {"required": ["strategy", "schedule"], "properties": {"strategy": {"enum": amounts}}, "not": gives_final},
        "then": {"required": ["params"], "properties": {"params": {"required": ["amount"]}}},
    }
    # The plan's schedule, when it gives final, gives it to every rule without a schedule of its own.
    schema["if"] = {"not": gives_final}
    schema["then"] = {"properties": {"rules": {"items": {"$ref": "#/$defs/AmountNeeded"}}}}
    schema["else"] = {"properties": {"rules": {"items": {"$ref": "#/$defs/AmountNeededOwnSchedule"}}}}


def _relax_amounts(schema: dict[str, Any], names: list[str]) -> None:
    """Drop ``amount`` from the required parameters of the rule variants ``names`` (``_add_schedules`` asks)."""
    definitions = schema.get("$defs", {})
    for name in names:
        params = definitions[f"Rule_{name}"]["properties"]["params"]
        target = definitions.get(params.get("$ref", "").rpartition("/")[2], params)
        required = [key for key in target.get("required", []) if key != "amount"]
        if required:
            target["required"] = required
        else:
            target.pop("required", None)


def _needs_amount(spec: StrategySpec) -> bool:
    field = spec.params_model.model_fields.get("amount")
    return field is not None and field.is_required()


def plan_schema(registry: Registry | None = None) -> dict[str, Any]:
    """The JSON Schema of a plan file, for the strategies of ``registry`` (default: the current one)."""
    registry = registry or get_registry()
    described: list[tuple[StrategySpec, str | None]] = [(spec, None) for spec in registry.specs()]
    described += [(spec, old) for old, spec in registry.deprecated_names().items()]
    made = [(spec, name or spec.name, _variant(spec, name)) for spec, name in described]
    variants = [variant for _, _, variant in made if variant is not None]
    amounts = [name for spec, name, variant in made if variant is not None and _needs_amount(spec)]
    rule: Any
    if len(variants) > 1:
        rule = Annotated[Union[tuple(variants)], Field(discriminator="strategy")]  # noqa: UP007
    elif variants:
        rule = variants[0]
    else:  # pragma: no cover - identity is always registered
        rule = dict[str, Any]
    plan = create_model(
        "Plan",
        __config__=ConfigDict(extra="forbid", title="pruneplug plan"),
        schema_=(str | None, Field(None, alias="$schema", description="Where editors find this schema.")),
        version=(Literal[1], Field(PLAN_VERSION, description="The plan format's version.")),
        description=(str | None, Field(None, description="What the plan is for.")),
        mask_storage=(
            MaskStorage | None,
            Field(None, description=Plan.model_fields["mask_storage"].description),
        ),
        example_input=(
            ExampleInput | None,
            Field(None, description=Plan.model_fields["example_input"].description),
        ),
        compact=(bool, Field(False, description=Plan.model_fields["compact"].description)),
        calibration=(
            CalibrationSource | None,
            Field(None, description=Plan.model_fields["calibration"].description),
        ),
        schedule=(_ScheduleField, Field(None, description=Plan.model_fields["schedule"].description)),
        rules=(list[rule], Field(min_length=1, description="Applied in order; later rules see earlier masks.")),
    )
    schema = plan.model_json_schema(by_alias=True)
    _relax_amounts(schema, amounts)
    _add_schedules(schema, registry, amounts)
    return {"$schema": SCHEMA_DIALECT, **schema}
