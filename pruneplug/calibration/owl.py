"""OWL: per-block amounts from the outliers of the dense model's Wanda metric (Yin et al. 2023).

For each block, the Wanda metric ``|W_ij| · ‖X_j‖₂`` of all its layers,
taken together, has an outlier ratio ``D``: the fraction of entries above
``threshold`` times their mean. Blocks with more outliers are pruned less:
as in the paper's code (luuyin/OWL, ``prune_wanda_outlier``), the ratios are
scaled linearly onto a range of width ``2 · spread``, then shifted so that
their mean is ``amount``: ``sparsity_i = amount - (s_i - mean(s))`` with
``s_i = 2 · spread · (D_i - min D) / (max D - min D)``. Every layer of a
block gets its block's amount.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..core.state import current_values, tensor_state
from ..errors import InvalidAmountError, InvalidParametersError
from ..registry import get_registry
from ..statistics.spec import input_dim
from .blocks import BlocksLike, find_blocks
from .collect import Collector
from .running import Calibration, check_calibration, run_calibration
from .state import calibrating
from .targets import Target, TargetsLike, select_targets

__all__ = ["owl_amounts", "outlier_ratio", "owl_sparsities", "check_owl_options"]


def _check_fraction(value: object, what: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 <= value <= 1
    ):
        raise InvalidAmountError(f"{what} must be a fraction in [0, 1], got {value!r}")
    return float(value)


def check_owl_options(threshold: object, spread: object, *, prefix: str = "") -> None:
    """Refuse a ``threshold`` that is not a positive number or a ``spread`` outside [0, 1]; ``None`` passes.

    ``prefix`` is how the caller names them (``"owl_"``: ``owl_threshold``).

    Raises:
        InvalidParametersError: naming the value that is wrong.
    """
    if threshold is not None and (
        isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold > 0
    ):
        raise InvalidParametersError(f"{prefix}threshold must be a positive number, got {threshold!r}")
    if spread is not None and (
        isinstance(spread, bool) or not isinstance(spread, (int, float)) or not 0 <= spread <= 1
    ):
        raise InvalidParametersError(f"{prefix}spread must be a number in [0, 1], got {spread!r}")


def _metric(target: Target, sq_norms: Tensor, rows: int) -> Tensor:
    """Wanda's metric of one layer, ``|W_ij| · sqrt(rows · mean_j(x²))``, in float32."""
    state = tensor_state(target.module, "weight")
    with torch.no_grad():
        weight = current_values(state).detach().float()
        norms = torch.sqrt(sq_norms.to(device=weight.device, dtype=torch.float32) * rows)
        shape = [1] * weight.dim()
        shape[input_dim(target.module)] = -1
        return weight.abs() * norms.reshape(shape)


def outlier_ratio(metrics: Sequence[Tensor], threshold: float) -> float:
    """The fraction of all entries of ``metrics`` (taken together) above ``threshold`` times their mean."""
    total = sum(m.numel() for m in metrics)
    mean = sum(float(m.sum(dtype=torch.float64)) for m in metrics) / total
    above = sum(int((m > mean * threshold).sum()) for m in metrics)
    return above / total


def owl_sparsities(ratios: Sequence[float], amount: float, spread: float) -> list[float]:
    """Per-block sparsities from outlier ratios, OWL's normalisation; mean ``amount``.

    All ratios equal (or one block): every block gets ``amount``. A sparsity
    at or below 0 becomes 0.01, as in OWL's pruning loop, and one above 1
    becomes 1, so the mean is ``amount`` unless one was clamped.
    """
    low, high = min(ratios), max(ratios)
    if high == low:
        return [amount] * len(ratios)
    scaled = [(r - low) / (high - low) * 2 * spread for r in ratios]
    mean = sum(scaled) / len(scaled)
    out = []
    for value in scaled:
        sparsity = amount - (value - mean)
        out.append(0.01 if sparsity <= 0 else min(sparsity, 1.0))
    return out


def owl_amounts(
    model: nn.Module,
    calibration: Calibration,
    *,
    amount: float,
    targets: TargetsLike | None = None,
    blocks: BlocksLike | None = None,
    threshold: float = 5.0,
    spread: float = 0.08,
) -> dict[str, float]:
    """OWL's per-layer amounts: each layer gets its block's sparsity; the blocks' mean is ``amount``.

    The calibration runs once through the dense model (eval mode, no
    gradients; nothing is changed); the result is meant for
    ``prune_calibrated(..., amount=owl_amounts(...))``.

    Args:
        model: the model, not yet pruned by this run.
        calibration: an iterable of batches, or a callable ``run(model)``
            (see :func:`pruneplug.prune_calibrated`).
        amount: the mean sparsity of the blocks, a fraction in [0, 1].
        targets: the layers (as for :func:`pruneplug.prune_calibrated`;
            default: every linear layer inside the blocks). All must lie in a block.
        blocks: the blocks (default: the longest ModuleList of one class).
        threshold: an entry is an outlier above ``threshold`` times the
            block's mean metric (the paper's M, 5 by default).
        spread: half the width of the range of sparsities (the paper's λ, 0.08).

    Returns:
        ``{qualified layer name: amount}`` for every target.

    Raises:
        InvalidAmountError: ``amount`` is not a fraction.
        InvalidParametersError: ``threshold`` or ``spread`` out of range, or
            calibration that is neither iterable nor callable.
        InvalidTargetError: as for :func:`pruneplug.prune_calibrated`.
        CalibrationError: a batch failed, no batches, or a layer never called.
    """
    fraction = _check_fraction(amount, "amount")
    check_owl_options(threshold, spread)
    check_calibration(calibration)
    found = find_blocks(model, blocks)
    selection = select_targets(model, targets, found, sequential=True)
    statistic = get_registry().get_statistic("input_sq_norms")
    collector = Collector(selection.targets, [statistic])
    with calibrating(model), torch.no_grad(), collector.hooked():
        run_calibration(model, calibration)
    stats = collector.results()
    by_block: dict[int, list[Target]] = {}
    for target in selection.targets:
        by_block.setdefault(-1 if target.block is None else target.block, []).append(target)
    order = sorted(by_block)
    # One block's metrics at a time: together they would be a float32 copy of every weight.
    ratios = [
        outlier_ratio(
            [_metric(t, stats[t.module]["input_sq_norms"], collector.rows[t.name]) for t in by_block[index]], threshold
        )
        for index in order
    ]
    amounts = dict(zip(order, owl_sparsities(ratios, fraction, spread)))
    return {target.name: amounts[-1 if target.block is None else target.block] for target in selection.targets}
