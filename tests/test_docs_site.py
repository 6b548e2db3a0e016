"""The documentation site: ``mkdocs build --strict`` passes, and the generated reference matches the code.

The strategy and plan-file reference pages are rendered from the registry,
the pydantic models and the plan JSON Schema when the site is built
(``docs/hooks/reference.py``), so they cannot drift; these tests check the
renderers cover everything, and that the whole site builds with no broken
link and no warning.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType

import pytest

import pruneplug

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
    for spec in registry.specs():
        assert f"[`{spec.name}`](strategies.md#{spec.name})" in page


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
