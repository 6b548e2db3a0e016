"""pruneplug.make_schedule (a name, a mapping, a schedule) and the JSON Schema of the mapping form."""

from __future__ import annotations

from typing import Any, ClassVar

import jsonschema
import pytest

import pruneplug
from pruneplug.api import schedule_schema
from pruneplug.hookspecs import hookimpl
from pruneplug.schedules.builtin import Cubic, Milestones, OneShot

ISSUE_FORM = {"name": "cubic", "initial": 0.0, "final": 0.9, "start": 0, "end": 1000, "every": 10}


def test_the_three_forms_make_the_same_schedule(registry: pruneplug.Registry) -> None:
    made = pruneplug.make_schedule(ISSUE_FORM)
    assert made == Cubic(initial=0.0, final=0.9, start=0, end=1000, every=10)
    assert pruneplug.make_schedule("cubic", final=0.9, end=1000, every=10) == made
    assert pruneplug.make_schedule(made) is made
    assert made.to_spec() == ISSUE_FORM
    assert pruneplug.make_schedule({"name": "milestones", "milestones": [[10, 0.5], [20, 0.7]]}) == Milestones(
        milestones=((10, 0.5), (20, 0.7))
    )
    assert pruneplug.make_schedule("one_shot", start=7, final=0.5) == OneShot(start=7, final=0.5)


def test_an_unknown_name_lists_close_matches(registry: pruneplug.Registry) -> None:
    with pytest.raises(pruneplug.ScheduleNotFoundError, match=r"no schedule named 'cubc'. Did you mean 'cubic'\?"):
        pruneplug.make_schedule("cubc", end=5)
    with pytest.raises(pruneplug.ScheduleNotFoundError, match=r"Registered schedules: constant, cubic, exponential"):
        pruneplug.make_schedule({"name": "lnear", "end": 5})
    with pytest.raises(pruneplug.ScheduleNotFoundError, match=r"no schedule named '3'.*a mapping with 'name'"):
        pruneplug.make_schedule(3)  # type: ignore[arg-type]
    with pytest.raises(pruneplug.ScheduleNotFoundError, match=r"no schedule named \"\['cubic'\]\""):
        pruneplug.make_schedule({"name": ["cubic"]})


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: pruneplug.make_schedule({"final": 0.9, "end": 5}), r"names it under 'name'.*got keys 'final', 'end'"),
        (lambda: pruneplug.make_schedule({"name": "cubic", "end": 5}, every=2), r"schedule 'cubic': parameters"),
        (lambda: pruneplug.make_schedule(Cubic(end=5), every=2), r"schedule 'cubic': a schedule is already made"),
        (lambda: pruneplug.make_schedule({**ISSUE_FORM, "every": 0}), r"schedule 'cubic': invalid parameters: every"),
        (lambda: pruneplug.make_schedule("linear", end=3, start=4), r"schedule 'linear': .*end=3 is before start=4"),
    ],
)
def test_what_cannot_be_made_raises_naming_the_schedule(registry: pruneplug.Registry, call: Any, message: str) -> None:
    with pytest.raises(pruneplug.InvalidScheduleError, match=message):
        call()


class Stairs(pruneplug.Schedule):
    """Up in ``flights`` equal stairs from initial to final."""

    name: ClassVar[str] = "stairs"
    flights: int = 2

    def sparsity(self, step: int, initial: float, final: float) -> float:
        flight = int(self.progress(step) * self.flights)
        return initial + (final - initial) * flight / self.flights


class _StairsPlugin:
    @staticmethod
    @hookimpl
    def pruneplug_add_schedules() -> list[type[pruneplug.Schedule]]:
        return [Stairs]


def test_a_plugins_schedule_is_made_by_name_and_described_by_the_schema() -> None:
    registry = pruneplug.Registry(load_entry_points=False)
    registry.plugin_manager.register(_StairsPlugin(), name="stairs-plugin")
    with pruneplug.use_registry(registry):
        stairs = pruneplug.make_schedule({"name": "stairs", "final": 0.8, "end": 100, "flights": 4})
        assert [stairs.at(step) for step in (0, 24, 25, 50, 99, 100)] == pytest.approx([0.0, 0.0, 0.2, 0.4, 0.6, 0.8])
        schema = schedule_schema()
    assert {p.name: p.schedules for p in registry.plugins()}["stairs-plugin"] == ["stairs"]
    variant = next(v for v in schema["oneOf"] if v["title"] == "stairs")
    assert variant["properties"]["flights"] == {"default": 2, "title": "Flights", "type": "integer"}
    jsonschema.validate({"name": "stairs", "end": 10, "flights": 3}, schema)


def test_the_schema_accepts_every_mapping_form_and_rejects_what_validation_rejects(
    registry: pruneplug.Registry,
) -> None:
    schema = schedule_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert sorted(v["properties"]["name"]["const"] for v in schema["oneOf"]) == registry.schedule_names()
    good = [
        ISSUE_FORM,
        {"name": "linear", "end": 5},
        {"name": "exponential", "initial": 0.5, "final": 0.9, "end": 5, "every": 2},
        {"name": "milestones", "milestones": [[10, 0.5], [20, 0.7]]},
        {"name": "constant", "final": 0.5},
        {"name": "one_shot", "start": 3},
    ]
    for spec in good:
        jsonschema.validate(spec, schema)
        assert pruneplug.make_schedule(spec).to_spec()["name"] == spec["name"]
    bad = [
        {**ISSUE_FORM, "every": 0},
        {**ISSUE_FORM, "final": 1.0},
        {"name": "cubic"},
        {"name": "one_shot", "start": 3, "end": 5},
        {"name": "milestones", "milestones": [[10, 1.5]]},
        {"name": "nothing", "end": 5},
    ]
    for spec in bad:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(spec, schema)
        with pytest.raises((pruneplug.InvalidScheduleError, pruneplug.ScheduleNotFoundError)):
            pruneplug.make_schedule(spec)
