"""Fixtures for the demo's tests: the digits and one quick demo run, shared by the whole session.

The quick run (a few seconds) is made once with the default registry --
built-ins and the installed plugins, as ``pruneplug demo`` sees them -- and
read by every test that only inspects results.
"""

from __future__ import annotations

import pytest

from pruneplug.demo import DemoConfig, DemoResult, Digits, load_digits_data, run_demo


@pytest.fixture(scope="session")
def digits() -> Digits:
    pytest.importorskip("sklearn", reason="the demo's tests need the 'demo' extra (scikit-learn)")
    return load_digits_data()


@pytest.fixture(scope="session")
def quick_result(digits: Digits) -> DemoResult:
    pytest.importorskip("matplotlib", reason="the demo's tests need the 'demo' extra (matplotlib)")
    return run_demo(DemoConfig.quick(seed=0))
