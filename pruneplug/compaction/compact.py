"""Physical compaction: remove every channel whose whole coupled group is masked.

After :func:`pruneplug.prune_channels` the model is a masked preview; here
its tensors become smaller. For every prunable group of the channel graph,
the channels masked in every parameter of the group are sliced out of every
member (parameters, masks, BatchNorm running statistics), the layers'
attributes are rewritten to match (:mod:`.resize`), norms drop their channel
masks, and ``nn.MultiheadAttention``'s query rows are rescaled by
``sqrt(head_dim' / head_dim)`` (its attention scale follows the head size,
which shrinks).

The masked model already computes without the pruned channels: their
outputs are zero and every consumer's input columns for them are masked, so
a channel whose value after pruning is a nonzero constant (``sigmoid(0)``, a
non-affine BatchNorm in eval mode) contributes nothing before compaction
either, and no bias needs folding. Compaction checks this: the compacted
model's outputs on the example inputs must equal the masked model's within
``atol + rtol * max|output|`` (fp32: ``atol=1e-5``, ``rtol=1e-4``, as fewer
terms are summed in another order; half precision: ``1e-2`` both), in eval
mode, and in train mode too when the model was training and has no active
dropout. Otherwise everything is put back and :class:`~pruneplug.CompactionError`
is raised.

Parameters keep their identity (their ``.data`` is replaced), so a model's
parameter list stays valid, but any optimizer state (momentum, Adam moments)
no longer fits: build the optimizer again after compacting.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten

from ..api.prune import refresh
from ..core.cache import uncached
from ..core.commit import ModuleSnapshot, remove_pruning
from ..core.norms import norm_channels_mask, unmask_norm_channels
from ..errors import CompactionError, PruneplugError
from ..storage.packed import is_packed, pack_mask, plain
from .graph import ChannelGraph, ChannelGroup, trace_channels
from .hf import AttributeLog, rewrite_sizes_safely
from .macs import count_params, counting_macs
from .prune import alive_channels, cached_graph, forget_graph
from .report import CompactionReport
from .resize import layer_attributes, norm_width, resizable, set_norm_width
from .trace import ExampleInputs, as_call_args, buffers_kept

__all__ = ["compact"]


@dataclass
class _Cut:
    """What to remove from one tensor: entries per plain dim, and grouped-convolution input channels."""

    plain: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))
    grouped: set[int] = field(default_factory=set)
    groups: int = 1


def _removable(model: nn.Module, graph: ChannelGraph) -> list[tuple[ChannelGroup, Tensor]]:
    found = []
    for group in graph.prunable:
        dead = ~alive_channels(model, group)
        if not bool(dead.any()) or bool(dead.all()):
            continue
        if group.blocks is not None:
            per_block = torch.bincount(group.blocks[~dead], minlength=group.block_count)
            if not bool((per_block == per_block[0]).all()):
                continue  # masked by other means, unevenly across blocks: the layer could not be rebuilt
        found.append((group, dead))
    return found


def _cuts(removals: list[tuple[ChannelGroup, Tensor]]) -> tuple[dict[tuple[str, str], _Cut], dict[str, set[int]]]:
    cuts: dict[tuple[str, str], _Cut] = defaultdict(_Cut)
    norms: dict[str, set[int]] = defaultdict(set)
    for group, dead in removals:
        for member in group.members:
            entries = member.index[dead].reshape(-1).tolist()
            cut = cuts[(member.module, member.tensor)]
            if member.layout[0] == "grouped":
                cut.grouped.update(entries)
                cut.groups = member.layout[1]
            else:
                cut.plain[member.dim].update(entries)
        for norm in group.norms:
            norms[norm.module].update(norm.index[dead].reshape(-1).tolist())
    return cuts, norms


def _kept(size: int, removed: set[int]) -> Tensor:
    keep = torch.ones(size, dtype=torch.bool)
    if removed:
        keep[torch.tensor(sorted(removed))] = False
    return torch.nonzero(keep).flatten()


def _slice(tensor: Tensor, cut: _Cut, where: str) -> Tensor:
    result = tensor
    for dim, removed in sorted(cut.plain.items()):
        if dim == 0 and cut.grouped:
            continue
        result = result.index_select(dim, _kept(result.shape[dim], removed).to(result.device))
    if cut.grouped:
        result = _slice_grouped(result, cut, where)
    return result


def _slice_grouped(weight: Tensor, cut: _Cut, where: str) -> Tensor:
    """A grouped convolution's weight without the cut rows and input channels, block by block."""
    groups = cut.groups
    out, per_group = weight.shape[0], weight.shape[1]
    rows = _kept(out, cut.plain.get(0, set()))
    columns = _kept(per_group * groups, cut.grouped)
    pieces = []
    for b in range(groups):
        rows_b = rows[(rows >= b * (out // groups)) & (rows < (b + 1) * (out // groups))]
        cols_b = columns[columns // per_group == b] % per_group
        pieces.append(weight[rows_b.to(weight.device)][:, cols_b.to(weight.device)])
    if len({p.shape for p in pieces}) != 1:
        raise CompactionError(f"{where}: the groups of the convolution would keep different numbers of channels")
    return torch.cat(pieces)


_Restore = Callable[[Tensor], Tensor]  # the values a tensor had, from the values it has now


@dataclass
class _Undo:
    """What compaction changed, to put back if its check fails.

    A sliced tensor keeps only its removed slices here, not its old values
    whole: the kept slices are in the tensor, so a rollback needs nothing
    more, and the model does not hold its old and new weights at once.
    """

    snapshots: dict[int, ModuleSnapshot] = field(default_factory=dict)
    data: list[tuple[Tensor, _Restore]] = field(default_factory=list)
    grads: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    attributes: AttributeLog = field(default_factory=AttributeLog)  # config and size attributes rewritten
    sliced: set[int] = field(default_factory=set)  # ids of the parameters already sliced

    def keep(self, module: nn.Module) -> None:
        if id(module) not in self.snapshots:
            self.snapshots[id(module)] = ModuleSnapshot(module)

    def set_data(self, tensor: Tensor, new: Tensor) -> None:
        old = tensor.data
        self.data.append((tensor, lambda _: old))
        tensor.data = new

    def slice_data(self, tensor: Tensor, cut: _Cut, where: str) -> None:
        """Slice ``tensor``'s values in place, remembering the removed slices.

        The whole old tensor is kept instead for grouped cuts, and for a tensor
        that is a view into a larger storage or not contiguous (channels-last):
        a rebuilt one would be contiguous, in a storage of its own.
        """
        old = tensor.data
        shared = old.storage_offset() != 0 or old.untyped_storage().nbytes() != old.numel() * old.element_size()
        if cut.grouped or shared or not old.is_contiguous():
            # (a view into a larger buffer, or another layout: only the old tensor itself restores that exactly)
            self.set_data(tensor, _slice(old, cut, where))
            return
        del old
        steps: list[tuple[int, torch.Size, Tensor, Tensor, Tensor]] = []
        result = tensor.data
        for dim, removed in sorted(cut.plain.items()):
            kept = _kept(result.shape[dim], removed).to(result.device)
            gone = torch.tensor(sorted(removed), dtype=torch.long, device=result.device)
            steps.append((dim, result.shape, kept, gone, result.index_select(dim, gone)))
            result = result.index_select(dim, kept)
        self.data.append((tensor, lambda current: _unslice(current, steps)))
        tensor.data = result

    def set_grad(self, tensor: Tensor, new: Tensor) -> None:
        self.grads.append((tensor, tensor.grad))  # type: ignore[arg-type]  # (only called when there is one)
        tensor.grad = new

    def restore(self) -> None:
        for tensor, restore in reversed(self.data):
            tensor.data = restore(tensor.data)
        for tensor, old in reversed(self.grads):  # (a .grad must have its tensor's shape when set)
            tensor.grad = old
        for snapshot in self.snapshots.values():
            snapshot.restore()
        self.attributes.restore()


def _unslice(current: Tensor, steps: list[tuple[int, torch.Size, Tensor, Tensor, Tensor]]) -> Tensor:
    """The tensor before :meth:`_Undo.slice_data`: kept and removed slices put back in place, last cut first."""
    for dim, shape, kept, gone, removed in reversed(steps):
        whole = current.new_empty(shape)
        whole.index_copy_(dim, kept, current)
        whole.index_copy_(dim, gone, removed)
        current = whole
    return current


def _slice_parameter(parameter: Tensor, cut: _Cut, where: str, undo: _Undo) -> None:
    """Slice a parameter's values, and its gradient alike: a stale one of the old shape breaks the next backward.

    A tied parameter (one tensor under several names) is sliced once.
    """
    if id(parameter) in undo.sliced:
        return
    undo.sliced.add(id(parameter))
    undo.slice_data(parameter, cut, where)
    if parameter.grad is not None:
        undo.set_grad(parameter, _slice(parameter.grad, cut, where))


def _cut_tensor(module: nn.Module, path: str, name: str, cut: _Cut, undo: _Undo) -> None:
    where = f"{path}.{name}" if path else name
    orig = module._parameters.get(name + "_orig")
    if orig is not None:  # pruned: slice the original and the mask alike
        stored = module._buffers[name + "_mask"]
        assert stored is not None
        mask = plain(stored)
        _slice_parameter(orig, cut, where, undo)
        new_mask = _slice(mask, cut, where).contiguous()
        module._buffers[name + "_mask"] = pack_mask(new_mask) if is_packed(stored) else new_mask
        if bool(new_mask.all()):
            remove_pruning(module, name, unmasked=True)
        return
    if name in module._parameters and module._parameters[name] is not None:
        parameter = module._parameters[name]
        assert parameter is not None
        _slice_parameter(parameter, cut, where, undo)
        return
    buffer = module._buffers.get(name)
    if buffer is not None:
        module._buffers[name] = _slice(buffer, cut, where)


def _apply(model: nn.Module, cuts: dict[tuple[str, str], _Cut], norms: dict[str, set[int]], undo: _Undo) -> None:
    by_module: dict[str, list[tuple[str, _Cut]]] = defaultdict(list)
    for (path, name), cut in cuts.items():
        by_module[path].append((name, cut))
    for path in set(by_module) | set(norms):
        undo.keep(model.get_submodule(path))
    attention = {}
    for path in by_module:
        module = model.get_submodule(path)
        if isinstance(module, nn.MultiheadAttention):
            attention[path] = module.embed_dim // module.num_heads
    for path, items in by_module.items():
        module = model.get_submodule(path)
        for name, cut in items:
            _cut_tensor(module, path, name, cut, undo)
    for path, removed in norms.items():
        module = model.get_submodule(path)
        keep = norm_channels_mask(module)
        if keep is not None:
            unmask_norm_channels(module)
        set_norm_width(module, norm_width(module) - len(removed))
    for path in by_module:
        module = model.get_submodule(path)
        if resizable(module):
            for attribute, value in layer_attributes(module, {}, path).items():
                setattr(module, attribute, value)
        if path in attention:
            _rescale_queries(module, attention[path], undo)
    refresh(model)


def _rescale_queries(module: nn.Module, old_head_dim: int, undo: _Undo) -> None:
    """Keep ``q·k / sqrt(head_dim)`` as it was: the query rows absorb the change of head size.

    Writes ``.data``; the caller refreshes the masked tensors afterwards.
    """
    assert isinstance(module, nn.MultiheadAttention)
    new_head_dim = module.embed_dim // module.num_heads
    if new_head_dim == old_head_dim:
        return
    factor = math.sqrt(new_head_dim / old_head_dim)
    embed = module.embed_dim
    for name in ("in_proj_weight", "in_proj_bias"):
        tensor = module._parameters.get(name + "_orig", module._parameters.get(name))
        if tensor is None:
            continue
        scaled = tensor.data.clone()
        scaled[:embed] *= factor
        undo.set_data(tensor, scaled)


# -- checking --------------------------------------------------------------------------------------


@contextmanager
def _mode(model: nn.Module, train: bool) -> Iterator[None]:
    flags = [(m, m.training) for m in model.modules()]
    model.train(train)
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


@contextmanager
def _no_fast_path() -> Iterator[None]:
    """Keep ``nn.MultiheadAttention`` off its fused path, whose single kernel the MAC counter does not know."""
    was = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(was)


def _run(model: nn.Module, inputs: ExampleInputs, train: bool) -> tuple[list[Tensor], int]:
    """The model's outputs on ``inputs`` in train or eval mode, and the MACs of that forward."""
    args, kwargs = as_call_args(inputs)
    with (
        buffers_kept(model),
        uncached(),
        torch.no_grad(),
        _mode(model, train),
        _no_fast_path(),
        counting_macs() as counter,
    ):
        output = model(*args, **kwargs)
    return [t.detach().clone() for t in tree_flatten(output)[0] if isinstance(t, Tensor)], counter.macs()


def _tolerances(outputs: list[Tensor], rtol: float | None, atol: float | None) -> tuple[float, float]:
    low = any(t.dtype in (torch.float16, torch.bfloat16) for t in outputs)
    return (1e-2 if low else 1e-4) if rtol is None else rtol, (1e-2 if low else 1e-5) if atol is None else atol


def _difference(reference: list[Tensor], outputs: list[Tensor], rtol: float, atol: float) -> tuple[float, float, str]:
    """``(max abs difference, allowed, what differs)``; ``what`` is empty when they agree."""
    if len(reference) != len(outputs):
        return math.inf, 0.0, f"{len(outputs)} outputs instead of {len(reference)}"
    worst, allowed = 0.0, 0.0
    for i, (a, b) in enumerate(zip(reference, outputs, strict=True)):
        if a.shape != b.shape:
            return math.inf, 0.0, f"output {i} has shape {tuple(b.shape)} instead of {tuple(a.shape)}"
        if not a.is_floating_point():
            if not torch.equal(a, b):
                return math.inf, 0.0, f"output {i} (integer) differs"
            continue
        diff = float((a.float() - b.float()).abs().max()) if a.numel() else 0.0
        bound = atol + rtol * (float(a.float().abs().max()) if a.numel() else 0.0)
        if math.isnan(diff) or diff > bound:
            return diff, bound, f"output {i} differs by up to {diff:.3g} (allowed {bound:.3g})"
        worst, allowed = max(worst, diff), max(allowed, bound)
    return worst, allowed, ""


def _active_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())


def compact(
    model: nn.Module,
    example_inputs: ExampleInputs | None = None,
    *,
    rtol: float | None = None,
    atol: float | None = None,
) -> CompactionReport:
    """Remove every channel whose whole group is masked, in place; returns what changed.

    Args:
        model: a model pruned by :func:`pruneplug.prune_channels` (or one
            whose coupled channels were all masked by other means).
        example_inputs: what the model is called with, for the output check
            (and for tracing the channel graph, when the model was not pruned
            by :func:`pruneplug.prune_channels` in this process); default: the
            inputs ``prune_channels`` traced with.
        rtol, atol: how far the compacted outputs may be from the masked
            ones (default: fp32 ``1e-4``/``1e-5``, half precision ``1e-2``).

    Raises:
        CompactionError: no example inputs are known, or the compacted
            model's outputs differ from the masked model's (the model is then
            exactly as it was).
    """
    graph = cached_graph(model)
    inputs = example_inputs if example_inputs is not None else (graph.example_inputs if graph else None)
    if inputs is None:
        raise CompactionError(
            "compact needs example_inputs: this model was not pruned by prune_channels in this session"
        )
    if graph is None:
        graph = trace_channels(model, inputs)
    params_before = count_params(model)
    removals = _removable(model, graph)
    modes: list[Literal["eval", "train"]] = ["eval"]
    if model.training and not _active_dropout(model):
        modes.append("train")
    reference: dict[str, list[Tensor]] = {}
    macs: dict[str, int] = {}
    for mode in list(modes):
        try:
            reference[mode], macs[mode] = _run(model, inputs, mode == "train")
        except Exception as error:
            if mode == "eval":
                raise CompactionError(f"the masked model fails on example_inputs: {error}") from error
            modes.remove(mode)
    cuts, norms = _cuts(removals)
    undo = _Undo()
    worst, allowed = 0.0, 0.0
    try:
        _apply(model, cuts, norms, undo)
        sizes = rewrite_sizes_safely(model, undo.attributes)
        for mode in modes:
            try:
                outputs, macs_after = _run(model, inputs, mode == "train")
                if mode == "eval":
                    macs["after"] = macs_after
            except Exception as error:
                raise CompactionError(
                    f"the compacted model fails on example_inputs in {mode} mode ({type(error).__name__}: {error});"
                    " its forward may use a hard-coded size (e.g. x.view(-1, 400))"
                ) from error
            rtol_, atol_ = _tolerances(reference[mode], rtol, atol)
            diff, bound, what = _difference(reference[mode], outputs, rtol_, atol_)
            if what:
                raise CompactionError(f"the compacted model does not compute what the masked one did ({mode}): {what}")
            worst, allowed = max(worst, diff), max(allowed, bound)
    except BaseException as error:
        undo.restore()
        refresh(model)
        if isinstance(error, PruneplugError) or not isinstance(error, Exception):
            raise
        raise CompactionError(f"compaction failed ({type(error).__name__}: {error}); the model is as it was") from error
    forget_graph(model)
    return CompactionReport(
        params_before=params_before,
        params_after=count_params(model),
        macs_before=macs["eval"],
        macs_after=macs["after"],
        groups_compacted=len(removals),
        channels_removed={_label(group): int(dead.sum()) for group, dead in removals},
        max_abs_diff=worst,
        tolerance=allowed,
        verified_modes=tuple(modes),
        tracer=graph.tracer,
        config_sizes=sizes.uniform if sizes else {},
        per_layer_sizes=sizes.per_layer if sizes else {},
        config_mismatches=sizes.mismatched if sizes else [],
    )


def _label(group: ChannelGroup) -> str:
    return f"#{group.id} {group.name}"
