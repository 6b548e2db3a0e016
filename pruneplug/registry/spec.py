"""Describing a strategy: :class:`StrategySpec`, its parameters, and :func:`strategy_spec`.

A :class:`StrategySpec` is everything the registry knows about one strategy:
its name, class, parameter model, kind and provider. :func:`strategy_spec`
makes one from a strategy class -- pruneplug's or one written for
``torch.nn.utils.prune`` -- checking its name and ``PRUNING_TYPE``.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from torch.nn.utils import prune as torch_prune

from ..core.method import BasePruningMethod
from ..errors import PruneplugError, StrategyFailedError
from ..params import NoParams, params_model_from_signature, validate_params

__all__ = [
    "BUILTIN_PLUGIN",
    "KINDS",
    "KIND_DESCRIPTIONS",
    "NAME_PATTERN",
    "ParameterInfo",
    "StrategySpec",
    "model_parameters",
    "StrategyDeprecationWarning",
    "strategy_spec",
]

BUILTIN_PLUGIN = "pruneplug"
KINDS = ("unstructured", "structured", "global")
# What each kind means, for `pruneplug list` (table and JSON) and the docs. "global" is torch's PRUNING_TYPE
# for a mask computed from the whole tensor at once; it has nothing to do with global pruning (prune_global,
# a plan's scope "global"), which ranks entries across tensors and so needs an unstructured strategy.
KIND_DESCRIPTIONS = {
    "unstructured": "prunes single entries, ranked within each tensor -- or, with global pruning "
    "(scope 'global' in a plan, pruneplug.prune_global), across all the selected tensors: "
    "the only kind global pruning accepts",
    "structured": "prunes whole slices (output channels, rows) along dim, each tensor on its own",
    "global": "computes each tensor's mask from the whole tensor at once (torch's PRUNING_TYPE 'global'), "
    "e.g. a given mask or N:M groups; despite the name, not usable with global pruning, "
    "which needs kind unstructured",
}
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")  # of strategies, their deprecated names and importance scores


class StrategyDeprecationWarning(FutureWarning):
    """A strategy was looked up by a deprecated name: it still works, under the name the warning gives.

    A ``FutureWarning``, so that users see it (plan files, scripts), not only developers.
    """


@dataclass(frozen=True)
class ParameterInfo:
    """One parameter of a strategy, as shown in tables and docs."""

    name: str
    type: str
    required: bool
    default: Any
    description: str


@dataclass(frozen=True)
class StrategySpec:
    """Everything the registry knows about one strategy.

    Attributes:
        name: the registry name (``"l1_unstructured"``).
        strategy_class: the class whose instances compute masks (and act as hooks).
        params_model: pydantic model validating the constructor's keyword arguments.
        kind: ``"unstructured"``, ``"structured"`` or ``"global"`` (torch's
            ``PRUNING_TYPE``). A ``"global"`` strategy computes a tensor's mask
            from the whole tensor at once; it cannot be used for global
            pruning, which needs ``"unstructured"``.
        provider: the plugin that provides it (``"pruneplug"`` for built-ins).
        distribution: the installed distribution providing it, if any.
        version: that distribution's version.
        summary: first line of the class docstring.
        uses_importance_scores: whether ``importance_scores`` affect its masks.
        deprecated_names: the strategy's former names. Looking one up finds
            this strategy, with a :class:`StrategyDeprecationWarning`; they
            are not listed as strategies (a strategy class declares them as
            ``deprecated_names = ("old_name",)``).
        context: what the registry that hands the spec out gives the
            parameter model's validators (pydantic's ``info.context``):
            ``"scores"``, its importance scores by name (``get_score``). Empty
            for a spec made outside a registry.
    """

    name: str
    strategy_class: type[torch_prune.BasePruningMethod]
    params_model: type[BaseModel]
    kind: str
    provider: str = BUILTIN_PLUGIN
    distribution: str | None = None
    version: str | None = None
    summary: str = ""
    uses_importance_scores: bool = True
    deprecated_names: tuple[str, ...] = ()
    context: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def validate(self, params: dict[str, Any]) -> BaseModel:
        """Validate parameters with :attr:`params_model` (raises :class:`~pruneplug.InvalidParametersError`)."""
        return validate_params(self.params_model, params, strategy=self.name, context=self.context)

    def create(self, **params: Any) -> torch_prune.BasePruningMethod:
        """Validate ``params`` and build a fresh instance of the strategy."""
        validated = self.validate(params)
        values = {name: getattr(validated, name) for name in type(validated).model_fields}
        try:
            return self.strategy_class(**values)
        except PruneplugError as error:
            error.add_context(strategy=self.name)
            raise
        except Exception as error:
            raise StrategyFailedError(
                f"creating the strategy raised {type(error).__name__}: {error}", strategy=self.name
            ) from error

    def parameters(self) -> list[ParameterInfo]:
        """The parameters, read from the pydantic model (for tables, docs and the CLI)."""
        return model_parameters(self.params_model)

    @property
    def provider_label(self) -> str:
        """``"name version"`` of the distribution, or the plugin name."""
        if self.distribution:
            return f"{self.distribution} {self.version}" if self.version else self.distribution
        return self.provider


def model_parameters(model: type[BaseModel], *, exclude: Iterable[str] = ()) -> list[ParameterInfo]:
    """The fields of a pydantic model as parameters (a strategy's, a schedule's), but those in ``exclude``."""
    try:
        schema = model.model_json_schema()
    except Exception:  # pragma: no cover - a foreign model pydantic cannot render
        schema = {}
    properties = schema.get("properties", {})
    left_out = set(exclude)
    out = []
    for name, info in model.model_fields.items():
        if name in left_out:
            continue
        prop = properties.get(name, {})
        out.append(
            ParameterInfo(
                name=name,
                type=_type_text(prop, info.annotation),
                required=info.is_required(),
                default=None if info.is_required() else info.default,
                description=prop.get("description") or info.description or "",
            )
        )
    return out


def _type_text(prop: dict[str, Any], annotation: Any) -> str:
    def one(p: dict[str, Any]) -> str:
        if "enum" in p:
            return " | ".join(repr(v) for v in p["enum"])
        kind = p.get("type")
        if kind == "integer":
            return "int"
        if kind == "number":
            return "float"
        if kind == "boolean":
            return "bool"
        if kind == "string":
            return "str"
        if kind == "null":
            return "None"
        return str(kind or "any")

    if "anyOf" in prop:
        return " | ".join(one(p) for p in prop["anyOf"])
    if prop:
        return one(prop)
    return _annotation_text(annotation)


def _annotation_text(annotation: Any) -> str:
    """``torch.Generator | None`` for annotations kept out of the JSON Schema."""
    if annotation is type(None):
        return "None"
    args = [a for a in typing.get_args(annotation) if not isinstance(a, (str, bytes)) and not _is_metadata(a)]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _annotation_text(args[0])
    if args and origin in (typing.Union, types.UnionType):
        return " | ".join(_annotation_text(a) for a in args)
    if isinstance(annotation, type):
        module = "torch" if annotation.__module__.startswith("torch") else annotation.__module__
        return annotation.__name__ if module == "builtins" else f"{module}.{annotation.__name__}"
    return str(annotation).replace("typing.", "")


def _is_metadata(value: Any) -> bool:
    return not (isinstance(value, type) or typing.get_origin(value) is not None or value is type(None))


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def strategy_spec(
    strategy: Any,
    *,
    name: str | None = None,
    provider: str = BUILTIN_PLUGIN,
    distribution: str | None = None,
    version: str | None = None,
    deprecated_names: Iterable[str] | None = None,
) -> StrategySpec:
    """Describe a strategy class (pruneplug's or torch-style) as a :class:`StrategySpec`.

    ``name`` defaults to the class's ``name`` attribute, then to its class
    name in snake_case. A torch ``BasePruningMethod`` subclass works as it is:
    its ``__init__`` arguments become the parameters. ``deprecated_names``
    (the strategy's former names) defaults to the ``deprecated_names``
    attribute the class itself declares (not one it inherits: a subclass
    under a name of its own is another strategy).

    Raises:
        TypeError: not a strategy class (or an abstract one, or one without a
            valid ``PRUNING_TYPE``), or ``deprecated_names`` is not a list of names.
        ValueError: a name is not a lowercase identifier, or a deprecated
            name is the strategy's own name or is given twice.
    """
    if isinstance(strategy, StrategySpec):
        changes: dict[str, Any] = {} if name is None or name == strategy.name else {"name": name}
        former = strategy.deprecated_names if deprecated_names is None else deprecated_names
        owner = strategy.strategy_class.__qualname__
        checked = _checked_deprecated_names(former, changes.get("name", strategy.name), owner)
        if checked != strategy.deprecated_names:
            changes["deprecated_names"] = checked
        return dataclasses.replace(strategy, **changes) if changes else strategy
    if not (inspect.isclass(strategy) and issubclass(strategy, torch_prune.BasePruningMethod)):
        raise TypeError(
            f"a strategy must be a subclass of pruneplug.BasePruningMethod (or of torch.nn.utils.prune's), "
            f"or a StrategySpec; got {strategy!r}"
        )
    if inspect.isabstract(strategy):
        missing = ", ".join(sorted(getattr(strategy, "__abstractmethods__", ())))
        raise TypeError(f"strategy class {strategy.__qualname__} is abstract: implement {missing}")
    resolved = name or getattr(strategy, "name", None) or _snake(strategy.__name__)
    if not isinstance(resolved, str) or not NAME_PATTERN.match(resolved):
        raise ValueError(
            f"strategy name {resolved!r} of {strategy.__qualname__} must be lowercase letters, digits and "
            "underscores, starting with a letter"
        )
    kind = getattr(strategy, "PRUNING_TYPE", None)
    if kind not in KINDS:
        raise TypeError(
            f"strategy class {strategy.__qualname__} must set PRUNING_TYPE to one of {', '.join(KINDS)}; got {kind!r}"
        )
    declared = next((vars(c)["Params"] for c in strategy.__mro__ if "Params" in vars(c)), NoParams)
    own_init = any(
        "__init__" in vars(c) for c in strategy.__mro__[: strategy.__mro__.index(torch_prune.BasePruningMethod)]
    )
    if issubclass(strategy, BasePruningMethod) and (declared is not NoParams or not own_init):
        params_model = declared
    else:
        params_model = params_model_from_signature(strategy)
    doc = inspect.getdoc(strategy) or ""
    return StrategySpec(
        name=resolved,
        strategy_class=strategy,
        params_model=params_model,
        kind=kind,
        provider=provider,
        distribution=distribution,
        version=version,
        summary=doc.strip().splitlines()[0] if doc.strip() else "",
        uses_importance_scores=bool(getattr(strategy, "uses_importance_scores", True)),
        deprecated_names=_checked_deprecated_names(
            vars(strategy).get("deprecated_names", ()) if deprecated_names is None else deprecated_names,
            resolved,
            strategy.__qualname__,
        ),
    )


def _checked_deprecated_names(names: object, own: str, owner: str) -> tuple[str, ...]:
    """``names`` as a tuple, each a valid name other than ``own`` and given once (``owner`` names the class)."""
    if isinstance(names, (str, bytes)) or not isinstance(names, Iterable):
        raise TypeError(f"deprecated_names of {owner} must be a tuple or list of names, got {names!r}")
    checked = tuple(names)
    for old in checked:
        if not isinstance(old, str) or not NAME_PATTERN.match(old):
            raise ValueError(
                f"deprecated name {old!r} of {owner} must be lowercase letters, digits and underscores, "
                "starting with a letter"
            )
        if old == own:
            raise ValueError(f"deprecated name {old!r} is {owner}'s own name; list only former names")
        if checked.count(old) > 1:
            raise ValueError(f"deprecated name {old!r} is given twice in the deprecated_names of {owner}")
    return checked
