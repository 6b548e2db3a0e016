"""Pruned tensors of FSDP2 (``fully_shard``) modules: the name FSDP swaps, and the mask in the forward.

FSDP2 keeps one ``FSDPParam`` per sharded parameter and, around each forward
and backward, swaps the module's attribute *by its registered name* between
the sharded DTensor and the all-gathered plain tensor. Pruning renames
``<name>`` to ``<name>_orig``, so:

* :func:`follow_rename` points FSDP's record at the new name (and back, on
  ``remove``), so that FSDP all-gathers ``<name>_orig`` and the pruning
  hook reads it unsharded inside the forward;
* the mask stays a sharded DTensor buffer (FSDP2 shards parameters only),
  and :func:`masked_unsharded` multiplies the gathered ``<name>_orig`` by the
  gathered mask: one bool all-gather in the forward and one in the backward,
  1 byte per entry (25 % on top of FSDP2's all-gather of a float32 weight,
  50 % on top of a bfloat16 one). Autograd keeps only the sharded mask
  between the two, so a layer's whole mask exists only while its own forward
  or backward runs;
* the masked weight ``<name>_orig * mask`` is a new tensor, which the
  layer's own operations (``F.linear``) would keep for the backward: a whole
  weight per pruned layer from its forward to its backward, where FSDP2
  frees a gathered weight after the forward. While a pruned module runs its
  forward, saved-tensor hooks (:func:`recompute_masked_weights`) keep in
  its place how to make it again, from the ``<name>_orig`` FSDP2 gathers
  again for the backward, and the mask.

Modules a ``fully_shard`` reaches through a parent are handled alike: the
record is found from the parameter, whichever module's state holds it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributed.tensor import DTensor

from ..errors import IncompatibleStrategyError

__all__ = ["follow_rename", "masked_unsharded", "recompute_masked_weights", "renaming"]


def _fsdp_params() -> list[Any]:
    """Every ``FSDPParam`` of every live ``fully_shard`` state in this process."""
    if not torch.distributed.is_available():
        return []
    from torch.distributed._composable_state import _module_state_mapping
    from torch.distributed.fsdp._fully_shard._fsdp_state import FSDPState

    found = []
    for reference in list(_module_state_mapping.values()):
        state = reference()
        group = getattr(state, "_fsdp_param_group", None) if isinstance(state, FSDPState) else None
        if group is not None:
            found.extend(group.fsdp_params)
    return found


def _record_of(param: Tensor) -> Any | None:
    for fsdp_param in _fsdp_params():
        if fsdp_param.sharded_param is param:
            return fsdp_param
    return None


def renaming(module: nn.Module, param: Tensor, old: str, new: str) -> Callable[[], None] | None:
    """What makes FSDP swap ``module.<new>`` where it swapped ``module.<old>`` (``None``: not FSDP's).

    Checked now, done when the returned function is called (it cannot fail),
    so that a prune of several tensors renames all or none.

    Raises:
        IncompatibleStrategyError: ``param`` is shared with another module
            (tied weights), whose name pruning does not change.
    """
    if not isinstance(param, DTensor):
        return None
    record = _record_of(param)
    if record is None:
        return None
    info = record._module_info
    if info.shared_modules:
        raise IncompatibleStrategyError(
            f"{type(module).__name__}.{old} is shared with {len(info.shared_modules)} other module(s) under "
            "fully_shard (tied weights); pruning one of them is not supported"
        )
    if info.module is not module or info.param_name != old:
        raise IncompatibleStrategyError(
            f"{type(module).__name__}.{old}: FSDP2 registered this parameter as "
            f"{type(info.module).__name__}.{info.param_name}"
        )

    def rename() -> None:
        info.param_name = new
        recompute_masked_weights(module, on=any(key.endswith("_orig") for key in module._parameters))

    return rename


def follow_rename(module: nn.Module, param: Tensor, old: str, new: str) -> None:
    """Make FSDP swap ``module.<new>`` where it swapped ``module.<old>`` at once (see :func:`renaming`)."""
    rename = renaming(module, param, old, new)
    if rename is not None:
        rename()


class _GatheredMask(torch.autograd.Function):
    """``orig * full(mask)`` that keeps only the sharded mask for the backward (gathered again there)."""

    @staticmethod
    def forward(ctx: Any, orig: Tensor, mask: DTensor) -> Tensor:
        ctx.mask = mask
        return orig * mask.full_tensor().to(dtype=orig.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        mask: DTensor = ctx.mask
        return grad * mask.full_tensor().to(dtype=grad.dtype), None


def masked_unsharded(orig: Tensor, mask: Tensor) -> Tensor:
    """``orig * mask`` for an ``orig`` FSDP2 has all-gathered and a ``mask`` that is still a sharded DTensor."""
    if mask.shape != orig.shape:
        raise IncompatibleStrategyError(
            f"the mask's global shape {tuple(mask.shape)} differs from the gathered tensor's {tuple(orig.shape)}"
        )
    product: Tensor = _GatheredMask.apply(orig, mask)  # type: ignore[no-untyped-call]
    _products[product.untyped_storage().data_ptr()] = _Product(product, orig, mask)
    return product


class _Product:
    """A masked weight made by :func:`masked_unsharded`, and what it was made from."""

    __slots__ = ("made", "mask", "orig")

    def __init__(self, made: Tensor, orig: Tensor, mask: Tensor) -> None:
        self.made = weakref.ref(made)
        self.orig, self.mask = orig, mask


#: The masked weights alive now, by the address of their storage (an entry goes with its tensor's storage).
_products: dict[int, _Product] = {}


class _Remake:
    """What autograd keeps instead of a masked weight (or a view of it): how to make it again."""

    __slots__ = ("mask", "offset", "orig", "size", "stride")

    def __init__(self, product: _Product, view: Tensor) -> None:
        self.orig, self.mask = product.orig, product.mask
        self.size, self.stride, self.offset = tuple(view.shape), view.stride(), view.storage_offset()

    def __call__(self) -> Tensor:
        with torch.no_grad():  # (the gradient flows through the product made in the forward, not this copy)
            gathered: Tensor = self.mask.full_tensor()  # type: ignore[attr-defined]
            whole = self.orig.detach() * gathered.to(dtype=self.orig.dtype)
        return whole.as_strided(self.size, self.stride, self.offset)


def _pack(saved: Tensor) -> Any:
    if type(saved) is not Tensor and type(saved) is not nn.Parameter:
        return saved  # (DTensors, fake tensors under compile: kept as they are)
    address = saved.untyped_storage().data_ptr()
    product = _products.get(address)
    made = None if product is None else product.made()
    if made is None or made.untyped_storage().data_ptr() != address:
        _products.pop(address, None)
        return saved
    return _Remake(product, saved)  # type: ignore[arg-type]


def _unpack(saved: Any) -> Tensor:
    return saved() if isinstance(saved, _Remake) else saved  # type: ignore[no-any-return]


class _SavedHooks:
    """Forward pre-hook and (always called) forward hook: :func:`_pack` and :func:`_unpack` during the forward."""

    def __init__(self) -> None:
        self.active: list[Any] = []

    def enter(self, module: nn.Module, args: Any) -> None:
        hooks = torch.autograd.graph.saved_tensors_hooks(_pack, _unpack)
        hooks.__enter__()
        self.active.append(hooks)

    def exit(self, module: nn.Module, args: Any, output: Any) -> None:
        if self.active:
            self.active.pop().__exit__(None, None, None)
        _forget_dead()


def _forget_dead() -> None:
    for address in [address for address, product in _products.items() if product.made() is None]:
        del _products[address]


_HANDLES = "_pruneplug_fsdp_recompute"


def recompute_masked_weights(module: nn.Module, on: bool) -> None:
    """Make autograd keep how to remake ``module``'s masked weights, not their values (``on``), or stop."""
    handles = module.__dict__.pop(_HANDLES, None)
    if handles is not None:
        for handle in handles:
            handle.remove()
    if on:
        hooks = _SavedHooks()
        module.__dict__[_HANDLES] = (
            module.register_forward_pre_hook(hooks.enter),
            module.register_forward_hook(hooks.exit, always_call=True),
        )
