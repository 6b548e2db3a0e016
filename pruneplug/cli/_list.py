"""``pruneplug list``: every strategy, its parameters and provider, and every plugin's status."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table

from .._registry import ParameterInfo, get_registry
from ._app import command, console


def _parameter_text(parameter: ParameterInfo) -> str:
    text = f"{parameter.name}: {parameter.type}"
    return text if parameter.required else f"{text} = {parameter.default!r}"


def strategies_payload() -> dict[str, Any]:
    """What ``pruneplug list --json`` prints: strategies, conflicts, importance scores and plugins."""
    registry = get_registry()
    strategies = [
        {
            "name": spec.name,
            "kind": spec.kind,
            "summary": spec.summary,
            "parameters": [
                {
                    "name": p.name,
                    "type": p.type,
                    "required": p.required,
                    "default": None if p.required else repr(p.default) if not _jsonable(p.default) else p.default,
                    "description": p.description,
                }
                for p in spec.parameters()
            ],
            "provider": spec.provider,
            "distribution": spec.distribution,
            "version": spec.version,
            "status": "ok",
        }
        for spec in registry.specs()
    ]
    conflicts = [
        {"name": name, "providers": [s.provider_label for s in specs], "status": "conflict"}
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
    plugins = [
        {
            "name": p.name,
            "distribution": p.distribution,
            "version": p.version,
            "entry_point": p.entry_point,
            "status": p.status,
            "error": p.error,
            "strategies": sorted(p.strategies),
            "scores": sorted(p.scores),
        }
        for p in registry.plugins()
    ]
    return {"strategies": strategies, "conflicts": conflicts, "scores": scores, "plugins": plugins}


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
    table = Table(title="Strategies", title_justify="left")
    for column in ("name", "kind", "parameters", "provider", "status"):
        table.add_column(column)
    registry = get_registry()
    for spec in registry.specs():
        parameters = "\n".join(_parameter_text(p) for p in spec.parameters()) or "-"
        table.add_row(spec.name, spec.kind, parameters, spec.provider_label, "ok")
    for conflict in payload["conflicts"]:
        table.add_row(conflict["name"], "?", "-", "\n".join(conflict["providers"]), "conflict")
    console.print(table)
    scores = Table(title="Importance scores (for scored_unstructured / scored_structured)", title_justify="left")
    for column in ("score", "summary", "provider"):
        scores.add_column(column)
    for score in payload["scores"]:
        scores.add_row(score["name"], score["summary"], score["provider"] or "-")
    console.print(scores)
    plugins = Table(title="Plugins", title_justify="left")
    for column in ("plugin", "distribution", "status", "strategies / problem"):
        plugins.add_column(column)
    for plugin in payload["plugins"]:
        dist = f"{plugin['distribution']} {plugin['version'] or ''}".strip() if plugin["distribution"] else "-"
        # A broken plugin may still provide some strategies (only what failed is left out): show both.
        provided = ", ".join(plugin["strategies"] + plugin["scores"])
        detail = "\n".join(part for part in (provided, plugin["error"]) if part) or "-"
        plugins.add_row(plugin["name"], dist, plugin["status"], detail)
    console.print(plugins)
