"""Strategies by name: looking them up, listing them, registering them in the default registry.

Every API function that takes a strategy accepts a registered name, a
:class:`~pruneplug.StrategySpec`, or a strategy class or configured instance;
:func:`resolve_strategy` turns any of them into a spec. These functions speak
to the default registry (:func:`pruneplug.get_registry`); a
:class:`~pruneplug.Registry` of your own has the same methods.
"""

from __future__ import annotations

import copy
import fnmatch
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch.nn.utils import prune as torch_prune

from ..errors import IncompatibleStrategyError, InvalidParametersError, StrategyNotFoundError
from ..registry import KINDS, StrategySpec, get_registry

__all__ = [
    "StrategyLike",
    "resolve_strategy",
    "instantiate",
    "list_strategies",
    "get_strategy",
    "register",
    "unregister",
    "registered",
]

StrategyLike = str | StrategySpec | type | torch_prune.BasePruningMethod
"""What the API accepts as a strategy: a registered name, a spec, a method class or a configured instance."""


def resolve_strategy(strategy: StrategyLike) -> StrategySpec:
    """A strategy given by registered name, spec, class or (configured) instance."""
    if isinstance(strategy, str):
        return get_registry().get(strategy)
    if isinstance(strategy, StrategySpec):
        return strategy
    if inspect.isclass(strategy) and issubclass(strategy, torch_prune.BasePruningMethod):
        return spec_of_class(strategy)
    if isinstance(strategy, torch_prune.BasePruningMethod):
        return spec_of_class(type(strategy))
    raise StrategyNotFoundError(
        repr(strategy),
        get_registry().names(),
        extra=" A strategy is a registered name, a StrategySpec, or a BasePruningMethod class or instance.",
    )


def spec_of_class(cls: type[torch_prune.BasePruningMethod]) -> StrategySpec:
    """The spec of a strategy class passed directly; a class that cannot be one is an IncompatibleStrategyError.

    ``strategy_spec`` raises a bare ``TypeError`` or ``ValueError`` (its
    contract for :func:`register`) for an abstract class, an invalid
    ``PRUNING_TYPE`` or a ``name`` that is not a valid strategy name; here it
    becomes a :class:`PruneplugError` (a ``TypeError``) that the caller names
    the module and tensor in.
    """
    try:
        return get_registry().spec_for(cls, provider="(passed directly)")
    except (TypeError, ValueError) as error:
        name = getattr(cls, "name", None)
        raise IncompatibleStrategyError(
            str(error), strategy=name if isinstance(name, str) and name else cls.__qualname__
        ) from error


def instantiate(strategy: StrategyLike, spec: StrategySpec, params: dict[str, Any]) -> torch_prune.BasePruningMethod:
    """A new method of ``spec`` with ``params`` (validated), or a copy of a configured instance."""
    if isinstance(strategy, torch_prune.BasePruningMethod):
        if params:
            raise InvalidParametersError(
                f"a strategy instance is already configured; pass its class to give parameters ({', '.join(params)})",
                strategy=spec.name,
            )
        return copy.copy(strategy)  # each tensor gets its own hook object
    return spec.create(**params)


def list_strategies(pattern: str | None = None, *, kind: str | None = None) -> list[str]:
    """Names of the registered strategies, optionally filtered.

    Args:
        pattern: a glob such as ``"*_structured"``.
        kind: the strategy's kind (torch's ``PRUNING_TYPE``):
            ``"unstructured"`` (prunes single entries), ``"structured"``
            (whole slices along ``dim``) or ``"global"`` (a mask computed from
            the whole tensor at once, e.g. ``custom_from_mask``). Kind
            ``"global"`` is *not* what global pruning needs:
            :func:`prune_global` (and a plan's ``scope = "global"``) ranks
            entries across tensors and takes only ``kind="unstructured"``
            strategies.

    Raises:
        InvalidParametersError: ``kind`` is none of those three.

    >>> import pruneplug
    >>> pruneplug.list_strategies("*_structured")
    ['ln_structured', 'random_structured', 'scored_structured']
    """
    if kind is not None and kind not in KINDS:
        raise InvalidParametersError(f"kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")
    specs = get_registry().specs()
    return [
        s.name
        for s in specs
        if (pattern is None or fnmatch.fnmatchcase(s.name, pattern)) and (kind is None or s.kind == kind)
    ]


def get_strategy(name: str) -> StrategySpec:
    """The :class:`StrategySpec` registered as ``name``: kind, parameters, provider.

    Raises:
        StrategyNotFoundError: no such strategy (the message lists close matches).
        StrategyConflictError: two plugins claim the name.
    """
    return get_registry().get(name)


def register(strategy: Any, *, name: str | None = None) -> StrategySpec:
    """Register a strategy class defined in a script or notebook, by name; returns its spec.

    Accepts a :class:`BasePruningMethod` subclass, a
    ``torch.nn.utils.prune.BasePruningMethod`` subclass written for torch
    (its constructor arguments become its parameters), or a spec. The name is
    ``name``, else the class's ``name`` attribute, else its class name in
    snake_case (``EveryOther`` -> ``every_other``).

    Raises:
        StrategyConflictError: a built-in, an installed plugin or an earlier
            :func:`register` already provides the name.
        TypeError: not a strategy class (or an abstract one, or one without
            a valid ``PRUNING_TYPE``).
        ValueError: the name is not a lowercase identifier.
    """
    return get_registry().register(strategy, name=name)


def unregister(name: str) -> None:
    """Remove a strategy added with :func:`register`.

    Raises:
        StrategyNotFoundError: ``name`` was not added with :func:`register`
            (built-ins and plugins cannot be unregistered).
    """
    get_registry().unregister(name)


@contextmanager
def registered(strategy: Any, *, name: str | None = None) -> Iterator[StrategySpec]:
    """Register a strategy for the duration of a ``with`` block, which receives its spec.

    Raises what :func:`register` raises.
    """
    with get_registry().registered(strategy, name=name) as spec:
        yield spec
