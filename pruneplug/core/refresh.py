"""Keeping ``module.<name>`` equal to ``<name>_orig * <name>_mask``: the forward pre-hook's work."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from .cache import cache_key, cacheable, forget, remember, reusable
from .lazy import is_lazy

__all__ = ["refresh"]


def refresh(module: nn.Module, hook: torch_prune.BasePruningMethod, *, force: bool = False) -> None:
    """Set ``module.<name>`` to the current masked tensor (the forward pre-hook's job).

    Under autograd the tensor is recomputed every time, so each forward builds
    a fresh graph back to ``<name>_orig``. Without autograd, in eval mode, a
    native (bool) mask's result is reused while nothing changed (see
    :mod:`pruneplug.core.cache`); ``force`` recomputes regardless.
    """
    if is_lazy(module):
        if force:
            forget(hook)  # computed on read; only what was kept must go
        return
    name = hook._tensor_name
    orig = module._parameters.get(name + "_orig")
    mask = module._buffers.get(name + "_mask")
    if orig is None or mask is None:
        # Let torch's error surface (AttributeError naming the missing tensor).
        setattr(module, name, hook.apply_mask(module))
        return
    if mask.dtype != torch.bool or module.training or not cacheable(orig, mask):
        setattr(module, name, hook.apply_mask(module))
        return
    key = cache_key(orig, mask)
    grad_wanted = torch.is_grad_enabled() and orig.requires_grad
    if not force and not grad_wanted and reusable(hook, key, module.__dict__.get(name)):
        return
    value = hook.apply_mask(module)
    setattr(module, name, value)
    remember(hook, key, value, (orig, mask))
