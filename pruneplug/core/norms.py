"""Normalization layers whose statistics span channels, made to see only the kept channels while masked.

Channel pruning zeroes whole channels. A LayerNorm over the pruned feature
size, a GroupNorm or an RMSNorm still counts those zeros in its mean and
variance, so the masked model would compute something else than the
compacted (physically smaller) one. :func:`mask_norm_channels` gives such a
module a persistent bool buffer ``channels_mask`` and swaps its class for a
subclass -- same name and ``repr``, ``isinstance`` still true, as
:mod:`pruneplug.core.lazy` does -- whose forward gathers the kept channels,
normalizes them exactly as a norm of that many channels would (with the kept
slices of ``weight`` and ``bias``), and scatters the result into zeros.

Hugging Face's RMSNorm classes (``LlamaRMSNorm``, ``Qwen2RMSNorm``,
``GemmaRMSNorm`` ...) and users' own are masked too (:func:`is_rms_norm_like`
says which). Their forward is their own, so the masked one calls it on the
kept channels scaled by ``sqrt(n/k)`` (pruned ones zeroed) and divides the
output by the same: an RMSNorm is homogeneous, so that is what it computes
on the ``k`` kept channels alone (:meth:`ChannelMaskedNorm.forward`).

The keep vector lives in its own buffer, not in a ``weight_mask``: it must
outlive :func:`pruneplug.remove` (a "removed" model would otherwise
normalize over zeros again) and exists for norms without weights too.

Both swaps compose: a module both channel-masked and lazily masked has the
lazy subclass of the channel-masked subclass of its class, whichever was
applied first, so that removing either leaves the other in place.
"""

from __future__ import annotations

import copyreg
import numbers
import threading
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..errors import InvalidMaskError, InvalidTargetError, NotPrunedError
from .lazy import LazyMaskedModule, _lazy_class
from .subclass import mixed_class

__all__ = [
    "ChannelMaskedNorm",
    "is_rms_norm_like",
    "mask_norm_channels",
    "unmask_norm_channels",
    "norm_channels_mask",
    "masks_channel_statistics",
    "check_norm_channels",
]

BUFFER = "channels_mask"

# nn.RMSNorm appeared in torch 2.4; pruneplug supports torch 2.2 on.
_RMSNorm: type[nn.Module] | None = getattr(nn, "RMSNorm", None)
_TORCH_NORMS: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.GroupNorm, *(() if _RMSNorm is None else (_RMSNorm,)))

_classes: dict[type[nn.Module], type[nn.Module]] = {}
_classes_lock = threading.Lock()


class _ChannelMaskedMeta(type):
    """The metaclass of the channel-masked subclasses, so that :mod:`copyreg` can pickle them.

    They share their base's ``__qualname__``, which pickle would resolve to the
    base itself; the reducer registered below rebuilds them from the base.
    """


def _reduce_class(cls: type) -> Any:
    base = cls.__dict__.get("_pp_norm_base")
    if base is None or _classes.get(base) is not cls:
        return cls.__qualname__  # not one of ours (ChannelMaskedNorm itself, a subclass of one): by name
    return (_masked_class, (base,))


copyreg.pickle(_ChannelMaskedMeta, _reduce_class)


class ChannelMaskedNorm(nn.Module, metaclass=_ChannelMaskedMeta):
    """Mixin of the per-class subclasses that normalize only the channels ``channels_mask`` keeps."""

    _pp_norm_base: type[nn.Module]
    channels_mask: Tensor

    def forward(self, input: Tensor) -> Tensor:
        """The base norm's output for the kept channels, as a norm of only those computes it; 0 elsewhere.

        torch's norms normalize the gathered kept channels with their own
        functional. An RMSNorm-like class (:func:`is_rms_norm_like`) has a
        forward of its own, which is called as it is, on a rescaled input:
        with ``k`` of ``n`` channels kept and ``c = sqrt(n/k)``,
        ``y = forward(c · x · keep) / c · keep``. The pruned channels, zero,
        add nothing to the sum of squares, and the factor ``c²`` makes its
        mean over ``n`` the mean over ``k``; ``eps`` is added to the same
        number as in the compacted norm, and the division undoes the scale of
        the output. (``keep`` is applied with ``torch.where``, so not even an
        inf or NaN in a pruned channel leaks.) Measured against the compacted
        norm (LLaMA's and Gemma's, 12 and 4096 channels): float32 within
        4.2e-7 relative, elementwise, from rounding ``c·x`` and ``/c`` and
        the longer sum; bfloat16 within 4 units in the last place, as the
        scaled input and the output are rounded to bfloat16 once more. No
        host-device synchronization: a ``channels_mask`` edited to keep no
        channel (which mask_norm_channels refuses) gives zeros.
        """
        keep = self._buffers.get(BUFFER)
        if keep is None:
            raise InvalidMaskError(
                f"its {BUFFER} buffer was deleted; mask_norm_channels sets a new one, "
                "unmask_norm_channels gives the module its own class back",
                module_type=type(self).__name__,
                tensor=BUFFER,
            )
        if not isinstance(self, _TORCH_NORMS):
            return self._rms_like_forward(input, keep)
        grouped = isinstance(self, nn.GroupNorm)
        channels = keep.shape[0]
        dim = 1 if grouped else input.dim() - 1
        if input.dim() < (2 if grouped else 1) or input.shape[dim] != channels:
            where = "(N, C, *) with C" if grouped else "(*, C) with C"
            raise RuntimeError(
                f"{type(self).__name__}: expected an input of shape {where} = {channels} channels "
                f"(the length of {BUFFER}), got shape {tuple(input.shape)}"
            )
        kept = _kept_indices(self, keep, what=BUFFER).to(input.device)
        x = input.index_select(dim, kept)
        weight = _kept_slice(self._parameter_or_none("weight"), kept)
        if grouped:
            bias = _kept_slice(self._parameter_or_none("bias"), kept)
            y = F.group_norm(x, self.num_groups, weight, bias, self.eps)  # type: ignore[arg-type]
        elif isinstance(self, nn.LayerNorm):
            bias = _kept_slice(self._parameter_or_none("bias"), kept)
            y = F.layer_norm(x, (kept.numel(),), weight, bias, self.eps)
        else:
            y = F.rms_norm(x, (kept.numel(),), weight, self.eps)  # type: ignore[arg-type]
        return y.new_zeros(input.shape).index_copy(dim, kept, y)

    def _rms_like_forward(self, input: Tensor, keep: Tensor) -> Tensor:
        channels = keep.shape[0]
        if input.dim() < 1 or input.shape[-1] != channels:
            raise RuntimeError(
                f"{type(self).__name__}: expected an input of shape (*, C) with C = {channels} channels "
                f"(the length of {BUFFER}), got shape {tuple(input.shape)}"
            )
        keep = keep.to(input.device)
        # sqrt(n/k) as a 0-dim tensor (no sync); a 0-dim tensor leaves the input's dtype as it is.
        exact = torch.float64 if input.dtype == torch.float64 else torch.float32
        scale = (channels / keep.sum(dtype=exact)).sqrt()
        output: Tensor = self._pp_norm_base.forward(self, torch.where(keep, input * scale, 0.0))
        return torch.where(keep, output / scale, 0.0)

    def _parameter_or_none(self, name: str) -> Tensor | None:
        # Read through getattr: a lazily masked (pruned) weight is computed there.
        value = getattr(self, name, None)
        return value if isinstance(value, Tensor) else None


def _kept_slice(tensor: Tensor | None, kept: Tensor) -> Tensor | None:
    return None if tensor is None else tensor.index_select(0, kept.to(tensor.device))


def _channels(module: nn.Module) -> int:
    if isinstance(module, nn.GroupNorm):
        return module.num_channels
    if not isinstance(module, _TORCH_NORMS):
        weight = _rms_like_weight(module)
        assert weight is not None  # (checked by _layers)
        return weight.shape[0]
    shape: tuple[int, ...] = module.normalized_shape  # type: ignore[assignment]  # (LayerNorm, RMSNorm)
    return shape[0]


def _rms_like_weight(module: nn.Module) -> Tensor | None:
    """The only parameter of ``module``, ``weight`` (or ``weight_orig``, pruned), if it is 1-D; else ``None``."""
    if len(module._parameters) != 1:
        return None
    ((name, weight),) = module._parameters.items()
    pruned = name == "weight_orig" and ("weight_mask" in module._buffers or "weight_mask" in vars(module))
    if weight is None or not (name == "weight" or pruned) or weight.dim() != 1:
        return None
    return weight


def _rms_like_refusal(module: nn.Module, base: type[nn.Module]) -> str | None:
    """Why ``module`` (of class ``base`` under pruneplug's subclasses) is not RMSNorm-like, or ``None`` if it is."""
    if isinstance(module, _TORCH_NORMS) or not base.__name__.endswith("RMSNorm"):
        return f"its class is torch's own or not named *RMSNorm ({base.__qualname__})"
    if module._modules:
        return f"it has child modules ({', '.join(module._modules)}), so its forward is more than a norm"
    if _rms_like_weight(module) is None:
        names = ", ".join(module._parameters) or "none"
        return f"an RMSNorm-like class has exactly one parameter, a 1-D weight; it has {names}"
    for name in ("variance_epsilon", "eps"):
        value = getattr(module, name, None)
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return None
    return "it has no number variance_epsilon or eps, which an RMSNorm-like class has"


def is_rms_norm_like(module: nn.Module) -> bool:
    """Whether ``module`` is an RMSNorm class of another library or of the user, which mask_norm_channels takes.

    Hugging Face's ``LlamaRMSNorm``, ``Qwen2RMSNorm``, ``MistralRMSNorm``,
    ``GemmaRMSNorm`` (``1 + weight``) and the like compute
    ``weight * x / sqrt(mean(x², -1) + eps)``, each in a forward of its own.
    These classes live in transformers and in user code, which pruneplug
    cannot import or list, so this is duck typing: a module that is not
    torch's LayerNorm, GroupNorm or RMSNorm, whose class (under pruneplug's
    lazy and channel-masked subclasses) is named ``*RMSNorm``, whose only
    parameter is a 1-D ``weight`` (``weight_orig`` while pruned), that has no
    child modules, and that has a number ``variance_epsilon`` or ``eps``. What
    it lets through wrongly (a class so named computing something else)
    does not go unnoticed: :func:`pruneplug.compact` compares the masked
    model's outputs with the compacted one's. A parametrized module is not
    one (parametrize owns its class).

    >>> import torch
    >>> from torch import nn
    >>> class MyRMSNorm(nn.Module):
    ...     def __init__(self, size: int) -> None:
    ...         super().__init__()
    ...         self.weight, self.eps = nn.Parameter(torch.ones(size)), 1e-6
    >>> is_rms_norm_like(MyRMSNorm(8)), is_rms_norm_like(nn.RMSNorm(8))
    (True, False)
    """
    try:
        base, _, _ = _unwrap(module)
    except InvalidTargetError:
        return False
    return _rms_like_refusal(module, base) is None


def _kept_indices(module: nn.Module, keep: Tensor, *, what: str) -> Tensor:
    """The indices ``keep`` keeps, after checking it has one and, for a GroupNorm, as many in every group."""
    kept = keep.nonzero().squeeze(1)
    if kept.numel() == 0:
        raise InvalidMaskError(
            f"{what} keeps no channel; a norm needs at least one", module_type=type(module).__name__, tensor=BUFFER
        )
    if isinstance(module, nn.GroupNorm):
        groups = module.num_groups
        counts = keep.view(groups, -1).sum(1)
        if bool((counts != counts[0]).any()):
            raise InvalidMaskError(
                f"{what} keeps {counts.tolist()} channels in the {groups} groups of "
                f"GroupNorm({groups}, {keep.numel()}); every group must keep as many, so that the "
                f"compacted GroupNorm's {groups} groups are the old groups' kept channels",
                module_type=type(module).__name__,
                tensor=BUFFER,
            )
    return kept


def _check_keep(module: nn.Module, keep: object, *, what: str) -> None:
    """``keep`` is a bool vector over the module's channels keeping at least one (as many per group)."""
    context = {"module_type": type(module).__name__, "tensor": BUFFER}
    if not isinstance(keep, Tensor):
        raise InvalidMaskError(f"{what} must be a bool tensor, got {type(keep).__name__}", **context)
    if keep.dtype != torch.bool:
        raise InvalidMaskError(f"{what} must be a bool tensor (True keeps a channel), got {keep.dtype}", **context)
    channels = _channels(module)
    if tuple(keep.shape) != (channels,):
        raise InvalidMaskError(
            f"{what} has shape {tuple(keep.shape)} but the module has {channels} channels, so it must be ({channels},)",
            **context,
        )
    if not keep.is_meta:  # (a meta tensor has no values to check)
        _kept_indices(module, keep, what=what)


def _base_forward_of(cls: type) -> bool:
    forwards = [nn.LayerNorm.forward, nn.GroupNorm.forward]
    if _RMSNorm is not None:
        forwards.append(_RMSNorm.forward)
    return any(getattr(cls, "forward", None) is forward for forward in forwards)


def _unwrap(module: nn.Module) -> tuple[type[nn.Module], bool, bool]:
    """``(base class, lazily masked, channel-masked)`` of ``module``; raises if its class is not one to unwrap."""
    cls: type[nn.Module] = type(module)
    name = cls.__name__
    if parametrize.is_parametrized(module):
        raise InvalidTargetError(
            "the module is parametrized (torch.nn.utils.parametrize owns its class); "
            "remove the parametrizations before masking or unmasking its channels",
            module_type=name,
        )
    lazy = issubclass(cls, LazyMaskedModule)
    if lazy:
        base = cls._pp_base  # type: ignore[attr-defined]
        if _lazy_class(base) is not cls:
            raise InvalidTargetError(f"its class {cls!r} is built on pruneplug's lazy class", module_type=name)
        cls = base
    masked = issubclass(cls, ChannelMaskedNorm)
    if masked:
        base = cls.__dict__.get("_pp_norm_base")
        if base is None or _classes.get(base) is not cls:
            raise InvalidTargetError(f"its class {cls!r} is built on a channel-masked class", module_type=name)
        cls = base
    return cls, lazy, masked


def _layers(module: nn.Module) -> tuple[type[nn.Module], bool, bool]:
    """``(base class, lazily masked, channel-masked)`` of ``module``; raises if mask_norm_channels cannot handle it."""
    cls, lazy, masked = _unwrap(module)
    name = type(module).__name__
    if not isinstance(module, _TORCH_NORMS):
        refusal = _rms_like_refusal(module, cls)
        if refusal is None:
            return cls, lazy, masked
        if cls.__name__.endswith("RMSNorm"):
            raise InvalidTargetError(f"it is not RMSNorm-like (is_rms_norm_like): {refusal}", module_type=name)
        raise InvalidTargetError(
            "only LayerNorm and RMSNorm over one last dim, GroupNorm, and RMSNorm classes of other libraries "
            f"(is_rms_norm_like) can mask channels out of their statistics; got {name}",
            module_type=name,
        )
    if not _base_forward_of(cls):
        raise InvalidTargetError(
            f"{cls.__qualname__} overrides forward, so what its statistics are is its own", module_type=name
        )
    if not isinstance(module, nn.GroupNorm):
        shape: tuple[int, ...] = module.normalized_shape  # type: ignore[assignment]
        if len(shape) != 1:
            raise InvalidTargetError(
                f"it normalizes over the last {len(shape)} dims {tuple(shape)}; masking channels needs one",
                module_type=name,
            )
    return cls, lazy, masked


def masks_channel_statistics(module: nn.Module) -> bool:
    """Whether :func:`mask_norm_channels` supports ``module``.

    Supported: ``nn.LayerNorm`` and ``nn.RMSNorm`` normalizing over one last
    dim (``len(normalized_shape) == 1``) and ``nn.GroupNorm`` -- or their
    subclasses that keep torch's ``forward`` -- and RMSNorm classes of other
    libraries or users (:func:`is_rms_norm_like`), whether lazily masked,
    channel-masked already or neither, but not while
    ``torch.nn.utils.parametrize`` owns the class.

    >>> from torch import nn
    >>> masks_channel_statistics(nn.LayerNorm(8)), masks_channel_statistics(nn.LayerNorm((4, 8)))
    (True, False)
    >>> masks_channel_statistics(nn.BatchNorm1d(8))  # its statistics are per channel already
    False
    """
    try:
        _layers(module)
    except InvalidTargetError:
        return False
    return True


def norm_channels_mask(module: nn.Module) -> Tensor | None:
    """The keep vector of a channel-masked norm (the ``channels_mask`` buffer itself), or ``None``."""
    if not isinstance(module, ChannelMaskedNorm):
        return None
    return module._buffers.get(BUFFER)


def _masked_class(base: type[nn.Module]) -> type[nn.Module]:
    """The channel-masked subclass of ``base``, created once per class."""
    try:
        return mixed_class(base, ChannelMaskedNorm, "_pp_norm_base", _classes, _classes_lock)
    except Exception as error:  # an __init_subclass__ or metaclass of its own refuses
        raise InvalidTargetError(
            f"{base.__qualname__} cannot be subclassed ({type(error).__name__}: {error}), "
            "which masking its channels needs",
            module_type=base.__name__,
        ) from error


def _with_lazy(cls: type[nn.Module], lazy: bool) -> type[nn.Module]:
    if not lazy:
        return cls
    made = _lazy_class(cls)
    if made is None:
        raise InvalidTargetError(f"{cls.__qualname__} has no lazily masked subclass", module_type=cls.__name__)
    return made


def _device(module: nn.Module, fallback: torch.device) -> torch.device:
    for tensor in (*module._parameters.values(), *module._buffers.values()):
        if tensor is not None:
            return tensor.device
    return fallback


def check_norm_channels(module: nn.Module, keep: object, *, what: str = "keep") -> type[nn.Module]:
    """Check that :func:`mask_norm_channels` can mask ``module`` with ``keep``, changing nothing.

    Returns the class the module would get. ``what`` names ``keep`` in the
    messages (a state_dict key, say). Raises as :func:`mask_norm_channels`.
    """
    base, lazy, _ = _layers(module)
    _check_keep(module, keep, what=what)
    if hasattr(module, BUFFER) and BUFFER not in module._buffers:
        raise InvalidTargetError(
            f"the module already has an attribute {BUFFER!r} that is not its channel mask",
            module_type=type(module).__name__,
        )
    return _with_lazy(_masked_class(base), lazy)


def mask_norm_channels(module: nn.Module, keep: Tensor) -> None:
    """Make ``module`` normalize only the channels ``keep`` keeps, with 0 out at the others.

    The module gets (or has replaced) a persistent bool buffer
    ``channels_mask`` -- a copy of ``keep`` on the module's device -- and its
    class is swapped for a subclass (same name, ``repr`` and ``isinstance``;
    pickles and copies) whose forward computes, for the kept channels,
    exactly what a norm of only those channels with the kept slices of
    ``weight`` and ``bias`` computes (an RMSNorm-like module: up to
    rounding, see :meth:`ChannelMaskedNorm.forward`), in train and eval
    mode and under autograd. A GroupNorm keeps its ``num_groups``, so every
    group must keep as many channels. Pruning the module's tensors (lazily) works before and
    after.

    Args:
        module: see :func:`masks_channel_statistics`.
        keep: a bool vector over the channels (``num_channels``,
            ``normalized_shape[0]``, or the length of an RMSNorm-like
            module's ``weight``); True keeps a channel.

    Raises:
        InvalidTargetError: the module is not a supported norm.
        InvalidMaskError: ``keep`` is not a bool tensor of shape ``(C,)``,
            keeps no channel, or keeps different counts in a GroupNorm's
            groups. Nothing has changed then.

    >>> import torch
    >>> from torch import nn
    >>> norm = nn.LayerNorm(4)
    >>> mask_norm_channels(norm, torch.tensor([True, False, True, True]))
    >>> type(norm).__name__, isinstance(norm, nn.LayerNorm)
    ('LayerNorm', True)
    >>> norm(torch.randn(2, 4))[:, 1]
    tensor([0., 0.], grad_fn=<SelectBackward0>)
    """
    target = check_norm_channels(module, keep)
    stored = keep.detach().to(device=_device(module, keep.device), copy=True)
    original, previous = type(module), module._buffers.get(BUFFER)
    try:
        module.register_buffer(BUFFER, stored, persistent=True)
        if type(module) is not target:
            module.__class__ = target
    except BaseException:
        object.__setattr__(module, "__class__", original)
        if previous is None:
            module._buffers.pop(BUFFER, None)
        else:
            module._buffers[BUFFER] = previous
        raise


def unmask_norm_channels(module: nn.Module) -> None:
    """Undo :func:`mask_norm_channels`: the module's own class back (lazy still, if pruned), the buffer gone.

    Raises:
        NotPrunedError: ``module`` is not channel-masked.
        InvalidTargetError: its class is not one this module can undo (a
            parametrized module, a class built on the swapped one).
    """
    if not isinstance(module, ChannelMaskedNorm):
        raise NotPrunedError("its channels are not masked (mask_norm_channels)", module_type=type(module).__name__)
    base, lazy, _ = _layers(module)
    target = _with_lazy(base, lazy)
    original: type[nn.Module] = type(module)
    keep = module._buffers.get(BUFFER)
    try:
        module.__class__ = target  # type: ignore[assignment]  # (the narrowing above no longer holds)
        module._buffers.pop(BUFFER, None)
        module._non_persistent_buffers_set.discard(BUFFER)
    except BaseException:
        object.__setattr__(module, "__class__", original)
        if keep is not None:
            module._buffers[BUFFER] = keep
        raise
