"""MkDocs hook: the strategy and plan-file reference pages, rendered from the code at build time.

``mkdocs.yml`` lists this file under ``hooks:``. On every build it adds
three files that exist nowhere on disk, so they can never drift from the
code they describe:

* ``reference/strategies.md`` -- every built-in strategy, its kind and its
  parameters, read from the registry and each strategy's pydantic model
  (the same source as ``pruneplug list``), and the importance scores;
* ``reference/plan-files.md`` -- the fields of a plan file, read from the
  JSON Schema that ``pruneplug schema`` prints;
* ``reference/plan.schema.json`` -- that schema itself, to download.

The pages describe pruneplug as shipped: a registry without entry points,
so plugins installed where the site is built do not leak into it.

The renderers are plain functions of a registry, importable without MkDocs
(the test suite calls them). The pages contain no ``python`` code blocks:
every runnable example lives in a page on disk, where Sybil runs it.
"""

from __future__ import annotations

import inspect
import json
import re
import textwrap
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pruneplug import Registry
from pruneplug.registry import StrategySpec

if TYPE_CHECKING:
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.files import Files

__all__ = ["STRATEGIES_PAGE", "PLANS_PAGE", "SCHEMA_FILE", "render_strategies", "render_plan_files", "on_files"]

STRATEGIES_PAGE = "reference/strategies.md"
PLANS_PAGE = "reference/plan-files.md"
SCHEMA_FILE = "reference/plan.schema.json"

_GENERATED = (
    "*This page is generated from the code when the site is built (`docs/hooks/reference.py`); "
    "edit the code, not the page.*"
)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (pipes escaped, no line breaks).

    >>> _cell("int | float\\nsecond line")
    'int \\\\| float second line'
    """
    return " ".join(text.split()).replace("|", "\\|")


_ROLE = re.compile(r":(?:[a-z]+:)?[a-z]+:`~?([^`]+)`")


_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")


def _plain(text: str) -> str:
    """Plain text (a schema description) safe in Markdown: ``*`` and ``<`` escaped outside code spans.

    >>> _plain("globs: 'conv*', `a*b` and x<y")
    "globs: 'conv\\\\*', `a*b` and x&lt;y"
    """
    out, last = [], 0
    for span in _CODE_SPAN.finditer(text):
        out += [text[last : span.start()].replace("*", "\\*").replace("<", "&lt;"), span.group(0)]
        last = span.end()
    out.append(text[last:].replace("*", "\\*").replace("<", "&lt;"))
    return "".join(out)


def _markdown(docstring_text: str) -> str:
    """Docstring text as Markdown: Sphinx roles (``:func:`torch.norm` ``) become code spans.

    >>> _markdown("as :func:`torch.norm` and :class:`~torch.Generator`")
    'as `torch.norm` and `torch.Generator`'
    """
    return _ROLE.sub(lambda match: f"`{match.group(1)}`", docstring_text)


def _bounds(schema: dict[str, Any]) -> str:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if low is not None and high is not None:
        return f" in [{low}, {high}]"
    if low is not None:
        return f" ≥ {low}" if "minimum" in schema else f" > {low}"
    if high is not None:
        return f" ≤ {high}" if "maximum" in schema else f" < {high}"
    if schema.get("minLength", 0) > 1:
        return f" (length ≥ {schema['minLength']})"
    if schema.get("minItems", 0) > 1:
        return f" (≥ {schema['minItems']} items)"
    return ""


_TYPE_NAMES = {"integer": "int", "number": "float", "string": "str", "boolean": "bool", "null": "None"}


def schema_type(schema: dict[str, Any], refs: Mapping[str, str] | None = None) -> str:
    """A JSON Schema as a short type: ``int ≥ 0 | float in [0.0, 1.0]``, ``list of str``, ``'a' | 'b'``.

    ``refs`` renames definitions (``{"Rule_l1_unstructured": "rule", ...}``);
    a union whose members render alike is shown once.

    >>> schema_type({"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]})
    'int ≥ 0 | None'
    >>> schema_type({"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}})
    'non-empty list of non-empty str'
    """
    refs = refs or {}
    if "anyOf" in schema or "oneOf" in schema:
        options = [schema_type(option, refs) for option in schema.get("anyOf", schema.get("oneOf", []))]
        return " | ".join(dict.fromkeys(options))
    if "const" in schema:
        return repr(schema["const"])
    if "enum" in schema:
        return " | ".join(repr(value) for value in schema["enum"])
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return refs.get(name, name)
    kind = schema.get("type")
    if kind == "array":
        items = schema_type(schema.get("items", {}), refs)
        return ("non-empty " if schema.get("minItems") == 1 else "") + f"list of {items}" + _bounds(schema)
    if kind == "object":
        return "table (mapping)"
    if isinstance(kind, list):
        return " | ".join(_TYPE_NAMES.get(k, str(k)) for k in kind)
    text = (_TYPE_NAMES.get(str(kind), str(kind)) if kind else "any") + _bounds(schema)
    return f"non-empty {text}" if schema.get("minLength") == 1 else text


def _branch_descriptions(schema: dict[str, Any]) -> list[str]:
    """``int ≥ 0: number of entries...`` for each described branch of an ``anyOf``."""
    return [
        f"{schema_type(option)}: {_plain(option['description'])}"
        for option in schema.get("anyOf", [])
        if option.get("description")
    ]


def _python_default(value: Any) -> str:
    return f"`{value!r}`"


def _file_default(value: Any) -> str:
    """A default as written in a plan file; ``None`` means the field is simply left out."""
    if value is None:
        return "not set"
    return f"`{json.dumps(value)}`" if _jsonable(value) else f"`{value!r}`"


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _parameter_rows(spec: StrategySpec) -> list[str]:
    try:
        properties = spec.params_model.model_json_schema().get("properties", {})
    except Exception:  # a plugin model pydantic cannot render: fall back to the annotations
        properties = {}
    rows = []
    for parameter in spec.parameters():
        prop = properties.get(parameter.name)
        kind = schema_type(prop) if prop else parameter.type
        notes = [_plain(parameter.description)] if parameter.description else []
        if prop is not None:
            notes += _branch_descriptions(prop)
        else:
            notes.append("only from Python (a plan file cannot hold it)")
        default = "required" if parameter.required else _python_default(parameter.default)
        rows.append(f"| `{parameter.name}` | {_cell(kind)} | {default} | {_cell(_markdown('; '.join(notes)))} |")
    return rows


def _docstring_body(spec: StrategySpec) -> str:
    """The class docstring after its first line (the summary), as Markdown."""
    lines = (spec.strategy_class.__doc__ or "").strip().splitlines()[1:]
    return _markdown(textwrap.dedent("\n".join(lines)).strip())


def render_strategies(registry: Registry) -> str:
    """The Markdown of the strategies page for ``registry``'s strategies and importance scores.

    >>> page = render_strategies(Registry(load_entry_points=False))
    >>> "## `ln_structured` {#ln_structured}" in page and "| `n` |" in page
    True
    """
    specs = registry.specs()
    lines = [
        "# Strategies",
        "",
        _GENERATED,
        "",
        "Every strategy that ships with pruneplug, with the parameters its pydantic model accepts. "
        'Pass them as keyword arguments (`pruneplug.prune(module, "weight", "ln_structured", '
        "amount=0.5, n=2, dim=0)`) or as a rule's `params` in a [plan file](plan-files.md); they are "
        "validated before anything is touched. `pruneplug list` shows the same for whatever is "
        "installed, [plugins](../plugins.md) included.",
        "",
        "An `amount` is a count when it is an int and a fraction of what is still unpruned when it is "
        "a float. *Kind* is `unstructured` (single entries; usable by global pruning), `structured` "
        "(whole slices along `dim`) or `global` (the mask is computed over the whole tensor at once).",
        "",
        "| strategy | kind | what it does |",
        "| --- | --- | --- |",
    ]
    lines += [f"| [`{s.name}`](#{s.name}) | {s.kind} | {_cell(_markdown(s.summary))} |" for s in specs]
    for spec in specs:
        lines += ["", f"## `{spec.name}` {{#{spec.name}}}", "", _markdown(spec.summary)]
        body = _docstring_body(spec)
        if body:
            lines += ["", body]
        module = spec.strategy_class.__module__
        public_module = "pruneplug.strategies" if module.startswith("pruneplug.strategies") else module
        lines += [
            "",
            f"Kind: **{spec.kind}** · class `{public_module}.{spec.strategy_class.__name__}` · "
            f"ranks by importance scores: **{'yes' if spec.uses_importance_scores else 'no'}**",
            "",
        ]
        rows = _parameter_rows(spec)
        if rows:
            lines += ["| parameter | type | default | notes |", "| --- | --- | --- | --- |", *rows]
        else:
            lines.append("No parameters.")
    lines += [
        "",
        "## Importance scores {#importance-scores}",
        "",
        "What `scored_unstructured` and `scored_structured` rank by (`score=...`); plugins add more "
        "through the `pruneplug_add_importance_scores` hook.",
        "",
        "| score | what it measures | element-wise |",
        "| --- | --- | --- |",
    ]
    for name in registry.score_names():
        score = registry.get_score(name)
        lines.append(f"| `{name}` | {_cell(score.summary)} | {'yes' if score.elementwise else 'no'} |")
    lines += [
        "",
        "## Calibration statistics {#calibration-statistics}",
        "",
        "What data-aware strategies read of the inputs their layers see on calibration data "
        "(`pruneplug.prune_calibrated` collects them); plugins add more through the "
        "`pruneplug_add_statistics` hook.",
        "",
        "| statistic | what it measures |",
        "| --- | --- |",
    ]
    lines += [f"| `{name}` | {_cell(registry.get_statistic(name).summary)} |" for name in registry.statistic_names()]
    lines += [
        "",
        "## Pruning schedules {#pruning-schedules}",
        "",
        "The target sparsity over training steps (`pruneplug.make_schedule`; formulas, parameters and "
        "examples in [Pruning schedules](../schedules.md)); plugins add more through the "
        "`pruneplug_add_schedules` hook.",
        "",
        "| schedule | what it does |",
        "| --- | --- |",
    ]
    for name in registry.schedule_names():
        doc = (inspect.getdoc(registry.get_schedule(name)) or "").strip().splitlines()
        lines.append(f"| `{name}` | {_cell(_markdown(doc[0] if doc else ''))} |")
    return "\n".join(lines) + "\n"


def _field_rows(
    properties: dict[str, Any], required: set[str], refs: Mapping[str, str], skip: tuple[str, ...] = ()
) -> list[str]:
    rows = []
    for name, prop in properties.items():
        if name in skip:
            continue
        default = "required" if name in required else _file_default(prop.get("default"))
        notes = "; ".join([_plain(prop.get("description", "")), *_branch_descriptions(prop)]).strip("; ")
        rows.append(f"| `{name}` | {_cell(schema_type(prop, refs))} | {default} | {_cell(notes)} |")
    return rows


def render_plan_files(registry: Registry) -> str:
    """The Markdown of the plan-file reference, from the JSON Schema of plans for ``registry``.

    >>> page = render_plan_files(Registry(load_entry_points=False))
    >>> "| `rules` |" in page and "| `scope` |" in page
    True
    """
    from pruneplug.plans import plan_schema

    schema = plan_schema(registry)
    defs: dict[str, Any] = schema.get("$defs", {})
    rule_defs = {
        name: definition
        for name, definition in defs.items()
        if "strategy" in definition.get("properties", {}) and "params" in definition.get("properties", {})
    }
    in_files = {str(d["properties"]["strategy"].get("const")): d for d in rule_defs.values()}
    refs = dict.fromkeys(rule_defs, "rule")
    lines = [
        "# Plan files",
        "",
        _GENERATED,
        "",
        "The fields of a [pruning plan](../plans.md) file (TOML, YAML or JSON), generated from the "
        "plan files' JSON Schema -- the schema `pruneplug schema` prints and editors complete from. "
        "Download it for pruneplug's built-in strategies: [plan.schema.json](plan.schema.json).",
        "",
        "## The plan",
        "",
        "| field | type | default | notes |",
        "| --- | --- | --- | --- |",
        *_field_rows(schema.get("properties", {}), set(schema.get("required", [])), refs),
    ]
    example = defs.get("ExampleInput")
    if example is not None:
        lines += [
            "",
            "## The example input",
            "",
            "`example_input` describes the one tensor the model is called with, for channel rules and "
            "compaction: `example_input = { shape = [1, 3, 224, 224] }`, or token ids "
            '`{ shape = [1, 128], dtype = "int64", high = 50257 }`.',
            "",
            "| field | type | default | notes |",
            "| --- | --- | --- | --- |",
            *_field_rows(example.get("properties", {}), set(example.get("required", [])), refs),
        ]
    calibration = defs.get("CalibrationSource")
    if calibration is not None:
        lines += [
            "",
            "## Calibration",
            "",
            "`calibration` names the Python code that gives the data of data-aware rules (`wanda`, "
            "`sparsegpt`, the `taylor` score with a loss): "
            '`calibration = { batches = "mypkg.data:calibration_batches" }`. Each such rule is applied '
            "through `pruneplug.prune_calibrated`, in order (see [calibration](../plans.md#calibration)).",
            "",
            "| field | type | default | notes |",
            "| --- | --- | --- | --- |",
            *_field_rows(calibration.get("properties", {}), set(calibration.get("required", [])), refs),
        ]
    if rule_defs:
        first = next(iter(rule_defs.values()))
        lines += [
            "",
            "## A rule",
            "",
            "Each entry of `rules` selects tensors, names a `strategy` and gives its `params`. A module is "
            "selected when it passes every filter that is given; then each of its parameters named in "
            "`tensors` is -- or, in a channel rule (`channels = true`), the channel groups of its outputs.",
            "",
            "| field | type | default | notes |",
            "| --- | --- | --- | --- |",
            "| `strategy` | str | required | A strategy from the table below. |",
            "| `params` | table (mapping) | depends on the strategy | The strategy's parameters, "
            "validated by its own model: see the table below. |",
            *_field_rows(
                first.get("properties", {}), set(first.get("required", [])), refs, skip=("strategy", "params")
            ),
        ]
    lines += [
        "",
        "## Strategies and their `params`",
        "",
        "| `strategy` | required `params` | all `params` |",
        "| --- | --- | --- |",
    ]
    for spec in registry.specs():
        definition = in_files.get(spec.name)
        if definition is None:
            continue
        fields = spec.params_model.model_fields
        required = [f"`{n}`" for n, info in fields.items() if info.is_required()]
        every = [
            f"`{n}`" for n in (definition["properties"]["params"].get("properties") or _params_of(defs, definition))
        ]
        lines.append(
            f"| [`{spec.name}`](strategies.md#{spec.name}) | {', '.join(required) or '-'} | {', '.join(every) or '-'} |"
        )
    left_out = [s.name for s in registry.specs() if s.name not in in_files]
    if left_out:
        lines += [
            "",
            "Not usable in a plan file, because a file cannot hold a required parameter (a tensor): "
            + ", ".join(f"[`{name}`](strategies.md#{name})" for name in left_out)
            + ".",
        ]
    return "\n".join(lines) + "\n"


def _params_of(defs: dict[str, Any], rule: dict[str, Any]) -> list[str]:
    """The parameter names of a rule variant whose ``params`` is a ``$ref`` to a model."""
    params = rule["properties"]["params"]
    ref = params.get("$ref") or next((o.get("$ref") for o in params.get("allOf", []) if "$ref" in o), None)
    if ref is None:
        return []
    return list(defs.get(str(ref).rsplit("/", 1)[-1], {}).get("properties", {}))


def render_schema(registry: Registry) -> str:
    """The JSON Schema of plan files for ``registry``, as downloaded from the site."""
    from pruneplug.plans import plan_schema

    return json.dumps(plan_schema(registry), indent=2, ensure_ascii=False) + "\n"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the generated reference pages to the site (MkDocs calls this once per build)."""
    from mkdocs.structure.files import File

    registry = Registry(load_entry_points=False)
    for path, content in (
        (STRATEGIES_PAGE, render_strategies(registry)),
        (PLANS_PAGE, render_plan_files(registry)),
        (SCHEMA_FILE, render_schema(registry)),
    ):
        files.append(File.generated(config, path, content=content))
    return files
