"""Where one tensor of a module stands: unpruned, pruned by pruneplug, or pruned by torch.

Reading only: nothing here changes a module. A pruned tensor is recognised by
its hook in ``module._forward_pre_hooks`` (pruneplug's or
``torch.nn.utils.prune``'s), with ``<name>_orig`` a parameter and
``<name>_mask`` a buffer beside it, so models pruned by torch are read the
same way as pruneplug's.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributed.tensor import DTensor
from torch.nn.utils import prune as torch_prune

from ..errors import (
    InvalidImportanceScoresError,
    InvalidMaskError,
    InvalidTargetError,
    PruningStateError,
    TensorNotFoundError,
    close_matches_hint,
)
from ..storage.formats import is_binary
from ..storage.packed import plain
from .lazy import masked_tensor

__all__ = [
    "TensorState",
    "pruning_hooks",
    "find_hook",
    "is_pruned",
    "tensor_state",
    "check_untied",
    "check_importance_scores",
    "current_values",
    "alive_mask",
    "default_alive",
    "count_nonzero",
    "pruned_tensors",
]


def pruning_hooks(module: nn.Module) -> list[tuple[int, torch_prune.BasePruningMethod]]:
    """The pruning hooks of ``module`` itself (pruneplug's and torch's), in order."""
    return [
        (key, hook)
        for key, hook in module._forward_pre_hooks.items()
        if isinstance(hook, torch_prune.BasePruningMethod)
    ]


def find_hook(module: nn.Module, name: str) -> tuple[int, torch_prune.BasePruningMethod] | None:
    """The hook in charge of ``module.<name>``, or ``None`` if it is not pruned."""
    found = [(key, hook) for key, hook in pruning_hooks(module) if getattr(hook, "_tensor_name", None) == name]
    if len(found) > 1:
        raise PruningStateError(
            f"{len(found)} pruning hooks act on this tensor; there must be one (a PruningContainer for a history)",
            module_type=type(module).__name__,
            tensor=name,
        )
    return found[0] if found else None


def is_pruned(module: nn.Module) -> bool:
    """Whether ``module`` or any submodule has a pruning hook (pruneplug's or torch's)."""
    return any(pruning_hooks(sub) for sub in module.modules())


@dataclass
class TensorState:
    """Where one tensor of a module stands before a prune."""

    module: nn.Module
    name: str
    orig: nn.Parameter
    hook_key: int | None = None
    hook: torch_prune.BasePruningMethod | None = None
    mask: Tensor | None = None

    @property
    def pruned(self) -> bool:
        return self.hook is not None

    @property
    def module_type(self) -> str:
        return type(self.module).__name__


def _prunable_names(module: nn.Module) -> list[str]:
    names = [n for n, p in module._parameters.items() if p is not None]
    names += [getattr(h, "_tensor_name", "") for _, h in pruning_hooks(module)]
    return sorted(n for n in names if n)


def tensor_state(module: nn.Module, name: str, *, whole_tensors_only: bool = True) -> TensorState:
    """Locate ``module.<name>``: its original parameter, and its mask and hook if pruned.

    ``whole_tensors_only`` refuses ``<x>_orig`` / ``<x>_mask`` of a pruned
    ``x`` (pruning those breaks the module); :mod:`pruneplug.compat` turns it
    off, since torch lets it through.
    """
    if not isinstance(module, nn.Module):
        raise InvalidTargetError(f"expected a torch.nn.Module to prune, got {type(module).__name__}")
    if not isinstance(name, str) or not name or "." in name:
        raise InvalidTargetError(
            f"the tensor name must be the name of a parameter of the module itself (no dots), got {name!r}",
            module_type=type(module).__name__,
        )
    for suffix in ("_orig", "_mask") if whole_tensors_only else ():
        base = name.removesuffix(suffix)
        if base != name and find_hook(module, base) is not None:
            raise InvalidTargetError(
                f"{name!r} is part of the pruning of {base!r}; prune {base!r} itself to prune it further",
                module_type=type(module).__name__,
                tensor=name,
            )
    found = find_hook(module, name)
    if found is not None:
        key, hook = found
        orig = module._parameters.get(name + "_orig")
        mask = module._buffers.get(name + "_mask")
        if orig is None or mask is None:
            raise PruningStateError(
                f"a pruning hook acts on {name!r} but {name}_orig or {name}_mask is missing",
                module_type=type(module).__name__,
                tensor=name,
            )
        return TensorState(module, name, orig, key, hook, mask)
    if name in module._parameters:
        parameter = module._parameters[name]
        if parameter is None:
            raise TensorNotFoundError(
                f"the module has no {name!r} tensor (it is None, e.g. a layer built with bias=False)",
                module_type=type(module).__name__,
                tensor=name,
            )
        return TensorState(module, name, parameter)
    module_type = type(module).__name__
    if name + "_orig" in module._parameters and name + "_mask" in module._buffers:
        raise PruningStateError(
            f"{name}_orig and {name}_mask exist but no pruning hook does: the pruning was left half-undone "
            "(torch.nn.utils.prune deletes the hook when a later prune fails). Re-create it with "
            f"pruneplug.load_pruned_state_dict on a fresh model, or delete {name}_orig/{name}_mask by hand",
            module_type=module_type,
            tensor=name,
        )
    if name in module._buffers or isinstance(module.__dict__.get(name), Tensor):
        raise InvalidTargetError(
            f"{name!r} is a buffer or plain tensor attribute, not a parameter; only parameters can be pruned",
            module_type=module_type,
            tensor=name,
        )
    candidates = _prunable_names(module)
    listing = ", ".join(candidates) if candidates else "none"
    raise TensorNotFoundError(
        f"no parameter named {name!r}.{close_matches_hint(name, candidates)} Parameters: {listing}",
        module_type=module_type,
        tensor=name,
    )


def check_untied(states: Sequence[TensorState], *, like_torch: bool = False) -> None:
    """Refuse two targets that are one parameter (tied weights reached through two modules).

    Ranking them together would count every entry twice, and masking each use
    on its own would quietly untie them. ``like_torch`` (for
    :mod:`pruneplug.compat`) warns instead, and goes on as torch does.
    """
    seen: dict[int, TensorState] = {}
    for state in states:
        first = seen.setdefault(id(state.orig), state)
        if first is not state:
            problem = (
                f"{first.module_type}.{first.name} and {state.module_type}.{state.name} are one tied parameter; "
                "list it once (listed twice, its entries are ranked twice and `amount` counts each of them twice)"
            )
            if like_torch:
                warnings.warn(f"{problem}. Going on as torch does", stacklevel=3)
                return
            raise InvalidTargetError(problem, module_type=state.module_type, tensor=state.name)


def check_importance_scores(
    scores: object, reference: Tensor, *, module_type: str | None = None, tensor: str | None = None
) -> Tensor:
    """Importance scores must be a tensor of the parameter's shape, on its device."""
    if not isinstance(scores, Tensor):
        raise InvalidImportanceScoresError(
            f"importance_scores must be a tensor, got {type(scores).__name__}", module_type=module_type, tensor=tensor
        )
    if scores.shape != reference.shape:
        raise InvalidImportanceScoresError(
            "importance_scores should have the same shape as the parameter: "
            f"got {tuple(scores.shape)} vs {tuple(reference.shape)}",
            module_type=module_type,
            tensor=tensor,
        )
    if scores.device != reference.device:
        raise InvalidImportanceScoresError(
            f"importance_scores are on {scores.device} but the parameter is on {reference.device}",
            module_type=module_type,
            tensor=tensor,
        )
    return scores


def current_values(state: TensorState) -> Tensor:
    """What the tensor holds now: the parameter, or ``orig * mask`` if pruned (detached)."""
    if not state.pruned:
        return state.orig
    with torch.no_grad():
        return masked_tensor(state.module, state.name)


def alive_mask(mask: Tensor, state: TensorState) -> Tensor:
    """The bool mask of entries still unpruned, from a stored mask of any dtype (packed masks unpacked)."""
    if mask.dtype == torch.bool:
        return plain(mask)
    if not is_binary(mask):
        raise InvalidMaskError(
            f"the existing {state.name}_mask holds values other than 0 and 1; pruneplug only stacks on binary masks",
            module_type=state.module_type,
            tensor=state.name,
        )
    return mask != 0


def default_alive(state: TensorState) -> Tensor:
    """Bool mask of the entries of the tensor still unpruned (all ``True`` if never pruned)."""
    if not state.pruned:
        if type(state.orig) not in (Tensor, nn.Parameter):  # a DTensor's is a DTensor placed like it
            return torch.ones_like(state.orig.detach(), dtype=torch.bool)
        return torch.ones(state.orig.shape, dtype=torch.bool, device=state.orig.device)
    assert state.mask is not None
    return alive_mask(state.mask.detach(), state)


def count_nonzero(value: Tensor) -> int:
    """Nonzero entries of ``value``, of the whole tensor when it is a DTensor (then every rank must ask)."""
    try:
        count = value.count_nonzero()
    except (NotImplementedError, RuntimeError):  # float8 and other narrow dtypes have no count_nonzero
        count = (value != 0).sum()
    return int(count.full_tensor() if isinstance(count, DTensor) else count)


def pruned_tensors(module: nn.Module) -> Iterable[tuple[str, nn.Module, str]]:
    """``(qualified module name, module, tensor name)`` for every pruned tensor in ``module``."""
    for qualname, sub in module.named_modules():
        for _, hook in pruning_hooks(sub):
            yield qualname, sub, hook._tensor_name
