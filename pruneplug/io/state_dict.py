"""Loading a pruned checkpoint into a model that is not (yet) pruned.

A state_dict saved from a pruned model holds ``<name>_orig`` and
``<name>_mask`` where a fresh model has ``<name>``. torch needs ``identity``
called on each such tensor before ``load_state_dict``; here one call finds
them from the keys, sets up the reparametrization, and loads -- for
checkpoints written by pruneplug or by torch.nn.utils.prune. Likewise a
norm saved with a ``channels_mask`` (channel pruning,
:mod:`pruneplug.core.norms`) gets its channels masked before loading.

A module reached by several paths (``nn.Sequential(lin, act, lin)``) is in
the state_dict once per path, as torch saves and loads it: it is set up
once, and the masks of its paths must agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from ..core.commit import ModuleSnapshot, commit
from ..core.method import with_history
from ..core.module_hooks import refreshes_after_load
from ..core.norms import BUFFER as CHANNELS_MASK, check_norm_channels, mask_norm_channels, masks_channel_statistics
from ..core.packing import store_mask
from ..core.plan import PendingPrune, plan_prune
from ..core.refresh import refresh
from ..core.state import pruning_hooks
from ..errors import InvalidMaskError, InvalidTargetError
from ..storage.formats import NATIVE_POLICY, MaskStorage, check_storage
from ..storage.packed import is_packed, pack_mask, plain
from ..strategies import Identity

__all__ = ["load_pruned_state_dict"]


@dataclass
class _Tensor:
    """One prunable tensor of the model, with every path to it and the checkpoint's masks for it."""

    module: nn.Module
    name: str
    shape: tuple[int, ...]
    pruned: bool  # already, in the model
    paired: bool = False  # the checkpoint has its _orig and _mask under one of its paths
    prefixes: list[str] = field(default_factory=list)
    masks: list[str] = field(default_factory=list)  # keys of the checkpoint's masks for it, one per path

    def check(self, state_dict: Mapping[str, object]) -> None:
        """Each mask the checkpoint has for this tensor is a 0/1 tensor of its shape, and they all agree."""
        context = {"module_type": type(self.module).__name__, "tensor": self.name}
        for key in self.masks:
            mask = state_dict[key]
            if not isinstance(mask, Tensor):
                raise InvalidMaskError(f"state_dict[{key!r}] is a {type(mask).__name__}, not a tensor", **context)
            if tuple(mask.shape) != self.shape:
                raise InvalidMaskError(
                    f"state_dict[{key!r}] has shape {tuple(mask.shape)} "
                    f"but {key.removesuffix('_mask')} has shape {self.shape}",
                    **context,
                )
            if mask.is_complex():
                raise InvalidMaskError(
                    f"state_dict[{key!r}] is complex ({mask.dtype}); a mask is bool, or real holding 0 and 1", **context
                )
            if mask.dtype != torch.bool and not mask.is_meta:  # (a meta tensor has no values to check)
                wrong = mask[(mask != 0) & (mask != 1)]  # NaN included
                if wrong.numel():
                    raise InvalidMaskError(
                        f"state_dict[{key!r}] holds values other than 0 and 1 ({wrong.numel()} of them, "
                        f"the first {wrong[0].item()!r}); a mask keeps (1) or prunes (0) each entry",
                        **context,
                    )
        first, *others = self.masks
        for key in others:
            one, other = state_dict[first], state_dict[key]
            assert isinstance(one, Tensor) and isinstance(other, Tensor)  # (checked above)
            if not (one.is_meta or other.is_meta) and not torch.equal(_alive(one), _alive(other).to(one.device)):
                raise InvalidMaskError(
                    f"state_dict[{first!r}] and state_dict[{key!r}] differ, but both are the mask of one "
                    f"{type(self.module).__name__} shared by the model (reached as "
                    f"{' and '.join(repr(p[:-1]) for p in self.prefixes)}), which has one mask",
                    **context,
                )


def _alive(mask: Tensor) -> Tensor:
    return mask if mask.dtype == torch.bool else mask != 0


def _find(model: nn.Module, state_dict: Mapping[str, object]) -> list[_Tensor]:
    """The tensors the checkpoint holds pruned: pruned in the model, or unpruned with ``_orig`` and ``_mask`` keys.

    Every path to a module is followed (``named_modules`` alone gives a
    shared module once), as ``load_state_dict`` loads every path.
    """
    found: dict[tuple[int, str], _Tensor] = {}
    for qualname, module in model.named_modules(remove_duplicate=False):
        prefix = f"{qualname}." if qualname else ""
        pruned = {
            hook._tensor_name: module._parameters.get(f"{hook._tensor_name}_orig") for _, hook in pruning_hooks(module)
        }
        unpruned = {name: p for name, p in module._parameters.items() if name not in pruned}
        for name, parameter in [*pruned.items(), *unpruned.items()]:
            if parameter is None:
                continue
            tensor = found.setdefault((id(module), name), _Tensor(module, name, tuple(parameter.shape), name in pruned))
            tensor.prefixes.append(prefix)
            mask_key = f"{prefix}{name}_mask"
            if mask_key in state_dict:
                tensor.masks.append(mask_key)
                tensor.paired = tensor.paired or f"{prefix}{name}_orig" in state_dict
    # A mask loads into a pruned tensor; into an unpruned one only if set up, which takes _orig too.
    return [tensor for tensor in found.values() if tensor.masks and (tensor.pruned or tensor.paired)]


@dataclass
class _Norm:
    """A norm whose statistics span channels, with the checkpoint's ``channels_mask`` for each path to it."""

    module: nn.Module
    prefixes: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    def check(self, state_dict: Mapping[str, object]) -> None:
        """Each mask is one :func:`~pruneplug.core.norms.mask_norm_channels` takes, and they all agree."""
        for key in self.keys:
            check_norm_channels(self.module, state_dict[key], what=f"state_dict[{key!r}]")
        first, *others = self.keys
        for key in others:
            one, other = state_dict[first], state_dict[key]
            assert isinstance(one, Tensor) and isinstance(other, Tensor)  # (checked above)
            if not (one.is_meta or other.is_meta) and not torch.equal(one, other.to(one.device)):
                raise InvalidMaskError(
                    f"state_dict[{first!r}] and state_dict[{key!r}] differ, but both are the channel mask of one "
                    f"{type(self.module).__name__} shared by the model (reached as "
                    f"{' and '.join(repr(p[:-1]) for p in self.prefixes)}), which has one",
                    module_type=type(self.module).__name__,
                    tensor=CHANNELS_MASK,
                )


def _find_norms(model: nn.Module, state_dict: Mapping[str, object]) -> list[_Norm]:
    """The norms for which the checkpoint has a ``channels_mask``, channel-masked in the model or not.

    Those without one get it set up (``masks_channel_statistics``); for those
    with one the checkpoint's mask is checked all the same.
    """
    found: dict[int, _Norm] = {}
    for qualname, module in model.named_modules(remove_duplicate=False):
        prefix = f"{qualname}." if qualname else ""
        key = prefix + CHANNELS_MASK
        if key in state_dict and masks_channel_statistics(module):
            norm = found.setdefault(id(module), _Norm(module))
            norm.prefixes.append(prefix)
            norm.keys.append(key)
    return list(found.values())


def _plan(tensors: list[_Tensor], storage: MaskStorage) -> tuple[list[PendingPrune], dict[str, str]]:
    """Plan an identity reparametrization for each unpruned tensor the checkpoint holds pruned.

    Also returns, for every path to each, the key the model's state_dict has
    now and the one it will have (``<name>`` -> ``<name>_orig``).
    """
    pendings: list[PendingPrune] = []
    renamed: dict[str, str] = {}
    for tensor in tensors:
        if tensor.pruned:
            continue
        parameter = tensor.module._parameters[tensor.name]
        assert parameter is not None  # (_find skips None)
        ones = torch.ones_like(parameter.detach(), dtype=torch.bool)  # (a DTensor's is placed like it)
        pendings.append(
            plan_prune(
                tensor.module,
                tensor.name,
                Identity(),
                stack=with_history,
                mask=ones,
                policy=NATIVE_POLICY,
                label="identity",
                storage=storage,
            )
        )
        renamed.update({f"{prefix}{tensor.name}": f"{prefix}{tensor.name}_orig" for prefix in tensor.prefixes})
    return pendings, renamed


Layout: TypeAlias = MaskStorage | torch.dtype
"""How one mask is stored: bool or bit-packed, or (torch's masks) as a tensor of that dtype."""


def _layouts(
    model: nn.Module, storage: MaskStorage | None
) -> list[tuple[nn.Module, torch_prune.BasePruningMethod, Layout]]:
    """How each mask of the model is to be stored after the load: as asked, else as it is now."""
    layouts: list[tuple[nn.Module, torch_prune.BasePruningMethod, Layout]] = []
    for module in model.modules():
        for _, hook in pruning_hooks(module):
            mask = module._buffers.get(f"{hook._tensor_name}_mask")
            if mask is None:
                continue
            if mask.dtype != torch.bool:
                layout: Layout = mask.dtype  # torch's float masks stay as they are (as pack_masks leaves them)
            else:
                layout = storage or ("packed" if is_packed(mask) else "bool")
            layouts.append((module, hook, layout))
    return layouts


def _store(layouts: list[tuple[nn.Module, torch_prune.BasePruningMethod, Layout]]) -> None:
    """Store each mask as planned, and make every masked tensor current.

    ``assign=True`` makes the checkpoint's tensors the masks as they are --
    torch's float masks too -- where copying keeps the model's.
    """
    for module, hook, layout in layouts:
        mask = module._buffers[f"{hook._tensor_name}_mask"]
        assert mask is not None  # (_layouts saw it; loading replaces buffers, never drops them)
        if isinstance(layout, torch.dtype):
            stored = mask if mask.dtype == layout else plain(mask).to(layout)
        else:
            stored = pack_mask(_alive(mask)) if layout == "packed" else plain(_alive(mask))
        if stored is not mask:
            store_mask(module, hook, stored)
        elif not refreshes_after_load(module):  # modules torch.nn.utils.prune pruned: loading left them stale
            refresh(module, hook, force=True)


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
    (its history starts with :class:`~pruneplug.strategies.Identity`), and
    every LayerNorm, GroupNorm or RMSNorm the checkpoint holds with a
    ``channels_mask`` (see :func:`pruneplug.core.norms.mask_norm_channels`)
    is made to normalize only the kept channels; then the state_dict is
    loaded and the masked tensors are current at once.
    Every mask the checkpoint holds for a tensor of the model -- pruned
    already or not -- is checked (a tensor of the parameter's shape, holding
    only 0 and 1), and so is every channel mask of a norm (a bool vector
    over its channels keeping one at least, as many in each of a
    GroupNorm's groups), as are tensor types and shapes and, with ``strict``, the
    keys, before anything changes, so a checkpoint that does not fit leaves
    the model exactly as it was. (A module's own ``_load_from_state_dict``
    that fails part-way is torch's to undo.) A module the model reaches by
    several paths is set up once, and the masks saved for its paths must
    agree.

    Args:
        model: the model to load into, pruned or not.
        state_dict: from pruneplug or from ``torch.nn.utils.prune``.
        strict: as in ``load_state_dict``: every key of the model must be in
            ``state_dict`` and no other.
        assign: as in ``load_state_dict``: the checkpoint's tensors become
            the model's (new parameter objects), instead of being copied
            into them. This is how a model built on the ``meta`` device --
            large models are, to avoid allocating their weights twice --
            gets its weights and masks. The masks are still stored as
            ``mask_storage`` says, whatever dtype the checkpoint has them in.
        mask_storage: ``"bool"`` or ``"packed"`` (see
            :func:`pruneplug.prune`): how every bool mask of the model is
            stored once loaded. Default: ``"bool"`` for the tensors this
            call sets up, and as they were for tensors already pruned. The
            float masks of tensors ``torch.nn.utils.prune`` pruned in
            ``model`` keep their dtype, as :func:`pruneplug.pack_masks`
            leaves them.

    Returns ``model``.

    Raises:
        InvalidTargetError: ``model`` or ``state_dict`` is not one, or the
            state_dict does not fit the model (keys, shapes).
        InvalidMaskError: a mask is not a tensor, is misshapen, holds
            anything but 0 and 1, or differs from the mask of another path
            to the same module; a norm's channel mask is not one
            :func:`~pruneplug.core.norms.mask_norm_channels` takes.
        InvalidParametersError: ``mask_storage`` is none of those.
    """
    if not isinstance(model, nn.Module):
        raise InvalidTargetError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(state_dict, Mapping):
        raise InvalidTargetError(
            f"expected a state_dict (a mapping of names to tensors), got {type(state_dict).__name__}"
        )
    storage = check_storage(mask_storage)
    tensors = _find(model, state_dict)
    for tensor in tensors:
        tensor.check(state_dict)
    norms = _find_norms(model, state_dict)
    for norm in norms:
        norm.check(state_dict)
    installs = [norm for norm in norms if CHANNELS_MASK not in norm.module._buffers]
    pendings, renamed = _plan(tensors, storage or "bool")
    expected: dict[str, tuple[int, ...] | None] = {}
    for key, value in model.state_dict().items():
        shape = tuple(value.shape) if isinstance(value, Tensor) else None
        if key in renamed:
            expected[renamed[key]] = expected[renamed[key][: -len("_orig")] + "_mask"] = shape
        else:
            expected[key] = shape
    for norm in installs:
        for key in norm.keys:
            mask = state_dict[key]
            assert isinstance(mask, Tensor)  # (checked above)
            expected[key] = tuple(mask.shape)
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
    changing = {id(t.module): t.module for t in tensors if not t.pruned}
    changing.update({id(norm.module): norm.module for norm in installs})
    snapshots = [ModuleSnapshot(module) for module in changing.values()]
    try:
        for norm in installs:  # first, so that a lazy class made by the commit wraps the channel-masked one
            mask = state_dict[norm.keys[0]]
            assert isinstance(mask, Tensor)  # (checked above)
            mask_norm_channels(norm.module, mask)
        commit(pendings)
        layouts = _layouts(model, storage)
        model.load_state_dict(state_dict, strict=strict, assign=assign)
    except BaseException:
        for snapshot in snapshots:
            snapshot.restore()
        raise
    _store(layouts)
    return model
