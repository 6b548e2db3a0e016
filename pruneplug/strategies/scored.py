"""Strategies that prune by any registered importance score (built-in or a plugin's).

``scored_unstructured`` ranks entries and ``scored_structured`` ranks whole
slices by a score named with ``score=``; with :func:`pruneplug.prune_global`,
``scored_unstructured`` ranks the entries of many tensors together. A score
plugin (``pruneplug_add_importance_scores``) thereby works in every picking
mode without writing a strategy for each.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import torch
from pydantic import PlainValidator, StrictBool, WithJsonSchema
from pydantic_core import PydanticCustomError
from torch import Tensor

from ..errors import ScoreNotFoundError
from ..params import DimField, StrategyParams
from ..selection.scores import ImportanceScore, current_target
from ._base import AmountParams, StructuredStrategy, UnstructuredStrategy

__all__ = ["ScoredUnstructured", "ScoredStructured", "ScoredUnstructuredParams", "ScoredStructuredParams"]


def _lookup(name: str) -> ImportanceScore:
    from ..registry.default import get_registry

    return get_registry().get_score(name)


def _score_name(value: object) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError(
            "score_type", "score must be the name of an importance score, got {kind}", {"kind": type(value).__name__}
        )
    try:
        _lookup(value)
    except ScoreNotFoundError as error:
        raise PydanticCustomError("score_unknown", "{message}", {"message": error.reason}) from None
    return value


ScoreField = Annotated[
    str,
    PlainValidator(_score_name),
    WithJsonSchema(
        {"type": "string", "title": "Score", "description": "a registered importance score (`pruneplug list`)"}
    ),
]


class ScoredUnstructuredParams(AmountParams):
    """Parameters of ``scored_unstructured``."""

    score: ScoreField = "magnitude"


class ScoredStructuredParams(AmountParams):
    """Parameters of ``scored_structured``."""

    score: ScoreField = "magnitude"
    dim: DimField = -1
    reduce: Literal["sum", "mean", "max", "l2"] = "sum"
    prune_bias: StrictBool = False


class ScoredUnstructured(UnstructuredStrategy):
    """Prune the entries with the lowest importance score (any registered score)."""

    name: ClassVar[str | None] = "scored_unstructured"
    Params: ClassVar[type[StrategyParams]] = ScoredUnstructuredParams

    def __init__(self, amount: int | float, score: str = "magnitude") -> None:
        super().__init__(amount)
        self.score = score
        self.elementwise_scores = _lookup(score).elementwise  # type: ignore[misc]

    def scores(self, t: Tensor, alive: Tensor | None) -> Tensor:
        """The registered score of every entry."""
        return _lookup(self.score).compute(t, current_target())


class ScoredStructured(StructuredStrategy):
    """Prune the slices along ``dim`` whose entries' scores add up (``reduce``) to the least."""

    name: ClassVar[str | None] = "scored_structured"
    Params: ClassVar[type[StrategyParams]] = ScoredStructuredParams

    def __init__(
        self,
        amount: int | float,
        score: str = "magnitude",
        dim: int = -1,
        reduce: str = "sum",
        *,
        prune_bias: bool = False,
    ) -> None:
        super().__init__(amount, dim, prune_bias=prune_bias)
        self.score = score
        self.reduce = reduce

    def slice_scores(self, t: Tensor, dim: int, alive: Tensor | None) -> Tensor:
        """Entry scores reduced over every dim but ``dim``."""
        entries = _lookup(self.score).compute(t, current_target()).float()
        others = [d for d in range(t.dim()) if d != dim]
        if self.reduce == "sum":
            return entries.sum(dim=others)
        if self.reduce == "mean":
            return entries.mean(dim=others)
        if self.reduce == "max":
            return entries.amax(dim=others)
        norms: Tensor = torch.linalg.vector_norm(entries, 2, dim=others)
        return norms
