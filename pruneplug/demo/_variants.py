"""Which pruning runs the demo makes: one per registered strategy that applies, plus global L1.

The list comes from the registry, never from a list of names, so installed
plugins take part like the built-ins. Each strategy's parameters are
derived from its pydantic model and kind:

* ``amount`` is the sparsity being swept; a strategy without one is run once.
* ``dim`` of a structured strategy is ``0``: whole output channels (filters
  of a convolution, neurons of a linear layer).
* a parameter naming an importance score (``score``) gives one run per
  registered score (``magnitude``, ``taylor``, plugins' scores).
* a :class:`torch.Generator` parameter gets a generator seeded with the
  demo's seed.
* other required parameters take a conventional value where the name has
  one (``n=2``: the L2 norm); a strategy with a required parameter the demo
  cannot choose (``custom_from_mask`` needs a ``mask`` tensor) is skipped,
  and so is one its own model rejects with those values.

Whether a strategy without ``amount`` prunes anything (``identity`` does not)
is only known once it has run: the sweep skips those.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from ..errors import InvalidParametersError
from ..registry import Registry, StrategySpec
from ..selection.scores import ImportanceScore

__all__ = ["Variant", "Skipped", "plan_variants", "GLOBAL_STRATEGY", "CONVENTIONAL_VALUES"]

GLOBAL_STRATEGY = "l1_unstructured"
"""The strategy pooled across every layer by ``prune_global`` in the global run."""

CONVENTIONAL_VALUES: dict[str, Any] = {"n": 2}
"""Values for required parameters that have a usual choice (``n``: the norm order of ``ln_structured``)."""

_SCORE_PARAMETER = "score"
_SAMPLE_AMOUNT = 0.5  # validates the derived parameters before the sweep


@dataclass(frozen=True)
class Variant:
    """One curve of the sweep: a strategy with fixed parameters, pruned locally or globally.

    Attributes:
        label: what tables and the plot call it (``"ln_structured"``,
            ``"scored_unstructured (taylor)"``, ``"global l1_unstructured"``).
        spec: the registered strategy.
        params: its parameters besides ``amount`` and the generator (JSON-able).
        scope: ``"local"`` (each layer pruned on its own, by the same amount)
            or ``"global"`` (all layers pooled by :func:`pruneplug.prune_global`).
        takes_amount: whether the strategy has an ``amount`` to sweep.
        generator_parameter: the name of its :class:`torch.Generator`
            parameter, seeded by the demo, if it has one.
    """

    label: str
    spec: StrategySpec
    params: dict[str, Any] = field(default_factory=dict)
    scope: Literal["local", "global"] = "local"
    takes_amount: bool = True
    generator_parameter: str | None = None

    @property
    def structured(self) -> bool:
        """Whether it prunes whole slices (so the classifier's outputs must be left alone)."""
        return self.spec.kind == "structured"

    def arguments(self, amount: float | None, seed: int) -> dict[str, Any]:
        """The keyword arguments for one prune: ``params``, ``amount`` and a fresh seeded generator."""
        arguments = dict(self.params)
        if self.takes_amount and amount is not None:
            arguments["amount"] = amount
        if self.generator_parameter is not None:
            arguments[self.generator_parameter] = torch.Generator().manual_seed(seed)
        return arguments


@dataclass(frozen=True)
class Skipped:
    """A registered strategy the demo does not run, and why."""

    strategy: str
    reason: str


def _accepts(annotation: Any, kind: type | tuple[type, ...]) -> bool:
    """Whether a (possibly ``Annotated`` / union) annotation admits instances of ``kind`` (one of ``kind``)."""
    if annotation in (kind if isinstance(kind, tuple) else (kind,)):
        return True
    return any(_accepts(arg, kind) for arg in typing.get_args(annotation) if not isinstance(arg, (str, bytes)))


def _derive(spec: StrategySpec, scores: list[str]) -> list[Variant] | Skipped:
    fields = spec.params_model.model_fields
    params: dict[str, Any] = {}
    generator_parameter = None
    score_values: list[str | None] = [None]
    for name, info in fields.items():
        if name == "amount":
            continue
        if _accepts(info.annotation, torch.Generator):
            generator_parameter = name
        elif name == "dim" and spec.kind == "structured":
            params[name] = 0
        elif name == _SCORE_PARAMETER and _accepts(info.annotation, (str, ImportanceScore)) and scores:
            score_values = list(scores)
        elif info.is_required():
            if name not in CONVENTIONAL_VALUES:
                annotation = getattr(info.annotation, "__name__", None) or str(info.annotation)
                return Skipped(spec.name, f"needs a {name!r} ({annotation}) the demo cannot choose")
            params[name] = CONVENTIONAL_VALUES[name]
    takes_amount = "amount" in fields
    variants = []
    for score in score_values:
        variant_params = dict(params) if score is None else {**params, _SCORE_PARAMETER: score}
        label = spec.name if score is None else f"{spec.name} ({score})"
        variant = Variant(label, spec, variant_params, "local", takes_amount, generator_parameter)
        try:
            spec.validate(variant.arguments(_SAMPLE_AMOUNT, seed=0))
        except InvalidParametersError as error:
            return Skipped(spec.name, f"rejects the parameters the demo derived: {error.reason}")
        variants.append(variant)
    return variants


def plan_variants(registry: Registry) -> tuple[list[Variant], list[Skipped]]:
    """Every run the demo makes with ``registry``'s strategies, and the strategies it skips.

    Local runs come first, in the registry's (alphabetical) order, then the
    global L1 run.

    >>> from pruneplug import Registry
    >>> variants, skipped = plan_variants(Registry(load_entry_points=False))
    >>> [v.label for v in variants if v.spec.name == "ln_structured"], variants[-1].label
    (['ln_structured'], 'global l1_unstructured')
    >>> [s.strategy for s in skipped]
    ['custom_from_mask']
    """
    scores = registry.score_names()
    variants: list[Variant] = []
    skipped: list[Skipped] = []
    for spec in registry.specs():
        derived = _derive(spec, scores)
        if isinstance(derived, Skipped):
            skipped.append(derived)
        else:
            variants.extend(derived)
    variants.append(Variant(f"global {GLOBAL_STRATEGY}", registry.get(GLOBAL_STRATEGY), scope="global"))
    return variants, skipped
