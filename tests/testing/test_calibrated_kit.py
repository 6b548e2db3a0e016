"""The conformance kit on data-aware strategies: the statistics it makes, and the checks of its own it runs.

Two small conforming strategies written here -- a Wanda-like score and an OBS
update over the exact input Hessian -- pass every check; each broken variant
below fails the check that owns its bug, with a message that says what went
wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import torch
from hypothesis import strategies as st
from torch import Tensor

import pruneplug
from pruneplug.strategies import AmountParams
from pruneplug.testing import (
    CALIBRATION_CHECKS,
    CHECKS,
    Conformance,
    ConformanceError,
    StrategyConformance,
    check_strategy,
)
from pruneplug.testing._calibration import STYLES, calibration_inputs

FAST = 15  # examples per check: every bug below shows on the first few
UPDATED_SHAPES = st.tuples(st.integers(1, 4), st.integers(2, 6))


@pytest.fixture(autouse=True)
def _builtins_only(registry: pruneplug.Registry) -> Iterator[None]:
    """Each test starts from a registry of built-ins only."""
    yield


def failures(strategy: Any, params: Any = None, **options: Any) -> dict[str, str]:
    """The failures check_strategy reports (``{}`` if it passes)."""
    try:
        check_strategy(strategy, params, max_examples=FAST, **options)
    except ConformanceError as error:
        return error.failures
    return {}


def _layer_statistic(name: str, t: Tensor, strategy: str, shape: tuple[int, ...]) -> Tensor:
    """Statistic ``name`` of the layer being pruned, of ``shape`` (checked by ``statistics_for``)."""
    target = pruneplug.current_target()
    module = None if target is None else target.module
    tensor = None if target is None else target.name
    found = pruneplug.statistics_for(module, [name], strategy=strategy, tensor=tensor, shapes={name: shape})
    return found[name]


# --- two conforming strategies ---------------------------------------------------------------------


class TinyWanda(pruneplug.UnstructuredStrategy):
    """Score ``|W_ij| * sqrt(mean x_j**2)``, compared over the whole tensor."""

    name = "tiny_wanda"

    def required_statistics(self) -> tuple[str, ...]:
        return ("input_sq_norms",)

    def norms(self, t: Tensor) -> Tensor:
        return _layer_statistic("input_sq_norms", t, "tiny_wanda", (t.shape[1],))

    def scores(self, t: Tensor, alive: Tensor | None) -> Tensor:
        return t.abs().float() * self.norms(t).sqrt()


class TinyOBS(pruneplug.BasePruningMethod):
    """Prunes the ``amount`` lowest ``|W_ij| * sqrt(H_jj)`` of a tensor and updates each row's kept weights.

    The update is OBS's, solved exactly per row: the kept weights ``K`` move by
    ``-(w_P H_PK) H_KK^-1`` so that the row's output on the calibration inputs
    changes as little as it can (``H`` the damped input Hessian).
    """

    PRUNING_TYPE: ClassVar[str] = "global"
    name: ClassVar[str | None] = "tiny_obs"
    Params: ClassVar[type[pruneplug.StrategyParams]] = AmountParams

    def __init__(self, amount: int | float) -> None:
        self.amount = amount

    def required_statistics(self) -> tuple[str, ...]:
        return ("input_hessian",)

    def hessian(self, t: Tensor) -> Tensor:
        width = t.shape[1]
        return _layer_statistic("input_hessian", t, "tiny_obs", (width, width)).double()

    def keep(self, t: Tensor, alive: Tensor, hessian: Tensor) -> Tensor:
        available = int(alive.sum())
        count = self.amount if isinstance(self.amount, int) else round(self.amount * available)
        if count > available:
            raise pruneplug.InvalidAmountError(f"amount={self.amount!r} is more than the {available} unpruned entries")
        scores = (t.double().abs() * hessian.diagonal().sqrt()).flatten()
        scores[~alive.flatten()] = float("inf")
        keep = alive.flatten().clone()
        keep[torch.argsort(scores, stable=True)[:count]] = False
        return keep.reshape(t.shape)

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        keep = self.keep(t, default_mask != 0, self.hessian(t))
        return keep if default_mask.dtype == torch.bool else default_mask * keep.to(default_mask.dtype)

    def prune_and_update(self, t: Tensor, alive: Tensor | None) -> tuple[Tensor, Tensor]:
        hessian = self.hessian(t)
        alive = torch.ones(t.shape, dtype=torch.bool) if alive is None else alive
        keep = self.keep(t, alive, hessian)
        damp = 0.01 * float(hessian.diagonal().mean()) + 1e-8
        damped = hessian + damp * torch.eye(t.shape[1], dtype=torch.float64)
        rows = (t.double() * alive).clone()  # entries pruned before count as zero
        for i in range(t.shape[0]):
            kept, gone = keep[i], ~keep[i]
            if kept.any() and gone.any():
                shift = torch.linalg.solve(damped[kept][:, kept], damped[kept][:, gone] @ rows[i, gone])
                rows[i, kept] += shift
        return keep, torch.where(keep, rows.to(t.dtype), t)


def test_a_conforming_calibrated_strategy_passes_every_check_that_applies() -> None:
    report = check_strategy(TinyWanda, max_examples=FAST)
    assert report.passed == (*CHECKS, "calibration")
    assert report.skipped == {}


def test_a_conforming_strategy_that_updates_values_passes_the_updates_check() -> None:
    report = check_strategy(TinyOBS, max_examples=FAST, dtypes=(torch.float32, torch.float64))
    assert report.passed == ("mask", "iterative", "rollback", "determinism", "remove", "calibration", "updates")
    assert set(report.skipped) == {"count", "global"}


class TestTinyOBSConformance(StrategyConformance):
    """The pytest form runs the calibration checks as tests of their own."""

    strategy = TinyOBS
    max_examples = FAST


def test_a_plain_strategy_is_reported_as_before_and_the_calibration_checks_say_why_they_skip() -> None:
    report = check_strategy("l1_unstructured", max_examples=5)
    assert report.passed == CHECKS and report.skipped == {}
    report = check_strategy("l1_unstructured", checks=CALIBRATION_CHECKS)
    assert report.passed == ()
    assert "does not implement pruneplug.NeedsStatistics" in report.skipped["calibration"]
    assert "does not implement pruneplug.UpdatesValues" in report.skipped["updates"]


# --- the statistics the kit makes ------------------------------------------------------------------


class Records(TinyWanda):
    """Records the layer and statistics it is given (a conforming strategy)."""

    name = "records"
    seen: ClassVar[list[tuple[torch.nn.Module, Tensor]]] = []

    def norms(self, t: Tensor) -> Tensor:
        norms = super().norms(t)
        target = pruneplug.current_target()
        assert target is not None
        Records.seen.append((target.module, norms))
        return norms


def test_calibrated_strategies_prune_linear_layers_with_statistics_of_their_own_inputs() -> None:
    Records.seen.clear()
    check_strategy(Records, checks=["mask", "global"], max_examples=FAST)
    assert Records.seen
    for module, norms in Records.seen:
        assert isinstance(module, torch.nn.Linear) and module.bias is None
        assert norms.shape == (module.in_features,) and norms.dtype == torch.float32
        assert bool((norms >= 0).all())
    assert len({id(norms) for _, norms in Records.seen}) > 1  # every layer its own inputs


def test_calibration_inputs_come_in_every_style_and_shape() -> None:
    for style in STYLES:
        inputs = calibration_inputs(3, style, [(4,), (2, 3)], 5, torch.float16)
        assert [tuple(x.shape) for x in inputs] == [(4, 5), (2, 3, 5)]
        assert all(x.dtype == torch.float16 and bool(torch.isfinite(x).all()) for x in inputs)
    dead = torch.cat([x.reshape(-1, 64) for x in calibration_inputs(0, "dead", [(50,)], 64, torch.float32)])
    assert 0 < int((dead == 0).all(dim=0).sum()) < 64
    scaled = calibration_inputs(0, "scaled", [(200,)], 32, torch.float32)[0].std(dim=0)
    assert float(scaled.max() / scaled.min()) > 100
    with pytest.raises(ValueError, match="unknown style 'loud'"):
        calibration_inputs(0, "loud", [(1,)], 1, torch.float32)


def test_shapes_that_are_not_a_linear_layers_are_refused() -> None:
    found = failures(TinyWanda, checks=["mask"], shapes=st.just((2, 3, 4)))
    assert "checked on nn.Linear layers, whose weights are 2-D" in found["mask"]


class Misspelled(TinyWanda):
    name = "misspelled"

    def required_statistics(self) -> tuple[str, ...]:
        return ("input_sq_norm",)


def test_a_statistic_the_registry_does_not_know_is_named() -> None:
    found = failures(Misspelled, checks=["mask", "calibration"])
    for check in ("mask", "calibration"):
        message = found[check]
        assert "requires the statistic 'input_sq_norm'" in message and "'input_sq_norms'" in message, message
        assert "pruneplug_add_statistics" in message


# --- each bug of a calibrated strategy is caught by the check that owns it -------------------------


class FallsBack(TinyWanda):
    """Without statistics, ranks by magnitude instead of saying so."""

    name = "falls_back"

    def norms(self, t: Tensor) -> Tensor:
        try:
            return super().norms(t)
        except pruneplug.CalibrationRequiredError:
            return torch.ones(t.shape[1])


class Unchecked(TinyWanda):
    """Reads the statistic without saying which shape it must have: a wrong one breaks somewhere inside."""

    name = "unchecked"

    def norms(self, t: Tensor) -> Tensor:
        target = pruneplug.current_target()
        module = None if target is None else target.module
        return pruneplug.statistics_for(module, ["input_sq_norms"], strategy="unchecked")["input_sq_norms"]


class SaysMissing(TinyWanda):
    """Reports a statistic of the wrong shape as a missing one."""

    name = "says_missing"

    def norms(self, t: Tensor) -> Tensor:
        try:
            return super().norms(t)
        except pruneplug.CalibrationError as error:
            raise pruneplug.CalibrationRequiredError(str(error)) from error


class AssumesALayer(TinyWanda):
    """Takes the layer from the core without asking whether there is one."""

    name = "assumes_a_layer"

    def norms(self, t: Tensor) -> Tensor:
        module = pruneplug.current_target().module  # type: ignore[union-attr]
        return pruneplug.statistics_for(
            module, ["input_sq_norms"], strategy="assumes_a_layer", shapes={"input_sq_norms": (t.shape[1],)}
        )["input_sq_norms"]


class KeyErrorWhenMissing(TinyWanda):
    """Looks the statistic up itself and raises a bare KeyError when it is not there."""

    name = "key_error_when_missing"

    def norms(self, t: Tensor) -> Tensor:
        try:
            return super().norms(t)
        except pruneplug.CalibrationRequiredError:
            raise KeyError("input_sq_norms") from None


class ScalesFirst(TinyWanda):
    """Rescales the weights in place before it finds out that it has no statistics."""

    name = "scales_first"

    def scores(self, t: Tensor, alive: Tensor | None) -> Tensor:
        t.mul_(1.0)  # a no-op that still writes: harmless here ...
        t.add_(0.5)  # ... unlike this
        return super().scores(t, alive)


class ClaimsNothing(TinyWanda):
    """Says it requires no statistics, and reads them anyway."""

    name = "claims_nothing"

    def required_statistics(self) -> tuple[str, ...]:
        return ()


@pytest.mark.parametrize(
    ("strategy", "check", "message"),
    [
        (FallsBack, "calibration", "a prune with no statistics in use ({amount="),
        (Unchecked, "calibration", "of the wrong shape"),
        (Unchecked, "calibration", "raised StrategyFailedError, not a CalibrationError"),
        (SaysMissing, "calibration", "raised a CalibrationRequiredError, which says the statistic is missing"),
        (AssumesALayer, "calibration", "pruneplug.compute_mask on a bare tensor"),
        (KeyErrorWhenMissing, "calibration", "raised StrategyFailedError, not a CalibrationRequiredError"),
        (ClaimsNothing, "calibration", "a prune with no statistics in use (it requires none)"),
        (ClaimsNothing, "mask", "a valid prune with"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_each_calibration_bug_is_caught(strategy: type, check: str, message: str) -> None:
    found = failures(strategy, checks=[check])
    assert check in found, f"{check} did not catch {strategy.__name__}"
    assert message in found[check], found[check]


def test_a_prune_that_changes_the_module_before_finding_no_statistics_is_caught() -> None:
    found = failures(ScalesFirst, checks=["calibration"])
    assert "a failed prune with no statistics in use changed the module: weight" in found["calibration"]


@pytest.mark.parametrize("amount", [0, 1.0])
def test_a_prune_of_nothing_or_everything_needs_no_statistics(amount: float) -> None:
    """Its result cannot depend on them: succeeding without statistics is allowed (UnstructuredStrategy does)."""
    report = check_strategy(TinyWanda, {"amount": amount}, checks=["calibration"], max_examples=FAST)
    assert report.passed == ("calibration",)


# --- each bug of a strategy that updates values ------------------------------------------------------


class WritesIntoT(TinyOBS):
    """Writes the new values into the tensor it is given (the core's ``weight_orig``) and returns it."""

    name = "writes_into_t"

    def prune_and_update(self, t: Tensor, alive: Tensor | None) -> tuple[Tensor, Tensor]:
        keep, values = super().prune_and_update(t, alive)
        t.copy_(values)
        return keep, t


class DifferentMask(TinyOBS):
    """Its ``compute_mask`` ranks by magnitude alone; ``prune_and_update`` by the data-aware score."""

    name = "different_mask"

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        self.hessian(t)
        flat = torch.ones(t.shape[1], t.shape[1], dtype=torch.float64)
        keep = self.keep(t, default_mask != 0, flat)
        return keep if default_mask.dtype == torch.bool else default_mask * keep.to(default_mask.dtype)


class UpdatesInTheHook(TinyOBS):
    """Keeps the updated values in the hook and masks those: ``weight_orig`` never gets them."""

    name = "updates_in_the_hook"

    def prune_and_update(self, t: Tensor, alive: Tensor | None) -> tuple[Tensor, Tensor]:
        keep, values = super().prune_and_update(t, alive)
        self.updated_values = values
        return keep, t.clone()

    def apply_mask(self, module: torch.nn.Module) -> Tensor:
        mask = getattr(module, self._tensor_name + "_mask")
        return self.updated_values * mask


class Float64Values(TinyOBS):
    """Returns its new values in float64, whatever the tensor's dtype."""

    name = "float64_values"

    def prune_and_update(self, t: Tensor, alive: Tensor | None) -> tuple[Tensor, Tensor]:
        keep, values = super().prune_and_update(t, alive)
        return keep, values.double()


class WritesTheParameter(TinyOBS):
    """Also writes the new values into the parameter itself, before the core does: a failure cannot undo it."""

    name = "writes_the_parameter"

    def prune_and_update(self, t: Tensor, alive: Tensor | None) -> tuple[Tensor, Tensor]:
        keep, values = super().prune_and_update(t.clone(), alive)
        target = pruneplug.current_target()
        assert target is not None
        with torch.no_grad():
            target.parameter.copy_(values)
        return keep, values


class InPlaceWhenItCan(TinyOBS):
    """Saves a copy: when the tensor it is given is the parameter's own storage, updates it in place."""

    name = "in_place_when_it_can"

    def prune_and_update(self, t: Tensor, alive: Tensor | None) -> tuple[Tensor, Tensor]:
        keep, values = super().prune_and_update(t, alive)
        target = pruneplug.current_target()
        if target is not None and t.data_ptr() == target.parameter.data_ptr():
            t.copy_(values)
            return keep, t
        return keep, values


@pytest.mark.parametrize(
    ("strategy", "check", "message"),
    [
        (InPlaceWhenItCan, "updates", "a prune that failed after prune_and_update ran changed the module"),
        (InPlaceWhenItCan, "rollback", "a failed prune with an exception inside prune_and_update changed"),
        (WritesIntoT, "updates", "prune_and_update modified the tensor it was given"),
        (WritesIntoT, "rollback", "a failed prune with an exception inside prune_and_update changed the module"),
        (DifferentMask, "updates", "prune_and_update's mask and compute_mask's differ at"),
        (DifferentMask, "mask", "disagrees with the native bool mask"),
        (UpdatesInTheHook, "updates", "module.weight is not weight_orig * weight_mask"),
        (Float64Values, "updates", "prune_and_update's values are not a tensor of shape"),
        (Float64Values, "mask", "prune_and_update returned new values"),
        (WritesTheParameter, "updates", "prune_and_update modified the parameter being pruned"),
        (WritesTheParameter, "rollback", "a failed prune with an exception inside prune_and_update changed the module"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_each_update_bug_is_caught(strategy: type, check: str, message: str) -> None:
    # (layers of 2 inputs or more, half pruned: each row keeps some entries and loses some, so they are updated)
    found = failures(strategy, {"amount": 0.5}, checks=[check], shapes=UPDATED_SHAPES)
    assert check in found, f"{check} did not catch {strategy.__name__}"
    assert message in found[check], found[check]


def test_the_updates_check_runs_only_for_strategies_that_update() -> None:
    assert Conformance(TinyWanda).skip_reason("updates") is not None
    assert Conformance(TinyOBS).skip_reason("updates") is None
    assert Conformance("nm" if "nm" in pruneplug.get_registry() else "identity").skip_reason("calibration")
