"""The sweep: prune copies of the trained network at rising sparsity and score them.

For each :class:`~pruneplug.demo.Variant` and each amount, a deep copy of
the trained network is pruned, scored on the test set, fine-tuned briefly
(masks in place) and scored again. Every run starts from the same RNG state
(seeded with the demo's seed, the global state restored afterwards), so a
run's numbers do not depend on which runs came before it.

What is pruned: the ``weight`` of every convolution and linear layer. A
structured strategy leaves the last layer alone -- its output channels are
the classes, and removing one removes a digit. A layer a strategy cannot
prune (N:M groups that do not divide a 1-channel input, say) stays dense and
the curve records why; a strategy that can prune no layer is skipped.
Sparsity is always measured over all those weights, whatever was pruned.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..api import prune, prune_global
from ..errors import PruneplugError
from ._data import Digits
from ._progress import Phases, silent
from ._training import evaluate, train
from ._variants import Skipped, Variant

__all__ = [
    "Point",
    "Curve",
    "SweepSettings",
    "prunable_layers",
    "weight_sparsity",
    "prune_copy",
    "scored_before_and_after_fine_tuning",
    "sweep",
]


@dataclass(frozen=True)
class Point:
    """One pruned network's test accuracy, before and after fine-tuning (all shares in [0, 1]).

    Attributes:
        amount: the amount asked of the strategy, or ``None`` for one without.
        sparsity: the measured share of zeros over every conv/linear weight.
        accuracy: test accuracy right after pruning.
        accuracy_fine_tuned: test accuracy after the short fine-tune.
    """

    amount: float | None
    sparsity: float
    accuracy: float
    accuracy_fine_tuned: float


@dataclass
class Curve:
    """A variant's results: one :class:`Point` per amount (one in all for strategies without).

    Attributes:
        label: the variant's label (see :class:`~pruneplug.demo.Variant`).
        strategy: the registered strategy name.
        kind: the strategy's kind (``"unstructured"``, ``"structured"``, ``"global"``).
        provider: the distribution (and version) that provides the strategy.
        scope: ``"local"`` or ``"global"``.
        params: the parameters given besides ``amount`` and the generator.
        layers: the layers pruned (qualified names).
        left_dense: layers the strategy could not prune, with the reason.
        points: the measurements, in the order of the amounts swept.
    """

    label: str
    strategy: str
    kind: str
    provider: str
    scope: str
    params: dict[str, Any]
    layers: list[str]
    left_dense: dict[str, str] = field(default_factory=dict)
    points: list[Point] = field(default_factory=list)


@dataclass(frozen=True)
class SweepSettings:
    """The amounts swept and the fine-tune after each prune."""

    amounts: tuple[float, ...]
    seed: int = 0
    fine_tune_epochs: int = 1
    fine_tune_learning_rate: float = 5e-4

    def runs(self, variants: list[Variant]) -> int:
        """How many networks the sweep prunes for ``variants``."""
        return sum(len(self.amounts) if v.takes_amount else 1 for v in variants)


class _NotApplicable(Exception):
    """No layer could be pruned by the variant."""


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The convolutions and linear layers of ``model``, by qualified name, in definition order."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) and name
    ]


def weight_sparsity(model: nn.Module) -> float:
    """The share of zeros over the ``weight`` of every conv and linear layer of ``model``."""
    zeros = total = 0
    for _, module in prunable_layers(model):
        weight = module.weight
        if isinstance(weight, Tensor):
            zeros += int(torch.count_nonzero(weight == 0))
            total += weight.numel()
    return zeros / max(total, 1)


def _targets(model: nn.Module, variant: Variant) -> list[tuple[str, nn.Module]]:
    layers = prunable_layers(model)
    return layers[:-1] if variant.structured else layers


def prune_copy(
    trained: nn.Module, variant: Variant, amount: float | None, seed: int
) -> tuple[nn.Module, dict[str, str]]:
    """A deep copy of ``trained`` pruned by ``variant`` at ``amount``, and the layers left dense (name -> why).

    Raises:
        PruneplugError: the variant could prune no layer (the error of the first).
    """
    model = copy.deepcopy(trained)
    for copied, original in zip(model.parameters(), trained.parameters()):
        if original.grad is not None:  # deepcopy drops Parameter.grad; gradient-based scores (taylor) need it
            copied.grad = original.grad.clone()
    targets = _targets(model, variant)
    arguments = variant.arguments(amount, seed)  # one generator for all layers: each draws its own
    if variant.scope == "global":
        prune_global([(module, "weight") for _, module in targets], variant.spec, **arguments)
        return model, {}
    left_dense: dict[str, str] = {}
    first_error: PruneplugError | None = None
    for name, module in targets:
        try:
            prune(module, "weight", variant.spec, **arguments)
        except PruneplugError as error:
            left_dense[name] = error.reason
            first_error = first_error or error
    if first_error is not None and len(left_dense) == len(targets):
        raise first_error
    return model, left_dense


def sweep(
    trained: nn.Module,
    data: Digits,
    variants: list[Variant],
    settings: SweepSettings,
    *,
    phases: Phases = silent,
) -> tuple[list[Curve], list[Skipped]]:
    """Run every variant at every amount; return the curves and the variants that could not run.

    ``trained`` is never modified. A variant is skipped (with the reason)
    when it can prune no layer, or when, having no ``amount``, it prunes
    nothing at all.
    """
    curves: list[Curve] = []
    skipped: list[Skipped] = []
    with phases(settings.runs(variants)) as step:
        for variant in variants:
            amounts: tuple[float | None, ...] = settings.amounts if variant.takes_amount else (None,)
            curve = Curve(
                label=variant.label,
                strategy=variant.spec.name,
                kind=variant.spec.kind,
                provider=variant.spec.provider_label,
                scope=variant.scope,
                params=dict(variant.params),
                layers=[name for name, _ in _targets(trained, variant)],
            )
            for index, amount in enumerate(amounts):
                step.start(f"{variant.label} at {amount:.0%}" if amount is not None else variant.label)
                try:
                    point, left_dense = _run(trained, data, variant, amount, settings)
                except _NotApplicable as why:
                    skipped.append(Skipped(variant.label, str(why)))
                    step.advance(len(amounts) - index)
                    break
                curve.left_dense.update(left_dense)
                curve.points.append(point)
                step.advance()
            else:
                curves.append(curve)
    return curves, skipped


def scored_before_and_after_fine_tuning(model: nn.Module, data: Digits, settings: SweepSettings) -> tuple[float, float]:
    """Test accuracy of a pruned ``model``, then again after the sweep's fine-tune (``model`` is trained in place)."""
    accuracy = evaluate(model, data.test_images, data.test_labels)
    train(
        model,
        data.train_images,
        data.train_labels,
        epochs=settings.fine_tune_epochs,
        seed=settings.seed,
        learning_rate=settings.fine_tune_learning_rate,
    )
    return accuracy, evaluate(model, data.test_images, data.test_labels)


def _run(
    trained: nn.Module, data: Digits, variant: Variant, amount: float | None, settings: SweepSettings
) -> tuple[Point, dict[str, str]]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        try:
            model, left_dense = prune_copy(trained, variant, amount, settings.seed)
        except PruneplugError as error:
            raise _NotApplicable(f"cannot prune any layer of LeNet: {error}") from error
        sparsity = weight_sparsity(model)
        if amount is None and sparsity == 0.0:
            raise _NotApplicable("prunes nothing")
        accuracy, fine_tuned = scored_before_and_after_fine_tuning(model, data, settings)
    return Point(amount, sparsity, accuracy, fine_tuned), left_dense
