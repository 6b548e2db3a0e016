"""Switching the masks of a pruned model between bool and bit-packed storage.

:func:`pruneplug.prune` and :func:`pruneplug.prune_global` choose a mask's
storage when they prune (``mask_storage=``); these convert a model already
pruned -- e.g. one just loaded from a checkpoint -- one mask at a time, so
converting never needs more than one extra unpacked mask.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from ..errors import InvalidTargetError
from ..storage.packed import is_packed, pack_mask, plain
from .cache import forget
from .lazy import is_lazy
from .module_hooks import install_packed_support
from .refresh import refresh
from .state import pruning_hooks

__all__ = ["pack_masks", "unpack_masks", "store_mask"]


def store_mask(module: nn.Module, hook: torch_prune.BasePruningMethod, mask: Tensor) -> None:
    """Make ``mask`` the stored mask of ``hook``'s tensor, and the masked tensor current.

    A packed mask also gets the hooks that keep it packed (modules
    ``torch.nn.utils.prune`` pruned have none yet).
    """
    module._buffers[f"{hook._tensor_name}_mask"] = mask
    if is_packed(mask):
        install_packed_support(module)
    forget(hook)
    if not is_lazy(module):
        refresh(module, hook, force=True)


def _convert(model: nn.Module, packed: bool) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise InvalidTargetError(f"expected a torch.nn.Module, got {type(model).__name__}")
    for module in model.modules():
        for _, hook in pruning_hooks(module):
            key = f"{hook._tensor_name}_mask"
            mask = module._buffers.get(key)
            if mask is None or mask.dtype != torch.bool or is_packed(mask) is packed:
                continue
            store_mask(module, hook, pack_mask(mask) if packed else plain(mask))
    return model


def pack_masks(model: nn.Module) -> nn.Module:
    """Store every bool mask of ``model`` and its submodules bit-packed; returns ``model``.

    Each ``<name>_mask`` becomes a :class:`~pruneplug.PackedMask`: 1/32 of
    fp32 weights instead of 1/4. Masks that are not ``torch.bool`` (torch's
    float masks, from ``torch.nn.utils.prune`` or :mod:`pruneplug.compat`)
    are left as they are. The mask of a DTensor stays a DTensor placed
    like its weight, each rank packing its own shard. Nothing the model
    computes changes.

    Raises:
        InvalidTargetError: ``model`` is not a module.

    >>> import torch, pruneplug
    >>> layer = pruneplug.prune(torch.nn.Linear(4, 4), "weight", "l1_unstructured", amount=0.5)
    >>> type(pruneplug.pack_masks(layer).weight_mask).__name__, layer.weight_mask.dtype
    ('PackedMask', torch.bool)
    """
    return _convert(model, packed=True)


def unpack_masks(model: nn.Module) -> nn.Module:
    """Store every bit-packed mask of ``model`` and its submodules as a plain bool tensor; returns ``model``.

    The inverse of :func:`pack_masks`, for code that needs masks with
    storage of their own (``data_ptr()``, ``share_memory_()``, writes
    through views).

    Raises:
        InvalidTargetError: ``model`` is not a module.
    """
    return _convert(model, packed=False)
