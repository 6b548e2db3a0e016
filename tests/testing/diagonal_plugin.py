"""A plugin strategy that never prunes the diagonal, written from docs/plugins.md (a test fixture).

``KeepDiagonal`` is the conforming one; ``ClaimsDiagonal`` declares the same
protection but selects entries itself, ignoring it (what the conformance kit
must catch).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

import pruneplug
from pruneplug.hookspecs import StrategyItem


class KeepDiagonal(pruneplug.UnstructuredStrategy):
    """Prune the smallest magnitudes, never an entry on the diagonal of the last two dims."""

    name: ClassVar[str | None] = "keep_diagonal"
    elementwise_scores: ClassVar[bool] = True

    def scores(self, t: Tensor, alive: Tensor | None) -> Tensor:
        return t.abs()

    def protected(self, t: Tensor) -> Tensor | None:
        if t.dim() < 2:
            return None  # a vector has no diagonal
        rows = torch.arange(t.shape[-2], device=t.device).unsqueeze(-1)
        cols = torch.arange(t.shape[-1], device=t.device)
        return (rows == cols).expand(t.shape)


class ClaimsDiagonal(KeepDiagonal):
    """Declares the diagonal protected, but its own compute_mask prunes the smallest magnitudes, diagonal or not."""

    name: ClassVar[str | None] = "claims_diagonal"

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        return pruneplug.compute_mask("l1_unstructured", t, default_mask != 0, amount=self.amount).to(
            default_mask.dtype
        )


@pruneplug.hookimpl
def pruneplug_add_strategies() -> list[StrategyItem]:
    """The fixture's strategies, handed over as an installed plugin would."""
    return [KeepDiagonal, ClaimsDiagonal]
