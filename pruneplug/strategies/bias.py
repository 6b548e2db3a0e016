"""The bias that goes with a structured prune of ``weight`` (``prune_bias=True``).

A structured strategy that removes output channels of a weight can take the
bias entries of those channels with it, in the same all-or-nothing prune. The
output channels are ``dim=0`` of a weight, except for transposed
convolutions, whose weight is laid out ``(in, out / groups, ...)``: there
they are ``dim=1``, and grouped ones are refused (a channel of the output is
not one slice of the weight).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..core.method import with_history
from ..core.plan import PendingPrune, plan_prune
from ..core.state import default_alive, find_hook, tensor_state
from ..errors import InvalidParametersError
from ..selection.slices import alive_slices, normalize_dim
from ..storage.formats import NATIVE_POLICY, MaskStorage
from ..storage.packed import is_packed, plain
from .custom import PrecomputedMask

__all__ = ["plan_bias", "release_precomputed"]


def plan_bias(pending: PendingPrune, label: str, storage: MaskStorage | None) -> PendingPrune | None:
    """The bias prune that goes with a structured prune of ``weight`` (``prune_bias=True``)."""
    state = pending.state
    module, hook = state.module, pending.hook
    method: Any = hook[-1] if isinstance(hook, torch_prune.PruningContainer) else hook
    context: dict[str, Any] = {"module_type": state.module_type, "tensor": state.name, "strategy": label}
    if state.name != "weight":
        raise InvalidParametersError("prune_bias=True only applies when pruning 'weight'", **context)
    bias_present = "bias" in module._parameters and module._parameters["bias"] is not None
    if not bias_present and find_hook(module, "bias") is None:
        raise InvalidParametersError(f"prune_bias=True but {state.module_type} has no bias", **context)
    transposed = isinstance(module, nn.modules.conv._ConvTransposeNd)
    if transposed and getattr(module, "groups", 1) != 1:
        raise InvalidParametersError("prune_bias=True is not supported for grouped transposed convolutions", **context)
    out_dim = 1 if transposed else 0
    dim = normalize_dim(method.dim, pending.mask.dim())
    if dim != out_dim:
        raise InvalidParametersError(
            f"prune_bias=True needs dim={out_dim} (the output channels of {state.module_type}), got dim={method.dim}",
            **context,
        )
    bias_state = tensor_state(module, "bias")
    channels = alive_slices(plain(pending.alive), out_dim)
    if bias_state.orig.shape != channels.shape:
        raise InvalidParametersError(
            f"prune_bias=True but the bias has shape {tuple(bias_state.orig.shape)}, not ({channels.numel()},)",
            **context,
        )
    current = default_alive(bias_state)
    new_mask = current & channels
    if torch.equal(new_mask, current) and bias_state.pruned:
        return None
    if not bool((~new_mask).any()) and not bias_state.pruned:
        return None
    record = PrecomputedMask(new_mask, f"bias of the output channels pruned from weight by {label}")
    if storage is None and is_packed(pending.mask):
        storage = "packed"  # the bias is stored as the weight is
    return plan_prune(
        module, "bias", record, stack=with_history, mask=new_mask, policy=NATIVE_POLICY, label=label, storage=storage
    )


def release_precomputed(hook: torch_prune.BasePruningMethod) -> None:
    """Once committed, a precomputed mask lives in its ``_mask`` buffer: the method drops its own reference."""
    last = hook[-1] if isinstance(hook, torch_prune.PruningContainer) else hook
    if isinstance(last, PrecomputedMask):
        last.mask = None  # type: ignore[assignment]  # the _mask buffer holds it; do not keep a second copy
