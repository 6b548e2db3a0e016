"""``prune_calibrated``: prune with a strategy that looks at the data, block by block, all or nothing.

Sequentially (the default, as the SparseGPT and Wanda papers do), the first
block's inputs are captured once per calibration batch; then for each block
in turn the statistics its strategy needs are collected from those inputs
while the dense block runs (its outputs kept for the report), its layers
are pruned, and the pruned block is run again: its outputs are the next
block's inputs. So block i is calibrated on what the already pruned blocks
before it give, and only one block's statistics exist at a time.

In one pass (``sequential=False``), hooks on every target collect the
statistics while the whole model runs over the calibration, then every
target is pruned -- on its own (``scope="layer"``), or all ranked together
by :func:`pruneplug.prune_global` (``scope="global"``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..api.catalog import StrategyLike, instantiate, resolve_strategy
from ..api.global_prune import prune_global
from ..api.prune import prune
from ..core.fast_path import updating_values
from ..core.state import default_alive, tensor_state
from ..errors import (
    CalibrationBlockError,
    CalibrationError,
    IncompatibleStrategyError,
    InvalidAmountError,
    InvalidParametersError,
    InvalidTargetError,
    PruneplugError,
    close_matches_hint,
    cross_tensor_hint,
)
from ..registry import get_registry
from ..statistics.context import using_statistics
from ..statistics.spec import NeedsStatistics, Statistic
from ..storage.formats import MaskStorage
from .blocks import Block, BlocksLike, find_blocks
from .collect import Collector
from .gradients import Loss, calibration_gradients, reads_gradients
from .memory import release_freed_memory
from .owl import check_owl_options, owl_amounts
from .progress import BlockProgress, block_progress
from .report import BlockResult, CalibrationReport, LayerResult
from .running import (
    BlockInputs,
    Calibration,
    capture_inputs,
    check_calibration,
    reusable,
    run_block,
    run_calibration,
    with_hidden,
)
from .state import Rollback, calibrating
from .targets import Selection, Target, TargetsLike, select_targets

__all__ = ["prune_calibrated", "AmountLike"]

AmountLike = int | float | Mapping[str, int | float] | None
"""An amount for every target, or ``{qualified layer name: amount}`` (what :func:`pruneplug.owl_amounts` gives)."""


@dataclass
class _Run:
    """What every target's prune needs: the strategy and its settings, and what to put back on failure."""

    strategy: StrategyLike
    params: dict[str, Any]
    amounts: dict[str, int | float | None]
    mask_storage: MaskStorage | None
    updates_values: bool
    rollback: Rollback

    def prune(self, target: Target, stats: Mapping[str, Tensor] | None) -> None:
        """Prune ``target``'s weight, its statistics in reach of the strategy."""
        if self.updates_values:
            self.rollback.keep_values(target.module)
        amount = self.amounts[target.name]
        params = self.params if amount is None else {"amount": amount, **self.params}
        context = using_statistics({target.module: stats}) if stats is not None else nullcontext()
        with _naming(target.name), context:
            prune(target.module, "weight", self.strategy, mask_storage=self.mask_storage, **params)


@contextmanager
def _naming(layer: str) -> Iterator[None]:
    """Add the layer's qualified name to a pruneplug error raised inside (its type stays)."""
    try:
        yield
    except PruneplugError as error:
        error.reason = f"{error.reason} (layer {layer!r})"
        error.add_context()
        raise


def _amounts(amount: AmountLike, selection: Selection) -> dict[str, int | float | None]:
    names = [t.name for t in selection.targets]
    if not isinstance(amount, Mapping):
        if isinstance(amount, bool) or not (amount is None or isinstance(amount, (int, float))):
            raise InvalidAmountError(
                "amount must be an int count, a float fraction, a mapping {qualified layer name: amount}, or None "
                f"(the strategy's own, e.g. N:M); got {type(amount).__name__}"
            )
        return dict.fromkeys(names, amount)
    unknown = [key for key in amount if key not in names]
    if unknown:
        first = str(unknown[0])
        raise InvalidTargetError(
            f"amount names {', '.join(map(repr, unknown))}, not among the targets.{close_matches_hint(first, names)}"
        )
    missing = [name for name in names if name not in amount]
    if missing:
        raise InvalidAmountError(f"amount has no entry for the target(s) {', '.join(map(repr, missing))}")
    return {name: amount[name] for name in names}


def _statistics(method: object, strategy: str) -> list[Statistic]:
    """The registered statistics the strategy declares (none unless it implements ``NeedsStatistics``)."""
    if not isinstance(method, NeedsStatistics):
        return []
    registry = get_registry()
    found = []
    for name in method.required_statistics():
        try:
            found.append(registry.get_statistic(name))
        except PruneplugError as error:
            raise error.add_context(strategy=strategy) from error.__cause__
    return found


def _sparsity(module: nn.Module) -> float:
    alive = default_alive(tensor_state(module, "weight"))
    return 1.0 - float(alive.sum()) / alive.numel()


def _replay(block: Block, inputs: BlockInputs, batch: int) -> Tensor:
    try:
        return run_block(block.module, inputs, block.name)
    except CalibrationError:
        raise
    except Exception as error:
        raise CalibrationBlockError(
            f"block {block.name!r} raised {type(error).__name__} on the inputs of calibration batch #{batch}: {error}"
        ) from error


def _collect(
    block: Block, inputs: list[BlockInputs], chosen: Sequence[Target], statistics: Sequence[Statistic], *, share: bool
) -> tuple[Collector, list[Tensor | None]]:
    """Run the dense block on every batch's inputs with hooks on ``chosen``: the collector and the outputs."""
    collector = Collector(chosen, statistics, share=share)
    dense: list[Tensor | None] = []
    with torch.no_grad(), collector.hooked():
        for b, item in enumerate(inputs):
            dense.append(_replay(block, item, b))
    return collector, dense


def _sequential(
    model: nn.Module,
    blocks: list[Block],
    selection: Selection,
    calibration: Calibration,
    statistics: Sequence[Statistic],
    run: _Run,
    bar: BlockProgress,
    rows: dict[str, int],
) -> tuple[list[BlockResult], int]:
    """Calibrate and prune block after block; the blocks' results and the number of batches."""
    by_block: dict[int, list[Target]] = {}
    for target in selection.targets:
        if target.block is not None:
            by_block.setdefault(target.block, []).append(target)
    last = max(by_block)
    with torch.no_grad():
        inputs = capture_inputs(model, blocks[0].module, blocks[0].name, calibration)
    results: list[BlockResult] = []
    for index in range(last + 1):
        block = blocks[index]
        started = time.perf_counter()
        bar.start(f"block {index + 1}/{last + 1}: {block.name}")
        chosen = by_block.get(index, [])
        if not chosen:  # nothing to prune here: its dense outputs feed the next block
            for b, item in enumerate(inputs):
                inputs[b] = with_hidden(item, _replay(block, item, b))
            bar.advance()
            continue
        collector, dense = _collect(block, inputs, chosen, statistics, share=True)
        if collector.sharing_broke:  # layers that shared were not fed the same inputs throughout
            del collector, dense  # (freed before the second collection, not held beside it)
            collector, dense = _collect(block, inputs, chosen, statistics, share=False)
        stats = collector.results()
        rows.update(collector.rows)
        release_freed_memory()  # what the block's forward used, before the pruning needs its own
        for target in chosen:  # each layer's statistics are let go once it is pruned (a Hessian is d_in² floats)
            run.prune(target, stats.pop(target.module) if statistics else None)
            release_freed_memory()
        del stats, collector
        error = torch.zeros((), dtype=torch.float64)
        norm = torch.zeros((), dtype=torch.float64)
        for b, item in enumerate(inputs):
            pruned = _replay(block, item, b)
            reference = dense[b]
            dense[b] = None
            if reference is not None and reference.shape == pruned.shape:
                difference = (reference - pruned).float()
                error += torch.sum(difference * difference, dtype=torch.float64).cpu()
                norm += torch.sum(reference.float() * reference.float(), dtype=torch.float64).cpu()
            inputs[b] = with_hidden(item, pruned)
        relative = math.sqrt(float(error)) / math.sqrt(float(norm)) if float(norm) > 0 else 0.0
        results.append(BlockResult(block.name, relative, time.perf_counter() - started))
        bar.advance()
    return results, len(inputs)


def _one_pass(
    model: nn.Module,
    selection: Selection,
    calibration: Calibration,
    statistics: Sequence[Statistic],
    run: _Run,
    scope: str,
    amount: AmountLike,
    rows: dict[str, int],
) -> int:
    """Collect every target's statistics in one pass, then prune them all; the number of batches."""
    collector = Collector(selection.targets, statistics)
    with torch.no_grad(), collector.hooked():
        batches = run_calibration(model, calibration)
    stats = collector.results()
    rows.update(collector.rows)
    if scope == "global":
        if run.updates_values:
            for target in selection.targets:
                run.rollback.keep_values(target.module)
        params = run.params if amount is None else {"amount": amount, **run.params}
        with using_statistics(stats) if statistics else nullcontext():
            prune_global(
                [(t.module, "weight") for t in selection.targets], run.strategy, mask_storage=run.mask_storage, **params
            )
    else:
        for target in selection.targets:
            run.prune(target, stats.pop(target.module) if statistics else None)
            release_freed_memory()
    return batches


def prune_calibrated(
    model: nn.Module,
    strategy: StrategyLike,
    *,
    amount: AmountLike,
    calibration: Calibration,
    targets: TargetsLike | None = None,
    sequential: bool = True,
    blocks: BlocksLike | None = None,
    scope: Literal["layer", "global"] = "layer",
    loss: Loss | None = None,
    allocation: Literal["uniform", "owl"] = "uniform",
    owl_threshold: float | None = None,
    owl_spread: float | None = None,
    progress: bool | None = None,
    mask_storage: MaskStorage | None = None,
    **params: Any,
) -> CalibrationReport:
    """Prune ``model``'s layers with a strategy that looks at calibration data; all or nothing.

    Args:
        model: the model (already pruned layers are pruned further).
        strategy: any registered strategy (name, spec, class or instance).
            The statistics it declares (``NeedsStatistics``, e.g. ``wanda``,
            ``sparsegpt``) are collected from the calibration; strategies
            needing none (``magnitude``, ``l1_unstructured``) run block by
            block too, as baselines.
        amount: an int count or a float fraction per layer (as for
            :func:`pruneplug.prune`), a mapping ``{qualified layer name:
            amount}`` with an entry for every target (see
            :func:`pruneplug.owl_amounts`), or ``None`` for strategies whose
            own parameters say how much (N:M).
        calibration: an iterable of batches -- a Tensor runs as
            ``model(batch)``, a tuple or list as ``model(*batch)``, a Mapping
            as ``model(**batch)`` -- or a callable ``run(model)``. A one-shot
            iterator is read into a list when it is needed twice (gradients,
            OWL).
        targets: ``None`` (every ``nn.Linear`` and GPT-2 ``Conv1D`` inside the
            blocks when sequential; in the whole model but its output head
            otherwise), or qualified names, modules, or a predicate
            ``(name, module) -> bool``.
        sequential: block by block (each block calibrated on what the pruned
            blocks before it give), or the whole model in one pass.
        blocks: the blocks (default: the longest ``nn.ModuleList`` of modules
            of one class); a ModuleList or its qualified name, or a list of
            modules or names in the order the forward runs them. Each takes the
            hidden state first (or as ``hidden_states=``) and returns the next
            one (alone or first in a tuple); all get the same other arguments.
        scope: ``"layer"`` (each layer on its own) or ``"global"`` (one pass,
            then :func:`pruneplug.prune_global` over all targets: needs
            ``sequential=False``, one amount and an unstructured strategy, e.g.
            ``"wanda"`` with ``compare="tensor"``).
        loss: ``loss(output, batch) -> scalar tensor``, required by strategies
            that read gradients (``scored_*`` with ``score="taylor"``): the
            targets' gradients are summed over the calibration batches on the
            model as given, and the user's ``.grad`` restored afterwards.
        allocation: ``"uniform"``, or ``"owl"``: per-block amounts from
            :func:`pruneplug.owl_amounts` with ``amount`` as their mean.
        owl_threshold: with ``allocation="owl"``, ``owl_amounts``'s
            ``threshold`` (an entry is an outlier above it times its block's
            mean metric; ``None``: its default, 5).
        owl_spread: with ``allocation="owl"``, ``owl_amounts``'s ``spread``
            (half the width of the blocks' range of sparsities; ``None``: its
            default, 0.08).
        progress: a rich progress bar per block on stderr: ``None`` shows it
            when stderr is a terminal (and rich is installed), ``True``
            always, ``False`` never.
        mask_storage: ``"bool"`` or ``"packed"``, as for :func:`pruneplug.prune`.
        **params: the strategy's other parameters (``compare="tensor"``,
            ``keep_n=2, of_m=4``, ``score="taylor"``, ...).

    The model runs in eval mode under ``torch.no_grad`` (the gradient pass
    excepted) with Hugging Face caches off; its training modes, cache setting
    and gradients are the user's again afterwards. Memory, sequentially: the
    current block's inputs once per batch (on the model's device, in its
    dtype), its dense outputs until its pruned ones replace them, and the
    statistics of its layers not pruned yet (each layer's are let go once it
    is pruned, and glibc is asked to give freed memory back to the system
    after the block's forward and after each layer). The old values of weights a strategy updates
    (SparseGPT's), kept to restore them on failure, go to a temporary file
    for a model in CPU memory and to CPU memory for one on an accelerator.

    Returns:
        A :class:`CalibrationReport`: per layer the amount asked, sparsity
        reached and rows seen; per block the relative output error.

    Raises:
        StrategyNotFoundError, InvalidParametersError, InvalidAmountError:
            the strategy, its parameters, or the amount is wrong.
        InvalidTargetError: unknown targets or blocks (close matches named),
            targets outside the blocks when sequential, amount keys that are
            not targets.
        IncompatibleStrategyError: ``scope="global"`` with a strategy that
            is not unstructured.
        CalibrationError: calibration that fails (the batch named, the
            original error chained), gives no batches, never reaches a target
            or block, or a statistic the strategy needs that is not registered.

    Whatever is raised, the model is left exactly as it was: weights,
    masks, hooks, gradients and training modes.

    >>> import torch, pruneplug
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> batches = [torch.randn(4, 8) for _ in range(3)]
    >>> report = pruneplug.prune_calibrated(
    ...     net, "l1_unstructured", amount=0.5, calibration=batches, blocks=list(net), progress=False
    ... )
    >>> {name: layer.sparsity for name, layer in report.layers.items()}
    {'0': 0.5, '2': 0.5}
    """
    started = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise InvalidTargetError(f"expected a torch.nn.Module to prune, got {type(model).__name__}")
    spec = resolve_strategy(strategy)
    try:
        if scope not in ("layer", "global"):
            raise InvalidParametersError(f"scope must be 'layer' or 'global', got {scope!r}")
        if allocation not in ("uniform", "owl"):
            raise InvalidParametersError(f"allocation must be 'uniform' or 'owl', got {allocation!r}")
        if allocation != "owl" and (owl_threshold is not None or owl_spread is not None):
            raise InvalidParametersError("owl_threshold and owl_spread are used only with allocation='owl'")
        check_owl_options(owl_threshold, owl_spread, prefix="owl_")
        if scope == "global":
            if sequential:
                raise InvalidParametersError(
                    "scope='global' ranks all targets together after one pass over the calibration: "
                    "pass sequential=False"
                )
            if spec.kind != "unstructured":
                raise IncompatibleStrategyError(
                    f"scope='global' needs a strategy of kind 'unstructured'; {cross_tensor_hint(spec.name, spec.kind)}"
                )
            if isinstance(amount, Mapping) or allocation == "owl":
                raise InvalidAmountError("scope='global' takes one amount for all targets together, not one per layer")
        if allocation == "owl" and (isinstance(amount, bool) or not isinstance(amount, (int, float))):
            raise InvalidAmountError(f"allocation='owl' needs amount as the mean fraction in [0, 1], got {amount!r}")
        if blocks is not None and not sequential and allocation != "owl":
            raise InvalidParametersError("blocks is used only with sequential=True (or allocation='owl')")
        check_calibration(calibration)
        inside = sequential or allocation == "owl"
        found = find_blocks(model, blocks) if inside else None
        selection = select_targets(model, targets, found, sequential=inside)
        amounts = _amounts(amount, selection)
        # every distinct amount is validated with the parameters before anything runs
        method, *_ = [
            instantiate(strategy, spec, dict(params) if value is None else {"amount": value, **params})
            for value in dict.fromkeys(amounts.values())
        ]
        statistics = _statistics(method, spec.name)
        gradient = reads_gradients(method)
        if gradient and loss is None:
            raise InvalidParametersError(
                f"score={getattr(method, 'score', None)!r} reads gradients: pass loss=... , a callable "
                "loss(output, batch) -> scalar tensor, to compute them from the calibration batches"
            )
        if loss is not None and not gradient:
            raise InvalidParametersError(
                "loss is used only by strategies that read gradients (scored_* with score='taylor'), "
                "and this one does not"
            )
    except PruneplugError as error:
        raise error.add_context(strategy=spec.name) from error.__cause__
    calibration = reusable(calibration, 1 + int(gradient) + int(allocation == "owl"))
    if allocation == "owl" and found is not None and isinstance(amount, (int, float)):
        owl = owl_amounts(
            model,
            calibration,
            amount=float(amount),
            targets=[t.module for t in selection.targets],
            blocks=[b.module for b in found],
            **{k: v for k, v in (("threshold", owl_threshold), ("spread", owl_spread)) if v is not None},
        )
        amounts = {name: owl[name] for name in amounts}
    run = _Run(
        strategy=strategy,
        params=dict(params),
        amounts=amounts,
        mask_storage=mask_storage,
        updates_values=updating_values(method),
        rollback=Rollback(t.module for t in selection.targets),
    )
    rows = {t.name: 0 for t in selection.targets}
    block_results: list[BlockResult] = []
    with run.rollback:  # (leaving it deletes the old values kept on disk: after a restore)
        try:
            with calibrating(model):
                gradients = (
                    calibration_gradients(model, selection.targets, calibration, loss)
                    if gradient and loss is not None
                    else nullcontext()
                )
                with gradients:
                    if sequential and found is not None:
                        total = 1 + max(t.block if t.block is not None else 0 for t in selection.targets)
                        with block_progress(total, progress) as bar:
                            block_results, batches = _sequential(
                                model, found, selection, calibration, statistics, run, bar, rows
                            )
                    else:
                        batches = _one_pass(model, selection, calibration, statistics, run, scope, amount, rows)
        except BaseException:
            run.rollback.restore()
            raise
    layers = {
        t.name: LayerResult(
            amount=amounts[t.name],
            sparsity=_sparsity(t.module),
            entries=tensor_state(t.module, "weight").orig.numel(),
            rows=rows[t.name],
            block=found[t.block].name if found is not None and t.block is not None else None,
        )
        for t in selection.targets
    }
    return CalibrationReport(
        strategy=spec.name,
        layers=layers,
        blocks=tuple(block_results),
        skipped=selection.skipped,
        batches=batches,
        rows=max(rows.values(), default=0),
        seconds=time.perf_counter() - started,
    )
