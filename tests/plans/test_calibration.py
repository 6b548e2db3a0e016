"""A plan's calibration section: reading it, its schema, and data-aware rules applied through it."""

from __future__ import annotations

from typing import Any

import pytest

import pruneplug
from pruneplug.plans import CalibrationSource, PlanError, dumps_plan, loads_plan, parse_plan, plan_schema

WANDA = {"strategy": "l1_unstructured", "params": {"amount": 0.5}}


def plan_with(calibration: object, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"calibration": calibration, "rules": list(rules) or [WANDA]}


def test_the_section_reads_with_defaults(registry: pruneplug.Registry) -> None:
    plan = parse_plan(plan_with({"batches": "mypkg.data:calibration_batches"}))
    assert plan.calibration == CalibrationSource(batches="mypkg.data:calibration_batches")
    assert (plan.calibration.loss, plan.calibration.sequential, plan.calibration.blocks) == (None, True, None)
    full = {"batches": "a.b:c.d", "loss": "a.b:loss", "sequential": False, "blocks": ["h.0", "h.1"]}
    assert parse_plan(plan_with(full)).calibration == CalibrationSource(**full)  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["toml", "yaml", "json"])
def test_the_section_round_trips(registry: pruneplug.Registry, fmt: str) -> None:
    plan = parse_plan(plan_with({"batches": "a.b:c", "loss": "a.b:loss", "sequential": False, "blocks": "layers"}))
    assert loads_plan(dumps_plan(plan, fmt), fmt) == plan


@pytest.mark.parametrize(
    ("section", "field", "words"),
    [
        ({"batches": "mypkg.data"}, "calibration.batches", ["must be MODULE:FUNCTION", "got 'mypkg.data'"]),
        ({"batches": "a:b", "loss": "a:"}, "calibration.loss", ["must be MODULE:FUNCTION"]),
        ({"batches": 3}, "calibration.batches", ["must be a valid string"]),
        ({"batchs": "a:b"}, "calibration.batchs", ["unknown field 'batchs'", "Did you mean 'batches'?", "Fields: "]),
        ({"batches": "a:b", "sequential": "yes"}, "calibration.sequential", ["valid boolean"]),
        ("a:b", "calibration", ["CalibrationSource"]),
    ],
)
def test_a_bad_section_is_refused_when_read(
    registry: pruneplug.Registry, section: object, field: str, words: list[str]
) -> None:
    with pytest.raises(PlanError) as caught:
        parse_plan(plan_with(section), source="plan.toml")
    error = caught.value
    assert (error.rule, error.field) == (None, field), str(error)
    for word in words:
        assert word in str(error)


def test_an_unknown_field_of_a_section_lists_that_sections_fields(registry: pruneplug.Registry) -> None:
    """Not the plan's own fields: ``example_input.shap`` suggests ``shape`` among shape, dtype, low, high."""
    with pytest.raises(PlanError) as caught:
        parse_plan({"example_input": {"shap": [1]}, "rules": [WANDA]})
    assert "Did you mean 'shape'? Fields: shape, dtype, low, high" in str(caught.value)
    with pytest.raises(PlanError) as caught:
        parse_plan(plan_with({"batches": "a:b", "sequencial": True}))
    assert "Fields: batches, loss, sequential, blocks" in str(caught.value)


def test_the_schema_has_the_section(registry: pruneplug.Registry) -> None:
    schema = plan_schema()
    assert schema["properties"]["calibration"]["anyOf"][0] == {"$ref": "#/$defs/CalibrationSource"}
    section = schema["$defs"]["CalibrationSource"]
    assert section["required"] == ["batches"] and section["additionalProperties"] is False
    assert set(section["properties"]) == {"batches", "loss", "sequential", "blocks"}
    pattern = section["properties"]["batches"]["pattern"]
    assert pattern.startswith("^") and pattern.endswith("$")
