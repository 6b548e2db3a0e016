"""What the checks look at on a pruned module, and how a check fails.

A check that finds a property violated raises :class:`Failure` with a message
saying what was wrong; :class:`~pruneplug.testing.Conformance` turns it into a
:class:`~pruneplug.testing.ConformanceError`. The helpers read the one tensor
the checks prune: ``weight`` of a :class:`Holder`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from ..api import is_pruned
from ._records import same_bits

__all__ = [
    "Failure",
    "Holder",
    "LinearHolder",
    "alive_mask",
    "alive_slices",
    "expect",
    "expected_count",
    "held_values",
    "orig_of",
    "pruning_hooks",
    "removed_cleanly",
    "rows_of",
    "same_bits",
    "show",
    "weight_of",
]


class Failure(AssertionError):
    """One property violated (turned into :class:`ConformanceError` by the caller)."""


def expect(condition: bool, message: str) -> None:
    """Fail the check with ``message`` unless ``condition`` holds."""
    if not condition:
        raise Failure(message)


class Holder(nn.Module):
    """A module owning one parameter ``weight`` of any shape (what the checks prune)."""

    def __init__(self, values: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(values)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight.sum()

    def probe(self) -> Tensor:
        """An input ``forward`` takes."""
        return torch.ones(())


class LinearHolder(nn.Linear):
    """An ``nn.Linear`` without bias whose weight holds given ``(out_features, in_features)`` values.

    What the checks prune for a strategy that reads calibration statistics: the
    statistics measure the inputs of linear layers.
    """

    def __init__(self, values: Tensor) -> None:
        if values.dim() != 2:
            raise ValueError(
                "strategies that read calibration statistics are checked on nn.Linear layers, whose weights "
                f"are 2-D (out_features, in_features); the shapes given drew {tuple(values.shape)}"
            )
        out_features, in_features = values.shape
        super().__init__(in_features, out_features, bias=False, device="meta")  # (no random init drawn)
        self.weight = nn.Parameter(values)

    def probe(self) -> Tensor:
        """An input ``forward`` takes: one row of ones."""
        weight = self._parameters.get("weight_orig", self._parameters.get("weight"))
        assert weight is not None
        return torch.ones(1, self.in_features, dtype=weight.dtype)


def weight_of(module: nn.Module) -> Tensor:
    """What ``module.weight`` holds now (the masked tensor while pruned)."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor):
        raise Failure(f"module.weight is {type(weight).__name__}, not a tensor")
    return weight.detach()


def orig_of(module: nn.Module) -> Tensor:
    """``module.weight_orig`` (a failure if it is missing)."""
    orig = module._parameters.get("weight_orig")
    if orig is None:
        raise Failure("there is no weight_orig parameter after pruning")
    return orig


def held_values(module: nn.Module) -> Tensor:
    """A copy of the values ``weight_orig`` holds now (``weight`` before the first prune)."""
    held = module._parameters.get("weight_orig", module._parameters.get("weight"))
    if held is None:
        raise Failure("the module has neither weight_orig nor weight")
    return held.detach().clone()


def alive_mask(module: nn.Module) -> Tensor:
    """The bool mask of entries of ``module.weight`` still unpruned (all True if not pruned)."""
    mask = module._buffers.get("weight_mask")
    if mask is None:
        return torch.ones(module._parameters["weight"].shape, dtype=torch.bool)  # type: ignore[union-attr]
    return mask.detach() != 0


def alive_slices(mask: Tensor, dim: int) -> Tensor:
    """Bool vector over ``dim``: which slices of ``mask`` still have an unpruned entry."""
    others = [d for d in range(mask.dim()) if d != dim]
    return mask.any(dim=others) if others else mask.clone()


def rows_of(t: Tensor, dim: int) -> Tensor:
    """``t`` as a 2-D tensor, one row a 1-D slice of ``t`` along ``dim`` (in the order of the other dims).

    Written here, not taken from the library, so that the kit checks the
    library's per-row counting against a reading of its own.
    """
    return t.movedim(dim, -1).reshape(-1, t.shape[dim])


def expected_count(amount: int | float, available: int) -> int:
    """pruneplug's (and torch's) rule: an int is a count, a float a fraction rounded with ``round``."""
    return int(amount) if isinstance(amount, int) else round(float(amount) * available)


def pruning_hooks(module: nn.Module) -> list[torch_prune.BasePruningMethod]:
    """The pruning methods among ``module``'s forward pre-hooks."""
    return [h for h in module._forward_pre_hooks.values() if isinstance(h, torch_prune.BasePruningMethod)]


def removed_cleanly(module: Holder | LinearHolder, effective: Tensor, where: str, cls: type) -> None:
    """After ``remove``: a plain ``weight`` Parameter holding ``effective`` bit for bit, and nothing else left.

    ``cls``: the class the module had before it was pruned (a holder), which it must still be an instance of.
    """
    expect(isinstance(module._parameters.get("weight"), nn.Parameter), f"after {where}, weight is not a Parameter")
    expect(same_bits(weight_of(module), effective), f"{where} changed the effective tensor")
    left = [n for n in ("weight_orig", "weight_mask") if n in module._parameters or n in module._buffers]
    expect(not left, f"after {where}, {' and '.join(left)} remain")
    expect(not pruning_hooks(module) and not is_pruned(module), f"after {where}, a pruning hook remains")
    keys = list(module.state_dict())
    expect(keys == ["weight"], f"after {where}, the state_dict keys are {keys}")
    expect(isinstance(module, cls), f"after {where}, the module is a {type(module).__qualname__}")
    module(module.probe())


def show(params: Mapping[str, Any]) -> str:
    """Parameters for a message (tensors by shape and dtype, not by value)."""

    def one(value: Any) -> str:
        if isinstance(value, Tensor):
            return f"<tensor {tuple(value.shape)} {value.dtype}>"
        return repr(value)

    return "{" + ", ".join(f"{k}={one(v)}" for k, v in params.items()) + "}"
