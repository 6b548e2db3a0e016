"""What the benchmark tests share: loading a script of ``benchmarks/`` as a module."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

LoadBenchmark = Callable[[Path, str], ModuleType]


@pytest.fixture
def load_benchmark(monkeypatch: pytest.MonkeyPatch) -> LoadBenchmark:
    """``load(path, name)``: the script at ``path`` as the module ``name``, its folder on sys.path for its imports.

    The module and the path are taken back when the test ends.
    """

    def load(path: Path, name: str) -> ModuleType:
        monkeypatch.syspath_prepend(str(path.parent))
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        return module

    return load
