"""The reparametrization: ``<name>`` becomes ``<name>_orig * <name>_mask``, and back.

This module does the mechanical work of pruning one tensor of one module,
and nothing else -- it knows masks and hooks, not strategies:

* :func:`tensor_state` reads where a tensor stands: unpruned, pruned by
  pruneplug, or pruned by ``torch.nn.utils.prune`` (recognised by its hooks).
* :func:`plan_prune` computes and checks the new mask without touching the
  module; :func:`commit` installs any number of planned prunes all at once,
  restoring every touched module exactly if anything fails.
* :func:`refresh` is the forward pre-hook's work (with the no-grad cache).
* :func:`unreparametrize` makes pruning permanent.

The layout is torch's, so state_dicts, hooks and parameter order match it:
``<name>_orig`` is the original ``Parameter`` object (an optimizer holding it
keeps working) and ``<name>_mask`` a buffer. ``<name>`` is computed when read
for native prunes (see :mod:`pruneplug.core.lazy`) and stored as an attribute,
as torch does, for :mod:`pruneplug.compat` and RNNs.
"""

from __future__ import annotations

import enum
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from ..errors import (
    InvalidImportanceScoresError,
    InvalidMaskError,
    InvalidParametersError,
    InvalidTargetError,
    NotPrunedError,
    PruneplugError,
    PruningStateError,
    StrategyFailedError,
    TensorNotFoundError,
    close_matches_hint,
)
from ..selection.scores import scoring
from ..storage.packed import PackedMask, plain
from .cache import cache_key, cacheable, forget, remember, reusable
from .container import PruningContainer, fast_path
from .lazy import is_lazy, make_eager, make_lazy, masked_tensor
from .method import BasePruningMethod, method_name

__all__ = [
    "MaskPolicy",
    "MaskStorage",
    "MASK_STORAGES",
    "check_storage",
    "storage_for",
    "NATIVE_POLICY",
    "TORCH_POLICY",
    "TensorState",
    "PendingPrune",
    "pruning_hooks",
    "find_hook",
    "tensor_state",
    "check_untied",
    "masked_tensor",
    "refresh",
    "check_importance_scores",
    "current_values",
    "alive_mask",
    "default_alive",
    "plan_prune",
    "commit",
    "apply_method",
    "unreparametrize",
    "remove_pruning",
    "is_pruned",
    "pruned_tensors",
    "ModuleSnapshot",
]


class MaskPolicy(enum.Enum):
    """Which dtype masks are stored in.

    ``NATIVE``: always ``torch.bool`` (a quarter of an fp32 mask's memory).
    ``TORCH``: whatever torch.nn.utils.prune would store (the weight's dtype
    for its built-ins), for :mod:`pruneplug.compat`.
    """

    NATIVE = "native"
    TORCH = "torch"


NATIVE_POLICY = MaskPolicy.NATIVE
TORCH_POLICY = MaskPolicy.TORCH

MaskStorage = Literal["bool", "packed"]
"""How native masks are stored: a ``torch.bool`` byte or one bit per entry (:class:`~pruneplug.PackedMask`)."""
MASK_STORAGES: tuple[MaskStorage, ...] = ("bool", "packed")


def check_storage(mask_storage: object) -> MaskStorage | None:
    """``mask_storage`` as given by a user: one of :data:`MASK_STORAGES`, or ``None``."""
    if mask_storage is not None and mask_storage not in MASK_STORAGES:
        raise InvalidParametersError(
            f"mask_storage must be one of {', '.join(map(repr, MASK_STORAGES))} (or None: keep it as it is), "
            f"got {mask_storage!r}"
        )
    return mask_storage  # type: ignore[return-value]


def storage_for(state: TensorState, storage: MaskStorage | None) -> MaskStorage:
    """How the tensor's new mask is stored: as asked, else as its mask is now (``"bool"`` if unpruned)."""
    if storage is not None:
        return storage
    return "packed" if isinstance(state.mask, PackedMask) else "bool"


# --- reading the state ------------------------------------------------------------------


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


# --- the masked tensor and its refresh ------------------------------------------------------


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


# --- planning a prune -----------------------------------------------------------------


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
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise InvalidMaskError(
            f"the existing {state.name}_mask holds values other than 0 and 1; pruneplug only stacks on binary masks",
            module_type=state.module_type,
            tensor=state.name,
        )
    return mask != 0


def default_alive(state: TensorState) -> Tensor:
    """Bool mask of the entries of the tensor still unpruned (all ``True`` if never pruned)."""
    if not state.pruned:
        return torch.ones(state.orig.shape, dtype=torch.bool, device=state.orig.device)
    assert state.mask is not None
    return alive_mask(state.mask.detach(), state)


def _default_mask(state: TensorState, policy: MaskPolicy) -> Tensor:
    if policy is TORCH_POLICY:
        if not state.pruned:
            return torch.ones_like(state.orig)
        assert state.mask is not None
        return plain(state.mask.detach()).clone(memory_format=torch.contiguous_format)
    alive = default_alive(state)
    # a copy: the strategy may write into it, and `previous` must stay what it was
    return alive.clone(memory_format=torch.contiguous_format) if state.pruned else alive


def _check_mask(raw: object, state: TensorState, previous: Tensor | None, label: str) -> Tensor:
    """Validate a computed mask; return it as bool. ``previous`` is the old alive mask."""
    context = {"module_type": state.module_type, "tensor": state.name, "strategy": label}
    if not isinstance(raw, Tensor):
        raise InvalidMaskError(f"the strategy returned {type(raw).__name__}, not a mask tensor", **context)
    if raw.shape != state.orig.shape:
        raise InvalidMaskError(
            f"the mask has shape {tuple(raw.shape)} but the tensor has shape {tuple(state.orig.shape)}", **context
        )
    if raw.device != state.orig.device:
        raise InvalidMaskError(f"the mask is on {raw.device} but the tensor is on {state.orig.device}", **context)
    if raw.dtype == torch.bool:
        mask = raw.detach()
    else:
        if raw.is_complex() or not bool(((raw == 0) | (raw == 1)).all()):
            raise InvalidMaskError("the mask holds values other than 0 and 1", **context)
        mask = raw.detach() != 0
    if previous is not None and bool((mask & ~previous).any()):
        count = int((mask & ~previous).sum())
        raise InvalidMaskError(
            f"the mask would un-prune {count} entr{'y' if count == 1 else 'ies'} that an earlier prune removed; "
            "masks may only lose ones",
            **context,
        )
    return mask


@dataclass
class PendingPrune:
    """A prune that has been computed and checked but not yet installed."""

    state: TensorState
    hook: torch_prune.BasePruningMethod
    mask: Tensor
    alive: Tensor = field(repr=False)
    lazy: bool = False  # compute the masked tensor on read (native API) instead of storing it


def _build_hook(state: TensorState, method: torch_prune.BasePruningMethod) -> torch_prune.BasePruningMethod:
    method._tensor_name = state.name
    if not state.pruned:
        return method
    old = state.hook
    assert old is not None
    history = list(old) if isinstance(old, torch_prune.PruningContainer) else [old]
    return PruningContainer(*history, method)


def plan_prune(
    module: nn.Module,
    name: str,
    method: torch_prune.BasePruningMethod,
    *,
    importance_scores: Tensor | None = None,
    policy: MaskPolicy = NATIVE_POLICY,
    label: str | None = None,
    mask: Tensor | None = None,
    storage: MaskStorage | None = None,
) -> PendingPrune:
    """Compute and check the mask ``method`` gives ``module.<name>``; change nothing.

    ``mask`` skips the computation: it is the new mask (already computed, for
    global pruning), only checked. ``label`` names the strategy in errors.
    ``storage`` is how a native mask is stored (``"bool"`` or ``"packed"``,
    see :mod:`pruneplug.storage.packed`); ``None`` keeps the tensor's current
    storage, ``"bool"`` for a tensor not pruned yet.
    """
    state = tensor_state(module, name, whole_tensors_only=policy is NATIVE_POLICY)
    label = label or method_name(method)
    context = {"module_type": state.module_type, "tensor": name, "strategy": label}
    if not state.pruned:
        for suffix in ("_orig", "_mask"):
            taken = name + suffix
            if (
                taken in module._parameters
                or taken in module._buffers
                or taken in module.__dict__
                or taken in module._modules
            ):
                raise PruningStateError(
                    f"cannot add {taken!r}: the module already has an attribute of that name", **context
                )
    if importance_scores is not None:
        check_importance_scores(importance_scores, state.orig, module_type=state.module_type, tensor=name)
    hook = _build_hook(state, method)
    previous = default_alive(state) if state.pruned else None  # what the new mask may not exceed
    if mask is None:
        if importance_scores is not None:
            scores = importance_scores
        elif not state.pruned:
            scores = state.orig
        elif not getattr(method, "uses_importance_scores", True) or getattr(method, "elementwise_scores", False):
            # Only alive entries are ranked, where orig equals orig * mask: skip computing the product.
            scores = state.orig.detach()
        else:
            scores = current_values(state)
        try:
            with scoring(module, name, state.orig):
                if policy is NATIVE_POLICY and not state.pruned and fast_path(hook) and hasattr(hook, "_keep"):
                    raw = hook._keep(scores, None)  # type: ignore[attr-defined]  # compute_mask(t, ones) without the ones
                else:
                    raw = hook.compute_mask(scores, default_mask=_default_mask(state, policy))
        except PruneplugError as error:
            error.add_context(**context)
            raise
        except Exception as error:
            if policy is TORCH_POLICY:
                raise  # code written for torch catches torch's exception types
            raise StrategyFailedError(f"the strategy raised {type(error).__name__}: {error}", **context) from error
    else:
        raw = mask
    if mask is None and not type(method).__module__.startswith("pruneplug.") and isinstance(raw, Tensor):
        raw = raw.clone()  # a strategy may hand back a tensor it keeps: the mask must not change under us
    alive = _check_mask(raw, state, previous, label)
    if policy is not NATIVE_POLICY:
        return PendingPrune(state, hook, raw.detach(), alive)  # type: ignore[union-attr]
    if storage_for(state, storage) == "packed":
        packed = PackedMask.pack(alive)
        return PendingPrune(state, hook, packed, packed, lazy=True)
    return PendingPrune(state, hook, plain(alive), alive, lazy=True)


# --- installing and undoing -------------------------------------------------------------


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
    from .module_hooks import install_support

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
    elif isinstance(hook, BasePruningMethod):
        refresh(module, hook, force=True)
    else:
        setattr(module, name, hook.apply_mask(module))
    module.register_forward_pre_hook(hook)
    install_support(module)


def commit(pendings: Sequence[PendingPrune]) -> None:
    """Install planned prunes all together; on any error every module is restored."""
    snapshots: dict[int, ModuleSnapshot] = {}
    for pending in pendings:
        module = pending.state.module
        if id(module) not in snapshots:
            snapshots[id(module)] = ModuleSnapshot(module)
    try:
        for pending in pendings:
            _install(pending)
    except BaseException:
        for snapshot in snapshots.values():
            snapshot.restore()
        raise


def apply_method(
    module: nn.Module,
    name: str,
    method: torch_prune.BasePruningMethod,
    *,
    importance_scores: Tensor | None = None,
    policy: MaskPolicy = NATIVE_POLICY,
    label: str | None = None,
) -> torch_prune.BasePruningMethod:
    """Plan and commit one prune; return the hook now in charge of the tensor."""
    pending = plan_prune(module, name, method, importance_scores=importance_scores, policy=policy, label=label)
    commit([pending])
    return pending.hook


def unreparametrize(module: nn.Module, hook: torch_prune.BasePruningMethod) -> None:
    """Make ``hook``'s tensor a plain parameter again, holding the masked values.

    The parameter object is the same one as before pruning. The hook entry in
    ``module._forward_pre_hooks`` is left for the caller (torch's protocol).
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
        and type(hook).apply_mask is not BasePruningMethod.apply_mask
    )
    with torch.no_grad():
        if overridden or torch._debug_has_internal_overlap(orig) == 1:  # 1: overlaps (e.g. made by expand)
            orig.data = hook.apply_mask(module).data
        else:
            # In place: no second copy of the weight, same storage, same -0.0 as torch's product.
            orig.mul_(plain(mask) if mask.dtype == torch.bool else mask.to(dtype=orig.dtype))
    module.__dict__.pop(name, None)
    del module._parameters[name + "_orig"]
    del module._buffers[name + "_mask"]
    module._non_persistent_buffers_set.discard(name + "_mask")
    setattr(module, name, orig)
    if not any(other is not hook for _, other in pruning_hooks(module)):
        # Nothing else is pruned (torch's remove drops the hook itself right after).
        from .module_hooks import uninstall_support

        make_eager(module)
        uninstall_support(module)


def remove_pruning(module: nn.Module, name: str) -> None:
    """Make ``module.<name>``'s pruning permanent and drop its hook (pruneplug's or torch's)."""
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
    unreparametrize(module, hook)
    del module._forward_pre_hooks[key]
    forget(hook)  # (unreparametrize already dropped the load post-hook if this was the last pruned tensor)


def pruned_tensors(module: nn.Module) -> Iterable[tuple[str, nn.Module, str]]:
    """``(qualified module name, module, tensor name)`` for every pruned tensor in ``module``."""
    for qualname, sub in module.named_modules():
        for _, hook in pruning_hooks(sub):
            yield qualname, sub, hook._tensor_name
