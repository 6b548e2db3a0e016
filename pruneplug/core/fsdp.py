"""Pruned tensors of FSDP2 (``fully_shard``) modules: the name FSDP swaps, and the mask in the forward.

FSDP2 keeps one ``FSDPParam`` per sharded parameter and, around each forward
and backward, swaps the module's attribute *by its registered name* between
the sharded DTensor and the all-gathered plain tensor. Pruning renames
``<name>`` to ``<name>_orig``, so:

* :func:`follow_rename` points FSDP's record at the new name (and back, on
  ``remove``), so that FSDP all-gathers ``<name>_orig`` and the pruning
  hook reads it unsharded inside the forward;
* the mask stays a sharded DTensor buffer (FSDP2 shards parameters only),
  and :func:`masked_unsharded` multiplies the gathered ``<name>_orig`` by the
  gathered mask: one bool all-gather in the forward and one in the backward,
  1 byte per entry (25 % on top of FSDP2's all-gather of a float32 weight,
  50 % on top of a bfloat16 one). Autograd keeps only the sharded mask
  between the two, so a layer's whole mask exists only while its own forward
  or backward runs.

Modules a ``fully_shard`` reaches through a parent are handled alike: the
record is found from the parameter, whichever module's state holds it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributed.tensor import DTensor

from ..errors import IncompatibleStrategyError

__all__ = ["follow_rename", "masked_unsharded", "renaming"]


def _fsdp_params() -> list[Any]:
    """Every ``FSDPParam`` of every live ``fully_shard`` state in this process."""
    if not torch.distributed.is_available():
        return []
    from torch.distributed._composable_state import _module_state_mapping
    from torch.distributed.fsdp._fully_shard._fsdp_state import FSDPState

    found = []
    for reference in list(_module_state_mapping.values()):
        state = reference()
        group = getattr(state, "_fsdp_param_group", None) if isinstance(state, FSDPState) else None
        if group is not None:
            found.extend(group.fsdp_params)
    return found


def _record_of(param: Tensor) -> Any | None:
    for fsdp_param in _fsdp_params():
        if fsdp_param.sharded_param is param:
            return fsdp_param
    return None


def renaming(module: nn.Module, param: Tensor, old: str, new: str) -> Callable[[], None] | None:
    """What makes FSDP swap ``module.<new>`` where it swapped ``module.<old>`` (``None``: not FSDP's).

    Checked now, done when the returned function is called (it cannot fail),
    so that a prune of several tensors renames all or none.

    Raises:
        IncompatibleStrategyError: ``param`` is shared with another module
            (tied weights), whose name pruning does not change.
    """
    if not isinstance(param, DTensor):
        return None
    record = _record_of(param)
    if record is None:
        return None
    info = record._module_info
    if info.shared_modules:
        raise IncompatibleStrategyError(
            f"{type(module).__name__}.{old} is shared with {len(info.shared_modules)} other module(s) under "
            "fully_shard (tied weights); pruning one of them is not supported"
        )
    if info.module is not module or info.param_name != old:
        raise IncompatibleStrategyError(
            f"{type(module).__name__}.{old}: FSDP2 registered this parameter as "
            f"{type(info.module).__name__}.{info.param_name}"
        )

    def rename() -> None:
        info.param_name = new

    return rename


def follow_rename(module: nn.Module, param: Tensor, old: str, new: str) -> None:
    """Make FSDP swap ``module.<new>`` where it swapped ``module.<old>`` at once (see :func:`renaming`)."""
    rename = renaming(module, param, old, new)
    if rename is not None:
        rename()


class _GatheredMask(torch.autograd.Function):
    """``orig * full(mask)`` that keeps only the sharded mask for the backward (gathered again there)."""

    @staticmethod
    def forward(ctx: Any, orig: Tensor, mask: DTensor) -> Tensor:
        ctx.mask = mask
        return orig * mask.full_tensor().to(dtype=orig.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        mask: DTensor = ctx.mask
        return grad * mask.full_tensor().to(dtype=grad.dtype), None


def masked_unsharded(orig: Tensor, mask: Tensor) -> Tensor:
    """``orig * mask`` for an ``orig`` FSDP2 has all-gathered and a ``mask`` that is still a sharded DTensor."""
    if mask.shape != orig.shape:
        raise IncompatibleStrategyError(
            f"the mask's global shape {tuple(mask.shape)} differs from the gathered tensor's {tuple(orig.shape)}"
        )
    return _GatheredMask.apply(orig, mask)  # type: ignore[no-any-return, no-untyped-call]
