"""Loading a pruned checkpoint into a model that is not (yet) pruned.

A state_dict saved from a pruned model holds ``<name>_orig`` and
``<name>_mask`` where a fresh model has ``<name>``. torch needs ``identity``
called on each such tensor before ``load_state_dict``; here one call finds
them from the keys, sets up the reparametrization, and loads -- for
checkpoints written by pruneplug or by torch.nn.utils.prune.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ._errors import InvalidMaskError, InvalidTargetError
from ._reparam import (
    NATIVE_POLICY,
    MaskStorage,
    ModuleSnapshot,
    PendingPrune,
    check_storage,
    commit,
    find_hook,
    plan_prune,
)
from ._storage import pack_masks, unpack_masks
from .strategies import Identity

__all__ = ["load_pruned_state_dict"]


def _plan(
    model: nn.Module, state_dict: Mapping[str, object], storage: MaskStorage
) -> tuple[list[PendingPrune], dict[str, str]]:
    """Plan an identity reparametrization for every tensor the checkpoint holds pruned."""
    pendings: list[PendingPrune] = []
    renamed: dict[str, str] = {}
    for qualname, module in model.named_modules():
        prefix = f"{qualname}." if qualname else ""
        for name, parameter in list(module._parameters.items()):
            orig_key, mask_key = f"{prefix}{name}_orig", f"{prefix}{name}_mask"
            if parameter is None or orig_key not in state_dict or mask_key not in state_dict:
                continue
            if find_hook(module, name) is not None:
                continue
            mask = state_dict[mask_key]
            if not isinstance(mask, Tensor):
                raise InvalidMaskError(f"state_dict[{mask_key!r}] is a {type(mask).__name__}, not a tensor")
            if mask.shape != parameter.shape:
                raise InvalidMaskError(
                    f"state_dict[{mask_key!r}] has shape {tuple(mask.shape)} "
                    f"but {prefix}{name} has shape {tuple(parameter.shape)}"
                )
            if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
                raise InvalidMaskError(f"state_dict[{mask_key!r}] holds values other than 0 and 1")
            ones = torch.ones(parameter.shape, dtype=torch.bool, device=parameter.device)
            pendings.append(
                plan_prune(module, name, Identity(), mask=ones, policy=NATIVE_POLICY, label="identity", storage=storage)
            )
            renamed[f"{prefix}{name}"] = orig_key
    return pendings, renamed


def load_pruned_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, object],
    *,
    strict: bool = True,
    assign: bool = False,
    mask_storage: MaskStorage | None = None,
) -> nn.Module:
    """Load a (possibly pruned) state_dict, setting up pruning wherever it has masks.

    For every parameter ``p`` the checkpoint stores as ``p_orig`` + ``p_mask``
    and the model holds unpruned, the reparametrization is created first
    (its history starts with :class:`~pruneplug.strategies.Identity`); then
    the state_dict is loaded and the masked tensors are current at once.
    Masks (shape, 0/1), tensor types and shapes and, with ``strict``, the
    keys are checked before anything changes, so a checkpoint that does not
    fit leaves the model exactly as it was. (A module's own
    ``_load_from_state_dict`` that fails part-way is torch's to undo.)

    Args:
        model: the model to load into, pruned or not.
        state_dict: from pruneplug or from ``torch.nn.utils.prune``.
        strict: as in ``load_state_dict``: every key of the model must be in
            ``state_dict`` and no other.
        assign: as in ``load_state_dict``: the checkpoint's tensors become
            the model's (new parameter objects), instead of being copied
            into them. This is how a model built on the ``meta`` device --
            large models are, to avoid allocating their weights twice --
            gets its weights and masks.
        mask_storage: ``"bool"`` or ``"packed"`` (see
            :func:`pruneplug.prune`): how every mask of the model is stored
            once loaded. Default: ``"bool"`` for the tensors this call sets
            up, as they are for tensors already pruned.

    Returns ``model``.

    Raises:
        InvalidTargetError: ``model`` or ``state_dict`` is not one, or the
            state_dict does not fit the model (keys, shapes).
        InvalidMaskError: a mask is misshapen or not 0/1.
        InvalidParametersError: ``mask_storage`` is none of those.
    """
    if not isinstance(model, nn.Module):
        raise InvalidTargetError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(state_dict, Mapping):
        raise InvalidTargetError(
            f"expected a state_dict (a mapping of names to tensors), got {type(state_dict).__name__}"
        )
    storage = check_storage(mask_storage)
    pendings, renamed = _plan(model, state_dict, storage or "bool")
    expected: dict[str, tuple[int, ...] | None] = {}
    for key, value in model.state_dict().items():
        shape = tuple(value.shape) if isinstance(value, Tensor) else None
        if key in renamed:
            expected[renamed[key]] = expected[renamed[key][: -len("_orig")] + "_mask"] = shape
        else:
            expected[key] = shape
    not_tensors = [
        key for key, value in state_dict.items() if expected.get(key) is not None and not isinstance(value, Tensor)
    ]
    if not_tensors:
        raise InvalidTargetError(
            "the state_dict does not fit the model: not a tensor where the model has one: "
            + ", ".join(not_tensors[:10])
        )
    mismatched = [
        f"{key}: checkpoint {tuple(value.shape)} vs model {expected[key]}"
        for key, value in state_dict.items()
        if isinstance(value, Tensor) and expected.get(key) is not None and tuple(value.shape) != expected[key]
    ]
    if mismatched:
        raise InvalidTargetError(
            "the state_dict does not fit the model: size mismatch for " + "; ".join(mismatched[:10])
        )
    if strict:
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        if missing or unexpected:
            detail = []
            if missing:
                detail.append("missing keys: " + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
            if unexpected:
                detail.append(
                    "unexpected keys: " + ", ".join(unexpected[:10]) + (" ..." if len(unexpected) > 10 else "")
                )
            raise InvalidTargetError("the state_dict does not match the model (" + "; ".join(detail) + ")")
    snapshots = [ModuleSnapshot(p.state.module) for p in pendings]
    commit(pendings)
    try:
        model.load_state_dict(state_dict, strict=strict, assign=assign)
    except BaseException:
        for snapshot in snapshots:
            snapshot.restore()
        raise
    if storage == "packed":
        pack_masks(model)  # masks already pruned before, or handed over as they were by assign=True
    elif storage == "bool":
        unpack_masks(model)
    return model
