"""The fast-path contract (``SelectsEntries`` / ``SelectsSlices``): who takes it, and that it changes nothing."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch
from hypothesis import given, strategies as st
from torch import Tensor, nn

import pruneplug
import pruneplug.compat
from pruneplug.core.fast_path import fast_path


class Spying(pruneplug.BasePruningMethod):
    """Keeps the ``amount`` largest alive entries' complement out; records which path pruneplug took."""

    PRUNING_TYPE = "unstructured"
    calls: ClassVar[list[str]] = []

    def __init__(self, amount: int) -> None:
        self.amount = amount

    @classmethod
    def selects_itself(cls) -> bool:
        return cls.compute_mask is Spying.compute_mask

    def keep_entries(self, t: Tensor, alive: Tensor | None) -> Tensor:
        Spying.calls.append("keep_entries")
        alive = torch.ones_like(t, dtype=torch.bool) if alive is None else alive
        ranked = torch.where(alive, t.abs(), torch.inf).flatten()
        keep = alive.flatten().clone()
        keep[ranked.argsort(stable=True)[: self.amount]] = False
        return keep.reshape(t.shape)

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        Spying.calls.append("compute_mask")
        keep = self.keep_entries(t, None)
        Spying.calls.pop()
        return keep.to(default_mask.dtype) * default_mask


class Overriding(Spying):
    """Replaces compute_mask: the shortcut must no longer stand for it."""

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        return super().compute_mask(t, default_mask)


@pytest.fixture(autouse=True)
def fresh_log() -> None:
    Spying.calls = []


def test_a_strategy_implementing_the_protocol_is_called_on_what_is_alive_without_a_copy() -> None:
    layer = nn.Linear(4, 4)
    assert isinstance(Spying(1), pruneplug.SelectsEntries) and fast_path(Spying(1))
    pruneplug.prune(layer, "weight", Spying(3))
    pruneplug.prune(layer, "weight", Spying(3))
    assert Spying.calls == ["keep_entries", "keep_entries"]
    assert int(layer.weight_mask.sum()) == 10


def test_a_replaced_compute_mask_is_called_instead_of_the_shortcut() -> None:
    layer = nn.Linear(4, 4)
    assert not fast_path(Overriding(1))
    pruneplug.prune(layer, "weight", Overriding(3))
    pruneplug.prune(layer, "weight", Overriding(3))
    assert Spying.calls == ["compute_mask", "compute_mask"]
    assert int(layer.weight_mask.sum()) == 10


def test_the_built_in_base_classes_implement_the_protocols() -> None:
    assert isinstance(pruneplug.compat.L1Unstructured(0.5), pruneplug.SelectsEntries)
    assert isinstance(pruneplug.compat.LnStructured(0.5, 2, dim=0), pruneplug.SelectsSlices)
    assert fast_path(pruneplug.compat.L1Unstructured(0.5)) and fast_path(pruneplug.compat.LnStructured(0.5, 2, 0))
    assert not fast_path(pruneplug.compat.Identity())  # prunes nothing: no selection to take over


def test_patching_a_strategys_compute_mask_turns_its_shortcut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    original = pruneplug.strategies.L1Unstructured.compute_mask

    def patched(self: Any, t: Tensor, default_mask: Tensor) -> Tensor:
        seen.append("patched")
        return original(self, t, default_mask)

    monkeypatch.setattr(pruneplug.strategies.L1Unstructured, "compute_mask", patched)
    layer = nn.Linear(4, 4)
    pruneplug.prune(layer, "weight", "l1_unstructured", amount=2)
    pruneplug.prune(layer, "weight", "l1_unstructured", amount=2)
    assert seen == ["patched", "patched"]


@given(
    seed=st.integers(0, 2**16),
    first=st.integers(0, 12),
    second=st.integers(0, 8),
    structured=st.booleans(),
)
def test_the_shortcut_gives_the_mask_the_general_path_gives(
    seed: int, first: int, second: int, structured: bool
) -> None:
    """Pruning twice through the shortcut and through compute_mask on the gathered copy: the same masks."""
    torch.manual_seed(seed)
    weight = torch.randn(4, 5).round(decimals=1)  # ties included
    strategy = "ln_structured" if structured else "l1_unstructured"
    amounts = (min(first, 3), min(second, 1)) if structured else (first, second)
    params: dict[str, Any] = {"n": 1, "dim": 0} if structured else {}
    masks = []
    for shortcut in (True, False):
        layer = nn.Linear(5, 4)
        with torch.no_grad():
            layer.weight.copy_(weight)
        cls = pruneplug.strategies.LnStructured if structured else pruneplug.strategies.L1Unstructured
        with pytest.MonkeyPatch.context() as patch:
            if not shortcut:
                patch.setattr(cls, "selects_itself", classmethod(lambda c: False))
            for amount in amounts:
                pruneplug.prune(layer, "weight", strategy, amount=amount, **params)
        masks.append(layer.weight_mask.clone())
    assert torch.equal(masks[0], masks[1])


_L1 = (pruneplug.UnstructuredStrategy, "l1_unstructured", {"amount": 2})
_LN = (pruneplug.StructuredStrategy, "ln_structured", {"amount": 1, "n": 1, "dim": 0})


@pytest.mark.parametrize(
    ("base", "strategy", "params", "api"),
    [(*_L1, "native"), (*_L1, "compat"), (*_L1, "global"), (*_LN, "native"), (*_LN, "compat")],
)
def test_patching_the_base_classs_compute_mask_reaches_every_prune(
    monkeypatch: pytest.MonkeyPatch, base: type, strategy: str, params: dict[str, Any], api: str
) -> None:
    """A test that patches ``UnstructuredStrategy.compute_mask`` (or the structured one) sees every prune
    go through its patch: first prunes, prunes again, natively, through compat, and globally."""
    seen: list[str] = []
    original = base.compute_mask

    def patched(self: Any, t: Tensor, default_mask: Tensor) -> Tensor:
        seen.append("patched")
        return original(self, t, default_mask)

    monkeypatch.setattr(base, "compute_mask", patched)
    layers = [nn.Linear(4, 4), nn.Linear(4, 4)]
    for _ in range(2):
        if api == "native":
            pruneplug.prune(layers[0], "weight", strategy, **params)
        elif api == "global":
            pruneplug.prune_global([(layer, "weight") for layer in layers], strategy, **params)
        elif strategy == "l1_unstructured":
            pruneplug.compat.l1_unstructured(layers[0], "weight", amount=2)
        else:
            pruneplug.compat.ln_structured(layers[0], "weight", amount=1, n=1, dim=0)
    assert seen == ["patched", "patched"]
