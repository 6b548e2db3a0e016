"""Which mask formats exist, and the choice between them.

Native masks are ``torch.bool`` tensors or bit-packed ones
(:class:`~pruneplug.PackedMask`, see :mod:`pruneplug.storage.packed`);
masks made through :mod:`pruneplug.compat` keep the dtype torch would give
them. Everything that accepts ``mask_storage=`` checks it here.
"""

from __future__ import annotations

import enum
from typing import Literal

import torch
from torch import Tensor

from ..errors import InvalidParametersError
from .packed import is_packed

__all__ = [
    "MaskPolicy",
    "NATIVE_POLICY",
    "TORCH_POLICY",
    "MaskStorage",
    "MASK_STORAGES",
    "check_storage",
    "storage_for",
    "is_binary",
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


def storage_for(current: Tensor | None, storage: MaskStorage | None) -> MaskStorage:
    """How a tensor's new mask is stored: as asked, else as its ``current`` mask is (``"bool"`` if none)."""
    if storage is not None:
        return storage
    return "packed" if is_packed(current) else "bool"


def is_binary(mask: Tensor) -> bool:
    """Whether every entry of ``mask`` is 0 or 1 (always true of a bool mask; never of a complex one)."""
    if mask.dtype == torch.bool:
        return True
    return not mask.is_complex() and bool(((mask == 0) | (mask == 1)).all())
