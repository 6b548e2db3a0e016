"""The built-in strategies, registered through the same pluggy hook as plugins.

========================  ============  ============================================
name                      kind          prunes
========================  ============  ============================================
``identity``              unstructured  nothing (sets up the reparametrization)
``random_unstructured``   unstructured  random entries
``l1_unstructured``       unstructured  the smallest-magnitude entries
``random_structured``     structured    random slices along ``dim``
``ln_structured``         structured    the lowest-L``n``-norm slices along ``dim``
``custom_from_mask``      global        what a given mask says
``scored_unstructured``   unstructured  the entries lowest by any registered score
``scored_structured``     structured    the slices lowest by any registered score
``magnitude``             unstructured  the smallest-magnitude entries per tensor, per row or N:M
``wanda``                 unstructured  the lowest ``|W| * ||X||`` (calibration data) per row, tensor or N:M
``sparsegpt``             global        by OBS with the calibration Hessian, updating the weights kept
========================  ============  ============================================

Global pruning across tensors is :func:`pruneplug.prune_global` with any
unstructured strategy (``wanda`` and ``magnitude`` with ``compare="tensor"``).
``wanda`` and ``sparsegpt`` read statistics of calibration data
(:func:`pruneplug.prune_calibrated`); N:M means ``keep_n`` kept of every ``of_m``.
"""

from __future__ import annotations

from ..hookspecs import StrategyItem, hookimpl
from ..selection.scores import BUILTIN_SCORES, ImportanceScore
from ..statistics.spec import BUILTIN_STATISTICS, Statistic
from ._base import AmountParams, CountsPerRow, StructuredParams, StructuredStrategy, UnstructuredStrategy
from ._obs import obs_prune
from .calibrated import (
    Magnitude,
    MagnitudeParams,
    SparseGPT,
    SparseGPTParams,
    SparsityParams,
    Wanda,
    WandaParams,
)
from .custom import CustomFromMask, CustomFromMaskParams, PrecomputedMask
from .scored import ScoredStructured, ScoredStructuredParams, ScoredUnstructured, ScoredUnstructuredParams
from .structured import LnStructured, LnStructuredParams, RandomStructured, RandomStructuredParams
from .unstructured import Identity, L1Unstructured, RandomUnstructured, RandomUnstructuredParams

__all__ = [
    "BUILTIN_STRATEGIES",
    "AmountParams",
    "StructuredParams",
    "UnstructuredStrategy",
    "StructuredStrategy",
    "CountsPerRow",
    "Identity",
    "RandomUnstructured",
    "RandomUnstructuredParams",
    "L1Unstructured",
    "RandomStructured",
    "RandomStructuredParams",
    "LnStructured",
    "LnStructuredParams",
    "CustomFromMask",
    "CustomFromMaskParams",
    "PrecomputedMask",
    "ScoredUnstructured",
    "ScoredUnstructuredParams",
    "ScoredStructured",
    "ScoredStructuredParams",
    "SparsityParams",
    "Magnitude",
    "MagnitudeParams",
    "Wanda",
    "WandaParams",
    "SparseGPT",
    "SparseGPTParams",
    "obs_prune",
    "pruneplug_add_strategies",
    "pruneplug_add_importance_scores",
    "pruneplug_add_statistics",
]

BUILTIN_STRATEGIES = (
    Identity,
    RandomUnstructured,
    L1Unstructured,
    RandomStructured,
    LnStructured,
    CustomFromMask,
    ScoredUnstructured,
    ScoredStructured,
    Magnitude,
    Wanda,
    SparseGPT,
)


@hookimpl
def pruneplug_add_strategies() -> list[StrategyItem]:
    """Hand the built-in strategies to the registry, as any plugin would."""
    return list(BUILTIN_STRATEGIES)


@hookimpl
def pruneplug_add_importance_scores() -> list[ImportanceScore]:
    """Hand the built-in importance scores (magnitude, taylor) to the registry."""
    return list(BUILTIN_SCORES)


@hookimpl
def pruneplug_add_statistics() -> list[Statistic]:
    """Hand the built-in calibration statistics (input_sq_norms, input_hessian) to the registry."""
    return list(BUILTIN_STATISTICS)
