"""What the checks draw: tensors (shape, dtype, values), earlier pruning, and the strategy's parameters.

Values come in three styles -- normal, many ties, many zeros -- because ties
and zeros are where counting and ranking bugs hide. ``amount`` (and a
structured strategy's ``dim``) is drawn by the kit unless given, within what
is still unpruned and not protected at each step, so every drawn prune is a
valid one -- within every row, for a strategy that counts ``amount`` per row
(:class:`pruneplug.CountsPerRow`). A strategy that reads calibration statistics is given
``nn.Linear`` layers with calibration inputs of their own
(:mod:`._calibration`), and prunes with the statistics it requires in use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from hypothesis import assume, strategies as st
from hypothesis.strategies import DataObject, SearchStrategy
from torch import Tensor, nn

from ..api import prune
from ..core.fast_path import UpdatesValues
from ..registry import StrategySpec, get_registry
from ..selection.scores import scoring
from ..statistics.spec import NeedsStatistics
from ..storage.formats import MaskStorage
from ..strategies import CountsPerRow, CustomFromMask, StructuredStrategy, UnstructuredStrategy
from ..strategies._base import checked_protected, checked_protected_slices
from ._assertions import Failure, Holder, LinearHolder, alive_slices, expected_count, rows_of, show
from ._calibration import Calibration
from ._types import ParamsLike, Shape, StrategyLike

__all__ = ["SEEDS", "Examples", "amounts", "resolve", "row_amounts"]

SEEDS = st.integers(0, 2**32 - 1)
_FRACTIONS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)


def amounts(available: int, prunable: int | None = None) -> SearchStrategy[int | float]:
    """Every kind of valid ``amount`` for ``available`` units: counts ``0..available`` and fractions.

    Use it when your parameters are drawn per shape and include ``amount``.
    ``prunable``: how many of the ``available`` units may be pruned, when the
    strategy protects some; amounts are then drawn within it: counts up to
    ``prunable``, fractions up to ``prunable / available`` (a fraction still
    counts over all ``available``).

    >>> from hypothesis import find
    >>> find(amounts(5), lambda a: isinstance(a, int) and a > 3)
    4
    >>> find(amounts(10, prunable=4), lambda a: isinstance(a, int) and a > 3)
    4
    """
    if prunable is None or prunable >= available:
        return st.one_of(st.integers(0, available), st.sampled_from(_FRACTIONS), st.floats(0.0, 1.0))
    share = prunable / available

    def fits(fraction: float) -> bool:
        return round(fraction * available) <= prunable

    return _within(prunable, share, fits)


def row_amounts(available: Sequence[int], prunable: Sequence[int]) -> SearchStrategy[int | float]:
    """Every kind of ``amount`` valid in every row at once, for a strategy that counts ``amount`` per row.

    ``available[r]``: the unpruned entries of row ``r``; ``prunable[r]``: how
    many of them may be pruned (not protected). Counts go up to the fewest
    prunable of any row (an int is a count in *each* row), fractions as far as
    every row allows.

    >>> from hypothesis import find
    >>> find(row_amounts([4, 2, 5], [4, 2, 5]), lambda a: isinstance(a, int) and a > 1)
    2
    """
    if all(p >= a for a, p in zip(available, prunable)):
        return amounts(min(available, default=0))
    share = min(p / a for a, p in zip(available, prunable) if a > p)

    def fits(fraction: float) -> bool:
        return all(round(fraction * a) <= p for a, p in zip(available, prunable))

    return _within(min(prunable), share, fits)


def _within(count: int, share: float, fits: Callable[[float], bool]) -> SearchStrategy[int | float]:
    """Counts up to ``count`` and fractions up to ``share`` that ``fits`` (when not everything may be pruned)."""
    return st.one_of(
        st.integers(0, count),
        st.sampled_from([f for f in (*_FRACTIONS, share) if fits(f)]),
        st.floats(0.0, share).filter(fits),
    )


def resolve(strategy: StrategyLike) -> StrategySpec:
    """The :class:`~pruneplug.StrategySpec` of a name, a class or a spec, as the current registry sees it."""
    if isinstance(strategy, StrategySpec):
        return strategy
    if isinstance(strategy, str):
        return get_registry().get(strategy)
    return get_registry().spec_for(strategy, provider="pruneplug.testing")  # with its scores


class Examples:
    """Draws the examples of the checks of one strategy (``spec``), and knows what its parameters allow.

    ``counts``: whether the strategy prunes exactly ``amount`` (of kind unstructured or
    structured, with an ``amount`` parameter); ``per_row``: whether it may count it row
    by row (unstructured, implementing :class:`pruneplug.CountsPerRow`). ``calibrated``: whether it may read
    calibration statistics (implements :class:`pruneplug.NeedsStatistics`): it is then
    checked on ``nn.Linear`` layers. ``updates``: whether it changes the values it keeps
    (implements :class:`pruneplug.UpdatesValues`).
    """

    def __init__(
        self, spec: StrategySpec, params: ParamsLike, shapes: SearchStrategy[Shape], dtypes: Sequence[torch.dtype]
    ) -> None:
        self.spec = spec
        self.params = params
        self.shapes = shapes
        self.dtypes = tuple(dtypes)
        fields = spec.params_model.model_fields
        self.counts = spec.kind in ("unstructured", "structured") and "amount" in fields
        cls = spec.strategy_class
        self.per_row = self.counts and spec.kind == "unstructured" and issubclass(cls, CountsPerRow)
        self.calibrated = issubclass(cls, NeedsStatistics)
        self.updates = issubclass(cls, UpdatesValues)
        self.calibration = Calibration()

    def draw_shape_dtype(self, data: DataObject) -> tuple[Shape, torch.dtype]:
        """A tensor shape from ``shapes`` and a dtype from ``dtypes``."""
        shape = tuple(data.draw(self.shapes, label="shape"))
        dtype = data.draw(st.sampled_from(self.dtypes), label="dtype")
        return shape, dtype

    @staticmethod
    def draw_values(data: DataObject, shape: Shape, dtype: torch.dtype) -> Tensor:
        """Values of ``shape`` and ``dtype``: normal ones, many ties, or many zeros."""
        seed = data.draw(SEEDS, label="values seed")
        style = data.draw(st.sampled_from(("normal", "ties", "zeros")), label="values")
        generator = torch.Generator().manual_seed(seed)
        if style == "ties":
            values = torch.randint(-2, 3, shape, generator=generator).to(torch.float64)
        else:
            values = torch.randn(shape, generator=generator, dtype=torch.float64)
            if style == "zeros":
                values = values * (torch.rand(shape, generator=generator) < 0.5)
        return values.to(dtype)

    def draw_module(self, data: DataObject, shape: Shape | None = None) -> tuple[Holder | LinearHolder, Tensor]:
        """A module holding drawn values (of ``shape`` if given, else of a drawn shape).

        For a calibrated strategy, an ``nn.Linear`` with calibration inputs drawn for it.
        """
        if shape is None:
            shape, dtype = self.draw_shape_dtype(data)
        else:
            dtype = data.draw(st.sampled_from(self.dtypes), label="dtype")
        values = self.draw_values(data, shape, dtype)
        if not self.calibrated:
            return Holder(values.clone()), values
        module = LinearHolder(values.clone())
        self.calibration.draw(data, module)
        return module, values

    def twin(self, module: Holder | LinearHolder, values: Tensor) -> Holder | LinearHolder:
        """Another module holding ``values``, with ``module``'s calibration inputs."""
        if not isinstance(module, LinearHolder):
            return Holder(values.clone())
        other = LinearHolder(values.clone())
        self.calibration.share(module, other)
        return other

    def required(self, params: Mapping[str, Any]) -> tuple[str, ...]:
        """The statistics the strategy with ``params`` requires (``()`` for one that is not calibrated)."""
        if not self.calibrated:
            return ()
        try:
            method = self.spec.create(**params)
        except Exception as error:
            raise Failure(
                f"creating the strategy with {show(params)} (to ask which statistics it requires) raised "
                f"{type(error).__name__}: {error}"
            ) from error
        if not isinstance(method, NeedsStatistics):
            raise Failure(f"the strategy made with {show(params)} has no required_statistics() method")
        try:
            names = method.required_statistics()
        except Exception as error:
            raise Failure(f"required_statistics() raised {type(error).__name__}: {error}") from error
        if not isinstance(names, (tuple, list)) or not all(isinstance(n, str) for n in names):
            raise Failure(f"required_statistics() returned {names!r}, not a tuple of statistic names")
        return tuple(names)

    @contextmanager
    def statistics_in_use(self, modules: Sequence[nn.Module], params: Mapping[str, Any]) -> Iterator[None]:
        """The statistics the strategy with ``params`` requires, of every module in ``modules``, in use.

        Nothing is put in use for a strategy that requires none.
        """
        with self.calibration.in_use(modules, self.required(params)):
            yield

    @staticmethod
    def draw_earlier_pruning(data: DataObject, module: nn.Module) -> None:
        """Maybe prune ``module.weight`` first with a random mask (an arbitrary earlier state).

        The earlier mask may be stored bit-packed, and later prunes keep it so: the strategy
        then prunes (locally and globally) on top of a :class:`~pruneplug.PackedMask`.
        """
        if not data.draw(st.booleans(), label="pruned before"):
            return
        shape = module._parameters["weight"].shape  # type: ignore[union-attr]
        seed = data.draw(SEEDS, label="earlier mask seed")
        keep = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < 0.7
        storage: MaskStorage = data.draw(st.sampled_from(["bool", "packed"]), label="earlier mask storage")
        prune(module, "weight", CustomFromMask, mask=keep, mask_storage=storage)

    def dim(self, params: Mapping[str, Any], ndim: int) -> int:
        dim = params.get("dim")
        if dim is None:
            info = self.spec.params_model.model_fields.get("dim")
            dim = info.default if info is not None and isinstance(info.default, int) else -1
        return int(dim) % ndim

    def available(self, alive: Tensor, params: Mapping[str, Any]) -> int:
        if self.spec.kind == "structured" and alive.dim() >= 1:
            return int(alive_slices(alive, self.dim(params, alive.dim())).sum())
        return int(alive.sum())

    def row_dim(self, module: nn.Module, values: Tensor, params: Mapping[str, Any]) -> int | None:
        """The dim along whose rows the strategy with ``params`` counts ``amount``, or ``None``: over the tensor.

        What :meth:`pruneplug.CountsPerRow.row_dim` says, asked while ``module.weight``
        (holding ``values``) is the tensor being pruned, as ``compute_mask`` is asked;
        normalized to ``0 .. values.dim() - 1``. ``None`` for a strategy that does not
        implement it, and for parameters with ``amount=None`` (nothing to count).
        """
        if not self.per_row or params.get("amount", 0) is None:
            return None
        asked = {**params, "amount": params.get("amount", 0)}
        try:
            method = self.spec.create(**asked)
            if not isinstance(method, CountsPerRow):  # pragma: no cover - the class implements it
                return None
            parameter = module._parameters.get("weight_orig", module._parameters.get("weight"))
            assert parameter is not None
            with scoring(module, "weight", parameter):
                dim = method.row_dim(values.clone())
        except Exception as error:
            raise Failure(
                f"asking the strategy how it counts amount (row_dim(t), with {show(asked)}) raised "
                f"{type(error).__name__}: {error}"
            ) from error
        ndim = values.dim()
        valid = dim is None or (isinstance(dim, int) and not isinstance(dim, bool) and -ndim <= dim < ndim)
        if not valid:
            raise Failure(
                f"row_dim(t) returned {dim!r} for a tensor of shape {tuple(values.shape)}; it must be a dim of "
                f"the tensor ({-ndim}..{ndim - 1}) or None (amount counts over the whole tensor)"
            )
        return None if dim is None else dim % ndim

    def room(
        self, module: nn.Module, values: Tensor, alive: Tensor, params: Mapping[str, Any]
    ) -> tuple[list[int], list[int], int | None]:
        """What ``amount`` counts over: ``(unpruned, prunable, row dim)``, per group the strategy counts in.

        One group -- the tensor's entries, or a structured strategy's slices --
        unless the strategy counts per row (:meth:`row_dim`): then one per row along
        that dim. ``prunable``: the unpruned units not protected.
        """
        dim = self.row_dim(module, values, params)
        kept = self.protected_alive(values, alive, params) if self.counts else None
        if dim is None:
            available = self.available(alive, params)
            return [available], [available - (0 if kept is None else int(kept.sum()))], None
        rows = rows_of(alive, dim).sum(dim=1)
        guarded = torch.zeros_like(rows) if kept is None else rows_of(kept, dim).sum(dim=1)
        return rows.tolist(), (rows - guarded).tolist(), dim

    def protected(self, values: Tensor, params: Mapping[str, Any]) -> Tensor | None:
        """What the strategy protects in ``values``: entries (unstructured) or slices along ``dim`` (structured).

        ``None`` when nothing is (the strategy does not override ``protected`` /
        ``protected_slices``, or returns ``None``).
        """
        cls = self.spec.strategy_class
        unstructured = issubclass(cls, UnstructuredStrategy) and cls.protected is not UnstructuredStrategy.protected
        structured = (
            issubclass(cls, StructuredStrategy) and cls.protected_slices is not StructuredStrategy.protected_slices
        )
        if not (unstructured or structured):
            return None  # (no instance made for the common case)
        amount = "amount" in self.spec.params_model.model_fields and params.get("amount", 0) is not None
        asked = {**params, "amount": 0} if amount else dict(params)
        try:
            method = self.spec.create(**asked)
            if isinstance(method, UnstructuredStrategy):
                return checked_protected(method, values)
            if isinstance(method, StructuredStrategy):
                return checked_protected_slices(method, values, self.dim(params, values.dim()))
        except Exception as error:
            raise Failure(
                f"asking the strategy what it protects (with {show(asked)}) raised {type(error).__name__}: {error}"
            ) from error
        return None

    def protected_alive(self, values: Tensor, alive: Tensor, params: Mapping[str, Any]) -> Tensor | None:
        """The protected entries (or slices) among the still-unpruned ones, or ``None`` if nothing is protected."""
        guard = self.protected(values, params)
        if guard is None:
            return None
        if self.spec.kind == "structured":
            return guard & alive_slices(alive, self.dim(params, alive.dim()))
        return guard & alive

    def draw_params(self, data: DataObject, module: nn.Module, values: Tensor, alive: Tensor) -> dict[str, Any]:
        """Parameters for a valid prune of ``module.weight`` (holding ``values``; ``alive``: still unpruned)."""
        shape = tuple(values.shape)
        source: Any = self.params if self.params is not None else {}
        if not isinstance(source, (Mapping, SearchStrategy)) and callable(source):
            source = source(shape)
        if isinstance(source, SearchStrategy):
            source = data.draw(source, label="params")
        if not isinstance(source, Mapping):
            raise TypeError(f"params must give a mapping of parameter values, got {type(source).__name__}")
        params = {k: data.draw(v, label=k) if isinstance(v, SearchStrategy) else v for k, v in source.items()}
        fields = self.spec.params_model.model_fields
        if self.spec.kind == "structured" and "dim" in fields and "dim" not in params and shape:
            params["dim"] = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim")
        available, prunable, dim = self.room(module, values, alive, params)
        if "amount" in fields and "amount" not in params:
            choices = amounts(available[0], prunable[0]) if dim is None else row_amounts(available, prunable)
            params["amount"] = data.draw(choices, label="amount")
        amount = params.get("amount")
        if self.counts and isinstance(amount, (int, float)) and not isinstance(amount, bool):
            # a fixed amount larger than what may be pruned is a (correctly) failing prune, not an example
            assume(all(expected_count(amount, a) <= p for a, p in zip(available, prunable)))
        return params
