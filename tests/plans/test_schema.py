"""The JSON Schema of plans: one rule variant per installed strategy, discriminated by name."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest
from pydantic import Field

import pruneplug
from pruneplug.cli import main
from pruneplug.plans import parse_plan, plan_schema


def variants(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    mapping = schema["properties"]["rules"]["items"]["discriminator"]["mapping"]
    return {name: schema["$defs"][ref.rpartition("/")[2]] for name, ref in mapping.items()}


def test_one_variant_per_strategy_a_file_can_use(registry: pruneplug.Registry) -> None:
    schema = plan_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    found = variants(schema)
    assert set(found) == set(registry.names()) - {"custom_from_mask"}  # its mask is a tensor: not in files
    ln = found["ln_structured"]
    assert ln["properties"]["strategy"]["const"] == "ln_structured" and "params" in ln["required"]
    params = schema["$defs"][ln["properties"]["params"]["$ref"].rpartition("/")[2]]
    assert set(params["properties"]) == {"amount", "n", "dim", "prune_bias"} and params["additionalProperties"] is False
    assert "generator" not in schema["$defs"]["RandomUnstructuredParams"]["properties"]
    assert "params" not in found["identity"].get("required", [])


def test_plugin_strategies_appear_with_their_parameters(registry: pruneplug.Registry) -> None:
    class SaliencyParams(pruneplug.StrategyParams):
        amount: float = Field(ge=0, le=1)
        temperature: float = 1.0

    class Saliency(pruneplug.UnstructuredStrategy):
        """Prune by a made-up saliency."""

        name: ClassVar[str | None] = "saliency"
        Params: ClassVar[type[pruneplug.StrategyParams]] = SaliencyParams

        def __init__(self, amount: float, temperature: float = 1.0) -> None:
            super().__init__(amount)
            self.temperature = temperature

    with registry.registered(Saliency):
        saliency = variants(plan_schema())["saliency"]
    assert saliency["description"] == "saliency: Prune by a made-up saliency."
    assert "saliency" not in variants(plan_schema())


def test_the_schema_rejects_what_the_plan_model_rejects(registry: pruneplug.Registry) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(plan_schema())
    bad = [
        {"rules": [{"strategy": "ln_structured", "params": {"amount": 1}}]},  # n missing
        {"rules": [{"strategy": "l1_unstructured", "params": {"amount": 1.5}}]},
        {"rules": [{"strategy": "l1_unstructured", "params": {"amount": 1}, "stratgy": "x"}]},
        {"rules": [{"strategy": "no_such_strategy"}]},
        {"rules": []},
        {"rules": [{"strategy": "identity"}], "extra": 1},
        {"rules": [{"strategy": "identity"}], "example_input": {"shape": []}},
        {"rules": [{"strategy": "identity"}], "example_input": {"shape": [1, 0]}},
        {"rules": [{"strategy": "identity"}], "example_input": {"shape": [1], "dtype": "uint8"}},
        {"rules": [{"strategy": "identity"}], "example_input": {"shape": [1], "size": 2}},
        {"rules": [{"strategy": "identity"}], "compact": "yes"},
        {"rules": [{"strategy": "ln_structured", "channels": True, "round_to": 0, "params": {"amount": 1, "n": 2}}]},
        {
            "rules": [
                {
                    "strategy": "ln_structured",
                    "channels": True,
                    "group_reduction": "median",
                    "params": {"amount": 1, "n": 2},
                }
            ]
        },
        {"rules": [{"strategy": "wanda", "allocation": "owls", "params": {"amount": 0.5}}]},
        {"rules": [{"strategy": "wanda", "allocation": "owl", "owl_threshold": 0, "params": {"amount": 0.5}}]},
        {"rules": [{"strategy": "wanda", "allocation": "owl", "owl_spread": 1.5, "params": {"amount": 0.5}}]},
        {"rules": [{"strategy": "wanda", "allocation": "owl", "owl_spread": "0.1", "params": {"amount": 0.5}}]},
    ]
    for plan in bad:
        assert list(validator.iter_errors(plan)), plan
        with pytest.raises(pruneplug.PruneplugError):
            parse_plan(plan)
    good = {"rules": [{"strategy": "wanda", "allocation": "owl", "owl_spread": 0.1, "params": {"amount": 0.5}}]}
    assert not list(validator.iter_errors(good)) and parse_plan(good).rules[0].owl_spread == 0.1


def test_pruneplug_schema_prints_it(registry: pruneplug.Registry, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(plan_schema()))


def test_schedules_are_in_the_schema_with_each_registered_schedules_parameters(registry: pruneplug.Registry) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = plan_schema()
    union = schema["$defs"]["Schedule"]["oneOf"]
    assert {variant["title"] for variant in union} == set(registry.schedule_names())
    cubic = next(variant for variant in union if variant["title"] == "cubic")
    assert set(cubic["properties"]) == {"name", "initial", "final", "start", "end", "every"}
    assert cubic["additionalProperties"] is False and "end" in cubic["required"]
    reference = {"anyOf": [{"$ref": "#/$defs/Schedule"}, {"type": "null"}]}
    assert {key: schema["properties"]["schedule"][key] for key in reference} == reference
    assert all(
        variant["properties"]["schedule"]["anyOf"] == reference["anyOf"] for variant in variants(schema).values()
    )
    validator = jsonschema.Draft202012Validator(schema)
    l1 = {"strategy": "l1_unstructured", "params": {"amount": 0.5}}
    good = [
        {"schedule": {"name": "cubic", "end": 1000, "every": 10}, "rules": [l1]},
        {"rules": [{**l1, "schedule": {"name": "milestones", "milestones": [[0, 0.2], [10, 0.5]]}}]},
        {"rules": [{"strategy": "l1_unstructured", "schedule": {"name": "one_shot", "final": 0.3}}]},  # no amount
        {"schedule": {"name": "linear", "final": 0.5, "end": 9}, "rules": [{"strategy": "l1_unstructured"}]},
        {"schedule": {"name": "linear", "end": 9}, "rules": [l1, {"strategy": "identity"}]},
        {  # under a plan schedule with final, a rule with its own schedule without one gives its amount
            "schedule": {"name": "linear", "final": 0.9, "end": 10},
            "rules": [{**l1, "schedule": {"name": "linear", "end": 10}}, {"strategy": "l1_unstructured"}],
        },
    ]
    for plan in good:
        assert not list(validator.iter_errors(plan)), plan
        parse_plan(plan)
    bad = [
        {"schedule": {"name": "cubc", "end": 10}, "rules": [l1]},
        {"schedule": {"name": "cubic", "ned": 10}, "rules": [l1]},
        {"schedule": {"name": "cubic"}, "rules": [l1]},  # no end
        {"rules": [{**l1, "schedule": {"name": "linear", "end": 9, "every": 0}}]},
        {"rules": [{**l1, "schedule": {"name": "one_shot", "end": 9}}]},  # one_shot sets end itself
        {"rules": [{**l1, "schedule": {"end": 9}}]},
        {"rules": [{**l1, "schedule": "cubic"}]},
        {"rules": [{"strategy": "l1_unstructured", "schedule": {"name": "cubic", "end": 9}}]},  # no final, no amount
        {"schedule": {"name": "cubic", "end": 9}, "rules": [{"strategy": "l1_unstructured"}]},
        {  # the rule's own schedule replaces the plan's, and gives no final: the rule needs an amount
            "schedule": {"name": "linear", "final": 0.9, "end": 10},
            "rules": [{"strategy": "l1_unstructured", "schedule": {"name": "linear", "end": 10}}],
        },
    ]
    for plan in bad:
        assert list(validator.iter_errors(plan)), plan
        with pytest.raises(pruneplug.PruneplugError):
            parse_plan(plan)
