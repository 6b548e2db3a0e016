"""The conformance checks: hypothesis properties every pruning strategy must satisfy.

Each check is a hypothesis property over small tensors (shapes, dtypes and
values drawn -- normal values, many ties, many zeros), the strategy's
parameters (fixed, drawn, or drawn per shape) and earlier pruning states. A
check that fails raises :class:`ConformanceError` naming the strategy, the
check and what went wrong, with hypothesis's falsifying example.

The checks go through the public API (:func:`pruneplug.prune`,
:func:`pruneplug.prune_global`, :func:`pruneplug.remove`) -- exactly what a
user of the strategy calls -- plus the strategy's own ``compute_mask`` as
torch and :mod:`pruneplug.compat` call it.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from hypothesis import strategies as st
from hypothesis.strategies import DataObject, SearchStrategy
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from ..api import prune, prune_global, pruning_history, remove
from ..core.fast_path import UpdatesValues
from ..errors import InvalidAmountError, PruneplugError
from ..registry import StrategySpec
from ..selection.scores import scoring
from ..storage.formats import is_binary
from ..strategies import CustomFromMask
from ._assertions import (
    Failure,
    Holder,
    LinearHolder,
    alive_mask,
    alive_slices,
    expect,
    expected_count,
    held_values,
    orig_of,
    pruning_hooks,
    removed_cleanly,
    rows_of,
    same_bits,
    show,
    weight_of,
)
from ._examples import SEEDS, Examples, amounts
from ._state import snapshot
from ._types import ParamsLike, Shape

__all__ = ["Checks", "failing_spec"]

_UNKNOWN_PARAMETER = "pruneplug_testing_unknown_parameter"


class _InjectedFailure(RuntimeError):
    """Raised by the rollback check after the strategy's own ``compute_mask`` ran."""


def failing_spec(spec: StrategySpec) -> StrategySpec | None:
    """The strategy, but ``compute_mask`` raises after the strategy's own code ran (for rollback).

    So does ``prune_and_update``, for a strategy that updates values (the core calls it instead).
    """
    base = spec.strategy_class

    def compute_mask(self: Any, t: Tensor, default_mask: Tensor) -> Tensor:
        base.compute_mask(self, t, default_mask)
        raise _InjectedFailure("failure injected by pruneplug.testing after the strategy's compute_mask ran")

    def prune_and_update(self: Any, t: Tensor, alive: Tensor | None) -> tuple[Tensor, Tensor]:
        base.prune_and_update(self, t, alive)  # type: ignore[attr-defined]  # (only for an UpdatesValues class)
        raise _InjectedFailure("failure injected by pruneplug.testing after the strategy's prune_and_update ran")

    methods: dict[str, Any] = {"compute_mask": compute_mask, "__module__": base.__module__}
    if issubclass(base, UpdatesValues):
        methods["prune_and_update"] = prune_and_update
    try:
        failing = type(base.__name__, (base,), methods)
    except TypeError:  # pragma: no cover - a class that refuses subclasses
        return None
    return dataclasses.replace(spec, strategy_class=failing)


class Checks(Examples):
    """The checks of one strategy, one method ``check_<name>(data)`` each (``data``: hypothesis's draws)."""

    def __init__(
        self,
        spec: StrategySpec,
        params: ParamsLike,
        shapes: SearchStrategy[Shape],
        dtypes: Sequence[torch.dtype],
        invalid_params: Sequence[Mapping[str, Any]],
    ) -> None:
        super().__init__(spec, params, shapes, dtypes)
        self.invalid_params = [dict(p) for p in invalid_params]

    def body(self, check: str) -> Callable[[DataObject], None]:
        """The property of ``check`` (one of :data:`~pruneplug.testing.CHECKS`)."""
        method: Callable[[DataObject], None] = getattr(self, f"check_{check}")
        return method

    def prune_valid(self, module: nn.Module, params: Mapping[str, Any], seed: int, what: str = "a valid prune") -> None:
        """Prune ``module.weight`` with ``params`` (and the statistics they require in use); it must work."""
        with self.statistics_in_use([module], params):
            torch.manual_seed(seed)
            try:
                prune(module, "weight", self.spec, **params)
            except Exception as error:
                raise Failure(f"{what} with {show(params)} failed: {type(error).__name__}: {error}") from error

    def step(self, before: Tensor, after: Tensor, params: Mapping[str, Any], module: nn.Module, values: Tensor) -> None:
        """What every successful prune must satisfy (and exact counts where they apply).

        ``values``: ``weight_orig`` before the prune, which it must still hold -- unless
        the strategy updates values (the ``updates`` check checks those).
        """
        expect(after.dtype == torch.bool, f"the stored mask is {after.dtype}; native masks are torch.bool")
        expect(after.shape == before.shape, f"the mask has shape {tuple(after.shape)}, not {tuple(before.shape)}")
        orig = orig_of(module)
        expect(after.device == orig.device, f"the mask is on {after.device}, the tensor on {orig.device}")
        revived = int((after & ~before).sum())
        expect(
            revived == 0, f"{revived} pruned entr{'y' if revived == 1 else 'ies'} came back; masks may only lose ones"
        )
        if not self.updates:
            expect(same_bits(orig, values), "weight_orig does not hold the original values any more")
        expect(same_bits(weight_of(module), orig.detach() * after), "module.weight is not weight_orig * weight_mask")
        self.kept_protected(values, before, after, params, "the prune")
        if not self.counts or params.get("amount") is None:
            return
        amount = params["amount"]
        dim = self.row_dim(module, values, params)
        if dim is not None:
            self.count_per_row(before, after, amount, dim)
            return
        if self.spec.kind == "unstructured":
            available = int(before.sum())
            pruned = int((before & ~after).sum())
            expected = expected_count(amount, available)
            expect(
                pruned == expected,
                f"amount={amount!r} pruned {pruned} of the {available} unpruned entries; expected exactly {expected}",
            )
            return
        dim = self.dim(params, before.dim())
        slices_before, slices_after = alive_slices(before, dim), alive_slices(after, dim)
        available = int(slices_before.sum())
        gone = available - int(slices_after.sum())
        expected = expected_count(amount, available)
        expect(
            gone == expected,
            f"amount={amount!r} pruned {gone} of the {available} unpruned slices along dim {dim}; "
            f"expected exactly {expected}",
        )
        view = [1] * before.dim()
        view[dim] = -1
        expect(
            torch.equal(after, before & slices_after.reshape(view)),
            f"it pruned entries without pruning their whole slice along dim {dim}",
        )

    @staticmethod
    def count_per_row(before: Tensor, after: Tensor, amount: int | float, dim: int) -> None:
        """Each row along ``dim`` pruned exactly ``amount`` of its own unpruned entries (a count, or a fraction)."""
        rows_before, rows_after = rows_of(before, dim), rows_of(after, dim)
        available = rows_before.sum(dim=1).tolist()
        pruned = (rows_before & ~rows_after).sum(dim=1).tolist()
        expected = [expected_count(amount, n) for n in available]
        wrong = [row for row in range(len(available)) if pruned[row] != expected[row]]
        if wrong:
            row = wrong[0]
            raise Failure(
                f"amount={amount!r} pruned {pruned[row]} of the {available[row]} unpruned entries of row {row} "
                f"(of the {len(available)} rows along dim {dim}, as row_dim(t) declares); expected exactly "
                f"{expected[row]} ({len(wrong)} row{'' if len(wrong) == 1 else 's'} wrong: pruned "
                f"{pruned}, expected {expected} per row)"
            )

    def kept_protected(
        self, values: Tensor, before: Tensor, after: Tensor, params: Mapping[str, Any], what: str
    ) -> None:
        """Every entry (slice) the strategy protects that was unpruned before is still unpruned after."""
        if not self.counts:
            return
        kept = self.protected_alive(values, before, params)
        if kept is None:
            return
        if self.spec.kind == "structured":
            dim = self.dim(params, before.dim())
            lost = int((kept & ~alive_slices(after, dim)).sum())
            unit = f"slice{'' if lost == 1 else 's'} along dim {dim} that protected_slices(t, dim) declares"
        else:
            lost = int((kept & ~after).sum())
            unit = f"entr{'y' if lost == 1 else 'ies'} that protected(t) declares"
        expect(lost == 0, f"{what} with {show(params)} pruned {lost} {unit} protected; they must never be pruned")

    def check_mask(self, data: DataObject) -> None:
        module, values = self.draw_module(data)
        original = module.weight
        shape = tuple(values.shape)
        params = self.draw_params(data, module, values, alive_mask(module))
        seed = data.draw(SEEDS, label="seed")
        self.prune_valid(module, params, seed)
        mask = module._buffers.get("weight_mask")
        expect(isinstance(mask, Tensor), "there is no weight_mask buffer after pruning")
        assert mask is not None
        expect(module._parameters.get("weight_orig") is original, "weight_orig is not the original Parameter object")
        self.step(torch.ones(shape, dtype=torch.bool), mask, params, module, values)
        hooks = pruning_hooks(module)
        expect(
            len(hooks) == 1 and getattr(hooks[0], "_tensor_name", None) == "weight",
            f"expected one pruning hook acting on 'weight', found {hooks!r}",
        )
        # torch's protocol (what torch.nn.utils.prune and pruneplug.compat call): a float default mask.
        # A calibrated strategy reads the layer it prunes from the core, which names it while a mask is computed.
        method = self.spec.create(**params)
        t = values.clone()
        target = scoring(module, "weight", original) if self.calibrated else nullcontext()
        try:
            with self.statistics_in_use([module], params), target:
                torch.manual_seed(seed)
                raw = method.compute_mask(t, default_mask=torch.ones_like(t))  # type: ignore[no-untyped-call]
        except Exception as error:
            raise Failure(
                "compute_mask(t, default_mask) with a float default mask, as torch.nn.utils.prune and "
                f"pruneplug.compat call it, raised {type(error).__name__}: {error}"
            ) from error
        expect(isinstance(raw, Tensor), f"compute_mask(t, default_mask) returned {type(raw).__name__}, not a tensor")
        expect(raw.shape == t.shape, f"compute_mask returned shape {tuple(raw.shape)} for a tensor of shape {shape}")
        expect(is_binary(raw), "compute_mask returned values other than 0 and 1")
        expect(same_bits(t, values), "compute_mask modified the tensor it was given")
        expect(
            torch.equal(raw != 0, mask),
            "compute_mask with torch's float default mask disagrees with the native bool mask for the same seed",
        )

    def check_count(self, data: DataObject) -> None:
        module, values = self.draw_module(data)
        self.draw_earlier_pruning(data, module)
        before = alive_mask(module)
        params = self.draw_params(data, module, values, before)
        self.prune_valid(module, params, data.draw(SEEDS, label="seed"))
        self.step(before, alive_mask(module), params, module, values)

    def check_iterative(self, data: DataObject) -> None:
        module, _ = self.draw_module(data)
        steps = data.draw(st.integers(2, 4), label="steps")
        for _ in range(steps):
            before = alive_mask(module)
            history = len(pruning_history(module, "weight"))
            held = held_values(module)  # (the original values, unless the strategy updates them)
            params = self.draw_params(data, module, held, before)
            self.prune_valid(module, params, data.draw(SEEDS, label="seed"))
            self.step(before, alive_mask(module), params, module, held)
            grown = len(pruning_history(module, "weight"))
            expect(grown == history + 1, f"the pruning history went from {history} to {grown} methods; expected +1")

    def check_rollback(self, data: DataObject) -> None:
        module, values = self.draw_module(data)
        if data.draw(st.booleans(), label="pruned by the strategy before"):
            params = self.draw_params(data, module, values, alive_mask(module))
            self.prune_valid(module, params, data.draw(SEEDS, label="seed"))
            values = held_values(module)
        alive = alive_mask(module)
        params = self.draw_params(data, module, values, alive)
        # (label, strategy, parameters, the error it must raise)
        attempts: list[tuple[str, StrategySpec, dict[str, Any], type[PruneplugError]]] = [
            ("an unknown parameter", self.spec, {**params, _UNKNOWN_PARAMETER: 1}, PruneplugError)
        ]
        attempts += [
            (f"invalid parameters {show(bad)}", self.spec, {**params, **bad}, PruneplugError)
            for bad in self.invalid_params
        ]
        if self.counts and params.get("amount") is not None:
            # (per row, for a strategy that counts per row: then too many for the row with the fewest)
            available, prunable, dim = self.room(module, values, alive, params)
            where = "" if dim is None else f" in a row along dim {dim}"
            attempts.append(
                (
                    f"amount={min(available) + 1}, more than is left{where}",
                    self.spec,
                    {**params, "amount": min(available) + 1},
                    PruneplugError,
                )
            )
            protected = sum(available) - sum(prunable)
            if protected:
                for amount in (min(prunable) + 1, 1.0):
                    label = f"amount={amount!r}, more than may be pruned{where} ({protected} protected)"
                    attempts.append((label, self.spec, {**params, "amount": amount}, InvalidAmountError))
        failing = failing_spec(self.spec)
        if failing is not None:
            inside = "prune_and_update" if self.updates else "compute_mask"
            attempts.append((f"an exception inside {inside}", failing, params, PruneplugError))
        for label, spec, attempt, expected in attempts:
            before = snapshot(module)
            try:
                with self.statistics_in_use([module], params):  # (those the valid parameters require)
                    torch.manual_seed(0)
                    prune(module, "weight", spec, **attempt)
            except expected:
                pass
            except Exception as error:
                raise Failure(
                    f"a prune with {label} raised {type(error).__name__}, not a {expected.__name__}: {error}"
                ) from error
            else:
                raise Failure(f"a prune with {label} ({show(attempt)}) succeeded; it must be rejected")
            changed = before.diff(snapshot(module))
            expect(not changed, f"a failed prune with {label} changed the module: {'; '.join(changed)}")

    def check_determinism(self, data: DataObject) -> None:
        first, values = self.draw_module(data)
        second = self.twin(first, values)
        shape = tuple(values.shape)
        earlier = data.draw(st.one_of(st.none(), SEEDS), label="earlier mask seed")
        if earlier is not None:
            keep = torch.rand(shape, generator=torch.Generator().manual_seed(earlier)) < 0.7
            for module in (first, second):
                prune(module, "weight", CustomFromMask, mask=keep)
        for _ in range(data.draw(st.integers(1, 2), label="steps")):
            params = self.draw_params(data, first, held_values(first), alive_mask(first))
            seed = data.draw(SEEDS, label="seed")
            self.prune_valid(first, params, seed)
            self.prune_valid(second, params, seed)
            expect(
                torch.equal(alive_mask(first), alive_mask(second)),
                f"the same tensor, parameters {show(params)} and torch.manual_seed({seed}) gave different masks",
            )
            expect(
                same_bits(orig_of(first), orig_of(second)),
                f"the same tensor, parameters {show(params)} and torch.manual_seed({seed}) gave different "
                "updated values",
            )

    def check_remove(self, data: DataObject) -> None:
        module, _ = self.draw_module(data)
        cls = type(module)
        self.draw_earlier_pruning(data, module)
        for _ in range(data.draw(st.integers(1, 2), label="steps")):
            params = self.draw_params(data, module, held_values(module), alive_mask(module))
            self.prune_valid(module, params, data.draw(SEEDS, label="seed"))
        effective = weight_of(module).clone()
        orig = orig_of(module)
        try:
            twin = copy.deepcopy(module)
        except Exception as error:
            raise Failure(f"copy.deepcopy of the pruned module failed: {type(error).__name__}: {error}") from error
        expect(same_bits(weight_of(twin), effective), "copy.deepcopy of the pruned module changed the tensor")

        remove(module, "weight")
        expect(module._parameters.get("weight") is orig, "remove did not give back the original Parameter as weight")
        expect(type(module) is cls, f"after pruneplug.remove, the module's class is {type(module)!r}, not {cls!r}")
        removed_cleanly(module, effective, "pruneplug.remove", cls)

        torch_prune.remove(twin, "weight")  # torch's own remove understands pruneplug's hooks
        removed_cleanly(twin, effective, "torch.nn.utils.prune.remove on a deepcopy", cls)

    def check_global(self, data: DataObject) -> None:
        count = data.draw(st.integers(1, 3), label="tensors")
        # parameters drawn for a shape must fit every target: then all targets have that shape
        per_shape = callable(self.params) and not isinstance(self.params, (Mapping, SearchStrategy))
        modules: list[Holder | LinearHolder] = []
        originals: list[Tensor] = []
        for _ in range(count):
            shape = tuple(originals[0].shape) if per_shape and originals else None
            module, values = self.draw_module(data, shape)
            self.draw_earlier_pruning(data, module)
            modules.append(module)
            originals.append(values)
        before = [alive_mask(m) for m in modules]
        total = sum(int(a.sum()) for a in before)
        params = self.draw_params(data, modules[0], originals[0], before[0])
        kept = [self.protected_alive(values, alive, params) for values, alive in zip(originals, before)]
        protected = sum(int(k.sum()) for k in kept if k is not None)
        targets = [(m, "weight") for m in modules]
        seed = data.draw(SEEDS, label="seed")
        if "amount" in self.spec.params_model.model_fields and params.get("amount") is not None:
            params["amount"] = data.draw(amounts(total, total - protected), label="global amount")
            if protected:
                self.global_refuses(targets, params, total - protected + 1, seed)
        try:
            with self.statistics_in_use(modules, params):
                torch.manual_seed(seed)
                prune_global(targets, self.spec, **params)
        except Exception as error:
            raise Failure(f"prune_global with {show(params)} failed: {type(error).__name__}: {error}") from error
        for module, values, alive in zip(modules, originals, before):
            self.kept_protected(values, alive, alive_mask(module), params, "prune_global")
            after = alive_mask(module)
            stored = module._buffers.get("weight_mask")
            expect(stored is not None and stored.dtype == torch.bool, "prune_global stored no bool weight_mask")
            expect(not bool((after & ~alive).any()), "prune_global brought pruned entries back")
            orig = orig_of(module)
            expect(same_bits(orig, values), "prune_global modified weight_orig")
            expect(
                same_bits(weight_of(module), orig.detach() * after), "module.weight is not weight_orig * weight_mask"
            )
        if params.get("amount") is not None:
            pruned = sum(int((a & ~alive_mask(m)).sum()) for a, m in zip(before, modules))
            expected = expected_count(params["amount"], total)
            expect(
                pruned == expected,
                f"prune_global with amount={params['amount']!r} pruned {pruned} of {total} unpruned entries; "
                f"expected exactly {expected}",
            )

    def global_refuses(
        self, targets: Sequence[tuple[nn.Module, str]], params: Mapping[str, Any], amount: int, seed: int
    ) -> None:
        """``prune_global`` with an ``amount`` over what may be pruned raises InvalidAmountError, changing nothing."""
        attempt = {**params, "amount": amount}
        before = [snapshot(module) for module, _ in targets]
        try:
            with self.statistics_in_use([module for module, _ in targets], params):
                torch.manual_seed(seed)
                prune_global(targets, self.spec, **attempt)
        except InvalidAmountError:
            pass
        except Exception as error:
            raise Failure(
                f"prune_global with {show(attempt)}, more than may be pruned, raised {type(error).__name__}, "
                f"not an InvalidAmountError: {error}"
            ) from error
        else:
            raise Failure(f"prune_global with {show(attempt)}, more than may be pruned, succeeded")
        changed = [line for (module, _), state in zip(targets, before) for line in state.diff(snapshot(module))]
        expect(not changed, f"a failed prune_global with {show(attempt)} changed a module: {'; '.join(changed)}")
