"""The conformance checks as a test class: subclass it and pytest (or unittest) collects one test per check."""

from __future__ import annotations

import sys
import unittest
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from hypothesis.strategies import SearchStrategy

from ._conformance import Conformance
from ._types import DEFAULT_MAX_EXAMPLES, ParamsLike, Shape, StrategyLike

__all__ = ["StrategyConformance"]


class StrategyConformance:
    """Base class of a conformance test suite for one strategy.

    Subclass it in a test module under a name pytest collects (``Test...``) and
    set ``strategy`` (plus whatever else your strategy needs); pytest then runs
    one test per check, and skips the checks that do not apply::

        from pruneplug.testing import StrategyConformance

        class TestNM(StrategyConformance):
            strategy = "nm"            # found through its entry point
            params = {"n": 2, "m": 4}
            shapes = st.tuples(st.integers(1, 4), st.sampled_from([4, 8]))
            invalid_params = [{"n": 4}]

    The class attributes are the keyword arguments of :func:`check_strategy`
    (``params`` may be a plain function of the shape; it is not bound to the
    instance). Add your own strategy-specific tests to the same class.
    """

    strategy: ClassVar[StrategyLike]
    params: ClassVar[ParamsLike] = None
    shapes: ClassVar[SearchStrategy[Shape] | None] = None
    dtypes: ClassVar[Sequence[torch.dtype]] = (torch.float32,)
    invalid_params: ClassVar[Sequence[Mapping[str, Any]]] = ()
    max_examples: ClassVar[int] = DEFAULT_MAX_EXAMPLES

    @classmethod
    def conformance(cls) -> Conformance:
        """The :class:`Conformance` these class attributes describe (resolved when a test runs)."""
        strategy = getattr(cls, "strategy", None)
        if strategy is None:
            raise TypeError(f"{cls.__qualname__} must set the class attribute 'strategy' (a name or a class)")
        return Conformance(
            strategy,
            cls.params,  # read from the class: a function stays a plain function of the shape
            shapes=cls.shapes,
            dtypes=cls.dtypes,
            invalid_params=cls.invalid_params,
            max_examples=cls.max_examples,
        )

    def _run(self, check: str) -> None:
        conformance = self.conformance()
        reason = conformance.skip_reason(check)
        if reason is not None:
            pytest = sys.modules.get("pytest")
            if pytest is not None:  # under pytest: its skip names this test's location
                pytest.skip(f"{check}: {reason}")
            raise unittest.SkipTest(f"{check}: {reason}")
        conformance.check(check)

    def test_mask(self) -> None:
        """Masks are bool, of the tensor's shape, binary, and ``weight == weight_orig * weight_mask``."""
        self._run("mask")

    def test_count(self) -> None:
        """``amount`` prunes exactly that many still-unpruned entries (or whole slices), never a protected one."""
        self._run("count")

    def test_iterative(self) -> None:
        """Pruning again only ever removes more; the history grows; ``weight_orig`` stays."""
        self._run("iterative")

    def test_rollback(self) -> None:
        """A failing prune raises a pruneplug error and leaves the module exactly as it was."""
        self._run("rollback")

    def test_determinism(self) -> None:
        """The same seed, tensor and parameters give the same mask."""
        self._run("determinism")

    def test_remove(self) -> None:
        """``remove`` (pruneplug's and torch's) keeps the effective tensor bit for bit, and nothing else."""
        self._run("remove")

    def test_global(self) -> None:
        """Unstructured strategies work with ``prune_global``, with exact counts across tensors, protection kept."""
        self._run("global")

    def test_calibration(self) -> None:
        """A strategy reading statistics refuses to prune without them, or with misshapen ones, changing nothing."""
        self._run("calibration")

    def test_updates(self) -> None:
        """A strategy updating values: they land in ``weight_orig``, match ``compute_mask``'s mask, roll back."""
        self._run("updates")
