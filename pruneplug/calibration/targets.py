"""Which layers a calibrated prune acts on: names, modules or a predicate, or every linear layer.

Every target is pruned in its ``weight``. The default targets are the linear
layers (``nn.Linear``, and GPT-2's ``Conv1D``, a linear layer that stores
its weight transposed): inside the blocks when calibrating block by block,
everywhere but the output head (the LM head) otherwise. A layer the default
leaves out is listed in the report as skipped; naming it prunes it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from torch import Tensor, nn

from ..errors import InvalidTargetError, close_matches_hint
from ..layers import is_transposed_linear
from .blocks import Block

__all__ = ["Target", "TargetsLike", "Selection", "is_linear_layer", "select_targets", "weight_of"]

TargetsLike = str | nn.Module | Iterable[str | nn.Module] | Callable[[str, nn.Module], bool]
"""What ``targets=`` accepts: qualified names, modules, or a predicate ``(name, module) -> bool``."""


@dataclass(frozen=True)
class Target:
    """One layer to prune: its qualified name, the module, and the index of its block (``None``: outside them)."""

    name: str
    module: nn.Module
    block: int | None


@dataclass(frozen=True)
class Selection:
    """The targets, in the model's order, and the linear layers the default left out (qualified names)."""

    targets: tuple[Target, ...]
    skipped: tuple[str, ...]


def weight_of(module: nn.Module) -> Tensor | None:
    """The module's weight parameter (``weight_orig`` when it is pruned already), or ``None``."""
    for key in ("weight_orig", "weight"):
        value = module._parameters.get(key)
        if value is not None:
            return value
    return None


def is_linear_layer(module: nn.Module) -> bool:
    """``nn.Linear``, or a linear layer storing its weight as ``(in, out)`` (GPT-2's ``Conv1D``)."""
    return isinstance(module, nn.Linear) or is_transposed_linear(module)


def _output_heads(model: nn.Module) -> set[int]:
    """The output head(s) of ``model``: its ``get_output_embeddings()``, and linear layers tied to an embedding."""
    heads: set[int] = set()
    getter = getattr(model, "get_output_embeddings", None)
    if callable(getter):
        try:
            head = getter()
        except (NotImplementedError, AttributeError):
            head = None
        if isinstance(head, nn.Module):
            heads.add(id(head))
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    for module in model.modules():
        weight = weight_of(module)
        if is_linear_layer(module) and weight is not None and id(weight) in embeddings:
            heads.add(id(module))
    return heads


def _block_of(model: nn.Module, blocks: list[Block]) -> dict[int, int]:
    """Block index of every module inside a block (the block itself included)."""
    inside: dict[int, int] = {}
    for index, block in enumerate(blocks):
        for sub in block.module.modules():
            inside.setdefault(id(sub), index)
    return inside


def _outside(name: str) -> InvalidTargetError:
    return InvalidTargetError(
        f"target {name!r} lies outside the blocks; calibrating block by block (sequential=True) prunes layers "
        "inside the blocks only: pass sequential=False to calibrate the whole model in one pass, name blocks= "
        "that hold it, or leave targets=None (the report lists the linear layers it skips)"
    )


def _named(model: nn.Module, targets: TargetsLike) -> list[tuple[str, nn.Module]]:
    """The modules ``targets`` names or gives, with their qualified names, in the order given."""
    modules = dict(model.named_modules())
    names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
    with_weight = [n for n, m in modules.items() if weight_of(m) is not None]
    items: list[str | nn.Module]
    if isinstance(targets, (str, nn.Module)):
        items = [targets]
    elif isinstance(targets, Iterable):
        items = list(targets)
    else:
        raise InvalidTargetError(
            "targets must be qualified module names, modules, or a predicate (name, module) -> bool; "
            f"got {type(targets).__name__}"
        )
    chosen: list[tuple[str, nn.Module]] = []
    for index, item in enumerate(items):
        if isinstance(item, str):
            module = modules.get(item)
            if module is None:
                raise InvalidTargetError(
                    f"targets names no module of {type(model).__name__}: {item!r}."
                    + close_matches_hint(item, with_weight)
                )
            chosen.append((item, module))
        elif isinstance(item, nn.Module):
            found = names.get(id(item))
            if found is None:
                raise InvalidTargetError(
                    f"targets[{index}] is a {type(item).__name__} that is not part of the model {type(model).__name__}"
                )
            chosen.append((found, item))
        else:
            raise InvalidTargetError(
                f"targets[{index}] must be a module or a module's qualified name, got {type(item).__name__}"
            )
    return chosen


def select_targets(
    model: nn.Module, targets: TargetsLike | None, blocks: list[Block] | None, *, sequential: bool
) -> Selection:
    """The layers to prune and the linear layers left out.

    Args:
        model: the whole model.
        targets: ``None`` for the default, or names, modules or a predicate.
        blocks: the blocks (``None`` when not calibrating block by block).
        sequential: whether every target must lie inside a block.

    Raises:
        InvalidTargetError: an unknown name (with close matches), a module
            outside the model or without a ``weight``, a target listed twice or
            tied to another, a target outside the blocks when sequential, or
            nothing selected.
    """
    inside = _block_of(model, blocks or [])
    skipped: list[str] = []
    chosen: list[tuple[str, nn.Module]] = []
    if targets is None:
        heads = set() if sequential else _output_heads(model)
        for name, module in model.named_modules():
            if not is_linear_layer(module):
                continue
            if (sequential and id(module) not in inside) or id(module) in heads:
                skipped.append(name)
            else:
                chosen.append((name, module))
    elif callable(targets) and not isinstance(targets, nn.Module):
        predicate = targets
        for name, module in model.named_modules():
            if weight_of(module) is not None and predicate(name, module):
                chosen.append((name, module))
    else:
        chosen = _named(model, targets)
    if not chosen:
        where = " inside the blocks" if sequential else ""
        raise InvalidTargetError(
            f"no layer of {type(model).__name__}{where} was selected to prune (targets={targets!r})"
        )
    seen_modules: dict[int, str] = {}
    seen_weights: dict[int, str] = {}
    result: list[Target] = []
    for name, module in chosen:
        if id(module) in seen_modules:
            raise InvalidTargetError(f"target {name!r} is listed twice (also as {seen_modules[id(module)]!r})")
        seen_modules[id(module)] = name
        weight = weight_of(module)
        if weight is None:
            raise InvalidTargetError(
                f"target {name!r} is a {type(module).__name__} without a weight parameter to prune",
                module_type=type(module).__name__,
                tensor="weight",
            )
        if id(weight) in seen_weights:
            raise InvalidTargetError(
                f"targets {seen_weights[id(weight)]!r} and {name!r} share one tied weight; name it once",
                module_type=type(module).__name__,
                tensor="weight",
            )
        seen_weights[id(weight)] = name
        block = inside.get(id(module))
        if sequential and block is None:
            raise _outside(name)
        result.append(Target(name, module, block))
    order = {id(m): i for i, m in enumerate(model.modules())}
    result.sort(key=lambda t: order[id(t.module)])
    return Selection(tuple(result), tuple(skipped))
