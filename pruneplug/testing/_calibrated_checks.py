"""The checks of data-aware strategies: ``calibration`` (statistics they read) and ``updates`` (values they change).

A strategy that implements :class:`pruneplug.NeedsStatistics` must fail
cleanly without its statistics -- a :class:`pruneplug.CalibrationRequiredError`,
the module left as it was -- and refuse statistics of the wrong shape with a
:class:`pruneplug.CalibrationError`. One that implements
:class:`pruneplug.UpdatesValues` must give the mask ``compute_mask`` gives,
have its new values land in ``weight_orig`` (the same ``Parameter``), keep
them through ``remove``, and leave the old values when a prune fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from hypothesis import strategies as st
from hypothesis.strategies import DataObject
from torch import Tensor, nn

from ..api import compute_mask, prune, remove
from ..core.fast_path import updating_values
from ..errors import CalibrationError, CalibrationRequiredError, PruneplugError
from ..selection.scores import scoring
from ..statistics.context import using_statistics
from ._assertions import Failure, Holder, LinearHolder, alive_mask, expect, held_values, same_bits, show, weight_of
from ._checks import Checks, failing_spec
from ._examples import SEEDS
from ._state import snapshot

__all__ = ["CalibratedChecks"]

_Statistics = Mapping[nn.Module, Mapping[str, Tensor]]


def _entries(count: int) -> str:
    return f"{count} entr{'y' if count == 1 else 'ies'}"


class CalibratedChecks(Checks):
    """Every check: those of :class:`Checks` and ``check_calibration`` / ``check_updates``."""

    def draw_start(self, data: DataObject) -> Holder | LinearHolder:
        """A module maybe pruned before: by the strategy itself, or by a random (maybe bit-packed) mask."""
        module, values = self.draw_module(data)
        if data.draw(st.booleans(), label="pruned by the strategy before"):
            params = self.draw_params(data, module, values, alive_mask(module))
            self.prune_valid(module, params, data.draw(SEEDS, label="seed"))
        else:
            self.draw_earlier_pruning(data, module)
        return module

    def check_calibration(self, data: DataObject) -> None:
        module = self.draw_start(data)
        held = held_values(module)
        params = self.draw_params(data, module, held, alive_mask(module))
        seed = data.draw(SEEDS, label="seed")
        names = self.required(params)
        if not names:  # it needs nothing with these parameters: then it must prune with nothing in use
            self.prune_valid(module, params, seed, what="a prune with no statistics in use (it requires none)")
            return
        assert isinstance(module, LinearHolder)  # (a calibrated strategy is checked on linear layers)
        right = self.calibration.statistics(module, names)
        other, _ = self.draw_module(data, tuple(held.shape))
        # (label, the statistics in use or None, the error it must raise)
        attempts: list[tuple[str, _Statistics | None, type[CalibrationError]]] = [
            ("with no statistics in use", None, CalibrationRequiredError),
            (
                "with statistics in use for another layer only",
                {other: self.calibration.statistics(other, names)},
                CalibrationRequiredError,
            ),
        ]
        if len(names) > 1:
            left_out = data.draw(st.sampled_from(names), label="statistic left out")
            rest = {name: value for name, value in right.items() if name != left_out}
            attempts.append((f"without the statistic {left_out!r}", {module: rest}, CalibrationRequiredError))
        name = data.draw(st.sampled_from(names), label="statistic of the wrong shape")
        wrong = self.calibration.wrong_shape(data, module, name, right[name])
        shapes = f"of shape {tuple(wrong.shape)} (this layer's is {tuple(right[name].shape)})"
        attempts.append((f"with the statistic {name!r} {shapes}", {module: {**right, name: wrong}}, CalibrationError))
        for label, statistics, expected in attempts:
            if not self.refused(module, params, seed, label, statistics, expected):
                break  # (it pruned: the later attempts would start from another state)
        self.bare_tensor_refused(module, held, params, seed, right)

    def refused(
        self,
        module: nn.Module,
        params: Mapping[str, Any],
        seed: int,
        label: str,
        statistics: _Statistics | None,
        expected: type[CalibrationError],
    ) -> bool:
        """A prune with ``statistics`` in use (``None``: none at all) raises ``expected`` and changes nothing.

        A prune whose result cannot depend on statistics -- it prunes nothing (``amount=0``)
        or everything still unpruned -- may succeed instead, leaving the values as they were:
        then ``False`` (not refused).
        """
        before = snapshot(module)
        alive, held = alive_mask(module), held_values(module)
        scope: AbstractContextManager[None] = nullcontext() if statistics is None else using_statistics(statistics)
        try:
            with scope:
                torch.manual_seed(seed)
                prune(module, "weight", self.spec, **params)
        except expected as error:
            if expected is CalibrationError and isinstance(error, CalibrationRequiredError):
                raise Failure(
                    f"a prune {label} raised a CalibrationRequiredError, which says the statistic is missing; "
                    f"it is there, of the wrong shape: raise a CalibrationError saying so: {error}"
                ) from error
        except Exception as error:
            wrong = type(error).__name__
            raise Failure(f"a prune {label} raised {wrong}, not a {expected.__name__}: {error}") from error
        else:
            pruned = int((alive & ~alive_mask(module)).sum())
            if pruned not in (0, int(alive.sum())) or not same_bits(held_values(module), held):
                what = f"pruned {_entries(pruned)} of {int(alive.sum())}" if pruned else "changed the values"
                raise Failure(f"a prune {label} ({show(params)}) {what}; it must raise a {expected.__name__}")
            return False
        changed = before.diff(snapshot(module))
        expect(not changed, f"a failed prune {label} changed the module: {'; '.join(changed)}")
        return True

    def bare_tensor_refused(
        self, module: nn.Module, held: Tensor, params: Mapping[str, Any], seed: int, right: Mapping[str, Tensor]
    ) -> None:
        """``pruneplug.compute_mask`` on a bare tensor raises CalibrationRequiredError.

        No layer is being pruned, so there are no statistics of its own -- even with
        statistics in use for some layer. (Unless it prunes nothing or everything, as for a prune.)
        """
        label = "pruneplug.compute_mask on a bare tensor (no layer is pruned, so there are no statistics to read)"
        t = held.clone()
        try:
            with using_statistics({module: right}):
                torch.manual_seed(seed)
                mask = compute_mask(self.spec, t, **params)
        except CalibrationRequiredError:
            pass
        except Exception as error:
            raise Failure(f"{label} raised {type(error).__name__}, not a CalibrationRequiredError: {error}") from error
        else:
            pruned = int((~mask).sum())
            expect(
                pruned in (0, mask.numel()),
                f"{label} pruned {_entries(pruned)} of {mask.numel()}; it must raise a CalibrationRequiredError",
            )
        expect(same_bits(t, held), f"{label} modified the tensor it was given")

    def check_updates(self, data: DataObject) -> None:
        module = self.draw_start(data)
        pruned = "weight_orig" in module._parameters
        orig = module._parameters["weight_orig" if pruned else "weight"]
        assert orig is not None
        held = orig.detach().clone()
        alive = alive_mask(module)
        params = self.draw_params(data, module, held, alive)
        seed = data.draw(SEEDS, label="seed")
        keep, values = self.updated(module, orig, held, alive if pruned else None, params, seed)
        # the same prune failing after prune_and_update ran: the values it would have written must not stay
        self.failure_restores(module, params, seed)

        self.prune_valid(module, params, seed)
        expect(
            module._parameters.get("weight_orig") is orig,
            "after the prune, weight_orig is not the Parameter the module had: the new values must be written "
            "into it (in place), so that an optimizer holding it keeps working",
        )
        expect(
            same_bits(orig, values),
            "weight_orig does not hold the values prune_and_update returned for the same tensor, parameters, "
            "statistics and seed",
        )
        mask = alive_mask(module)
        expect(torch.equal(mask, keep), "the stored mask is not the one prune_and_update returned")
        expect(
            same_bits(weight_of(module), orig.detach() * mask),
            "module.weight is not weight_orig * weight_mask: the updated values must act through weight_orig",
        )

        remove(module, "weight")
        weight = module._parameters.get("weight")
        expect(weight is orig, "remove did not give back the original Parameter as weight")
        assert weight is not None
        kept = weight.detach()
        left = int((kept[~keep] != 0).sum())
        expect(left == 0, f"after remove, {_entries(left)} pruned by the prune are not zero")
        expect(same_bits(kept[keep], values[keep]), "after remove, the kept entries are not the updated values")

    def updated(
        self,
        module: nn.Module,
        orig: Tensor,
        held: Tensor,
        alive: Tensor | None,
        params: Mapping[str, Any],
        seed: int,
    ) -> tuple[Tensor, Tensor]:
        """``prune_and_update``'s ``(keep, values)`` as the core would get them, checked against ``compute_mask``."""
        t = held.clone()
        method = self.spec.create(**params)
        assert updating_values(method)  # (the check runs only for strategies that implement UpdatesValues)
        with self.statistics_in_use([module], params), scoring(module, "weight", orig):
            torch.manual_seed(seed)
            try:
                keep, values = method.prune_and_update(t, alive)
            except Exception as error:
                raise Failure(f"prune_and_update with {show(params)} raised {type(error).__name__}: {error}") from error
            for changed, what in ((t, "the tensor it was given"), (orig, "the parameter being pruned")):
                expect(
                    same_bits(changed, held),
                    f"prune_and_update modified {what}; it must only return the new values (the core writes "
                    "them into weight_orig, and restores the old ones if the prune fails)",
                )
            expect(
                isinstance(keep, Tensor) and keep.dtype == torch.bool and keep.shape == held.shape,
                f"prune_and_update's mask is not a bool tensor of shape {tuple(held.shape)}",
            )
            expect(
                isinstance(values, Tensor) and values.shape == held.shape and values.dtype == held.dtype,
                f"prune_and_update's values are not a tensor of shape {tuple(held.shape)} and dtype {held.dtype}",
            )
            torch.manual_seed(seed)
            try:
                mask = compute_mask(self.spec, held.clone(), alive, **params)
            except Exception as error:
                raise Failure(
                    f"compute_mask with {show(params)}, for the tensor prune_and_update was given, raised "
                    f"{type(error).__name__}: {error}"
                ) from error
        differ = int((mask != keep).sum())
        expect(
            differ == 0,
            f"prune_and_update's mask and compute_mask's differ at {_entries(differ)} for the same tensor, "
            f"parameters {show(params)}, statistics and seed",
        )
        return keep, values.detach()

    def failure_restores(self, module: nn.Module, params: Mapping[str, Any], seed: int) -> None:
        """A prune that fails after ``prune_and_update`` ran leaves the module as it was, values included."""
        failing = failing_spec(self.spec)
        if failing is None:  # pragma: no cover - a class that refuses subclasses
            return
        before = snapshot(module)
        try:
            with self.statistics_in_use([module], params):
                torch.manual_seed(seed)
                prune(module, "weight", failing, **params)
        except PruneplugError:
            pass
        except Exception as error:
            raise Failure(
                f"a prune failing after prune_and_update ran raised {type(error).__name__}, not a pruneplug "
                f"error: {error}"
            ) from error
        else:
            raise Failure("a prune failing after prune_and_update ran succeeded")
        changed = before.diff(snapshot(module))
        expect(
            not changed,
            f"a prune that failed after prune_and_update ran changed the module (the old values must stay): "
            f"{'; '.join(changed)}",
        )
