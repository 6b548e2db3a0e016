"""The package's layers: the import-linter contract, the README and docs/architecture.md tell one story."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pruneplug"


def contract(container: str) -> list[list[str]]:
    """The layers of the ``layers`` contract for ``container``, top first, each a list of its names."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for item in config["tool"]["importlinter"]["contracts"]:
        if item["type"] == "layers" and item.get("containers") == [container]:
            return [[name.strip() for name in re.split(r"[|:]", layer)] for layer in item["layers"]]
    raise AssertionError(f"pyproject.toml has no layers contract for {container}")


def parts(package: Path) -> set[str]:
    """The modules and subpackages directly in ``package`` (not ``__init__``/``__main__``)."""
    found = {p.stem for p in package.glob("*.py") if p.stem not in ("__init__", "__main__")}
    return found | {p.name for p in package.iterdir() if (p / "__init__.py").is_file()}


@pytest.mark.parametrize("container", ["pruneplug", "pruneplug.core", "pruneplug.registry"])
def test_every_module_is_in_a_layer(container: str) -> None:
    """A new module or folder must be placed in a layer: unlisted, import-linter would not check it."""
    listed = {name for layer in contract(container) for name in layer}
    present = parts(ROOT.joinpath(*container.split(".")))
    assert present - listed == set(), f"add these to the layers contract of {container} in pyproject.toml"
    assert listed - present == set(), f"the contract of {container} lists modules that do not exist"


def test_the_readme_and_the_architecture_page_show_every_layer_in_the_contracts_order() -> None:
    layers = contract("pruneplug")[::-1]  # bottom first, as the tables number them
    for page in (ROOT / "README.md", ROOT / "docs" / "architecture.md"):
        text = page.read_text(encoding="utf-8")
        for name in parts(PACKAGE):
            assert re.search(rf"`(pruneplug/)?{name}(/|\.py)?`", text), f"{page.name} does not show {name}"
        rows = re.findall(r"^\| (\d) \| ([^|]*) \|", text, flags=re.M)
        numbers = {}
        for number, cell in rows:
            for name in re.findall(r"`(?:pruneplug/)?(\w+)(?:/|\.py)?`", cell):
                numbers[name] = int(number)
        order = [numbers[name] for layer in layers for name in layer]
        assert order == sorted(order), f"{page.name}: the layers' numbers must follow pyproject.toml's order"


def test_the_core_page_lists_every_core_module() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for name in parts(PACKAGE / "core"):
        assert f"`{name}.py`" in text, f"docs/architecture.md does not describe core/{name}.py"
