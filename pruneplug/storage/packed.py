"""Bit-packed masks: one bit per entry instead of a ``torch.bool`` byte.

A bool mask costs a quarter of an fp32 weight's memory, half of a bf16 one's;
for a model pruned globally that is the bulk of what pruning keeps. This
module holds the storage format (:class:`PackedMask`) and the helpers the
core reads masks through (:func:`plain`, :func:`flat_mask`,
:func:`mask_range`, :func:`storage_of`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeGuard

import torch
from torch import Tensor
from torch.distributed.tensor import DTensor
from torch.utils._python_dispatch import _get_current_dispatch_mode
from torch.utils._pytree import tree_map

from ..errors import PackedMaskError

__all__ = [
    "PackedMask",
    "pack_bits",
    "unpack_bits",
    "pack_mask",
    "is_packed",
    "added_entries",
    "packed_alike",
    "plain",
    "storage_of",
    "flat_mask",
    "mask_range",
]

_aten = torch.ops.aten
_ALIASES = {_aten.detach.default, _aten.alias.default}


def pack_bits(mask: Tensor) -> Tensor:
    """The entries of a bool tensor as a flat ``uint8`` tensor, eight to a byte (entry ``8j+i`` is bit ``i``)."""
    flat = mask.detach().reshape(-1)
    padding = (-flat.numel()) % 8
    if padding:
        flat = torch.cat([flat, flat.new_zeros(padding)])
    else:
        flat = flat.contiguous()
    groups = flat.to(torch.uint8).view(-1, 8)  # (a conversion, not a view: a bool byte may hold any nonzero value)
    packed = groups[:, 0].clone()
    for bit in range(1, 8):
        packed |= groups[:, bit] << bit
    return packed


def unpack_bits(packed: Tensor, shape: Sequence[int]) -> Tensor:
    """The bool tensor of ``shape`` that :func:`pack_bits` packed into ``packed``."""
    numel = math.prod(shape)
    table = _byte_table(packed.device)
    indices = packed.to(torch.int32)
    if torch._C._get_tracing_state() is not None:  # torch.jit.trace cannot record a dtype view
        unpacked = torch.index_select(table, 0, indices).to(torch.bool)
    else:
        # one 8-byte row per packed byte, gathered as int64 words, then read back as bools
        unpacked = torch.index_select(table.view(torch.int64).reshape(256), 0, indices).view(torch.bool)
    return unpacked.reshape(-1)[:numel].reshape(tuple(shape))


_tables: dict[torch.device, Tensor] = {}


def _byte_table(device: torch.device) -> Tensor:
    """``table[b, i]`` is bit ``i`` of byte ``b`` (0 or 1), as ``uint8``: a byte's 8 entries, ready to copy."""
    tracing = (
        torch.compiler.is_compiling()
        or _get_current_dispatch_mode() is not None
        or torch._C._get_tracing_state() is not None
    )
    table = None if tracing else _tables.get(device)  # (a kept tensor is foreign to compile's fake tensors)
    if table is None:
        bits = (torch.arange(256, device=device).unsqueeze(1) >> torch.arange(8, device=device)) & 1
        table = bits.to(torch.uint8).contiguous()
        if not tracing:
            _tables[device] = table
    return table


class PackedMask(Tensor):
    """A bool mask stored one bit per entry: 1/32 of an fp32 weight's memory.

    With ``mask_storage="packed"`` pruneplug stores ``<name>_mask`` as one of
    these. It reports ``dtype=torch.bool`` and the weight's shape, and any
    torch operation sees it as the bool mask it stands for: each operation
    unpacks it for its own duration, and an in-place operation on it
    (``mask[i, j] = False``, ``mask.logical_and_(m)``, ``copy_``, ``out=``)
    is packed back. ``state_dict()`` holds plain bool masks in its place, in
    torch's format.

    It has no storage of its own (``data_ptr()`` is 0, ``untyped_storage()``
    fails; ``share_memory_()`` shares the packed bytes), writing through a
    *view* of it of another shape (``mask.view(-1)[i] = False``,
    ``mask[0].zero_()``) changes a temporary copy -- write to the mask
    itself; ``detach()`` and a view of its own shape share its bits, which
    is how a DTensor holds a packed shard -- and in-place operations
    that would change its shape raise :class:`~pruneplug.PackedMaskError`,
    as does ``torch.jit.trace``, which would freeze the mask into the trace
    (``torch.compile`` and ``torch.export`` follow it). Call
    :func:`pruneplug.unpack_masks` first for any of those.

    Build one with :meth:`pack`; :meth:`unpack` gives the plain bool tensor;
    ``packed`` is the flat ``uint8`` storage itself (entry ``8j+i`` is bit
    ``i`` of byte ``j``).

    >>> import torch
    >>> mask = PackedMask.pack(torch.tensor([[True, False, True], [False, True, True]]))
    >>> mask.dtype, tuple(mask.shape), int(mask.sum()), mask.packed.numel()
    (torch.bool, (2, 3), 4, 1)
    >>> mask[0, 0] = False
    >>> mask.unpack().tolist()
    [[False, False, True], [False, True, True]]
    """

    packed: Tensor

    @staticmethod
    def __new__(cls, packed: Tensor, shape: Sequence[int]) -> PackedMask:
        if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != (math.prod(shape) + 7) // 8:
            raise ValueError(f"a packed mask of shape {tuple(shape)} needs {(math.prod(shape) + 7) // 8} uint8 bytes")
        return Tensor._make_wrapper_subclass(  # type: ignore[attr-defined,no-any-return]
            cls, tuple(shape), dtype=torch.bool, device=packed.device, requires_grad=False
        )

    def __init__(self, packed: Tensor, shape: Sequence[int]) -> None:
        self.packed = packed

    @classmethod
    def pack(cls, mask: Tensor) -> PackedMask:
        """Pack a bool tensor (a :class:`PackedMask` is returned as it is)."""
        if isinstance(mask, PackedMask):
            return mask
        if mask.dtype != torch.bool:
            raise TypeError(f"only bool masks can be packed, got {mask.dtype}")
        return cls(pack_bits(mask), mask.shape)

    @classmethod
    def filled(cls, shape: Sequence[int], value: bool, device: torch.device | str | None = None) -> PackedMask:
        """A mask of ``shape`` whose entries are all ``value``, made as bytes (no bool tensor of ``shape``)."""
        numel = math.prod(shape)
        packed = torch.full(((numel + 7) // 8,), 255 if value else 0, dtype=torch.uint8, device=device)
        if value and numel % 8:
            packed[-1] = (1 << (numel % 8)) - 1  # (the padding bits stay 0, as pack_bits leaves them)
        return cls(packed, shape)

    def unpack(self) -> Tensor:
        """The mask as a plain, compact bool tensor (a new one at every call)."""
        unpacked = self._unpacked()
        return unpacked.clone() if unpacked.numel() % 8 else unpacked  # (not a view into a padded buffer)

    def _unpacked(self) -> Tensor:
        """The mask as a plain bool tensor, possibly a view into a buffer padded to whole bytes."""
        if torch._C._get_tracing_state() is not None:
            raise PackedMaskError(
                "torch.jit.trace would record a bit-packed mask as a constant, so that later changes to the mask "
                "are not seen; call pruneplug.unpack_masks(model) before tracing (or use torch.export)"
            )
        return unpack_bits(self.packed, self.shape)

    def _store(self, value: Tensor) -> None:
        if value.shape != self.shape:
            raise PackedMaskError(
                f"an in-place operation would change a bit-packed mask's shape from {tuple(self.shape)} to "
                f"{tuple(value.shape)}; unpack it first (pruneplug.unpack_masks)"
            )
        self.packed.copy_(pack_bits(value))
        # Inside __torch_dispatch__ in-place ops do not bump version counters; the cache reads this one.
        torch.autograd.graph.increment_version(self.packed)

    def __setitem__(self, index: Any, value: Any) -> None:
        # Tensor.__setitem__ writes through views of the tensor, which are temporaries here.
        updated = self._unpacked()
        updated[index] = plain(value) if isinstance(value, Tensor) else value
        self.copy_(updated)

    @property  # type: ignore[override]
    def data(self) -> Tensor:
        """An alias sharing the packed bytes (as ``Tensor.data`` is for plain tensors)."""
        return self.detach()

    @data.setter
    def data(self, value: Tensor) -> None:
        if not isinstance(value, Tensor) or value.dtype != torch.bool or value.shape != self.shape:
            got = f"{value.dtype} {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
            raise PackedMaskError(
                f"a bit-packed mask's .data can only be set to a bool tensor of its shape {tuple(self.shape)}, "
                f"got {got}; unpack it first (pruneplug.unpack_masks)"
            )
        self._store(plain(value))

    def share_memory_(self) -> PackedMask:
        """Move the packed bytes to shared memory (``Module.share_memory()`` calls this)."""
        self.packed.share_memory_()
        return self

    def is_shared(self) -> bool:
        return bool(self.packed.is_shared())

    def __repr__(self, *, tensor_contents: Any = None) -> str:  # type: ignore[override]
        return f"PackedMask({self.unpack()!r})"

    def tolist(self) -> Any:
        return self.unpack().tolist()

    def numpy(self, *, force: bool = False) -> Any:
        return self.unpack().numpy(force=force)

    def __deepcopy__(self, memo: dict[int, Any]) -> PackedMask:
        copied = PackedMask(self.packed.clone(), self.shape)
        memo[id(self)] = copied
        return copied

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (_rebuild, (self.packed, tuple(self.shape)))

    def __tensor_flatten__(self) -> tuple[list[str], tuple[int, ...]]:
        return ["packed"], tuple(self.shape)

    @staticmethod
    def __tensor_unflatten__(
        inner: dict[str, Tensor], shape: tuple[int, ...], outer_size: Any, outer_stride: Any
    ) -> PackedMask:
        return PackedMask(inner["packed"], shape)

    @classmethod
    def __torch_dispatch__(  # type: ignore[override]
        cls, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func in _ALIASES or (func is _aten.view.default and list(args[1]) == list(args[0].shape)):
            # (view_as(itself) too: DTensor.from_local and to_local wrap a shard that way)
            # A view of a tensor made outside inference mode must not be an inference tensor.
            with torch.inference_mode(args[0].is_inference()):
                return PackedMask(args[0].packed, args[0].shape)
        if func is _aten.clone.default:
            return PackedMask(args[0].packed.clone(), args[0].shape)
        if func is _aten._to_copy.default and kwargs.get("dtype") in (None, torch.bool):
            device = kwargs.get("device") or args[0].device
            return PackedMask(args[0].packed.to(device=device, copy=True), args[0].shape)
        # Each mask is unpacked once per call, however often it is passed (m.logical_xor_(m)),
        # and masks sharing their packed bytes (m and m.detach()) share the unpacked tensor.
        temporaries: dict[tuple[int, tuple[int, ...]], Tensor] = {}

        def temporary(mask: PackedMask) -> Tensor:
            key = (id(mask.packed), tuple(mask.shape))
            if key not in temporaries:
                temporaries[key] = mask._unpacked()
            return temporaries[key]

        def unwrap(value: Any) -> Any:
            return temporary(value) if isinstance(value, PackedMask) else value

        out = func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs))
        written: dict[int, PackedMask] = {}  # id of the temporary -> the mask written through it
        for mask in _written(func, args, kwargs):
            changed = temporary(mask)
            if id(changed) not in written:
                mask._store(changed)
                written[id(changed)] = mask

        def rewrap(value: Any) -> Any:
            return written.get(id(value), value) if isinstance(value, Tensor) else value

        return tree_map(rewrap, out)


def _written(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[PackedMask]:
    """The :class:`PackedMask` arguments that ``func`` writes into (``add_``, ``out=``)."""
    written: list[PackedMask] = []
    for index, argument in enumerate(func._schema.arguments):
        if argument.alias_info is None or not argument.alias_info.is_write:
            continue
        value = args[index] if index < len(args) and not argument.kwarg_only else kwargs.get(argument.name)
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, PackedMask):
                written.append(item)
    return written


def _rebuild(packed: Tensor, shape: tuple[int, ...]) -> PackedMask:
    return PackedMask(packed, shape)


def _with_local(mask: DTensor, local: Tensor) -> DTensor:
    """A DTensor placed like ``mask`` whose shard here is ``local``."""
    return DTensor.from_local(
        local, mask.device_mesh, mask.placements, run_check=False, shape=mask.shape, stride=mask.stride()
    )


def is_packed(mask: Tensor | None) -> TypeGuard[Tensor]:
    """Whether ``mask`` is stored bit-packed: a :class:`PackedMask`, or a DTensor whose shard here is one."""
    if isinstance(mask, DTensor):
        return isinstance(mask._local_tensor, PackedMask)
    return isinstance(mask, PackedMask)


def pack_mask(mask: Tensor) -> Tensor:
    """A bool mask stored bit-packed; a DTensor stays a DTensor placed alike, its shard packed on each rank.

    (A :class:`PackedMask` holds a whole tensor's bits; a sharded mask is
    one per rank, each packing its own shard.) Packed masks are returned as
    they are.
    """
    if isinstance(mask, DTensor):
        return mask if is_packed(mask) else _with_local(mask, PackedMask.pack(mask._local_tensor.detach()))
    return PackedMask.pack(mask)


def packed_alike(mask: Tensor, previous: Tensor) -> bool:
    """Whether two masks are packed the same way: two :class:`PackedMask` of one shape, or two DTensors
    on one mesh with the same placements whose shards are (so that their bytes line up)."""
    if isinstance(mask, DTensor) or isinstance(previous, DTensor):
        return (
            isinstance(mask, DTensor)
            and isinstance(previous, DTensor)
            and mask.device_mesh == previous.device_mesh
            and mask.placements == previous.placements
            and mask.shape == previous.shape
            and packed_alike(mask._local_tensor, previous._local_tensor)
        )
    return isinstance(mask, PackedMask) and isinstance(previous, PackedMask) and mask.shape == previous.shape


def added_entries(mask: Tensor, previous: Tensor) -> int:
    """How many entries ``mask`` keeps that ``previous`` does not: two masks :func:`packed_alike`.

    Read from their bytes (``mask & ~previous``, 1/8 of a bool mask at
    most); two DTensors are counted over every rank (each shard once), so
    every rank must ask.

    Raises:
        ValueError: the masks are not packed alike.
    """
    if not packed_alike(mask, previous):
        raise ValueError("added_entries needs two masks packed alike (see packed_alike)")
    if isinstance(mask, DTensor):
        from torch.distributed.tensor import Partial, Replicate

        local = added_entries(mask._local_tensor, previous._local_tensor)  # type: ignore[attr-defined]
        placements = [Partial() if placement.is_shard() else Replicate() for placement in mask.placements]
        count = torch.tensor(local, dtype=torch.int64, device=storage_of(mask).device)
        return int(DTensor.from_local(count, mask.device_mesh, placements, run_check=False).full_tensor())
    assert isinstance(mask, PackedMask) and isinstance(previous, PackedMask)
    bits = _byte_table(mask.packed.device).sum(dim=1)
    size = mask.packed.numel()
    total = 0
    for start in range(0, size, 1 << 20):
        stop = min(start + (1 << 20), size)
        added = mask.packed[start:stop] & ~previous.packed[start:stop]
        if stop == size and mask.numel() % 8:  # the bits past the last entry count for nothing
            added[-1] &= (1 << (mask.numel() % 8)) - 1
        total += int(bits[added.to(torch.int64)].sum())
    return total


def plain(mask: Tensor) -> Tensor:
    """``mask`` as a plain tensor: unpacked if it is packed (a DTensor's shard too), else itself."""
    if isinstance(mask, DTensor):
        local = mask._local_tensor
        return _with_local(mask, local.unpack()) if isinstance(local, PackedMask) else mask
    return mask.unpack() if isinstance(mask, PackedMask) else mask


def flat_mask(mask: Tensor) -> Tensor:
    """``mask.reshape(-1)``, without unpacking a :class:`PackedMask` (its bits are in that order already)."""
    if isinstance(mask, PackedMask):
        return PackedMask(mask.packed, (mask.numel(),))
    return mask.reshape(-1)


def mask_range(flat: Tensor, start: int, stop: int) -> Tensor:
    """``flat[start:stop]`` of a 1-D mask; of a :class:`PackedMask`, only the bytes holding that range are unpacked."""
    if not isinstance(flat, PackedMask):
        return flat[start:stop]
    first, last = start // 8, (stop + 7) // 8
    span = unpack_bits(flat.packed[first:last], ((last - first) * 8,))
    return span[start - first * 8 : stop - first * 8]


def storage_of(mask: Tensor) -> Tensor:
    """The tensor that holds ``mask``'s data here: its packed bytes for a :class:`PackedMask`, a DTensor's shard's."""
    if isinstance(mask, DTensor):
        return storage_of(mask._local_tensor)
    return mask.packed if isinstance(mask, PackedMask) else mask
