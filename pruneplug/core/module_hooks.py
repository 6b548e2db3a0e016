"""Copying, pickling and state_dict loading of pruned modules.

torch.nn.utils.prune stores the masked tensor as a plain attribute computed
through autograd (a non-leaf tensor), which ``copy.deepcopy`` refuses
(pytorch#37322), and after ``load_state_dict`` that attribute stays stale
until the next forward. pruneplug fixes both without changing what a pruned
module looks like:

* A reducer registered with :mod:`copyreg` for the class of every module
  pruneplug prunes leaves the masked tensors out of the copied or pickled
  state and recomputes them on the new object. Unpruned instances of the same
  class are copied and pickled exactly as before.
* A ``load_state_dict`` post-hook recomputes the masked tensors right after
  loading.
* A ``state_dict`` post-hook hands out bit-packed masks
  (:class:`~pruneplug.PackedMask`, or DTensors whose shards are) as plain
  bool tensors, so a state_dict is in torch's format whichever way the
  masks are stored (with ``keep_vars=True`` it holds the buffers
  themselves, as torch's does), and a ``load_state_dict`` pre-hook notes
  which masks are packed, so that ``assign=True`` (which replaces buffers)
  leaves them packed.
"""

from __future__ import annotations

import copyreg
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..storage.packed import is_packed, pack_mask, plain
from .hook import MaskingHook
from .lazy import is_lazy
from .refresh import refresh
from .state import pruning_hooks

__all__ = ["install_support", "install_packed_support", "uninstall_support", "refresh_all", "refreshes_after_load"]


def refresh_all(module: nn.Module) -> None:
    """Recompute every masked tensor of ``module`` itself from ``_orig`` and ``_mask``."""
    for _, hook in pruning_hooks(module):
        if isinstance(hook, MaskingHook) or is_lazy(module):
            refresh(module, hook, force=True)
        else:
            setattr(module, hook._tensor_name, hook.apply_mask(module))


class RefreshAfterLoad:
    """``load_state_dict`` post-hook: the masked tensors are current as soon as loading ends."""

    def __call__(self, module: nn.Module, incompatible_keys: Any) -> None:
        if pruning_hooks(module):
            refresh_all(module)


class RepackAfterLoad:
    """``load_state_dict`` post-hook: masks :class:`NotePackedMasks` saw packed, and that loading
    replaced by plain tensors (``assign=True``), are packed again."""

    def __call__(self, module: nn.Module, incompatible_keys: Any) -> None:
        for key in _keys_of(module._load_state_dict_pre_hooks, NotePackedMasks):
            _unwrapped(module._load_state_dict_pre_hooks[key]).repack(module)


class NotePackedMasks:
    """``load_state_dict`` pre-hook: remember which mask buffers are bit-packed before loading."""

    def __init__(self) -> None:
        self.names: tuple[str, ...] = ()

    def __call__(self, module: nn.Module, *args: Any) -> None:
        self.names = tuple(name for name, buffer in module._buffers.items() if is_packed(buffer))

    def repack(self, module: nn.Module) -> None:
        for name in self.names:
            buffer = module._buffers.get(name)
            if isinstance(buffer, Tensor) and not is_packed(buffer) and buffer.dtype == torch.bool:
                module._buffers[name] = pack_mask(buffer)
        self.names = ()


class UnpackMasksInStateDict:
    """``state_dict`` post-hook: bit-packed mask buffers are saved as plain bool tensors."""

    def __call__(self, module: nn.Module, state_dict: Any, prefix: str, local_metadata: Any) -> None:
        for name, buffer in module._buffers.items():
            key = prefix + name
            saved = state_dict.get(key)
            # (keep_vars=True saves the buffer itself: that one stays, as it would for a bool mask)
            if is_packed(buffer) and isinstance(saved, Tensor) and is_packed(saved) and saved is not buffer:
                state_dict[key] = plain(buffer)  # (a DTensor's: a DTensor placed alike, its shard unpacked)


class _FinishRebuild:
    """One-shot ``__setstate__`` of a module being copied or unpickled."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, state: dict[str, Any]) -> None:
        module = self.module
        module.__dict__.pop("__setstate__", None)
        type(module).__setstate__(module, state)
        refresh_all(module)
        init_flat_weights = getattr(module, "_init_flat_weights", None)
        if "_flat_weights_names" in module.__dict__ and callable(init_flat_weights):
            init_flat_weights()  # RNNs: point the flat weights at the fresh tensors


def _rebuild_pruned_module(cls: type[nn.Module]) -> nn.Module:
    module = cls.__new__(cls)
    module.__dict__["__setstate__"] = _FinishRebuild(module)
    return module


def _reduce_module(module: nn.Module) -> Any:
    hooks = pruning_hooks(module)
    state = module.__getstate__() if hooks else None
    if not isinstance(state, dict):
        return module.__reduce_ex__(4)  # unpruned (or exotic): exactly the default behaviour
    masked = {hook._tensor_name for _, hook in hooks}
    dropped = {id(state[name]) for name in masked if isinstance(state.get(name), Tensor)}
    state = {key: value for key, value in state.items() if key not in masked}
    flat = state.get("_flat_weights")
    if isinstance(flat, list):
        state["_flat_weights"] = [None if id(w) in dropped else w for w in flat]
    return (_rebuild_pruned_module, (type(module),), state)


def install_support(module: nn.Module) -> None:
    """Make a pruned module copyable and keep it current after ``load_state_dict``."""
    cls = type(module)
    lazy = is_lazy(module)  # lazy modules pickle and copy themselves (LazyMaskedModule.__reduce_ex__)
    if (
        not lazy
        and cls not in copyreg.dispatch_table
        and "__deepcopy__" not in vars(cls)
        and "__reduce_ex__" not in vars(cls)
    ):
        copyreg.pickle(cls, _reduce_module)
    install_packed_support(module)  # first: masks are packed again before they are read
    if not _keys_of(module._load_state_dict_post_hooks, RefreshAfterLoad):
        module.register_load_state_dict_post_hook(RefreshAfterLoad())


def refreshes_after_load(module: nn.Module) -> bool:
    """Whether ``load_state_dict`` recomputes ``module``'s masked tensors by itself (not so where torch pruned)."""
    return bool(_keys_of(module._load_state_dict_post_hooks, RefreshAfterLoad))


def install_packed_support(module: nn.Module) -> None:
    """The hooks that keep bit-packed masks out of state_dicts and packed through ``assign=True`` loads."""
    if not _keys_of(module._state_dict_hooks, UnpackMasksInStateDict):
        module.register_state_dict_post_hook(UnpackMasksInStateDict())
    if not _keys_of(module._load_state_dict_pre_hooks, NotePackedMasks):
        module._register_load_state_dict_pre_hook(NotePackedMasks(), with_module=True)
    if not _keys_of(module._load_state_dict_post_hooks, RepackAfterLoad):
        module.register_load_state_dict_post_hook(RepackAfterLoad())


def uninstall_support(module: nn.Module) -> None:
    """Drop pruneplug's state_dict and load hooks once the module holds no pruned tensor."""
    for hooks, kinds in (
        (module._load_state_dict_post_hooks, (RefreshAfterLoad, RepackAfterLoad)),
        (module._state_dict_hooks, (UnpackMasksInStateDict,)),
        (module._load_state_dict_pre_hooks, (NotePackedMasks,)),
    ):
        for key in _keys_of(hooks, kinds):
            del hooks[key]


def _unwrapped(hook: Any) -> Any:
    """The hook itself: torch wraps load pre-hooks registered ``with_module`` in a ``_WrappedHook``."""
    return getattr(hook, "hook", hook)


def _keys_of(hooks: Mapping[int, Any], kinds: type | tuple[type, ...]) -> list[int]:
    """The keys of the hooks of ``kinds`` in one of a module's hook dicts."""
    return [key for key, hook in hooks.items() if isinstance(_unwrapped(hook), kinds)]
