"""Run every ```python block in the docs as part of the test suite (with Sybil).

Blocks of one page share a namespace and run in order, like a notebook, so a
page reads as one story. A block preceded by ``<!-- skip: next -->`` is shown
but not run (for shell-dependent or GPU-only snippets). Blocks that need an
extra are fenced by ``<!-- skip: start if(missing("lightning"), reason=...) -->``
and ``<!-- skip: end -->``: run where it is installed (as in CI), skipped
where not.
"""

from __future__ import annotations

import importlib.util

import torch
from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser

import pruneplug


def _missing(*names: str) -> bool:
    """Whether one of the top-level packages ``names`` is not installed (for a conditional skip)."""
    return any(importlib.util.find_spec(name) is None for name in names)


def _setup(namespace: dict[str, object]) -> None:
    torch.manual_seed(0)
    namespace["missing"] = _missing
    namespace["_registry_scope"] = pruneplug.use_registry(pruneplug.Registry(load_entry_points=False))
    namespace["_registry_scope"].__enter__()  # type: ignore[attr-defined]


def _teardown(namespace: dict[str, object]) -> None:
    namespace["_registry_scope"].__exit__(None, None, None)  # type: ignore[attr-defined]


pytest_collect_file = Sybil(
    parsers=[PythonCodeBlockParser(), SkipParser()],
    patterns=["*.md"],
    setup=_setup,
    teardown=_teardown,
).pytest()
