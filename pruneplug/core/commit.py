"""Installing planned prunes all at once, and undoing pruning.

:func:`commit` installs any number of :class:`~pruneplug.core.plan.PendingPrune`
together, restoring every touched module exactly if anything fails.
:func:`unreparametrize` makes pruning permanent. The layout is torch's, so
state_dicts, hooks and parameter order match it: ``<name>_orig`` is the
original ``Parameter`` object (an optimizer holding it keeps working) and
``<name>_mask`` a buffer. ``<name>`` is computed when read for native prunes
(see :mod:`pruneplug.core.lazy`) and stored as an attribute, as torch does,
for :mod:`pruneplug.compat` and RNNs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..errors import NotPrunedError, PruningStateError, close_matches_hint
from ..storage.packed import plain
from .cache import forget
from .fsdp import follow_rename, renaming
from .hook import MaskingHook
from .lazy import is_lazy, make_eager, make_lazy
from .module_hooks import install_support, uninstall_support
from .plan import PendingPrune
from .refresh import refresh
from .state import find_hook, pruning_hooks

__all__ = ["ModuleSnapshot", "commit", "unreparametrize", "remove_pruning"]


class ModuleSnapshot:
    """Everything a prune can change on one module, to restore it exactly."""

    _CONTAINERS = (
        "_parameters",
        "_buffers",
        "_forward_pre_hooks",
        "_load_state_dict_pre_hooks",
        "_load_state_dict_post_hooks",
        "_state_dict_hooks",
    )

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.cls = type(module)
        self.attributes = dict(module.__dict__)
        self.containers = {attr: OrderedDict(getattr(module, attr)) for attr in self._CONTAINERS}
        self.non_persistent = set(module._non_persistent_buffers_set)
        flat = module.__dict__.get("_flat_weights")
        self.flat_weights = list(flat) if isinstance(flat, list) else None

    def restore(self) -> None:
        module = self.module
        if type(module) is not self.cls:
            module.__class__ = self.cls
        for attr, saved in self.containers.items():
            live = getattr(module, attr)
            live.clear()
            live.update(saved)
        module._non_persistent_buffers_set.clear()
        module._non_persistent_buffers_set.update(self.non_persistent)
        for key in [k for k in module.__dict__ if k not in self.attributes]:
            del module.__dict__[key]
        module.__dict__.update(self.attributes)
        flat = module.__dict__.get("_flat_weights")
        if self.flat_weights is not None and isinstance(flat, list):
            flat[:] = self.flat_weights


def _install(pending: PendingPrune) -> None:
    state = pending.state
    module, name = state.module, state.name
    if not state.pruned:
        # torch's order: <name>_orig is appended to the parameters, then <name> is dropped.
        module.register_parameter(name + "_orig", state.orig)
        del module._parameters[name]
    elif state.hook_key is not None:
        del module._forward_pre_hooks[state.hook_key]
    module.register_buffer(name + "_mask", pending.mask)
    hook = pending.hook
    forget(hook)
    if is_lazy(module) or (pending.lazy and make_lazy(module)):
        module.__dict__.pop(name, None)  # computed on read from now on
    elif isinstance(hook, MaskingHook):
        refresh(module, hook, force=True)
    else:
        setattr(module, name, hook.apply_mask(module))
    module.register_forward_pre_hook(hook)
    install_support(module)


def commit(pendings: Sequence[PendingPrune]) -> None:
    """Install planned prunes all together; on any error every module is restored.

    A prune whose strategy updates values (:class:`~pruneplug.core.fast_path.UpdatesValues`)
    writes them into ``<name>_orig`` in place last, keeping the old values until all is done.
    """
    snapshots: dict[int, ModuleSnapshot] = {}
    for pending in pendings:
        module = pending.state.module
        if id(module) not in snapshots:
            snapshots[id(module)] = ModuleSnapshot(module)
    replaced: list[tuple[torch.Tensor, torch.Tensor]] = []  # (orig, its old values) for UpdatesValues
    renames = []  # checked before anything changes: a shared FSDP2 parameter is refused here
    for pending in pendings:
        state = pending.state
        rename = None if state.pruned else renaming(state.module, state.orig, state.name, state.name + "_orig")
        if rename is not None:
            renames.append(rename)
    try:
        for pending in pendings:
            _install(pending)
        with torch.no_grad():
            updating = [(pending.state.orig, pending.values) for pending in pendings if pending.values is not None]
            for index, (target, values) in enumerate(updating):
                if index < len(updating) - 1:  # the last write is one copy that cannot fail halfway: no copy kept
                    replaced.append((target, target.detach().clone()))
                target.copy_(values)
        for rename in renames:  # last: FSDP2 all-gathers <name>_orig from now on (these cannot fail)
            rename()
    except BaseException:
        with torch.no_grad():
            for orig, old in reversed(replaced):
                orig.copy_(old)
        for snapshot in snapshots.values():
            snapshot.restore()
        raise


def unreparametrize(module: nn.Module, hook: torch_prune.BasePruningMethod, *, unmasked: bool = False) -> None:
    """Make ``hook``'s tensor a plain parameter again, holding the masked values.

    The parameter object is the same one as before pruning. The hook entry in
    ``module._forward_pre_hooks`` is left for the caller (torch's protocol).
    ``unmasked``: the caller knows the mask keeps every entry (compaction
    sliced the pruned ones away), so ``orig`` already holds the values.
    """
    name = getattr(hook, "_tensor_name", None)
    if name is None:
        raise PruningStateError(f"Module {type(module).__name__} has to be pruned before pruning can be removed")
    orig = module._parameters.get(name + "_orig")
    mask = module._buffers.get(name + "_mask")
    if orig is None or mask is None:
        raise PruningStateError(
            f"{name}_orig or {name}_mask is missing", module_type=type(module).__name__, tensor=name
        )
    overridden = (
        type(hook).apply_mask is not torch_prune.BasePruningMethod.apply_mask
        and type(hook).apply_mask is not MaskingHook.apply_mask
    )
    with torch.no_grad():
        if unmasked and not overridden:
            pass
        elif overridden or torch._debug_has_internal_overlap(orig) == 1:  # 1: overlaps (e.g. made by expand)
            orig.data = hook.apply_mask(module).data
        else:
            # In place: no second copy of the weight, same storage, same -0.0 as torch's product.
            orig.mul_(plain(mask) if mask.dtype == torch.bool else mask.to(dtype=orig.dtype))
    module.__dict__.pop(name, None)
    del module._parameters[name + "_orig"]
    del module._buffers[name + "_mask"]
    module._non_persistent_buffers_set.discard(name + "_mask")
    setattr(module, name, orig)
    follow_rename(module, orig, name + "_orig", name)
    if not any(other is not hook for _, other in pruning_hooks(module)):
        # Nothing else is pruned (torch's remove drops the hook itself right after).
        make_eager(module)
        uninstall_support(module)


def remove_pruning(module: nn.Module, name: str, *, unmasked: bool = False) -> None:
    """Make ``module.<name>``'s pruning permanent and drop its hook (pruneplug's or torch's).

    ``unmasked``: the mask is known to keep every entry (see :func:`unreparametrize`).
    """
    found = find_hook(module, name)
    if found is None:
        pruned = [getattr(h, "_tensor_name", "?") for _, h in pruning_hooks(module)]
        listing = ", ".join(pruned) if pruned else "none"
        raise NotPrunedError(
            f"Parameter '{name}' of module {type(module).__name__} has to be pruned before pruning can be removed "
            f"(pruned tensors of this module: {listing}).{close_matches_hint(name, pruned)}",
            module_type=type(module).__name__,
            tensor=name,
        )
    key, hook = found
    unreparametrize(module, hook, unmasked=unmasked)
    del module._forward_pre_hooks[key]
    forget(hook)  # (unreparametrize already dropped the load post-hook if this was the last pruned tensor)
