"""A conformance kit for pruning strategies: property checks any strategy must pass.

Plugin authors run it in their own test suite, in one call::

    from pruneplug.testing import check_strategy

    def test_my_strategy_conforms():
        check_strategy("my_strategy", params={"amount": 0.3})

or as a test class whose checks pytest collects one by one::

    from pruneplug.testing import StrategyConformance

    class TestMyStrategy(StrategyConformance):
        strategy = "my_strategy"

The checks (see :data:`CHECKS`) are hypothesis properties over small tensors:
mask shape, dtype and values; exact counts for strategies with an ``amount``;
monotone masks under iterative pruning; rollback of failing prunes;
determinism under a seed; ``remove`` keeping the effective tensor bit for bit;
and global pruning for unstructured strategies. Data-aware strategies get
statistics of random calibration inputs to prune with, and checks of their
own (:data:`CALIBRATION_CHECKS`): a clear error without statistics or with
misshapen ones, and updated values that land in ``weight_orig`` and roll
back. pruneplug runs the same kit over its built-in strategies.

Needs `hypothesis <https://hypothesis.readthedocs.io>`_ (``pip install hypothesis``).
"""

from __future__ import annotations

try:
    import hypothesis as _hypothesis  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "pruneplug.testing needs hypothesis: pip install hypothesis (or pip install 'pruneplug[test]')"
    ) from error

from ._conformance import Conformance as Conformance, check_strategy as check_strategy
from ._examples import amounts as amounts
from ._pytest import StrategyConformance as StrategyConformance
from ._state import ModuleState as ModuleState, assert_unchanged as assert_unchanged, snapshot as snapshot
from ._types import (
    CALIBRATION_CHECKS as CALIBRATION_CHECKS,
    CHECKS as CHECKS,
    DEFAULT_MAX_EXAMPLES as DEFAULT_MAX_EXAMPLES,
    ConformanceError as ConformanceError,
    ConformanceReport as ConformanceReport,
    ParamsLike as ParamsLike,
    Shape as Shape,
    StrategyLike as StrategyLike,
)

__all__ = [
    "CALIBRATION_CHECKS",
    "CHECKS",
    "DEFAULT_MAX_EXAMPLES",
    "Conformance",
    "ConformanceError",
    "ConformanceReport",
    "ModuleState",
    "ParamsLike",
    "Shape",
    "StrategyConformance",
    "StrategyLike",
    "amounts",
    "assert_unchanged",
    "check_strategy",
    "snapshot",
]
