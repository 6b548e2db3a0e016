"""Plans mean the same in TOML, YAML and JSON, survive being written back, and agree with their schema."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, strategies as st

import pruneplug
from pruneplug.plans import (
    FORMATS,
    Plan,
    PlanError,
    dump_plan,
    dumps_plan,
    load_plan,
    loads_plan,
    parse_plan,
    plan_data,
    plan_schema,
)

# Printable text without surrogates or line separators: what a person types into a plan.
texts = st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Zs"]), min_size=1, max_size=12)
amounts = st.one_of(st.integers(0, 10**9), st.floats(0.0, 1.0))
norms = st.one_of(
    st.integers(-3, 3),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from(["fro", "nuc", "inf", "-inf"]),
)
dims = st.integers(-4, 3)


def _optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


@st.composite
def rule_data(draw: st.DrawFn) -> dict[str, Any]:
    strategy = draw(
        st.sampled_from(["identity", "l1_unstructured", "random_unstructured", "ln_structured", "random_structured"])
    )
    params: dict[str, Any] = {}
    if strategy != "identity":
        params["amount"] = draw(amounts)
    if strategy == "ln_structured":
        params["n"] = draw(norms)
    channels = strategy.endswith("_structured") and draw(st.booleans())
    if strategy.endswith("_structured") and not channels:
        params |= draw(_optional(dim=dims, prune_bias=st.booleans()))
    scopes = (
        ["local", "global"] if strategy.endswith("unstructured") or strategy == "identity" or channels else ["local"]
    )
    data = {"strategy": strategy, "params": params} if params or draw(st.booleans()) else {"strategy": strategy}
    optional: dict[str, st.SearchStrategy[Any]] = {
        "description": texts,
        "modules": st.lists(texts, min_size=1, max_size=3),
        "module_regex": st.sampled_from(["conv.*", "fc[12]", r"layer\d+\..*", ".*"]),
        "types": st.lists(
            st.sampled_from(["Conv2d", "Linear", "torch.nn.modules.conv.Conv2d"]), min_size=1, max_size=2
        ),
        "exclude": st.lists(texts, max_size=2),
        "scope": st.sampled_from(scopes),
        "optional": st.booleans(),
    }
    if channels:
        data["channels"] = True
        optional |= {"round_to": st.integers(1, 64), "group_reduction": st.sampled_from(["mean", "sum", "max", "min"])}
    else:
        optional |= {"tensors": st.lists(st.sampled_from(["weight", "bias"]), min_size=1, max_size=2)}
    data |= draw(_optional(**optional))
    return data


shapes = st.lists(st.integers(1, 64), min_size=1, max_size=4)
example_inputs = st.one_of(
    st.fixed_dictionaries({"shape": shapes}),
    st.builds(
        lambda shape, dtype, low, span: {"shape": shape, "dtype": dtype, "low": low, "high": low + span},
        shapes,
        st.sampled_from(["int64", "int32"]),
        st.integers(-100, 100),
        st.integers(1, 50_000),
    ),
    st.builds(
        lambda shape, dtype, low, span: {"shape": shape, "dtype": dtype, "low": low, "high": low + span},
        shapes,
        st.sampled_from(["float32", "float64", "float16", "bfloat16"]),
        st.floats(-1e3, 1e3),
        st.floats(0.5, 1e3),
    ),
)


plan_datas = st.builds(
    lambda rules, extra: {**extra, "rules": rules},
    st.lists(rule_data(), min_size=1, max_size=4),
    _optional(
        version=st.just(1),
        description=texts,
        mask_storage=st.sampled_from(["bool", "packed"]),
        example_input=example_inputs,
        compact=st.booleans(),
    ),
)


def canonical(plan: Plan) -> str:
    """Tells 1 from 1.0 and True from 1, which == does not."""
    return repr(plan.model_dump())


@given(plan_datas)
def test_plans_round_trip_through_every_format(registry: pruneplug.Registry, data: dict[str, Any]) -> None:
    plan = parse_plan(data)
    written = {fmt: dumps_plan(plan, fmt) for fmt in FORMATS}
    for fmt, text in written.items():
        again = loads_plan(text, fmt)
        assert canonical(again) == canonical(plan), (fmt, text)
        assert dumps_plan(again, fmt) == text  # writing is stable


@functools.cache
def schema_validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    with pruneplug.use_registry(pruneplug.Registry(load_entry_points=False)):
        return jsonschema.Draft202012Validator(plan_schema())


@given(plan_datas)
def test_the_schema_accepts_every_valid_plan(registry: pruneplug.Registry, data: dict[str, Any]) -> None:
    validator = schema_validator()
    assert not list(validator.iter_errors(plan_data(parse_plan(data))))
    assert not list(validator.iter_errors(data))


PLAN = {
    "TOML": """
        description = "conv channels, then half the classifier weights"

        [[rules]]
        strategy = "ln_structured"
        types = ["Conv2d"]
        params = { amount = 1, n = 2, dim = 0 }

        [[rules]]
        strategy = "l1_unstructured"
        scope = "global"
        modules = ["fc*"]
        params = { amount = 1.0 }
    """,
    "YAML": """
        description: conv channels, then half the classifier weights
        rules:
          - strategy: ln_structured
            types: [Conv2d]
            params: {amount: 1, n: 2, dim: 0}
          - strategy: l1_unstructured
            scope: global
            modules: ["fc*"]
            params: {amount: 1.0}
    """,
    "JSON": """
        {"description": "conv channels, then half the classifier weights",
         "rules": [
           {"strategy": "ln_structured", "types": ["Conv2d"], "params": {"amount": 1, "n": 2, "dim": 0}},
           {"strategy": "l1_unstructured", "scope": "global", "modules": ["fc*"], "params": {"amount": 1.0}}
         ]}
    """,
}


def test_the_same_plan_written_by_hand_in_three_formats(registry: pruneplug.Registry) -> None:
    import textwrap

    plans = {fmt: loads_plan(textwrap.dedent(text), fmt.lower()) for fmt, text in PLAN.items()}
    assert len({canonical(p) for p in plans.values()}) == 1
    params = plans["TOML"].rules[1].params
    assert type(plans["TOML"].rules[0].params["amount"]) is int and type(params["amount"]) is float


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        ("yaml", "rules:\n  - strategy: identity\n    strategy: identity\n"),
        ("json", '{"rules": [{"strategy": "identity", "strategy": "identity"}]}'),
        ("toml", '[[rules]]\nstrategy = "identity"\nstrategy = "identity"\n'),
    ],
)
def test_a_key_given_twice_is_an_error(registry: pruneplug.Registry, fmt: str, text: str) -> None:
    with pytest.raises(PlanError, match="twice|[Cc]annot overwrite"):
        loads_plan(text, fmt, source=f"plan.{fmt}")


def test_yaml_merge_keys_still_work(registry: pruneplug.Registry) -> None:
    text = "rules:\n  - &base {strategy: l1_unstructured, params: {amount: 0.1}}\n  - <<: *base\n    scope: global\n"
    plan = loads_plan(text, "yaml")
    assert [(r.strategy, r.scope) for r in plan.rules] == [("l1_unstructured", "local"), ("l1_unstructured", "global")]


def test_what_a_format_cannot_hold_is_refused_when_writing(registry: pruneplug.Registry) -> None:
    plan = Plan.model_validate({"rules": [{"strategy": "ln_structured", "params": {"amount": 1, "n": float("inf")}}]})
    assert "inf" in dumps_plan(plan, "toml") and ".inf" in dumps_plan(plan, "yaml")
    with pytest.raises(PlanError, match=r"JSON has no infinity.*rules\[0\]\.params\.n"):
        dumps_plan(plan, "json")
    with_null = Plan.model_validate(
        {"rules": [{"strategy": "random_unstructured", "params": {"amount": 1, "generator": None}}]}
    )
    with pytest.raises(PlanError, match=r"TOML has no null; rules\[0\]\.params\.generator"):
        dumps_plan(with_null, "toml")
    assert loads_plan(dumps_plan(with_null, "yaml"), "yaml") == with_null


def test_files_by_suffix_and_no_silent_overwrite(registry: pruneplug.Registry, tmp_path: Path) -> None:
    plan = parse_plan({"rules": [{"strategy": "identity"}]})
    for name in ("plan.toml", "plan.yaml", "plan.yml", "plan.json"):
        assert load_plan(dump_plan(plan, tmp_path / name)) == plan
    with pytest.raises(PlanError, match="exists"):
        dump_plan(plan, tmp_path / "plan.toml")
    dump_plan(plan, tmp_path / "plan.toml", overwrite=True)
    with pytest.raises(PlanError, match=r"plan\.ini: cannot tell the plan format"):
        load_plan(tmp_path / "plan.ini")
    with pytest.raises(PlanError, match=r"missing\.toml: cannot read the plan"):
        load_plan(tmp_path / "missing.toml")


@pytest.mark.parametrize(("written", "value"), [("5e-1", 0.5), ("1.0e-1", 0.1), ("2.5E-1", 0.25), (".5", 0.5)])
def test_yaml_reads_exponent_floats_as_toml_and_json_do(
    registry: pruneplug.Registry, written: str, value: float
) -> None:
    """PyYAML's YAML 1.1 reads 5e-1 as a string; a plan means the same in every format."""
    yaml_plan = loads_plan(f"rules:\n  - strategy: l1_unstructured\n    params: {{amount: {written}}}\n", "yaml")
    toml_plan = loads_plan(f'[[rules]]\nstrategy = "l1_unstructured"\nparams = {{ amount = {value!r} }}\n', "toml")
    assert yaml_plan.rules[0].params == {"amount": value} == toml_plan.rules[0].params


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rules:\n\t- strategy: identity\n", "found character '\\t' that cannot start any token (line 2, column 1)"),
        ("rules: []\n---\nrules: []\n", "but found another document (line 2, column 1)"),
    ],
)
def test_yaml_syntax_errors_are_one_line_with_the_place(registry: pruneplug.Registry, text: str, expected: str) -> None:
    with pytest.raises(PlanError) as caught:
        loads_plan(text, "yaml", source="plan.yaml")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("plan.yaml: not valid YAML") and expected in message


def test_a_byte_order_mark_is_not_part_of_the_plan(registry: pruneplug.Registry, tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text('{"rules": [{"strategy": "identity"}]}', encoding="utf-8-sig")
    assert load_plan(path).rules[0].strategy == "identity"


def test_yaml_writer_quotes_strings_that_would_read_back_as_floats(registry: pruneplug.Registry) -> None:
    plan = parse_plan({"rules": [{"strategy": "identity", "description": "1e3", "modules": ["5e-1"]}]})
    text = dumps_plan(plan, "yaml")
    assert "'1e3'" in text and "'5e-1'" in text
    assert loads_plan(text, "yaml") == plan
