"""Property tests of the public API's invariants.

What is pinned here holds for any shape, dim, amount and sequence of
strategies: exact pruned counts, masks that only ever lose entries, ``remove``
keeping the effective tensor bit for bit, failing prunes that change nothing,
exact global selection, serialization round trips, gradients and optimizers
that never revive a pruned entry, and the no-grad cache seeing every change --
with masks stored as ``torch.bool`` and bit-packed (``mask_storage``) alike.

Hypothesis does not control torch's RNG, so every test draws an int seed and
builds its tensors from a ``torch.Generator`` (or ``torch.manual_seed``).
"""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch import Tensor, nn

import pruneplug
from pruneplug.testing import assert_unchanged, snapshot

UNSTRUCTURED = ("random_unstructured", "l1_unstructured", "identity", "custom_from_mask")
STRUCTURED = ("random_structured", "ln_structured")
STRATEGIES = UNSTRUCTURED + STRUCTURED
NORMS: tuple[int | float | str, ...] = (1, 2, 3, math.inf, -math.inf, "fro")
FRACTIONS = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 1.0)
SEEDS = st.integers(0, 2**31 - 1)
SHAPES = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)
FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
STORAGES = st.sampled_from((None, "bool", "packed"))
BITS = {torch.float32: torch.int32, torch.float64: torch.int64, torch.float16: torch.int16, torch.bfloat16: torch.int16}


class Holder(nn.Module):
    """A module that owns one parameter ``weight`` of any shape."""

    def __init__(self, values: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(values)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight.sum()


def identical(a: Tensor, b: Tensor) -> bool:
    """Same dtype, shape and bits (so NaN equals NaN and -0.0 differs from 0.0)."""
    a, b = a.detach(), b.detach()
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.view(BITS[a.dtype]), b.view(BITS[b.dtype])) if a.dtype in BITS else torch.equal(a, b)


def holder(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float32) -> Holder:
    """A ``Holder`` with normal values drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return Holder(torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype))


def alive_of(module: nn.Module, name: str = "weight") -> Tensor:
    """The bool mask of still-unpruned entries of ``module.<name>`` (all True if not pruned)."""
    mask = module._buffers.get(name + "_mask")
    if mask is None:
        return torch.ones(getattr(module, name).shape, dtype=torch.bool)
    assert mask.dtype == torch.bool
    return mask.clone()


def current(module: nn.Module, name: str = "weight") -> Tensor:
    """What the tensor holds now, as a strategy sees it (``orig * mask`` once pruned)."""
    orig = module._parameters.get(name + "_orig")
    if orig is None:
        return getattr(module, name).detach().clone()
    return (orig * module._buffers[name + "_mask"]).detach()


def expected_count(amount: int | float, available: int) -> int:
    """An int is a count; a float a fraction of what is left, rounded with Python's ``round``."""
    return amount if isinstance(amount, int) else round(amount * available)


def alive_slices(mask: Tensor, dim: int) -> Tensor:
    """Bool vector over ``dim``: the slices that still hold an unpruned entry."""
    others = [d for d in range(mask.dim()) if d != dim]
    return mask.any(dim=others) if others else mask.clone()


def broadcast(slices: Tensor, dim: int, shape: torch.Size) -> Tensor:
    view = [1] * len(shape)
    view[dim] = -1
    return slices.reshape(view).expand(shape)


def draw_amount(data: st.DataObject, available: int) -> int | float:
    """Any valid amount for ``available`` units: 0, 1, 1.0, an int count, or a fraction."""
    choices = [
        st.just(0),
        st.just(1.0),
        st.integers(0, available),
        st.sampled_from(FRACTIONS),
        st.floats(0.0, 1.0),
    ]
    if available >= 1:
        choices.append(st.just(1))
    return data.draw(st.one_of(*choices), label="amount")


def stored_as(module: nn.Module, storage: str | None, was_packed: bool, name: str = "weight") -> None:
    """``module.<name>_mask`` is stored as ``mask_storage=storage`` asks (``None``: as it was)."""
    packed = storage == "packed" or (storage is None and was_packed)
    assert isinstance(module._buffers[name + "_mask"], pruneplug.PackedMask) is packed


def prune_and_check(data: st.DataObject, module: nn.Module, strategy: str) -> None:
    """Prune ``module.weight`` once with ``strategy`` (drawing its parameters and mask storage) and check the
    exact effect."""
    before = alive_of(module)
    was_packed = isinstance(module._buffers.get("weight_mask"), pruneplug.PackedMask)
    storage = data.draw(STORAGES, label="mask_storage")
    values = current(module)
    shape = before.shape
    history = len(pruneplug.pruning_history(module, "weight"))
    seed = data.draw(SEEDS, label="mask seed")
    params: dict[str, Any] = {}
    if strategy in STRUCTURED:
        dim = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim")
        params["dim"] = dim
        if strategy == "ln_structured":
            params["n"] = data.draw(st.sampled_from(NORMS), label="n")
        available = int(alive_slices(before, dim % len(shape)).sum())
        params["amount"] = draw_amount(data, available)
    elif strategy in ("random_unstructured", "l1_unstructured"):
        available = int(before.sum())
        params["amount"] = draw_amount(data, available)
    elif strategy == "custom_from_mask":
        chosen = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < 0.5
        as_float = data.draw(st.booleans(), label="float mask")
        params["mask"] = chosen.to(torch.float32) if as_float else chosen
    torch.manual_seed(seed)
    pruneplug.prune(module, "weight", strategy, mask_storage=storage, **params)

    stored_as(module, storage, was_packed)
    after = alive_of(module)
    assert after.dtype == torch.bool and after.shape == shape
    assert not bool((after & ~before).any()), "a pruned entry came back"
    assert len(pruneplug.pruning_history(module, "weight")) == history + 1
    assert identical(module.weight, module.weight_orig * module.weight_mask)
    pruned_now = before & ~after
    if strategy == "identity":
        assert torch.equal(after, before)
    elif strategy == "custom_from_mask":
        assert torch.equal(after, before & chosen)
    elif strategy in ("random_unstructured", "l1_unstructured"):
        assert int(pruned_now.sum()) == expected_count(params["amount"], available)
        if strategy == "l1_unstructured" and bool(pruned_now.any()) and bool(after.any()):
            magnitude = values.abs()
            assert bool(magnitude[pruned_now].max() <= magnitude[after].min()), "l1 pruned a larger entry"
    else:
        dim = params["dim"] % len(shape)
        slices_before, slices_after = alive_slices(before, dim), alive_slices(after, dim)
        assert not bool((slices_after & ~slices_before).any())
        assert int(slices_before.sum()) - int(slices_after.sum()) == expected_count(params["amount"], available)
        assert torch.equal(after, before & broadcast(slices_after, dim, shape)), "not whole slices"
        gone = slices_before & ~slices_after
        if strategy == "ln_structured" and bool(gone.any()) and bool(slices_after.any()):
            others = [d for d in range(len(shape)) if d != dim]
            if params["n"] == "fro" and len(others) != 2:  # torch.norm takes 'fro' over two dims only
                norms = torch.linalg.vector_norm(values, 2, dim=others)
            else:
                norms = torch.norm(values, p=params["n"], dim=others)
            norms = norms.nan_to_num(nan=math.inf)  # NaN ranks last
            assert bool(norms[gone].max() <= norms[slices_after].min()), "ln pruned a slice of larger norm"


# --- exact counts and monotone masks ------------------------------------------------------


@settings(max_examples=60)
@given(data=st.data(), shape=SHAPES, seed=SEEDS, dtype=st.sampled_from(FLOAT_DTYPES))
def test_a_first_prune_prunes_exactly_the_amount(
    data: st.DataObject, shape: tuple[int, ...], seed: int, dtype: torch.dtype
) -> None:
    """Every built-in prunes exactly ``amount`` entries (or slices) of an unpruned tensor, of any shape and dtype."""
    strategies = STRATEGIES if len(shape) >= 2 else UNSTRUCTURED
    strategy = data.draw(st.sampled_from(strategies), label="strategy")
    module = holder(shape, seed, dtype)
    original = module.weight
    prune_and_check(data, module, strategy)
    assert module.weight_orig is original


@settings(max_examples=50)
@given(data=st.data(), shape=SHAPES, seed=SEEDS)
def test_masks_only_lose_entries_under_any_sequence(data: st.DataObject, shape: tuple[int, ...], seed: int) -> None:
    """Any sequence of strategies: each step prunes exactly its amount of what is still alive, never revives an
    entry, and leaves ``weight_orig`` untouched."""
    strategies = STRATEGIES if len(shape) >= 2 else UNSTRUCTURED
    module = holder(shape, seed)
    original = module.weight.detach().clone()
    steps = data.draw(st.integers(1, 5), label="steps")
    for _ in range(steps):
        prune_and_check(data, module, data.draw(st.sampled_from(strategies), label="strategy"))
        assert torch.equal(module.weight_orig, original)


@pytest.mark.parametrize(
    ("available", "amount", "count"),
    [(5, 0.5, 2), (7, 0.5, 4), (3, 0.5, 2), (9, 0.5, 4), (10, 0.25, 2), (6, 0.25, 2), (4, 0.375, 2)],
)
def test_fractions_round_half_to_even(available: int, amount: float, count: int) -> None:
    """A fraction becomes a count with Python's ``round`` (half to even) on the still-unpruned count."""
    assert round(amount * available) == count  # the rule itself
    module = Holder(torch.arange(1.0, 13.0))
    if available < 12:
        pruneplug.prune(module, "weight", "l1_unstructured", amount=12 - available)
    pruneplug.prune(module, "weight", "random_unstructured", amount=amount)
    assert int((~module.weight_mask).sum()) == 12 - available + count


# --- remove ---------------------------------------------------------------------------


@settings(max_examples=40)
@given(data=st.data(), shape=SHAPES, seed=SEEDS, dtype=st.sampled_from(FLOAT_DTYPES), by_name=st.booleans())
def test_remove_keeps_the_effective_tensor_bit_for_bit(
    data: st.DataObject, shape: tuple[int, ...], seed: int, dtype: torch.dtype, by_name: bool
) -> None:
    """``remove`` leaves a plain Parameter -- the original object -- holding exactly the masked bits
    (negative pruned entries stay -0.0), and no ``_orig``, ``_mask`` or pruning hook."""
    module = holder(shape, seed, dtype)
    with torch.no_grad():  # special values too: zeros, and infinities whose pruned product is NaN
        flat = module.weight.view(-1)
        specials = torch.tensor([0.0, -0.0, math.inf, -math.inf], dtype=dtype)
        where = torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(seed))[: len(specials)]
        flat[where] = specials[: where.numel()]
    parameter = module.weight
    strategies = STRATEGIES if len(shape) >= 2 else UNSTRUCTURED
    for _ in range(data.draw(st.integers(1, 3), label="steps")):
        prune_and_check(data, module, data.draw(st.sampled_from(strategies), label="strategy"))
    effective = module.weight.detach().clone()
    pruneplug.remove(module, "weight") if by_name else pruneplug.remove(module)
    assert module.weight is parameter
    assert isinstance(module.weight, nn.Parameter) and module.weight.requires_grad
    assert identical(module.weight, effective)
    assert list(module._parameters) == ["weight"] and not module._buffers
    assert "weight_orig" not in module.__dict__ and "weight_mask" not in module.__dict__
    assert list(module.state_dict()) == ["weight"]
    assert not any(isinstance(h, torch.nn.utils.prune.BasePruningMethod) for h in module._forward_pre_hooks.values())
    assert not pruneplug.is_pruned(module)


# --- failing prunes change nothing ------------------------------------------------------


class RaisesInMask(pruneplug.BasePruningMethod):
    """Throwaway: computing the mask raises."""

    PRUNING_TYPE = "global"
    name = "pp_test_raises_in_mask"

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        raise RuntimeError("deliberate failure in compute_mask")


class RaisesInInit(pruneplug.BasePruningMethod):
    """Throwaway: building the strategy raises."""

    PRUNING_TYPE = "global"
    name = "pp_test_raises_in_init"

    def __init__(self) -> None:
        raise RuntimeError("deliberate failure in __init__")

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:  # pragma: no cover - never built
        return default_mask


class WrongShapeGlobal(pruneplug.BasePruningMethod):
    """Throwaway: a whole-tensor mask of the wrong shape."""

    PRUNING_TYPE = "global"
    name = "pp_test_wrong_shape_global"

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        return torch.ones(t.numel() + 1, dtype=default_mask.dtype)


class WrongShapeUnstructured(pruneplug.BasePruningMethod):
    """Throwaway: an unstructured mask of the wrong shape."""

    PRUNING_TYPE = "unstructured"
    name = "pp_test_wrong_shape_unstructured"

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        return torch.ones(t.numel() + 1, dtype=default_mask.dtype)


class NotBinaryGlobal(pruneplug.BasePruningMethod):
    """Throwaway: a whole-tensor mask holding 0.5."""

    PRUNING_TYPE = "global"
    name = "pp_test_not_binary_global"

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        return default_mask.to(torch.float32) * 0.5


class NotBinaryUnstructured(pruneplug.BasePruningMethod):
    """Throwaway: an unstructured mask holding 2."""

    PRUNING_TYPE = "unstructured"
    name = "pp_test_not_binary_unstructured"

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        return default_mask.to(torch.float32) * 2


class NotATensor(pruneplug.BasePruningMethod):
    """Throwaway: returns a list instead of a mask."""

    PRUNING_TYPE = "global"
    name = "pp_test_not_a_tensor"

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        return default_mask.tolist()  # type: ignore[no-any-return]


class Unprunes(pruneplug.BasePruningMethod):
    """Throwaway: a mask of ones, which revives every pruned entry."""

    PRUNING_TYPE = "global"
    name = "pp_test_unprunes"

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        return torch.ones_like(default_mask)


THROWAWAYS = (
    RaisesInMask,
    RaisesInInit,
    WrongShapeGlobal,
    WrongShapeUnstructured,
    NotBinaryGlobal,
    NotBinaryUnstructured,
    NotATensor,
    Unprunes,
)


@dataclass
class Failing:
    """One prune call that must fail: ``call(module, remaining_entries, remaining_rows)``."""

    tensor: str
    strategy: str
    params: Callable[[int, int], dict[str, Any]]
    first_prune: bool = True  # whether it fails on an unpruned tensor too


FAILING: dict[str, Failing] = {
    "unknown strategy": Failing("weight", "l1_unstructurd", lambda e, r: {"amount": 1}),
    "unknown tensor": Failing("wieght", "l1_unstructured", lambda e, r: {"amount": 1}),
    "amount bool": Failing("weight", "l1_unstructured", lambda e, r: {"amount": True}),
    "amount str": Failing("weight", "l1_unstructured", lambda e, r: {"amount": "0.5"}),
    "amount tensor": Failing("weight", "random_unstructured", lambda e, r: {"amount": torch.tensor(1)}),
    "amount None": Failing("weight", "l1_unstructured", lambda e, r: {"amount": None}),
    "amount nan": Failing("weight", "l1_unstructured", lambda e, r: {"amount": math.nan}),
    "amount inf": Failing("weight", "random_unstructured", lambda e, r: {"amount": math.inf}),
    "amount -inf": Failing("weight", "l1_unstructured", lambda e, r: {"amount": -math.inf}),
    "amount 1.5": Failing("weight", "l1_unstructured", lambda e, r: {"amount": 1.5}),
    "amount -0.25": Failing("weight", "random_unstructured", lambda e, r: {"amount": -0.25}),
    "structured amount nan": Failing("weight", "ln_structured", lambda e, r: {"amount": math.nan, "n": 2, "dim": 0}),
    "negative int": Failing("weight", "l1_unstructured", lambda e, r: {"amount": -1}),
    "int above what remains": Failing("weight", "l1_unstructured", lambda e, r: {"amount": e + 1}),
    "slices above what remain": Failing("weight", "random_structured", lambda e, r: {"amount": r + 1, "dim": 0}),
    "dim out of range": Failing("weight", "ln_structured", lambda e, r: {"amount": 1, "n": 2, "dim": 2}),
    "negative dim out of range": Failing("weight", "random_structured", lambda e, r: {"amount": 1, "dim": -3}),
    "structured on 1-D": Failing("bias", "random_structured", lambda e, r: {"amount": 1, "dim": 0}),
    "ln_structured on 1-D": Failing("bias", "ln_structured", lambda e, r: {"amount": 1, "n": 1, "dim": -1}),
    "importance scores of the wrong shape": Failing(
        "weight", "l1_unstructured", lambda e, r: {"amount": 1, "importance_scores": torch.ones(5, 4)}
    ),
    "custom mask of the wrong shape": Failing("weight", "custom_from_mask", lambda e, r: {"mask": torch.ones(4, 4)}),
    "custom mask not 0/1": Failing("weight", "custom_from_mask", lambda e, r: {"mask": torch.full((4, 5), 2.0)}),
    "custom mask of halves": Failing("weight", "custom_from_mask", lambda e, r: {"mask": torch.full((4, 5), 0.5)}),
    "strategy raises": Failing("weight", RaisesInMask.name, lambda e, r: {}),
    "strategy constructor raises": Failing("weight", RaisesInInit.name, lambda e, r: {}),
    "whole mask of the wrong shape": Failing("weight", WrongShapeGlobal.name, lambda e, r: {}),
    "unstructured mask of the wrong shape": Failing("weight", WrongShapeUnstructured.name, lambda e, r: {}),
    "whole mask not 0/1": Failing("weight", NotBinaryGlobal.name, lambda e, r: {}),
    "unstructured mask not 0/1": Failing("weight", NotBinaryUnstructured.name, lambda e, r: {}),
    "mask not a tensor": Failing("weight", NotATensor.name, lambda e, r: {}),
    "mask un-prunes": Failing("weight", Unprunes.name, lambda e, r: {}, first_prune=False),
}


@pytest.fixture
def throwaways(registry: pruneplug.Registry) -> pruneplug.Registry:
    """The fresh registry with the misbehaving test strategies registered."""
    for strategy in THROWAWAYS:
        pruneplug.register(strategy)
    return registry


PRE_PRUNES: dict[str, Callable[[nn.Linear], None]] = {
    "unpruned": lambda m: None,
    "l1": lambda m: pruneplug.prune(m, "weight", "l1_unstructured", amount=0.3),
    "l1, packed": lambda m: pruneplug.prune(m, "weight", "l1_unstructured", amount=0.3, mask_storage="packed"),
    "structured then random": lambda m: (
        pruneplug.prune(m, "weight", "random_structured", amount=1, dim=0),
        pruneplug.prune(m, "weight", "random_unstructured", amount=3),
    ),
    "ln then identity": lambda m: (
        pruneplug.prune(m, "weight", "ln_structured", amount=0.25, n=1, dim=1),
        pruneplug.prune(m, "weight", "identity"),
    ),
}


@pytest.mark.parametrize(
    ("case", "state"),
    [(case, state) for case in FAILING for state in PRE_PRUNES if FAILING[case].first_prune or state != "unpruned"],
)
def test_a_failing_prune_changes_nothing(throwaways: pruneplug.Registry, case: str, state: str) -> None:
    """A prune that cannot be done raises a PruneplugError naming module type, tensor and strategy, and leaves
    state_dict, parameters, buffers, hooks, ``module.weight`` and the history exactly as they were -- on a first
    prune and on an already pruned tensor (histories of one and two methods)."""
    failing = FAILING[case]
    module = nn.Linear(5, 4)
    if state != "unpruned":
        PRE_PRUNES[state](module)
        pruneplug.prune(module, "bias", "l1_unstructured", amount=1)
    alive = alive_of(module)
    entries, rows = int(alive.sum()), int(alive.any(dim=1).sum())
    before = snapshot(module)
    with pytest.raises(pruneplug.PruneplugError) as caught:
        pruneplug.prune(module, failing.tensor, failing.strategy, **failing.params(entries, rows))
    error = caught.value
    message = str(error)
    assert (error.module_type, error.tensor) == ("Linear", failing.tensor)
    assert message.startswith(f"Linear.{failing.tensor}"), message
    if case == "unknown strategy":  # a name that does not resolve is named by the error itself
        assert f"no strategy named {failing.strategy!r}" in message, message
    else:
        assert error.strategy == failing.strategy
        assert f"strategy {failing.strategy!r}" in message, message
    assert_unchanged(before, module)
    if state != "unpruned":  # and the module still works as a pruned one
        assert torch.equal(module.weight, module.weight_orig * module.weight_mask)


# --- global pruning ------------------------------------------------------------------------


@settings(max_examples=50)
@given(
    data=st.data(),
    shapes=st.lists(SHAPES, min_size=1, max_size=4),
    seed=SEEDS,
    as_generator=st.booleans(),
    dtype=st.sampled_from((torch.float32, torch.float64)),
)
def test_prune_global_prunes_exactly_the_lowest_across_targets(
    data: st.DataObject, shapes: list[tuple[int, ...]], seed: int, as_generator: bool, dtype: torch.dtype
) -> None:
    """``prune_global`` prunes exactly the k lowest-|importance| still-unpruned entries of all targets together
    (k from ``amount`` over their alive count), accepts a generator of targets, and per-target counts sum to k."""
    generator = torch.Generator().manual_seed(seed)
    sizes = [math.prod(s) for s in shapes]
    total = sum(sizes)
    magnitudes = (torch.randperm(2 * total, generator=generator)[:total] + 1).to(dtype)  # distinct, nonzero
    signs = torch.randint(0, 2, (total,), generator=generator).to(dtype) * 2 - 1
    flat = magnitudes * signs
    modules = []
    for piece, shape in zip(flat.split(sizes), shapes):
        modules.append(Holder(piece.reshape(shape).clone()))
    importance: dict[tuple[nn.Module, str], Tensor] = {}
    for module in modules:
        if data.draw(st.booleans(), label="pre-pruned"):
            torch.manual_seed(data.draw(SEEDS, label="pre-prune seed"))
            pruneplug.prune(
                module,
                "weight",
                "random_unstructured",
                amount=data.draw(st.sampled_from(FRACTIONS)),
                mask_storage=data.draw(STORAGES, label="pre-prune mask_storage"),
            )
    if data.draw(st.booleans(), label="importance scores"):
        scores = (torch.randperm(2 * total, generator=generator)[:total] + 1).to(dtype) * signs
        for module, piece in zip(modules, scores.split(sizes)):
            if data.draw(st.booleans(), label="scores for this target"):
                importance[(module, "weight")] = piece.reshape(module.weight.shape)
    before = [alive_of(m) for m in modules]
    ranked = [
        importance.get((m, "weight"), current(m)).abs().reshape(-1) for m in modules
    ]  # what each target is ranked by
    pooled_alive = torch.cat([b.reshape(-1) for b in before])
    pooled_scores = torch.cat(ranked)
    available = int(pooled_alive.sum())
    amount = draw_amount(data, available)
    k = expected_count(amount, available)
    order = sorted((float(pooled_scores[i]), i) for i in range(total) if bool(pooled_alive[i]))
    expected_pruned = torch.zeros(total, dtype=torch.bool)
    expected_pruned[[i for _, i in order[:k]]] = True

    pairs = [(m, "weight") for m in modules]
    targets = (pair for pair in pairs) if as_generator else pairs
    storage = data.draw(STORAGES, label="mask_storage")
    was_packed = [isinstance(m._buffers.get("weight_mask"), pruneplug.PackedMask) for m in modules]
    pruneplug.prune_global(
        targets, "l1_unstructured", amount=amount, importance_scores=importance or None, mask_storage=storage
    )

    for module, packed in zip(modules, was_packed):
        stored_as(module, storage, packed)
    after = [alive_of(m) for m in modules]
    pruned_now = torch.cat([(b & ~a).reshape(-1) for b, a in zip(before, after)])
    assert not bool((torch.cat([a.reshape(-1) for a in after]) & ~pooled_alive).any())
    assert torch.equal(pruned_now, expected_pruned)
    assert sum(int((b & ~a).sum()) for b, a in zip(before, after)) == k
    for module in modules:
        assert torch.equal(module.weight, module.weight_orig * module.weight_mask)


@settings(max_examples=30)
@given(shapes=st.lists(SHAPES, min_size=1, max_size=4), seed=SEEDS, amount=st.sampled_from(FRACTIONS))
def test_random_global_pruning_counts_sum_to_the_global_count(
    shapes: list[tuple[int, ...]], seed: int, amount: float
) -> None:
    """``random_unstructured`` across targets: per-target pruned counts sum to ``round(amount * alive)``."""
    modules = [holder(shape, seed + i) for i, shape in enumerate(shapes)]
    torch.manual_seed(seed)
    pruneplug.prune(modules[0], "weight", "random_unstructured", amount=0.5)
    before = [alive_of(m) for m in modules]
    available = sum(int(b.sum()) for b in before)
    pruneplug.prune_global(((m, "weight") for m in modules), "random_unstructured", amount=amount)
    after = [alive_of(m) for m in modules]
    assert all(not bool((a & ~b).any()) for a, b in zip(after, before))
    assert sum(int((b & ~a).sum()) for b, a in zip(before, after)) == round(amount * available)


# --- serialization --------------------------------------------------------------------


def small_model(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def prune_model(model: nn.Sequential, seed: int, storage: str = "bool") -> None:
    """Prune both weights and the first bias, with a history on ``model[0].weight``, masks stored as ``storage``."""
    torch.manual_seed(seed)
    pruneplug.prune(model[0], "weight", "random_structured", amount=1, dim=0, mask_storage=storage)
    pruneplug.prune(model[0], "weight", "l1_unstructured", amount=0.3)
    pruneplug.prune(model[0], "bias", "random_unstructured", amount=2, mask_storage=storage)
    pruneplug.prune(model[2], "weight", "ln_structured", amount=0.4, n=2, dim=1, mask_storage=storage)
    for index, name in PRUNED:
        assert isinstance(model[index]._buffers[name + "_mask"], pruneplug.PackedMask) is (storage == "packed")


STORAGE_NAMES = st.sampled_from(("bool", "packed"))


PRUNED = ((0, "weight"), (0, "bias"), (2, "weight"))


def assert_same_pruning(a: nn.Sequential, b: nn.Sequential) -> None:
    """Same masks, same originals and the same effective tensors, right now."""
    for index, name in PRUNED:
        ma, mb = a[index], b[index]
        assert torch.equal(getattr(ma, name + "_mask"), getattr(mb, name + "_mask"))
        assert getattr(mb, name + "_mask").dtype == torch.bool
        assert torch.equal(getattr(ma, name + "_orig"), getattr(mb, name + "_orig"))
        assert torch.equal(getattr(ma, name), getattr(mb, name)), f"{index}.{name} is stale"
        assert torch.equal(getattr(mb, name), getattr(mb, name + "_orig") * getattr(mb, name + "_mask"))


@settings(max_examples=25)
@given(seed=SEEDS, other=SEEDS, forward_first=st.booleans(), storages=st.tuples(STORAGE_NAMES, STORAGE_NAMES))
def test_state_dict_round_trip_into_a_pruned_model(
    seed: int, other: int, forward_first: bool, storages: tuple[str, str]
) -> None:
    """Loading a pruned model's state_dict into a pruned model of the same structure makes the effective
    tensors equal at once, before any forward; the state_dict holds plain bool masks whichever way they are
    stored, and loading keeps the target's storage."""
    source, target = small_model(seed), small_model(other)
    prune_model(source, seed, storages[0])
    prune_model(target, other, storages[1])
    assert all(type(v) in (Tensor, nn.Parameter) for v in source.state_dict().values())
    x = torch.randn(4, 6)
    if forward_first:  # prime the target's cache, in both modes
        target(x)
        with torch.no_grad():
            target(x)
    target.load_state_dict(source.state_dict())
    assert_same_pruning(source, target)
    assert isinstance(target[0].weight_mask, pruneplug.PackedMask) is (storages[1] == "packed")
    with torch.no_grad():
        assert torch.equal(source(x), target(x))
    assert torch.equal(source(x), target(x))


@settings(max_examples=25)
@given(seed=SEEDS, how=st.sampled_from(("pickle", "deepcopy")), forward_first=st.booleans(), storage=STORAGE_NAMES)
def test_pickle_and_deepcopy_round_trips(seed: int, how: str, forward_first: bool, storage: str) -> None:
    """A pruned model survives pickle and deepcopy (even after a forward with autograd): same pruning, mask
    storage and outputs, and the copy is independent of the original."""
    model = small_model(seed)
    prune_model(model, seed, storage)
    x = torch.randn(4, 6)
    if forward_first:
        model(x).sum().backward()
    clone = pickle.loads(pickle.dumps(model)) if how == "pickle" else copy.deepcopy(model)
    assert_same_pruning(model, clone)
    assert type(clone[0].weight_mask) is type(model[0].weight_mask)
    assert pruneplug.is_pruned(clone)
    assert torch.equal(model(x), clone(x))
    assert clone[0].weight_orig is not model[0].weight_orig
    assert [id(p) for p in clone.parameters()] != [id(p) for p in model.parameters()]
    assert [type(h) for h in clone[0]._forward_pre_hooks.values()] == [
        type(h) for h in model[0]._forward_pre_hooks.values()
    ]

    expected = model(x).detach().clone()
    weight = model[0].weight.detach().clone()
    with torch.no_grad():
        clone[0].weight_orig.mul_(3)
        clone[0].weight_mask[0, 0] = False
        clone[2].weight_mask.fill_(False)
    assert torch.equal(model(x), expected) and torch.equal(model[0].weight, weight)
    assert not bool(model[2].weight_mask.logical_not().all())
    with torch.no_grad():
        assert torch.equal(clone[2](clone[1](clone[0](x))), clone[2].bias.expand(4, 3))
    assert torch.equal(clone[0].weight, clone[0].weight_orig * clone[0].weight_mask)
    # and pruning goes on independently
    pruneplug.prune(clone[2], "bias", "l1_unstructured", amount=1)
    assert not hasattr(model[2], "bias_mask")


@settings(max_examples=25)
@given(seed=SEEDS, other=SEEDS, storages=st.tuples(STORAGE_NAMES, STORAGE_NAMES))
def test_load_pruned_state_dict_rebuilds_the_pruning(seed: int, other: int, storages: tuple[str, str]) -> None:
    """``load_pruned_state_dict`` into a fresh, unpruned model sets up the pruning the checkpoint holds:
    same keys, masks, originals and effective tensors at once, masks stored as asked, and it prunes on from
    there."""
    source, fresh = small_model(seed), small_model(other)
    prune_model(source, seed, storages[0])
    returned = pruneplug.load_pruned_state_dict(fresh, source.state_dict(), mask_storage=storages[1])
    assert returned is fresh
    for index, name in PRUNED:
        assert isinstance(fresh[index]._buffers[name + "_mask"], pruneplug.PackedMask) is (storages[1] == "packed")
    assert list(fresh.state_dict()) == list(source.state_dict())
    assert_same_pruning(source, fresh)
    assert not hasattr(fresh[2], "bias_mask")
    x = torch.randn(4, 6)
    assert torch.equal(source(x), fresh(x))
    before = alive_of(fresh[2])
    pruneplug.prune(fresh[2], "weight", "l1_unstructured", amount=2)
    assert int((before & ~alive_of(fresh[2])).sum()) == 2
    pruneplug.remove(fresh)
    assert not pruneplug.is_pruned(fresh)


# --- gradients and training ------------------------------------------------------------------


OPTIMIZERS: dict[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]] = {
    "sgd-momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1),
    "sgd-nesterov": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=0.1),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1),
}


@settings(max_examples=20)
@given(seed=SEEDS, optimizer=st.sampled_from(list(OPTIMIZERS)), steps=st.integers(1, 5), storage=STORAGE_NAMES)
def test_training_never_revives_a_pruned_entry(seed: int, optimizer: str, steps: int, storage: str) -> None:
    """``weight_orig.grad`` is zero at pruned entries; after steps of SGD (momentum) or Adam/AdamW (weight
    decay) pruned effective entries are exactly zero, the masks never change, and forwards use the new values
    (bool and bit-packed masks alike)."""
    model = small_model(seed)
    prune_model(model, seed, storage)
    masks = {(i, n): getattr(model[i], n + "_mask") for i, n in PRUNED}
    saved = {key: mask.clone() for key, mask in masks.items()}
    opt = OPTIMIZERS[optimizer](list(model.parameters()))
    x, y = torch.randn(8, 6), torch.randn(8, 3)
    for _ in range(steps):
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        for (i, name), mask in masks.items():
            grad = getattr(model[i], name + "_orig").grad
            assert grad is not None and bool((grad[~mask] == 0).all()), "gradient reaches a pruned entry"
        opt.step()
        for (i, name), mask in masks.items():
            assert getattr(model[i], name + "_mask") is mask and torch.equal(mask, saved[(i, name)])
        for train in (False, True):
            with torch.set_grad_enabled(train):
                out = model(x)
                for (i, name), mask in masks.items():
                    effective = getattr(model[i], name)
                    assert bool((effective[~mask] == 0).all()), "a pruned entry is nonzero"
                    assert torch.equal(effective, getattr(model[i], name + "_orig") * mask)
                first = F.linear(
                    x, model[0].weight_orig * masks[(0, "weight")], model[0].bias_orig * masks[(0, "bias")]
                )
                manual = F.linear(F.relu(first), model[2].weight_orig * masks[(2, "weight")], model[2].bias)
                assert torch.equal(out, manual)


# --- the no-grad cache ----------------------------------------------------------------------


def mutate(kind: str, layer: nn.Linear, seed: int) -> None:
    """Change ``layer``'s original weight or mask in place, one way or another."""
    if kind == "orig .data.mul_":
        layer.weight_orig.data.mul_(2)
        pruneplug.refresh(layer)  # documented: writes through .data bypass change tracking
    elif kind == "orig mul_ under no_grad":
        with torch.no_grad():
            layer.weight_orig.mul_(2)
    elif kind == "orig .detach().add_":
        layer.weight_orig.detach().add_(1)
    elif kind == "optimizer step":
        opt: torch.optim.Optimizer = torch.optim.SGD([layer.weight_orig], lr=0.5)
        layer.weight_orig.grad = torch.ones_like(layer.weight_orig)
        opt.step()
    elif kind == "fused optimizer step":
        opt = torch.optim.Adam([layer.weight_orig], lr=0.5, fused=True)
        layer.weight_orig.grad = torch.ones_like(layer.weight_orig)
        opt.step()
    elif kind == "load_state_dict":
        generator = torch.Generator().manual_seed(seed)
        state = {k: v.clone() for k, v in layer.state_dict().items()}
        state["weight_orig"] = torch.randn(state["weight_orig"].shape, generator=generator)
        state["weight_mask"] = torch.rand(state["weight_mask"].shape, generator=generator) < 0.5
        layer.load_state_dict(state)
    elif kind == "mask setitem":
        layer.weight_mask[tuple(layer.weight_mask.nonzero()[0].tolist())] = False
    elif kind == "mask .data setitem":
        layer.weight_mask.data[tuple(layer.weight_mask.nonzero()[0].tolist())] = False
        pruneplug.refresh(layer)  # documented: writes through .data bypass change tracking
    elif kind == "mask replaced":
        layer.weight_mask = torch.zeros_like(layer.weight_mask)
    else:  # pragma: no cover
        raise AssertionError(kind)


MUTATIONS = (
    "orig .data.mul_",
    "orig mul_ under no_grad",
    "orig .detach().add_",
    "optimizer step",
    "fused optimizer step",
    "load_state_dict",
    "mask setitem",
    "mask .data setitem",
    "mask replaced",
)


@settings(max_examples=10)
@given(seed=SEEDS, within=st.booleans(), eval_mode=st.booleans(), storage=STORAGE_NAMES)
@pytest.mark.parametrize("kind", MUTATIONS)
def test_no_grad_forwards_reuse_the_weight_until_something_changes(
    kind: str, seed: int, within: bool, eval_mode: bool, storage: str
) -> None:
    """In eval mode under ``no_grad`` repeated forwards reuse the same ``module.weight`` object; after an
    in-place change to ``weight_orig`` or to the mask (optimizer steps, fused ones too, in-place ops,
    ``load_state_dict``, replacing the mask; ``.data`` writes followed by ``pruneplug.refresh``) the next
    forward uses the new values, in eval and in train mode."""
    torch.manual_seed(seed)
    layer = nn.Linear(4, 3)
    pruneplug.prune(layer, "weight", "l1_unstructured", amount=0.25, mask_storage=storage)
    layer.train(not eval_mode)
    x = torch.randn(2, 4)
    with torch.no_grad():
        layer(x)
        weight = layer.weight
        layer(x)
        if eval_mode:
            assert layer.weight is weight, "a no-grad forward recomputed an unchanged weight"
            layer(x)
            assert layer.weight is weight
    if within:
        with torch.no_grad():
            mutate(kind, layer, seed)
    else:
        mutate(kind, layer, seed)
    with torch.no_grad():
        out = layer(x)
        expected = layer.weight_orig * layer.weight_mask
        assert torch.equal(layer.weight, expected), f"stale weight after {kind}"
        assert torch.equal(out, F.linear(x, expected, layer.bias))
        refreshed = layer.weight
        layer(x)
        if eval_mode:
            assert layer.weight is refreshed
