"""Pruning schedules by name: :func:`make_schedule`, and the JSON Schema of a schedule's mapping form.

A schedule is given as a registered name with its parameters
(``make_schedule("cubic", final=0.9, end=1000)``), as a mapping with the
name under ``"name"`` (``{"name": "cubic", "final": 0.9, "end": 1000}``, the
form files and :meth:`~pruneplug.Schedule.to_spec` use), or as a
:class:`~pruneplug.Schedule` already made. Names are looked up in the default
registry (:func:`pruneplug.get_registry`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidScheduleError, ScheduleNotFoundError
from ..registry import Registry, get_registry
from ..schedules.base import Schedule

__all__ = ["ScheduleLike", "make_schedule", "schedule_schema"]

ScheduleLike = str | Mapping[str, Any] | Schedule
"""What :func:`make_schedule` accepts: a registered name, a mapping with ``"name"``, or a schedule."""

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def make_schedule(spec: ScheduleLike, /, **params: Any) -> Schedule:
    """A pruning schedule from a registered name and its parameters, a mapping, or a schedule.

    >>> make_schedule({"name": "cubic", "initial": 0.0, "final": 0.9, "start": 0, "end": 1000, "every": 10}).at(500)
    0.7875
    >>> make_schedule("linear", final=0.5, end=10).at(4)
    0.2

    Args:
        spec: a registered schedule name (``"cubic"``); a mapping with the
            name under ``"name"`` and the parameters beside it; or a
            :class:`~pruneplug.Schedule`, returned as it is (schedules are frozen).
        params: the parameters, when ``spec`` is a name.

    Raises:
        ScheduleNotFoundError: no schedule of that name is registered (the
            message lists close matches), or ``spec`` is none of the above.
        InvalidScheduleError: the parameters are invalid (each problem
            named), a mapping has no ``"name"``, or ``params`` come with a
            mapping or a schedule.
        StrategyConflictError: two plugins claim the name.
    """
    if isinstance(spec, Schedule):
        if params:
            raise InvalidScheduleError(
                f"a schedule is already made; parameters ({', '.join(params)}) go with a name or in a mapping",
                schedule=spec.name,
            )
        return spec
    if isinstance(spec, str):
        return get_registry().get_schedule(spec)(**params)
    if isinstance(spec, Mapping):
        if "name" not in spec:
            raise InvalidScheduleError(
                f"a schedule given as a mapping names it under 'name' ({{'name': 'cubic', ...}}); got keys "
                f"{', '.join(repr(key) for key in spec) or 'none'}"
            )
        name = spec["name"]
        if params:
            raise InvalidScheduleError(
                f"parameters ({', '.join(params)}) go in the mapping, not beside it",
                schedule=name if isinstance(name, str) else None,
            )
        schedule = get_registry().get_schedule(name)
        return schedule(**{key: value for key, value in spec.items() if key != "name"})
    raise ScheduleNotFoundError(
        repr(spec),
        get_registry().schedule_names(),
        extra=" A schedule is a registered name, a mapping with 'name', or a pruneplug.Schedule.",
    )


def schedule_schema(registry: Registry | None = None) -> dict[str, Any]:
    """The JSON Schema of a schedule's mapping form, one variant per schedule of ``registry`` (default: the current).

    Each variant is an object whose ``name`` is the schedule's and whose
    other properties are its parameters (as its pydantic model renders
    them; the fields a schedule sets itself are left out). A plugin's
    schedule whose model pydantic cannot render accepts any object with its name.
    """
    registry = registry or get_registry()
    variants = []
    definitions: dict[str, Any] = {}
    for name in registry.schedule_names():
        cls = registry.get_schedule(name)
        summary = (inspect.getdoc(cls) or "").strip().splitlines()
        title = {"const": name, "description": summary[0] if summary else name}
        try:
            schema = cls.model_json_schema()
        except Exception:  # a plugin's model pydantic cannot render: accept any object with the name
            variants.append({"type": "object", "title": name, "properties": {"name": title}, "required": ["name"]})
            continue
        definitions.update(schema.pop("$defs", {}))
        schema["title"] = name
        schema["properties"] = {"name": title, **schema.get("properties", {})}
        schema["required"] = ["name", *schema.get("required", [])]
        variants.append(schema)
    out: dict[str, Any] = {
        "$schema": SCHEMA_DIALECT,
        "title": "pruneplug schedule",
        "description": "A pruning schedule: its registered name under 'name' and its parameters beside it.",
        "oneOf": variants,
    }
    if definitions:
        out["$defs"] = definitions
    return out
