"""Strategies that prune by any registered importance score (built-in or a plugin's).

``scored_unstructured`` ranks entries and ``scored_structured`` ranks whole
slices by a score named with ``score=``; with :func:`pruneplug.prune_global`,
``scored_unstructured`` ranks the entries of many tensors together. A score
plugin (``pruneplug_add_importance_scores``) thereby works in every picking
mode without writing a strategy for each.

The score is looked up in the registry that hands the strategy out: it passes
its scores to the parameter validation (``StrategySpec.context["scores"]``),
which turns the name into the :class:`~pruneplug.ImportanceScore` the strategy
is built with. Without a registry only the built-in scores are known by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field, PlainSerializer, PlainValidator, StrictBool, ValidationInfo, WithJsonSchema
from pydantic_core import PydanticCustomError
from torch import Tensor

from ..errors import PruneplugError, ScoreNotFoundError
from ..params import DimField, StrategyParams
from ..selection.scores import BUILTIN_SCORES, ImportanceScore, current_target
from ._base import AmountParams, StructuredStrategy, UnstructuredStrategy

__all__ = [
    "ScoredUnstructured",
    "ScoredStructured",
    "ScoredUnstructuredParams",
    "ScoredStructuredParams",
    "ScoreLookup",
    "builtin_score",
]

ScoreLookup = Callable[[str], ImportanceScore]
"""Finds an importance score by name, raising :class:`~pruneplug.ScoreNotFoundError` (a registry's ``get_score``)."""

_BUILTIN = {score.name: score for score in BUILTIN_SCORES}


def builtin_score(name: str) -> ImportanceScore:
    """The built-in importance score ``name``: all a strategy built without a registry can find by name."""
    if name not in _BUILTIN:
        raise ScoreNotFoundError(
            name,
            _BUILTIN,
            where="Built-in",
            extra=" Without a registry only the built-in scores are known by name: pass the score itself"
            " (pruneplug.get_registry().get_score(name)), or prune by the strategy's name"
            " (pruneplug.prune(module, 'weight', 'scored_unstructured', score=...)).",
        )
    return _BUILTIN[name]


def _resolve_score(value: object, info: ValidationInfo) -> ImportanceScore:
    """The score named ``value``, from the validating registry's scores (``info.context["scores"]``)."""
    if not isinstance(value, str):
        raise PydanticCustomError(
            "score_type", "score must be the name of an importance score, got {kind}", {"kind": type(value).__name__}
        )
    lookup: ScoreLookup = (info.context or {}).get("scores", builtin_score)
    try:
        return lookup(value)
    except PruneplugError as error:
        raise PydanticCustomError("score_unknown", "{message}", {"message": error.reason}) from None


def _score_name(score: Any) -> str:
    return score.name if isinstance(score, ImportanceScore) else str(score)


ScoreField = Annotated[
    ImportanceScore,
    PlainValidator(_resolve_score),
    PlainSerializer(_score_name, return_type=str),
    WithJsonSchema(
        {"type": "string", "title": "Score", "description": "a registered importance score (`pruneplug list`)"}
    ),
]
"""A score given by name, validated into the :class:`~pruneplug.ImportanceScore` it names."""


def _importance(score: str | ImportanceScore) -> ImportanceScore:
    return score if isinstance(score, ImportanceScore) else builtin_score(score)


class ScoredUnstructuredParams(AmountParams):
    """Parameters of ``scored_unstructured``."""

    score: ScoreField = Field("magnitude", validate_default=True)


class ScoredStructuredParams(AmountParams):
    """Parameters of ``scored_structured``."""

    score: ScoreField = Field("magnitude", validate_default=True)
    dim: DimField = -1
    reduce: Literal["sum", "mean", "max", "l2"] = "sum"
    prune_bias: StrictBool = False


class ScoredUnstructured(UnstructuredStrategy):
    """Prune the entries with the lowest importance score (any registered score)."""

    name: ClassVar[str | None] = "scored_unstructured"
    Params: ClassVar[type[StrategyParams]] = ScoredUnstructuredParams

    def __init__(self, amount: int | float, score: str | ImportanceScore = "magnitude") -> None:
        super().__init__(amount)
        self._importance = _importance(score)
        self.score = self._importance.name
        self.elementwise_scores = self._importance.elementwise  # type: ignore[misc]

    def scores(self, t: Tensor, alive: Tensor | None) -> Tensor:
        """The score of every entry."""
        return self._importance.compute(t, current_target())


class ScoredStructured(StructuredStrategy):
    """Prune the slices along ``dim`` whose entries' scores add up (``reduce``) to the least."""

    name: ClassVar[str | None] = "scored_structured"
    Params: ClassVar[type[StrategyParams]] = ScoredStructuredParams

    def __init__(
        self,
        amount: int | float,
        score: str | ImportanceScore = "magnitude",
        dim: int = -1,
        reduce: str = "sum",
        *,
        prune_bias: bool = False,
    ) -> None:
        super().__init__(amount, dim, prune_bias=prune_bias)
        self._importance = _importance(score)
        self.score = self._importance.name
        self.reduce = reduce
        self.elementwise_scores = self._importance.elementwise
        """Whether each entry's score depends on that entry alone (a rank can score its shard of a DTensor)."""

    def slice_scores(self, t: Tensor, dim: int, alive: Tensor | None) -> Tensor:
        """Entry scores reduced over every dim but ``dim``."""
        entries = self._importance.compute(t, current_target()).float()
        others = [d for d in range(t.dim()) if d != dim]
        if self.reduce == "sum":
            return entries.sum(dim=others)
        if self.reduce == "mean":
            return entries.mean(dim=others)
        if self.reduce == "max":
            return entries.amax(dim=others)
        norms: Tensor = torch.linalg.vector_norm(entries, 2, dim=others)
        return norms
