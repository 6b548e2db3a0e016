"""Plan files: TOML, YAML and JSON in, and back out, with the same meaning.

The three formats map onto the same data, so a plan means the same whatever
it is written in: an int stays a count and a float a fraction (``1`` vs
``1.0``), and writing a plan then reading it back gives an equal plan.
Parsing uses the standard parsers (:mod:`tomllib` or ``tomli``, PyYAML's safe
loader, :mod:`json`); a key given twice is an error in all three (TOML's
parser refuses it, and the YAML and JSON readers here do too), so a
duplicated rule field cannot silently override another.

YAML needs PyYAML and writing TOML needs ``tomli-w`` (the ``plans`` extra);
without them the error says what to install.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from ._errors import PlanError
from ._model import PLAN_VERSION, Plan, parse_plan

__all__ = ["Format", "FORMATS", "format_for", "loads_plan", "load_plan", "dumps_plan", "dump_plan", "plan_data"]

Format = Literal["toml", "yaml", "json"]
FORMATS: tuple[Format, ...] = ("toml", "yaml", "json")
_SUFFIXES: dict[str, Format] = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}
_EXTRA = "pip install 'pruneplug[plans]'"


def format_for(path: str | os.PathLike[str]) -> Format:
    """The format of a plan file, from its suffix (``.toml``, ``.yaml``/``.yml``, ``.json``)."""
    suffix = Path(path).suffix.lower()
    try:
        return _SUFFIXES[suffix]
    except KeyError:
        raise PlanError(
            f"cannot tell the plan format from the suffix {suffix or '(none)'!r}; use .toml, .yaml, .yml or .json",
            source=str(path),
        ) from None


# --- reading -------------------------------------------------------------------------------


def _read_toml(text: str) -> object:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]
        except ImportError as error:
            raise PlanError(f"reading TOML on Python 3.10 needs tomli: {_EXTRA}") from error
    try:
        return tomllib.loads(text)
    except ValueError as error:  # TOMLDecodeError, or an int too long to convert
        raise PlanError(f"not valid TOML: {error}") from None


def _yaml() -> Any:
    try:
        import yaml  # type: ignore[import-untyped,unused-ignore]
    except ImportError as error:
        raise PlanError(f"YAML plans need PyYAML: {_EXTRA}") from error
    return yaml


def _read_yaml(text: str) -> object:
    yaml = _yaml()

    class UniqueKeyLoader(yaml.SafeLoader):  # type: ignore[misc,name-defined]
        """PyYAML's safe loader, refusing a key given twice in one mapping."""

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[object] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # '<<: *base' merges; keys given after it override on purpose
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: let PyYAML report it
                    duplicate = False
                if duplicate:
                    line = key_node.start_mark.line + 1
                    raise PlanError(f"the key {key!r} is given twice (line {line})")
            return super().construct_mapping(node, deep=deep)

    # YAML 1.2 floats (5e-1, 1.0e2, 1E3): PyYAML follows YAML 1.1 and reads them as strings, while
    # TOML and JSON read them as numbers. A plan means the same in every format.
    UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789."))
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)
    except PlanError:
        raise
    except yaml.MarkedYAMLError as error:
        raise PlanError(f"not valid YAML: {_yaml_problem(error)}") from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as error:  # ValueError: e.g. a date 2024-13-01
        raise PlanError(f"not valid YAML: {' '.join(str(error).split())}") from None


_YAML12_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)


def _yaml_problem(error: Any) -> str:
    """PyYAML's multi-line message as one line: the problem and where (line and column, 1-based)."""
    mark = error.problem_mark
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    problem = error.problem or error.context or "cannot parse"
    if error.context and error.problem:
        problem = f"{error.context}: {error.problem}"
    return f"{' '.join(problem.split())}{where}"


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise PlanError(f"the key {key!r} is given twice")
        out[key] = value
    return out


def _read_json(text: str) -> object:
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs)
    except PlanError:
        raise
    except ValueError as error:  # JSONDecodeError, or an int too long to convert
        raise PlanError(f"not valid JSON: {error}") from None


_READERS: dict[Format, Callable[[str], object]] = {"toml": _read_toml, "yaml": _read_yaml, "json": _read_json}


def _check_format(format: str, source: str | None) -> Format:
    if format not in _READERS:
        raise PlanError(f"unknown plan format {format!r}; use one of {', '.join(FORMATS)}", source=source)
    return format  # type: ignore[return-value]


def loads_plan(text: str, format: str, *, source: str | None = None) -> Plan:
    """Parse and validate a plan written in ``format`` (``"toml"``, ``"yaml"`` or ``"json"``).

    Raises :class:`PlanError` naming ``source``, the rule and the field.
    """
    fmt = _check_format(format, source)
    if not isinstance(text, str):
        raise PlanError(f"plan text must be a str, got {type(text).__name__}", source=source)
    try:
        data = _READERS[fmt](text)
    except PlanError as error:
        raise error.locate(source=source) from error.__cause__
    except RecursionError:
        raise PlanError(f"not valid {fmt.upper()}: nested too deeply", source=source) from None
    return parse_plan(data, source=source)


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """Read and validate a plan file; the format comes from its suffix.

    Raises :class:`PlanError` (naming the file, rule and field) for anything
    wrong with it, a file that cannot be read included.
    """
    fmt = format_for(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the plan
    except (OSError, UnicodeDecodeError) as error:
        raise PlanError(f"cannot read the plan: {error}", source=str(path)) from None
    return loads_plan(text, fmt, source=str(path))


# --- writing -------------------------------------------------------------------------------


def _plain(value: object) -> object:
    """Tuples as lists, recursively (what every writer understands)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def plan_data(plan: Plan) -> dict[str, Any]:
    """The plan as plain data, defaults left out (what the files hold)."""
    data = plan.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True)
    data = {"version": PLAN_VERSION, **data}
    return _plain(data)  # type: ignore[return-value]


def _find(value: object, test: Callable[[object], bool], path: str = "") -> str | None:
    if test(value):
        return path or "(plan)"
    if isinstance(value, dict):
        items: list[tuple[str, object]] = [(f"{path}.{key}" if path else str(key), item) for key, item in value.items()]
    elif isinstance(value, list):
        items = [(f"{path}[{index}]", item) for index, item in enumerate(value)]
    else:
        return None
    for where, item in items:
        found = _find(item, test, where)
        if found is not None:
            return found
    return None


def _write_toml(data: dict[str, Any]) -> str:
    try:
        import tomli_w
    except ImportError as error:
        raise PlanError(f"writing TOML plans needs tomli-w: {_EXTRA}") from error
    where = _find(data, lambda v: v is None)
    if where is not None:
        raise PlanError(f"TOML has no null; {where} is None (write YAML or JSON, or leave the value out)")
    try:
        return tomli_w.dumps(data)
    except TypeError as error:
        raise PlanError(f"cannot write this plan as TOML: {error}") from None


def _write_yaml(data: dict[str, Any]) -> str:
    yaml = _yaml()
    try:

        class Dumper(yaml.SafeDumper):  # type: ignore[misc,name-defined]
            """Quotes every string the reader would take for a YAML 1.2 float ('5e-1')."""

        Dumper.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789."))
        text: str = yaml.dump(data, Dumper=Dumper, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError as error:
        raise PlanError(f"cannot write this plan as YAML: {error}") from None
    return text


def _write_json(data: dict[str, Any]) -> str:
    where = _find(data, lambda v: isinstance(v, float) and not math.isfinite(v))
    if where is not None:
        raise PlanError(f"JSON has no infinity or NaN; {where} is not finite (write 'inf' as a string, or TOML/YAML)")
    try:
        return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    except (TypeError, ValueError) as error:
        raise PlanError(f"cannot write this plan as JSON: {error}") from None


_WRITERS: dict[Format, Callable[[dict[str, Any]], str]] = {
    "toml": _write_toml,
    "yaml": _write_yaml,
    "json": _write_json,
}


def dumps_plan(plan: Plan, format: str) -> str:
    """The plan written in ``format`` (``"toml"``, ``"yaml"`` or ``"json"``); reading it back gives an equal plan."""
    fmt = _check_format(format, None)
    return _WRITERS[fmt](plan_data(plan))


def dump_plan(plan: Plan, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write the plan to ``path`` in the format its suffix names; returns the path.

    Refuses to replace an existing file unless ``overwrite``.
    """
    target = Path(path)
    text = dumps_plan(plan, format_for(target))
    try:
        with open(target, "w" if overwrite else "x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise PlanError("the file exists; pass overwrite=True to replace it", source=str(target)) from None
    except OSError as error:
        raise PlanError(f"cannot write the plan: {error}", source=str(target)) from None
    return target
