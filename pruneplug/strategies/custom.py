"""Masks given whole: a user's own mask, or one pruneplug computed elsewhere."""

from __future__ import annotations

from typing import Annotated, ClassVar

import torch
from pydantic import PlainValidator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError
from torch import Tensor
from torch.nn.utils import prune as torch_prune

from ..core.method import BasePruningMethod, with_history
from ..core.plan import PendingPrune, plan_prune
from ..errors import InvalidMaskError
from ..params import StrategyParams
from ..storage.formats import NATIVE_POLICY, MaskStorage, is_binary

__all__ = ["CustomFromMask", "CustomFromMaskParams", "PrecomputedMask", "plan_precomputed"]


def _mask_tensor(value: object) -> Tensor:
    if isinstance(value, Tensor):
        return value
    raise PydanticCustomError(
        "mask_type", "mask must be a tensor of 0s and 1s, got {kind}", {"kind": type(value).__name__}
    )


class CustomFromMaskParams(StrategyParams):
    """Parameters of ``custom_from_mask``."""

    mask: SkipJsonSchema[Annotated[Tensor, PlainValidator(_mask_tensor)]]


class CustomFromMask(BasePruningMethod):
    """Prune with a mask you give (0 = prune), on top of any earlier pruning.

    The mask must have the tensor's shape and hold only 0s and 1s; entries
    already pruned stay pruned whatever the mask says.
    """

    PRUNING_TYPE: ClassVar[str] = "global"
    name: ClassVar[str | None] = "custom_from_mask"
    Params: ClassVar[type[StrategyParams]] = CustomFromMaskParams
    uses_importance_scores: ClassVar[bool] = False

    def __init__(self, mask: Tensor) -> None:
        self.mask = mask

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        """``default_mask`` times the given mask."""
        if not isinstance(self.mask, Tensor):
            raise InvalidMaskError(f"mask must be a tensor, got {type(self.mask).__name__}", strategy=self.name)
        if default_mask.shape != self.mask.shape:
            raise InvalidMaskError(
                f"the mask has shape {tuple(self.mask.shape)} but the tensor has shape {tuple(default_mask.shape)}",
                strategy=self.name,
            )
        given = self.mask
        if not is_binary(given):
            raise InvalidMaskError("the given mask holds values other than 0 and 1", strategy=self.name)
        return default_mask * given.to(device=default_mask.device, dtype=default_mask.dtype)

    @classmethod
    def apply(cls, module: torch.nn.Module, name: str, mask: Tensor) -> torch_prune.BasePruningMethod:  # type: ignore[override]
        """Prune ``module.<name>`` with ``mask``."""
        return super().apply(module, name, mask=mask)


class PrecomputedMask(CustomFromMask):
    """A history entry for a mask pruneplug computed for several tensors at once.

    Global pruning and bias pruning record one of these per tensor. It
    describes where the mask came from and lets go of the mask once
    installed (the ``_mask`` buffer holds it), so the history costs no memory.
    """

    name: ClassVar[str | None] = None

    def __init__(self, mask: Tensor | None, description: str) -> None:
        self.mask = mask  # type: ignore[assignment]
        self.description = description


def plan_precomputed(
    module: torch.nn.Module, name: str, mask: Tensor, description: str, *, label: str, storage: MaskStorage | None
) -> PendingPrune:
    """Plan pruning ``module.<name>`` with a ``mask`` computed beforehand, recorded in its history as ``description``.

    ``label`` names the strategy in errors; ``storage`` as in :func:`pruneplug.prune`.
    """
    return plan_prune(
        module,
        name,
        PrecomputedMask(mask, description),
        stack=with_history,
        mask=mask,
        policy=NATIVE_POLICY,
        label=label,
        storage=storage,
    )
