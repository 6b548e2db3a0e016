"""Masked tensors computed when they are read, not stored when a tensor is pruned.

(Why: docs/concepts.md -- torch's stored product is one extra copy of every
pruned weight.) For tensors pruned through the native API, the module's class
is swapped for a subclass of it -- same name and ``repr``, ``isinstance``
still true, as ``torch.nn.utils.parametrize`` does -- whose ``__getattr__``
computes ``<name>`` from ``<name>_orig`` and ``<name>_mask``: afresh under
autograd, through the eval cache (:mod:`pruneplug.core.cache`) otherwise.
Removing the last pruned tensor restores the class (after parametrize hands
it back, if it subclassed meanwhile). RNNs (their ``_flat_weights`` hold
references), modules parametrize already owns, and classes that cannot be
subclassed keep torch's eager attribute instead.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributed.tensor import DTensor
from torch.nn.utils import parametrize, prune as torch_prune

from ..storage.packed import plain
from .cache import cache_key, cacheable, held, remember, reusable
from .fsdp import masked_unsharded
from .subclass import mixed_class

__all__ = ["LazyMaskedModule", "make_lazy", "make_eager", "is_lazy", "lazily_masked_hook"]

_classes: dict[type[nn.Module], type[nn.Module]] = {}
_classes_lock = threading.Lock()


def lazily_masked_hook(module: nn.Module, name: str) -> torch_prune.BasePruningMethod | None:
    """The pruning hook in charge of ``module.<name>``, if any (without raising)."""
    for hook in module.__dict__.get("_forward_pre_hooks", {}).values():
        if isinstance(hook, torch_prune.BasePruningMethod) and getattr(hook, "_tensor_name", None) == name:
            return hook
    return None


def _reparametrized(module: nn.Module, name: str) -> bool:
    # DataParallel replicas hold their parameters as plain attributes, hence the __dict__ checks.
    state = module.__dict__
    orig, mask = name + "_orig", name + "_mask"
    return (orig in state.get("_parameters", ()) or orig in state) and (
        mask in state.get("_buffers", ()) or mask in state
    )


def masked_tensor(module: nn.Module, name: str) -> Tensor:
    """``<name>_orig * <name>_mask``, in the parameter's dtype (autograd flows to ``_orig``)."""
    orig: Tensor = getattr(module, name + "_orig")
    mask: Tensor = getattr(module, name + "_mask")
    if type(mask) is not Tensor and isinstance(mask, DTensor) and not isinstance(orig, DTensor):
        return masked_unsharded(orig, mask)  # FSDP2 gathered orig for its forward; the mask stays sharded
    if mask.dtype == torch.bool:
        return orig * plain(mask)
    return mask.to(dtype=orig.dtype) * orig


def masked_value(module: nn.Module, hook: torch_prune.BasePruningMethod) -> Tensor:
    """``<name>_orig * <name>_mask`` for a lazy module, reusing a kept result when allowed."""
    name = hook._tensor_name
    orig = module._parameters.get(name + "_orig")
    mask = module._buffers.get(name + "_mask")
    if orig is None or mask is None:
        return hook.apply_mask(module)  # type: ignore[no-any-return]  # let torch's AttributeError surface
    grad_wanted = torch.is_grad_enabled() and orig.requires_grad
    if grad_wanted or module.training or mask.dtype != torch.bool or not cacheable(orig, mask):
        return hook.apply_mask(module)  # type: ignore[no-any-return]
    key = cache_key(orig, mask)
    cached = held(hook)
    if cached is not None and reusable(hook, key, cached):
        return cached
    value: Tensor = hook.apply_mask(module)
    remember(hook, key, value, (orig, mask), hold=True)
    return value


class LazyMaskedModule(nn.Module):
    """Mixin of the per-class subclasses that compute masked tensors on read."""

    _pp_base: type[nn.Module]

    def __getattr__(self, name: str) -> Any:
        if not _reparametrized(self, name):
            return super().__getattr__(name)
        hook = lazily_masked_hook(self, name)
        if hook is None:  # between torch's removal of a hook and its new one (inside its apply)
            return masked_tensor(self, name)
        return masked_value(self, hook)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "__class__" and isinstance(value, type) and issubclass(value, LazyMaskedModule):
            # Someone who built a class on top of ours hands it back (parametrize's remove does,
            # with ``module.__class__ = bases[0]``): if nothing is pruned any more, give the
            # original class instead of ours.
            if _classes.get(value._pp_base) is value and not _pruned_names(self):
                value = value._pp_base
            object.__setattr__(self, name, value)
            return
        if isinstance(value, Tensor) and not isinstance(value, nn.Parameter) and _reparametrized(self, name):
            return  # the masked tensor is derived from _orig and _mask: torch's hooks assign it, we compute it
        super().__setattr__(name, value)
        # A parameter put back under a pruned name: torch's (or our) remove. Once nothing is
        # reparametrized any more, the module goes back to its own class.
        if isinstance(value, nn.Parameter) and lazily_masked_hook(self, name) is not None and not _pruned_names(self):
            make_eager(self)

    def __delattr__(self, name: str) -> None:
        if name not in self.__dict__ and _reparametrized(self, name):
            return  # nothing is stored to delete (torch's remove deletes its stored copy first)
        super().__delattr__(name)

    def __reduce_ex__(self, protocol: Any) -> Any:
        # Pickle and copy as the original class, then become lazy again on load.
        return (_rebuild, (type(self)._pp_base,), self.__getstate__())  # type: ignore[no-untyped-call]


def _pruned_names(module: nn.Module) -> list[str]:
    """The tensors of ``module`` that a pruning hook acts on and that are still reparametrized."""
    hooks = module.__dict__["_forward_pre_hooks"].values()
    names = {getattr(h, "_tensor_name", None) for h in hooks if isinstance(h, torch_prune.BasePruningMethod)}
    return [n for n in names if isinstance(n, str) and _reparametrized(module, n)]


def _rebuild(base: type[nn.Module]) -> nn.Module:
    cls = _lazy_class(base) or base
    module: nn.Module = cls.__new__(cls)
    return module


def _lazy_class(base: type[nn.Module]) -> type[nn.Module] | None:
    """The lazy subclass of ``base`` (created once per class), or ``None`` if it cannot be made."""
    if issubclass(base, LazyMaskedModule):
        return base
    try:
        return mixed_class(base, LazyMaskedModule, "_pp_base", _classes, _classes_lock)
    except Exception:
        # The class refuses subclasses (an __init_subclass__ or metaclass that raises, of any
        # Exception type): such modules stay eager. Nothing is cached, so the half-made class
        # is garbage; BaseException (KeyboardInterrupt, SystemExit) still propagates.
        return None


def is_lazy(module: nn.Module) -> bool:
    """Whether ``module`` computes its masked tensors on read."""
    return isinstance(module, LazyMaskedModule)


def make_lazy(module: nn.Module) -> bool:
    """Switch ``module`` to computing masked tensors on read; ``False`` if it must stay eager."""
    if is_lazy(module):
        return True
    if isinstance(module, nn.RNNBase):
        return False  # RNNs read their weights from _flat_weights, which needs real tensors
    if parametrize.is_parametrized(module):
        return False  # torch.nn.utils.parametrize owns the class (it swaps and rewrites it itself)
    cls = _lazy_class(type(module))
    if cls is None:
        return False
    original = type(module)
    try:
        module.__class__ = cls
    except Exception:
        # A __setattr__ of the module's own refused (perhaps after the assignment): stay eager, as
        # the module was. BaseException (KeyboardInterrupt) propagates and commit() restores it.
        if type(module) is not original:
            object.__setattr__(module, "__class__", original)
        return False
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, torch_prune.BasePruningMethod):
            module.__dict__.pop(getattr(hook, "_tensor_name", ""), None)  # stored copies would shadow the lazy ones
    return True


def make_eager(module: nn.Module) -> None:
    """Give ``module`` its original class back (once no tensor of it is pruned)."""
    cls = type(module)
    if is_lazy(module) and _classes.get(cls._pp_base) is cls:  # type: ignore[attr-defined]
        # Only our own subclass is undone: a class built on top of it since (parametrize's)
        # keeps working lazily, as LazyMaskedModule defers to the base for unpruned names.
        module.__class__ = cls._pp_base  # type: ignore[attr-defined]
