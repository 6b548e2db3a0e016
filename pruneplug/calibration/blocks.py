"""The blocks a sequential calibration goes through: transformer layers, or any list the user names.

A block is a module that takes the hidden state as its first positional
argument (or as ``hidden_states=``) and returns the next one (alone, or first
in a tuple), as the decoder layers of Hugging Face models do. By default the
blocks are the longest :class:`~torch.nn.ModuleList` whose modules are all of
one class: ``model.layers`` of LLaMA, ``transformer.h`` of GPT-2,
``encoder.layer`` of BERT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from ..errors import InvalidTargetError, close_matches_hint

__all__ = ["Block", "BlocksLike", "find_blocks", "default_blocks"]

BlocksLike = str | Sequence[str | nn.Module] | nn.ModuleList | nn.Sequential
"""What ``blocks=`` accepts: the qualified name of a ModuleList, a ModuleList, or a list of modules or names."""


@dataclass(frozen=True)
class Block:
    """One block of the model: its qualified name and the module itself."""

    name: str
    module: nn.Module


def _names(model: nn.Module) -> dict[int, str]:
    """Qualified name of every module of ``model`` by ``id`` (the first name of a module listed twice)."""
    names: dict[int, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), name)
    return names


def _parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def default_blocks(model: nn.Module) -> list[Block] | None:
    """The longest ModuleList of ``model`` whose modules are all of one class (ties: the one with more parameters).

    ``None`` if the model has no such list.
    """
    best: tuple[int, int] | None = None
    found: list[Block] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        classes = {type(child) for child in module}
        if len(classes) != 1:
            continue
        rank = (len(module), _parameter_count(module))
        if best is None or rank > best:
            best = rank
            found = [Block(f"{name}.{index}" if name else str(index), child) for index, child in enumerate(module)]
    return found


def _model_name(model: nn.Module) -> str:
    return type(model).__name__


def _one_block(
    model: nn.Module, item: object, index: int, names: dict[int, str], by_name: dict[str, nn.Module]
) -> Block:
    if isinstance(item, str):
        module = by_name.get(item)
        if module is None:
            raise InvalidTargetError(
                f"blocks[{index}] names no module of {_model_name(model)}: {item!r}.{close_matches_hint(item, by_name)}"
            )
        return Block(item, module)
    if isinstance(item, nn.Module):
        name = names.get(id(item))
        if name is None:
            raise InvalidTargetError(
                f"blocks[{index}] is a {type(item).__name__} that is not part of the model {_model_name(model)}"
            )
        if item is model:
            raise InvalidTargetError("the model itself cannot be one of its blocks; name its layers instead")
        return Block(name, item)
    raise InvalidTargetError(
        f"blocks[{index}] must be a module or a module's qualified name, got {type(item).__name__}"
    )


def find_blocks(model: nn.Module, blocks: BlocksLike | None) -> list[Block]:
    """The blocks of ``model``, in the order the forward runs them (the order given, or the list's).

    Args:
        model: the whole model.
        blocks: ``None`` (the longest ModuleList of one class), the qualified
            name of a ModuleList (or an ``nn.Sequential``) or the list itself,
            or a sequence of modules or qualified names.

    Raises:
        InvalidTargetError: no list found, a name that names no module, a
            module outside the model, a block listed twice or inside another.
    """
    names = _names(model)
    if blocks is None:
        found = default_blocks(model)
        if found is None:
            raise InvalidTargetError(
                f"{_model_name(model)} has no nn.ModuleList of modules of one class to use as its blocks; "
                "pass blocks=[...] (the modules, or their qualified names, in the order the forward runs them), "
                "or sequential=False to calibrate the whole model in one pass"
            )
        return found
    by_name = dict(model.named_modules())
    if isinstance(blocks, str):
        container = by_name.get(blocks)
        if container is None:
            raise InvalidTargetError(
                f"blocks names no module of {_model_name(model)}: {blocks!r}.{close_matches_hint(blocks, by_name)}"
            )
        if not isinstance(container, (nn.ModuleList, nn.Sequential)):
            raise InvalidTargetError(
                f"blocks={blocks!r} is a {type(container).__name__}, not an nn.ModuleList or nn.Sequential; "
                "pass the list holding the blocks, or a list of the blocks' names"
            )
        blocks = container
    if isinstance(blocks, (nn.ModuleList, nn.Sequential)):
        prefix = names.get(id(blocks))
        if prefix is None:
            raise InvalidTargetError(
                f"the {type(blocks).__name__} passed as blocks is not part of {_model_name(model)}"
            )
        found = [Block(f"{prefix}.{key}" if prefix else key, child) for key, child in blocks.named_children()]
    elif isinstance(blocks, Sequence):
        found = [_one_block(model, item, index, names, by_name) for index, item in enumerate(blocks)]
    else:
        raise InvalidTargetError(
            "blocks must be a ModuleList, its qualified name, or a list of modules or names; "
            f"got {type(blocks).__name__}"
        )
    if not found:
        raise InvalidTargetError("blocks is empty: a sequential calibration needs at least one block")
    _check_disjoint(found)
    return found


def _check_disjoint(found: list[Block]) -> None:
    seen: dict[int, str] = {}
    for block in found:
        if id(block.module) in seen:
            raise InvalidTargetError(f"block {block.name!r} is listed twice (also as {seen[id(block.module)]!r})")
        seen[id(block.module)] = block.name
    for block in found:
        for sub_name, sub in block.module.named_modules():
            if sub is not block.module and id(sub) in seen:
                raise InvalidTargetError(
                    f"block {seen[id(sub)]!r} lies inside block {block.name!r} (as {sub_name!r}); "
                    "blocks must not contain one another"
                )
