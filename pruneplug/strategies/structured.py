"""Built-in structured strategies: prune whole slices (channels, rows) along ``dim``."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import StrictBool
from torch import Tensor
from torch.nn.utils import prune as torch_prune

from ..errors import UnsupportedNormError
from ..params import DimField, GeneratorField, NormOrderField, StrategyParams
from ._base import AmountParams, StructuredParams, StructuredStrategy

__all__ = ["LnStructured", "LnStructuredParams", "RandomStructured", "RandomStructuredParams"]


class RandomStructuredParams(StructuredParams):
    """Parameters of ``random_structured``."""

    generator: GeneratorField = None


class RandomStructured(StructuredStrategy):
    """Prune still-alive slices along ``dim`` chosen uniformly at random.

    Draws one ``torch.rand`` value per alive slice from torch's global CPU
    stream, as torch.nn.utils.prune does, so the same seed prunes the same
    slices; or from ``generator`` if one is given.
    """

    name: ClassVar[str | None] = "random_structured"
    Params: ClassVar[type[StrategyParams]] = RandomStructuredParams
    uses_importance_scores: ClassVar[bool] = False

    def __init__(
        self, amount: int | float, dim: int = -1, *, generator: torch.Generator | None = None, prune_bias: bool = False
    ) -> None:
        super().__init__(amount, dim, prune_bias=prune_bias)
        self.generator = generator

    def slice_scores(self, t: Tensor, dim: int, alive: Tensor | None) -> Tensor:
        """A uniform random number per alive slice (the smallest are pruned, as in torch)."""
        count = t.shape[dim] if alive is None else int(alive.count_nonzero())
        if self.generator is None:
            draws = torch.rand(count)
        else:
            draws = torch.rand(count, generator=self.generator, device=self.generator.device)
        if alive is None:
            return draws
        scores = torch.zeros(t.shape[dim], dtype=draws.dtype, device=draws.device)
        scores[alive.to(draws.device)] = draws
        return scores

    @classmethod
    def apply(  # type: ignore[override]
        cls, module: torch.nn.Module, name: str, amount: int | float, dim: int = -1
    ) -> torch_prune.BasePruningMethod:
        """Prune ``amount`` random slices of ``module.<name>`` along ``dim``."""
        return super().apply(module, name, amount=amount, dim=dim)


class LnStructuredParams(AmountParams):
    """Parameters of ``ln_structured``."""

    n: NormOrderField
    dim: DimField = -1
    prune_bias: StrictBool = False


class LnStructured(StructuredStrategy):
    """Prune the slices along ``dim`` with the smallest L``n`` norm.

    ``n`` is any order :func:`torch.norm` takes: a number (``1``, ``2``,
    ``0``, negative ones), ``inf``, ``-inf``, ``"fro"`` or ``"nuc"`` (the
    latter needs exactly two dims besides ``dim``).
    """

    name: ClassVar[str | None] = "ln_structured"
    Params: ClassVar[type[StrategyParams]] = LnStructuredParams

    def __init__(self, amount: int | float, n: int | float | str, dim: int = -1, *, prune_bias: bool = False) -> None:
        super().__init__(amount, dim, prune_bias=prune_bias)
        self.n = n

    def slice_scores(self, t: Tensor, dim: int, alive: Tensor | None) -> Tensor:
        """The L``n`` norm of each slice (computed exactly as torch.nn.utils.prune does)."""
        others = [d for d in range(t.dim()) if d != dim]
        if self.n == "nuc" and len(others) != 2:
            raise UnsupportedNormError(
                f"n='nuc' (nuclear norm) needs a tensor with exactly 2 dims besides dim={self.dim}; "
                f"this one has {len(others)} (shape {tuple(t.shape)})",
                strategy=self.name,
            )
        if self.n == "fro" and len(others) != 2:
            # torch.norm only takes 'fro' over two dims; over any other number it is the 2-norm of the entries.
            norms: Tensor = torch.linalg.vector_norm(t, 2, dim=others)
        else:
            norms = torch.norm(t, p=self.n, dim=others)  # type: ignore[arg-type]
        return norms

    @classmethod
    def apply(  # type: ignore[override]
        cls,
        module: torch.nn.Module,
        name: str,
        amount: int | float,
        n: int | float | str,
        dim: int,
        importance_scores: Tensor | None = None,
    ) -> torch_prune.BasePruningMethod:
        """Prune the ``amount`` lowest-norm slices of ``module.<name>`` along ``dim``."""
        return super().apply(module, name, amount=amount, n=n, dim=dim, importance_scores=importance_scores)
