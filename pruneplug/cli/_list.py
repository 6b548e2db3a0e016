"""``pruneplug list``: every strategy, its parameters and provider, and every plugin's status.

Deprecated strategy names are not strategies of their own: they are listed
apart, each with the name to use instead.

The tables never cut a name (see :class:`~pruneplug.io.tables.FittedTable`);
under the strategies, a legend says what each kind means -- above all that
kind ``global`` (torch's term for a mask computed from the whole tensor)
is not what global pruning (``scope = "global"``) needs.
"""

from __future__ import annotations

import inspect
import json
import textwrap
from typing import Any

import typer
from rich.text import Text

from ..io.tables import FittedTable
from ..registry import KIND_DESCRIPTIONS, KINDS, ParameterInfo, get_registry, model_parameters
from ..schedules.base import Schedule
from ._app import command, console


def _parameter_text(parameter: ParameterInfo) -> str:
    text = f"{parameter.name}: {parameter.type}"
    return text if parameter.required else f"{text} = {parameter.default!r}"


def _parameter_json(parameter: ParameterInfo) -> dict[str, Any]:
    return {
        "name": parameter.name,
        "type": parameter.type,
        "required": parameter.required,
        "default": None
        if parameter.required
        else repr(parameter.default)
        if not _jsonable(parameter.default)
        else parameter.default,
        "description": parameter.description,
    }


def strategies_payload() -> dict[str, Any]:
    """What ``pruneplug list --json`` prints: strategies, conflicts, deprecated names, scores, statistics,
    schedules, plugins and kinds.

    ``kinds`` says what each strategy kind means, and whether global pruning
    (``scope = "global"``, ``pruneplug.prune_global``) can use it.
    """
    registry = get_registry()
    strategies = [
        {
            "name": spec.name,
            "kind": spec.kind,
            "summary": spec.summary,
            "parameters": [_parameter_json(p) for p in spec.parameters()],
            "provider": spec.provider,
            "distribution": spec.distribution,
            "version": spec.version,
            "status": "ok",
        }
        for spec in registry.specs()
    ]
    conflicts = [
        {
            "name": name,
            "providers": [
                s.provider_label if s.name == name else f"{s.provider_label} (deprecated name for {s.name!r})"
                for s in specs
            ],
            "status": "conflict",
        }
        for name, specs in sorted(registry.conflicts().items())
    ]
    scores = [
        {
            "name": name,
            "summary": registry.get_score(name).summary,
            "elementwise": registry.get_score(name).elementwise,
            "provider": next((p.label for p in registry.plugins() if name in p.scores), None),
        }
        for name in registry.score_names()
    ]
    statistics = [
        {
            "name": name,
            "summary": registry.get_statistic(name).summary,
            "provider": next((p.label for p in registry.plugins() if name in p.statistics), None),
        }
        for name in registry.statistic_names()
    ]
    schedules = [
        {
            "name": name,
            "summary": _summary(registry.get_schedule(name)),
            "parameters": [_parameter_json(p) for p in _schedule_parameters(registry.get_schedule(name))],
            "provider": next((p.label for p in registry.plugins() if name in p.schedules), None),
        }
        for name in registry.schedule_names()
    ]
    plugins = [
        {
            "name": p.name,
            "distribution": p.distribution,
            "version": p.version,
            "entry_point": p.entry_point,
            "status": p.status,
            "error": p.error,
            "blocked_by": p.blocked_by,
            "strategies": sorted(p.strategies),
            "scores": sorted(p.scores),
            "statistics": sorted(p.statistics),
            "schedules": sorted(p.schedules),
        }
        for p in registry.plugins()
    ]
    kinds = [
        {"name": kind, "description": KIND_DESCRIPTIONS[kind], "global_pruning": kind == "unstructured"}
        for kind in KINDS
    ]
    deprecated = [
        {"name": old, "use": spec.name, "provider": spec.provider_label}
        for old, spec in registry.deprecated_names().items()
    ]
    return {
        "strategies": strategies,
        "conflicts": conflicts,
        "deprecated_names": deprecated,
        "scores": scores,
        "statistics": statistics,
        "schedules": schedules,
        "plugins": plugins,
        "kinds": kinds,
    }


def _summary(cls: type) -> str:
    """The first line of a class's docstring."""
    lines = (inspect.getdoc(cls) or "").strip().splitlines()
    return lines[0] if lines else ""


def _schedule_parameters(cls: type[Schedule]) -> list[ParameterInfo]:
    """A schedule's parameters: its fields, but those it sets itself."""
    return model_parameters(cls, exclude=cls.not_taken)


def _jsonable(value: object) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


@command("list")
def list_command(
    as_json: bool = typer.Option(False, "--json", help="Print JSON for machines instead of tables."),
) -> None:
    """List the registered strategies (built-ins and plugins) and the plugins' status."""
    payload = strategies_payload()
    if as_json:
        console.print_json(json.dumps(payload))
        return
    registry = get_registry()
    rows: list[tuple[str, ...]] = [
        (
            spec.name,
            spec.kind,
            "\n".join(_parameter_text(p) for p in spec.parameters()) or "-",
            spec.provider_label,
            "ok",
        )
        for spec in registry.specs()
    ]
    rows += [(c["name"], "?", "-", "\n".join(c["providers"]), "conflict") for c in payload["conflicts"]]
    columns: tuple[str, ...] = ("name", "kind", "parameters", "provider", "status")
    if not payload["conflicts"]:  # every row would say "ok": the column only takes room from the names
        columns, rows = columns[:-1], [row[:-1] for row in rows]
    console.print(FittedTable("Strategies", columns, rows))
    console.print(Text(_kinds_legend(console.width), no_wrap=True, overflow="ignore"))
    if payload["deprecated_names"]:  # old names still accepted, with a warning; shown so that users move on
        renamed = [(d["name"], d["use"], d["provider"]) for d in payload["deprecated_names"]]
        console.print(FittedTable("Deprecated names (still accepted)", ("name", "use", "provider"), renamed))
    scores = [(s["name"], s["summary"], s["provider"] or "-") for s in payload["scores"]]
    title = "Importance scores (for scored_unstructured / scored_structured)"
    console.print(FittedTable(title, ("score", "summary", "provider"), scores))
    statistics = [(s["name"], s["summary"], s["provider"] or "-") for s in payload["statistics"]]
    title = "Calibration statistics (for data-aware strategies: pruneplug.prune_calibrated)"
    console.print(FittedTable(title, ("statistic", "summary", "provider"), statistics))
    schedules = [
        (
            s["name"],
            "\n".join(_parameter_text(p) for p in _schedule_parameters(registry.get_schedule(s["name"]))) or "-",
            s["summary"],
            s["provider"] or "-",
        )
        for s in payload["schedules"]
    ]
    title = "Pruning schedules (the target sparsity over training steps: pruneplug.make_schedule)"
    console.print(FittedTable(title, ("schedule", "parameters", "summary", "provider"), schedules))
    plugins = []
    for plugin in payload["plugins"]:
        dist = f"{plugin['distribution']} {plugin['version'] or ''}".strip() if plugin["distribution"] else "-"
        # A broken plugin may still provide some strategies (only what failed is left out): show both.
        provided = ", ".join(plugin["strategies"] + plugin["scores"] + plugin["statistics"] + plugin["schedules"])
        blocked = f"blocked by {plugin['blocked_by']}" if plugin["blocked_by"] else ""
        detail = "\n".join(part for part in (provided, plugin["error"], blocked) if part) or "-"
        plugins.append((plugin["name"], dist, plugin["status"], detail))
    console.print(FittedTable("Plugins", ("plugin", "distribution", "status", "strategies / problem"), plugins))


def _kinds_legend(width: int) -> str:
    """What each kind means, wrapped to ``width`` between words."""
    lines = []
    for kind in KINDS:
        lines += textwrap.wrap(
            f"{kind}: {KIND_DESCRIPTIONS[kind]}.",
            width=max(width, 20),
            initial_indent="  ",
            subsequent_indent="      ",
            break_long_words=False,
            break_on_hyphens=False,
        )
    return "\n".join(["Kinds:", *lines])
