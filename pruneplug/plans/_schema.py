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

from pydantic import BaseModel, ConfigDict, Field, create_model

from ..registry import Registry, StrategySpec, get_registry
from ..storage.formats import MaskStorage
from ._calibration import CalibrationSource
from ._inputs import ExampleInput
from ._model import PLAN_VERSION, Plan, RuleSelection

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
    required = any(info.is_required() for info in spec.params_model.model_fields.values())
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
    )
    return model


def plan_schema(registry: Registry | None = None) -> dict[str, Any]:
    """The JSON Schema of a plan file, for the strategies of ``registry`` (default: the current one)."""
    registry = registry or get_registry()
    described: list[tuple[StrategySpec, str | None]] = [(spec, None) for spec in registry.specs()]
    described += [(spec, old) for old, spec in registry.deprecated_names().items()]
    variants = [v for v in (_variant(spec, name) for spec, name in described) if v is not None]
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
        rules=(list[rule], Field(min_length=1, description="Applied in order; later rules see earlier masks.")),
    )
    schema = plan.model_json_schema(by_alias=True)
    return {"$schema": SCHEMA_DIALECT, **schema}
