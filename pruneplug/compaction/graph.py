"""The channel graph: which channels of which tensors are coupled, and which may be pruned.

:func:`trace_channels` records a run of the model (:mod:`.trace`), applies
the rules of every step (:mod:`.rules`), and solves them:

1. Ties join slots into *classes* (union-find over slots): the channels of a
   convolution's output, the next BatchNorm's four tensors and the next
   convolution's input are one class.
2. A slot is a channel slot when its class holds a dim a layer rule declared
   (or is linked to one); view/reshape/flatten steps then link entries
   through the flat index, channel digits only (flatten: one channel is HxW
   features); this repeats until nothing new is a channel.
3. Links couple single entries across classes (concatenation offsets, split
   pieces, depthwise multipliers, attention q/k/v rows). The connected
   components of entries are *atoms*: one atom is one channel that can only be
   removed whole, from every tensor it touches.
4. Atoms that touch the same classes form a :class:`ChannelGroup`. Its
   *members* are the parameters and buffers it touches, each with the dim
   and the indices of every atom along it.

A group is left alone (``prunable=False``, with the reason) when it reaches
the model's inputs or outputs, an operation without a rule, a reduction or
softmax over its channels, a tensor made outside the run,
an ``ignore``-d module, or blocks whose sizes disagree.
"""

from __future__ import annotations

import warnings
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._pytree import tree_map

from ..errors import ChannelGraphWarning, ChannelTraceError, InvalidParametersError, InvalidTargetError
from .hf import Part, elastic_splits, part_dims
from .rules import Layout, SlotSpace, apply_rule, channel_digit_links, is_rule_module
from .trace import ExampleInputs, Recording, Step, record
from .trace_fx import FxUnavailable, record_fx

__all__ = ["ChannelGraph", "ChannelGroup", "GroupPart", "Member", "trace_channels", "IgnoreLike", "Tracer"]

GroupPart = Part
"""What a group is in a transformer pruneplug knows (LLaMA family, GPT-2, BERT, ViT): a layer's attention
``"heads"``, its MLP ``"neurons"``, or the ``"hidden"`` size; ``"channels"`` in any other model or group."""

Tracer = Literal["auto", "fx", "eager"]
"""How the run is recorded: ``torch.fx`` where it can trace the model (``"auto"``), always (``"fx"``), or never."""

IgnoreLike = Iterable[nn.Module | str]
"""Modules (objects, or qualified names) whose channels are left alone."""


@dataclass(frozen=True, eq=False)
class Member:
    """One tensor of a group: along ``dim``, atom ``a`` owns the entries ``index[a]``.

    ``layout`` ``("grouped", g)`` marks the input channels of a grouped
    convolution's weight: entry ``i`` is column ``i % (in / g)`` of the rows of
    block ``i // (in / g)``. ``parameter`` is ``False`` for buffers (BatchNorm
    running statistics), which are sliced when compacting but never masked.
    """

    module: str
    tensor: str
    dim: int
    index: Tensor
    layout: Layout = ("plain", 0)
    parameter: bool = True

    @property
    def name(self) -> str:
        """``module.tensor``, as in a state_dict."""
        return f"{self.module}.{self.tensor}" if self.module else self.tensor

    def __repr__(self) -> str:
        grouped = f", grouped({self.layout[1]})" if self.layout[0] == "grouped" else ""
        return f"{self.name}[dim {self.dim}{grouped}]"


@dataclass(frozen=True, eq=False)
class ChannelGroup:
    """Channels that can only be pruned together: ``size`` atoms, each one channel of every member."""

    id: int
    size: int
    members: tuple[Member, ...]
    norms: tuple[Member, ...] = ()  # norms whose statistics span these channels: index over their channels
    blocks: Tensor | None = None  # block id of each atom; every block keeps the same number
    prunable: bool = True
    reason: str | None = None
    part: GroupPart = "channels"

    @property
    def unit(self) -> int:
        """Entries per atom along the first member (e.g. HxW features of a flattened channel)."""
        return int(self.members[0].index.shape[1]) if self.members else 1

    @property
    def block_count(self) -> int:
        return 1 if self.blocks is None else int(self.blocks.max()) + 1

    @property
    def name(self) -> str:
        """A readable name: the first member's output-side tensor."""
        return self.members[0].name if self.members else f"group {self.id}"

    def modules(self) -> list[str]:
        """Qualified names of the modules whose tensors are members, in order of appearance."""
        return list(dict.fromkeys(m.module for m in self.members))

    def __repr__(self) -> str:
        state = "prunable" if self.prunable else f"left alone: {self.reason}"
        return f"ChannelGroup(#{self.id}, {self.size} channels, {len(self.members)} tensors, {state})"


@dataclass(eq=False)
class ChannelGraph:
    """The coupled channel groups of a model, from one traced run of ``example_inputs``."""

    groups: list[ChannelGroup]
    tracer: str
    example_inputs: ExampleInputs = field(repr=False)
    warnings: list[str] = field(default_factory=list)
    _model: Any = field(default=None, repr=False)

    @property
    def prunable(self) -> list[ChannelGroup]:
        """The groups that may be pruned."""
        return [g for g in self.groups if g.prunable]

    def groups_of(self, module: nn.Module | str, tensor: str) -> list[ChannelGroup]:
        """Every group that has ``module.<tensor>`` as a member (a weight has one per channel dim)."""
        path = self._path(module)
        return [g for g in self.groups if any(m.module == path and m.tensor == tensor for m in g.members)]

    def group_of(self, module: nn.Module | str, tensor: str, dim: int | None = None) -> ChannelGroup | None:
        """The group ``module.<tensor>`` is a member of along ``dim``.

        ``dim=None``: the group of its output channels (dim 0; dim 1 of a
        transposed convolution's weight), or its only group. ``None`` when
        the tensor is in no group.
        """
        path = self._path(module)
        found = [(m.dim, g) for g in self.groups for m in g.members if m.module == path and m.tensor == tensor]
        if dim is not None:
            found = [(d, g) for d, g in found if d == dim]
        if not found:
            return None
        if dim is None and len(found) > 1:
            owner = self._module(path)
            out_dim = 1 if isinstance(owner, nn.modules.conv._ConvTransposeNd) and tensor == "weight" else 0
            found = [(d, g) for d, g in found if d == out_dim] or found
        return found[0][1]

    def _module(self, path: str) -> nn.Module | None:
        model = self._model() if self._model is not None else None
        if model is None:
            return None
        try:
            return model.get_submodule(path)  # type: ignore[no-any-return]
        except AttributeError:
            return None

    def _path(self, module: nn.Module | str) -> str:
        if isinstance(module, str):
            return module
        model = self._model() if self._model is not None else None
        if model is not None:
            for name, sub in model.named_modules(remove_duplicate=False):
                if sub is module:
                    return str(name)
        raise InvalidTargetError(f"{type(module).__name__} is not a module of the traced model")

    def summary(self) -> str:
        """A table: each group's size, blocks and members, and why a group is left alone."""
        lines = [
            f"ChannelGraph (traced by {self.tracer}): {len(self.groups)} groups,"
            f" {len(self.prunable)} prunable, {sum(g.size for g in self.prunable)} prunable channels"
        ]
        for group in self.groups:
            blocks = f", {group.block_count} blocks" if group.block_count > 1 else ""
            state = "" if group.prunable else f"  [left alone: {group.reason}]"
            part = f" ({group.part})" if group.part != "channels" else ""
            lines.append(f"  #{group.id}: {group.size} channels{part}{blocks}{state}")
            members = ", ".join(repr(m) for m in group.members)
            lines.append(f"      {members}")
        for message in self.warnings:
            lines.append(f"  warning: {message}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


# -- solving ---------------------------------------------------------------------------------------


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        parent = self.parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _components(n: int, a: Tensor, b: Tensor) -> Tensor:
    """Label of each of ``n`` entries: the smallest entry of its connected component (edges ``a[i]-b[i]``)."""
    labels = torch.arange(n)
    if not len(a):
        return labels
    while True:
        la, lb = labels[a], labels[b]
        low = torch.minimum(la, lb)
        new = labels.clone()
        new.scatter_reduce_(0, la, low, "amin")
        new.scatter_reduce_(0, lb, low, "amin")
        while True:  # point every entry at its label's label until nothing moves
            jumped = new[new]
            if torch.equal(jumped, new):
                break
            new = jumped
        if torch.equal(new, labels):
            return labels
        labels = new


@dataclass
class _Classes:
    of_slot: list[int]
    members: dict[int, list[int]]


def _classes(space: SlotSpace) -> _Classes:
    uf = _UnionFind(len(space.infos))
    for a, b in space.ties:
        uf.union(a, b)
    of_slot = [uf.find(s) for s in range(len(space.infos))]
    members: dict[int, list[int]] = defaultdict(list)
    for slot, cls in enumerate(of_slot):
        members[cls].append(slot)
    return _Classes(of_slot, dict(members))


def _channel_classes(space: SlotSpace, classes: _Classes) -> set[int]:
    """Classes holding a declared dim, and every class linked to one (transitively)."""
    channel = {classes.of_slot[s] for s in space.declared}
    neighbours: dict[int, set[int]] = defaultdict(set)
    for a, _, b, _ in space.links:
        ca, cb = classes.of_slot[a], classes.of_slot[b]
        neighbours[ca].add(cb)
        neighbours[cb].add(ca)
    todo = list(channel)
    while todo:
        for other in neighbours[todo.pop()]:
            if other not in channel:
                channel.add(other)
                todo.append(other)
    return channel


def _membership(of_slot: list[int], channel: set[int]) -> Callable[[int], bool]:
    return lambda slot: of_slot[slot] in channel


def _solve_reshapes(space: SlotSpace, classes: _Classes) -> set[int]:
    base_links = list(space.links)
    base_pins = dict(space.pins)
    channel = _channel_classes(space, classes)
    for _ in range(8):
        space.links = list(base_links)
        space.pins = dict(base_pins)
        is_channel = _membership(classes.of_slot, channel)
        for reshape in space.reshapes:
            channel_digit_links(space, reshape, is_channel)
        grown = _channel_classes(space, classes)
        if grown == channel:
            break
        channel = grown
    return channel


def _module_paths(model: nn.Module, ignore: IgnoreLike) -> list[str]:
    names = {id(m): name for name, m in model.named_modules(remove_duplicate=False)}
    known = set(names.values())
    paths = []
    for item in ignore:
        if isinstance(item, nn.Module):
            if id(item) not in names:
                raise InvalidTargetError(f"ignore: {type(item).__name__} is not a module of the model")
            paths.append(names[id(item)])
        elif isinstance(item, str):
            if item not in known:
                raise InvalidTargetError(f"ignore: the model has no module named {item!r}")
            paths.append(item)
        else:
            raise InvalidTargetError(f"ignore: expected modules or their qualified names, got {type(item).__name__}")
    return paths


def _ignored(path: str, ignored: Sequence[str]) -> bool:
    return any(path == i or i == "" or path.startswith(i + ".") for i in ignored)


def _build(space: SlotSpace, recording: Recording, ignored: Sequence[str]) -> tuple[list[ChannelGroup], list[str]]:
    classes = _classes(space)
    channel = _solve_reshapes(space, classes)
    of_slot = classes.of_slot
    ordered = sorted(channel)
    base: dict[int, int] = {}
    total = 0
    for cls in ordered:
        base[cls] = total
        total += space.infos[cls].size
    ends, starts = [], []
    for a, index_a, b, index_b in space.links:
        ca, cb = of_slot[a], of_slot[b]
        if ca in base and cb in base:
            starts.append(index_a + base[ca])
            ends.append(index_b + base[cb])
    if starts:
        labels = _components(total, torch.cat(starts), torch.cat(ends))
    else:
        labels = torch.arange(total)
    declared_classes = {of_slot[s] for s in space.declared}
    # atom -> the classes it touches, with its positions in each
    atom_classes: dict[int, list[int]] = defaultdict(list)
    for cls in ordered:
        for atom in torch.unique(labels[base[cls] : base[cls] + space.infos[cls].size]).tolist():
            atom_classes[atom].append(cls)
    signatures: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for atom, touched in atom_classes.items():
        if any(c in declared_classes for c in touched):
            signatures[tuple(touched)].append(atom)
    pins: dict[int, str] = {}
    for slot, why in space.pins.items():
        pins.setdefault(of_slot[slot], why)
    taints: dict[int, tuple[str, str]] = {}
    for slot, why_taint in space.taints.items():
        taints.setdefault(of_slot[slot], why_taint)
    blocks_by_class: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for slot, count, what in space.blocks:
        blocks_by_class[of_slot[slot]].append((count, what))
    norms_by_class: dict[int, list[int]] = defaultdict(list)
    for slot in space.norms:
        norms_by_class[of_slot[slot]].append(slot)
    aliases: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)  # a tied tensor's other names
    for alias, first in recording.tied.items():
        aliases[first].append(alias)
    groups: list[ChannelGroup] = []
    warned: dict[str, set[str]] = defaultdict(set)
    for signature, atoms in sorted(signatures.items(), key=lambda item: (item[0], min(item[1]))):
        atoms_t = torch.tensor(sorted(atoms))
        members: list[Member] = []
        norms: list[Member] = []
        reason: str | None = None
        block_ids: Tensor | None = None
        for cls in signature:
            local = labels[base[cls] : base[cls] + space.infos[cls].size]
            positions = torch.nonzero(torch.isin(local, atoms_t)).flatten()
            atom_of = torch.searchsorted(atoms_t, local[positions])
            counts = torch.bincount(atom_of, minlength=len(atoms_t))
            unit = int(counts[0])
            if not bool((counts == unit).all()):
                reason = reason or "its channels are coupled unevenly across tensors"
                continue
            order = torch.argsort(atom_of * len(local) + positions)
            index = positions[order].reshape(len(atoms_t), unit)
            for slot in classes.members[cls]:
                info = space.infos[slot]
                if info.tensor is not None:
                    for path, name in [info.tensor, *aliases.get(info.tensor, [])]:
                        members.append(Member(path, name, info.dim, index, info.layout, info.parameter))
                        if _ignored(path, ignored):
                            reason = reason or f"{path or 'the model'} is ignored"
            for slot in norms_by_class.get(cls, []):
                norms.append(Member(space.norms[slot], "channels_mask", 0, index, parameter=False))
            if cls in pins:
                reason = reason or pins[cls]
            if cls in taints:
                op, where = taints[cls]
                reason = reason or f"it reaches {op}, which the channel graph does not know"
                warned[op].add(where or "<model>")
            for count, what in blocks_by_class.get(cls, []):
                size = space.infos[cls].size
                if size % count:
                    reason = reason or f"{what}: {size} channels do not split into {count} blocks"
                    continue
                block = index // (size // count)
                per_block = F.one_hot(block, count).sum(1)  # entries of each channel in each block
                if bool((per_block == per_block[:, :1]).all()):
                    continue  # each channel spans every block alike (u * v of two chunks): any cut keeps them equal
                if not bool((block == block[:, :1]).all()):
                    reason = reason or f"{what}: a channel spans two blocks"
                    continue
                if len(positions) != size:  # other groups hold the other channels, and could keep other counts
                    reason = reason or f"{what}: its channels are in several groups"
                    continue
                combined = block[:, 0] if block_ids is None else block_ids * count + block[:, 0]
                block_ids = combined
        if not any(m.parameter for m in members):
            reason = reason or "it has no parameter to prune"
        if len(atoms_t) < 2:
            reason = reason or "it has a single channel"
        if block_ids is not None:
            _, block_ids = torch.unique(block_ids, return_inverse=True)
            sizes = torch.bincount(block_ids)
            if not bool((sizes == sizes[0]).all()):
                reason = reason or "its blocks (groups, heads) hold different numbers of channels"
        groups.append(
            ChannelGroup(len(groups), len(atoms_t), tuple(members), tuple(norms), block_ids, reason is None, reason)
        )
    messages = []
    for op, wheres in warned.items():
        messages.append(
            f"the channel graph does not know how {op} couples channels; the channels it touches are left"
            f" unpruned (in {', '.join(sorted(wheres))})"
        )
    return groups, messages


def trace_channels(
    model: nn.Module, example_inputs: ExampleInputs, *, ignore: IgnoreLike = (), tracer: Tracer = "auto"
) -> ChannelGraph:
    """Find every prunable channel dimension of ``model`` and the groups of coupled ones.

    Runs ``model`` once on ``example_inputs`` (a tensor, a tuple of
    positional arguments, or a dict of keyword arguments) under
    ``torch.no_grad`` and records each step; the model is left as it was.
    ``ignore`` lists modules (or their qualified names) whose channels are
    left alone. An operation the graph has no rule for leaves the groups
    that touch it unpruned, with one :class:`~pruneplug.ChannelGraphWarning`
    naming it.

    >>> import torch, pruneplug
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> graph = pruneplug.trace_channels(model, torch.randn(1, 4))
    >>> [(g.size, [m.name for m in g.members]) for g in graph.prunable]
    [(8, ['0.weight', '0.bias', '2.weight'])]
    """
    ignored = _module_paths(model, ignore)
    recording, used = _record(model, example_inputs, tracer)
    space = SlotSpace()
    space.aliases = dict(recording.tied)
    space.elastic_splits = elastic_splits(model)
    for step in recording.steps:
        _apply_and_pin_the_rest(space, step)
    for value in recording.inputs:
        for slot in space.all_of(value):
            space.pin(slot, "it reaches the model's inputs")
    for value in recording.outputs:
        for slot in space.all_of(value):
            space.pin(slot, "it reaches the model's outputs")
    for value in recording.values:
        if value.origin == "constant":
            for slot in space.all_of(value):
                space.pin(slot, "it meets a tensor made outside the traced run (a constant)")
    groups, messages = _build(space, recording, ignored)
    groups = _named_parts(model, groups)
    for message in messages:
        warnings.warn(message, ChannelGraphWarning, stacklevel=2)
    inputs = _detached(example_inputs)
    return ChannelGraph(groups, used, inputs, messages, weakref.ref(model))


def _named_parts(model: nn.Module, groups: list[ChannelGroup]) -> list[ChannelGroup]:
    """Each group of a known transformer with its part (heads, neurons, hidden) set."""
    parts = part_dims(model)
    if not parts:
        return groups
    named = []
    for group in groups:
        found = [parts[key] for key in ((m.module, m.tensor, m.dim) for m in group.members) if key in parts]
        named.append(replace(group, part=found[0]) if found else group)
    return named


def _apply_and_pin_the_rest(space: SlotSpace, step: Step) -> None:
    """Apply ``step``'s rule; pin every output dim the rule itself did not relate to anything.

    Such a dim's channels cannot shrink with any producer: a later step may
    tie it to a consumer, but that would only make a group of consumers.
    """
    ties, links, reshapes = len(space.ties), len(space.links), len(space.reshapes)
    apply_rule(space, step)
    related = {s for pair in space.ties[ties:] for s in pair}
    related |= {link[0] for link in space.links[links:]} | {link[2] for link in space.links[links:]}
    related |= {s for reshape in space.reshapes[reshapes:] for s in (*reshape.inputs, *reshape.outputs)}
    for value in step.outputs:
        for slot in space.all_of(value):
            if slot not in related:
                space.pin(slot, f"{step.name} makes it without saying where its channels come from")


def _record(model: nn.Module, example_inputs: ExampleInputs, tracer: str) -> tuple[Recording, str]:
    """The recorded run, by ``torch.fx`` where it can trace the model, else by the eager recorder."""
    if tracer not in ("auto", "fx", "eager"):
        raise InvalidParametersError(f"tracer must be 'auto', 'fx' or 'eager', not {tracer!r}")
    if tracer != "eager":
        try:
            return record_fx(model, example_inputs, is_rule_module), "fx"
        except FxUnavailable as error:
            if tracer == "fx":
                raise ChannelTraceError(f"torch.fx cannot trace the model: {error}") from error
            return record(model, example_inputs, is_rule_module), f"eager (torch.fx could not trace it: {error})"
    return record(model, example_inputs, is_rule_module), "eager"


def _detached(example_inputs: ExampleInputs) -> ExampleInputs:
    return tree_map(lambda t: t.detach().clone() if isinstance(t, Tensor) else t, example_inputs)  # type: ignore[no-any-return]
