"""Shared fixtures and the hypothesis profiles.

The default profile (``ci``) is derandomized so every run of the suite tests
the same examples; ``HYPOTHESIS_PROFILE=dev`` explores new ones.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

import pruneplug

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    print_blob=True,
)
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def registry() -> Iterator[pruneplug.Registry]:
    """A fresh registry (built-ins only, no entry points) as the default for one test."""
    with pruneplug.use_registry(pruneplug.Registry(load_entry_points=False)) as fresh:
        yield fresh


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same global RNG state."""
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def run_ranks() -> Callable[..., None]:
    """``run_ranks(file, scenario, world, *args)``: a scenario on ``world`` gloo processes (``tests/ranks.py``)."""
    spec = importlib.util.spec_from_file_location("pruneplug_test_ranks", Path(__file__).parent / "ranks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run_ranks  # type: ignore[no-any-return]
