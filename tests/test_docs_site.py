"""The documentation site: ``mkdocs build --strict`` passes, and the reference matches the code.

The strategy and plan-file reference pages are rendered from the registry,
the pydantic models and the plan JSON Schema when the site is built
(``docs/hooks/reference.py``), so they cannot drift; these tests check the
renderers cover everything, and that the whole site builds with no broken
link and no warning. The hook reference in docs/plugins.md is written by
hand, so these tests hold it to ``pruneplug.hookspecs``: a section per hook,
showing the hook's signature as the code declares it.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType

import pluggy
import pytest

import pruneplug
from pruneplug import hookspecs

ROOT = Path(__file__).resolve().parents[1]


def _hook(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", ROOT / "docs" / "hooks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_strategies_page_lists_every_strategy_and_parameter() -> None:
    registry = pruneplug.Registry(load_entry_points=False)
    page = _hook("reference").render_strategies(registry)
    for spec in registry.specs():
        assert f"## `{spec.name}` {{#{spec.name}}}" in page
        for parameter in spec.parameters():
            assert f"| `{parameter.name}` |" in page.split(f"{{#{spec.name}}}")[1].split("\n## ")[0]
    for score in registry.score_names():
        assert f"| `{score}` |" in page
    for schedule in registry.schedule_names():
        assert f"| `{schedule}` |" in page.split("## Pruning schedules")[1]
    assert "```python" not in page  # runnable examples live on pages Sybil runs


def test_the_plan_files_page_follows_the_schema() -> None:
    from pruneplug.plans import plan_schema

    registry = pruneplug.Registry(load_entry_points=False)
    page = _hook("reference").render_plan_files(registry)
    schema = plan_schema(registry)
    for field in schema["properties"]:
        assert f"| `{field}` |" in page
    rule = next(d for name, d in schema["$defs"].items() if name.startswith("Rule_"))
    for field in rule["properties"]:
        assert f"| `{field}` |" in page
    example = page.split("## The example input")[1].split("\n## ")[0]
    for field in schema["$defs"]["ExampleInput"]["properties"]:
        assert f"| `{field}` |" in example
    for spec in registry.specs():
        assert f"[`{spec.name}`](strategies.md#{spec.name})" in page


def test_the_schedules_page_has_a_section_for_every_built_in_schedule_and_parameter() -> None:
    """docs/schedules.md is written by hand: each built-in schedule has a section naming what it takes."""
    registry = pruneplug.Registry(load_entry_points=False)
    sections = _sections((ROOT / "docs" / "schedules.md").read_text(encoding="utf-8"))
    page = (ROOT / "docs" / "schedules.md").read_text(encoding="utf-8")
    for name in registry.schedule_names():
        assert f"`{name}`" in sections, f"docs/schedules.md has no section `{name}`"
        assert f"| `{name}` |" in page, f"the table of docs/schedules.md lacks {name}"
        schedule = registry.get_schedule(name)
        for field in schedule.model_fields:
            if field not in schedule.not_taken:
                assert f"`{field}`" in sections[f"`{name}`"] or f"| `{field}` |" in page, (name, field)


def _hookspecs() -> dict[str, pluggy.HookCaller]:
    """Every hook pluggy finds in ``pruneplug.hookspecs``, by name."""
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    return dict(vars(manager.hook))


def _signature(function: object) -> str:
    """``name(params) -> return``, from the annotations as written (they are strings: postponed evaluation)."""
    signature = inspect.signature(function)  # type: ignore[arg-type]

    def text(annotation: object) -> str:
        return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)

    params = []
    for parameter in signature.parameters.values():
        one = parameter.name
        if parameter.annotation is not inspect.Parameter.empty:
            one += f": {text(parameter.annotation)}"
        if parameter.default is not inspect.Parameter.empty:
            one += f" = {parameter.default!r}"
        params.append(one)
    returns = (
        "" if signature.return_annotation is inspect.Signature.empty else f" -> {text(signature.return_annotation)}"
    )
    return f"{function.__name__}({', '.join(params)}){returns}"  # type: ignore[attr-defined]


def _sections(markdown: str) -> dict[str, str]:
    """Each heading's text -> the lines under it up to the next heading of its level or above.

    Lines inside fenced code blocks are never headings (a Python comment starts with ``#`` too). A fence
    is opened as CommonMark says: three or more backticks and an info string with none (so a line of
    prose that starts with a code span of backticks opens none), closed by as many backticks or more.
    """
    headings: list[tuple[int, int, str]] = []  # (line index, level, title)
    lines = markdown.splitlines()
    fence = ""  # the backticks that opened the block the line is in, or "" outside blocks
    for index, line in enumerate(lines):
        if not fence and (opening := re.match(r" {0,3}(`{3,})[^`]*$", line)):
            fence = opening[1]
        elif fence and re.fullmatch(rf" {{0,3}}{fence}`*\s*", line):
            fence = ""
        elif not fence and (match := re.match(r"(#{1,6}) (.+)", line)):
            headings.append((index, len(match[1]), match[2].strip()))
    sections = {}
    for position, (index, level, title) in enumerate(headings):
        end = next((i for i, lvl, _ in headings[position + 1 :] if lvl <= level), len(lines))
        sections[title] = "\n".join(lines[index + 1 : end])
    return sections


def test_the_hook_reference_shows_every_hook_with_its_signature() -> None:
    """Each hook of pruneplug.hookspecs has a section ``### `name` `` in docs/plugins.md that shows
    ``name(...) -> ...`` exactly as ``inspect.signature`` reads the spec (datasette checks its hooks so)."""
    hooks = _hookspecs()
    assert hooks, "pluggy finds no hook in pruneplug.hookspecs"
    sections = _sections((ROOT / "docs" / "plugins.md").read_text(encoding="utf-8"))
    problems = []
    for name, caller in hooks.items():
        assert caller.spec is not None
        section = sections.get(f"`{name}`")
        if section is None:
            problems.append(f"no heading `{name}` (the headings: {', '.join(sections)})")
            continue
        expected = _signature(caller.spec.function)
        shown = [
            re.sub(r"^def |:( \.\.\.)?$", "", line.strip())
            for line in section.splitlines()
            if re.match(rf"\s*(def )?{name}\(", line)
        ]
        if expected not in shown:
            problems.append(
                f"section `{name}` does not show the code's signature\n"
                f"  docs: {' | '.join(shown) or '(none shown)'}\n"
                f"  code: {expected}  (pruneplug/hookspecs.py)"
            )
    assert not problems, "docs/plugins.md:\n" + "\n".join(problems)


def test_the_hook_reference_defines_the_item_types_as_the_code_does() -> None:
    """A type alias of pruneplug.hookspecs used in a hook signature is shown as ``Alias = definition``."""
    text = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    aliases = {
        name: getattr(hookspecs, name)
        for name, annotation in vars(hookspecs).get("__annotations__", {}).items()
        if annotation == "TypeAlias"
    }
    assert "StrategyItem" in aliases
    for name, definition in aliases.items():
        shown = re.findall(rf"^{name} = (.*)$", text, re.MULTILINE)
        assert shown == [definition], (
            f"docs/plugins.md defines {name} as {shown or '(nowhere)'}; pruneplug/hookspecs.py: {definition}"
        )


def test_every_hookspec_is_exported_and_says_how_it_is_called() -> None:
    """pytest's hookspec.py discipline: each hook is public and its docstring says when and how it is called."""
    for name, caller in _hookspecs().items():
        assert caller.spec is not None
        assert name in hookspecs.__all__, f"pruneplug.hookspecs.__all__ lacks the hook {name}"
        doc = inspect.getdoc(caller.spec.function) or ""
        assert "Called once per" in doc, f"the docstring of {name} does not say when it is called"
        assert "Every implementation is called" in doc, f"the docstring of {name} does not say how results combine"
        assert "PluginLoadWarning" in doc, f"the docstring of {name} does not say what a failing plugin causes"


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        pytest.importorskip(module, reason=f"the docs site needs the 'docs' extra ({module} is not installed)")
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    strategies = (site / "reference" / "strategies" / "index.html").read_text()
    assert all(name in strategies for name in pruneplug.Registry(load_entry_points=False).names())
    assert (site / "reference" / "plan.schema.json").exists()
    assert (site / "reference" / "api" / "pruneplug" / "index.html").exists()
    assert not (site / "conftest.py").exists() and not (site / "hooks").exists()
    for page in site.rglob("*.html"):
        prose, code = _texts(page.read_text(encoding="utf-8"))
        # The markdown's "--" dashes are rendered as dashes; command-line flags (--force) are not.
        assert "--" not in prose, (page, prose[max(prose.find("--") - 60, 0) : prose.find("--") + 60])
        for text in (prose, code):
            flag = re.search(r".{0,40}\u2013[A-Za-z].{0,20}", text)
            assert flag is None, (page, flag.group())


def _texts(html: str) -> tuple[str, str]:
    """The text of a page outside and inside code (``code``/``pre``); scripts and styles left out."""

    class Split(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.open: list[str] = []
            self.prose: list[str] = []
            self.code: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag in ("code", "pre", "script", "style"):
                self.open.append(tag)

        def handle_endtag(self, tag: str) -> None:
            if self.open and self.open[-1] == tag:
                self.open.pop()

        def handle_data(self, data: str) -> None:
            if not self.open:
                self.prose.append(data)
            elif self.open[-1] in ("code", "pre"):
                self.code.append(data)

    split = Split()
    split.feed(html)
    return " ".join(split.prose), " ".join(split.code)
