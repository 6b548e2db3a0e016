"""trace_channels and the channel rules, one structure at a time, on tiny hand-built models.

Each test asserts exact group memberships (``module.tensor[dim d]``) and, where
a rule maps channels to entries other than one-to-one, the exact indices of a
member (a flattened channel's HxW features, a depthwise multiplier's rows).
"""

from __future__ import annotations

import copy
import importlib.util
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import pruneplug
from pruneplug import ChannelGraph, ChannelGroup
from pruneplug.compaction import Member
from pruneplug.testing import assert_unchanged, snapshot

_spec = importlib.util.spec_from_file_location("compaction_helpers", Path(__file__).with_name("helpers.py"))
assert _spec is not None and _spec.loader is not None
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


def trace(model: nn.Module, *inputs: Tensor, **kwargs: object) -> ChannelGraph:
    """The channel graph, failing on any ChannelGraphWarning (the tests that expect one catch it themselves)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", pruneplug.ChannelGraphWarning)
        return pruneplug.trace_channels(model, inputs, **kwargs)  # type: ignore[arg-type]


def members(group: ChannelGroup) -> set[str]:
    return {repr(m) for m in group.members}


def member(group: ChannelGroup, name: str, dim: int) -> Member:
    found = [m for m in group.members if m.name == name and m.dim == dim]
    assert len(found) == 1, f"{name}[dim {dim}] in {members(group)}"
    return found[0]


def by_members(graph: ChannelGraph) -> dict[frozenset[str], ChannelGroup]:
    return {frozenset(members(g)): g for g in graph.groups}


def group(graph: ChannelGraph, *names: str) -> ChannelGroup:
    """The group whose members are exactly ``names``."""
    found = by_members(graph).get(frozenset(names))
    assert found is not None, f"no group of exactly {sorted(names)}; groups: {[sorted(k) for k in by_members(graph)]}"
    return found


def images(channels: int = 3, size: int = 4) -> Tensor:
    return torch.randn(2, channels, size, size)


# -- element-wise, broadcasting, residuals ---------------------------------------------------------


class ScaledByFirstChannel(nn.Module):
    """``a(x) * b(x)[:, :1]``: one channel of ``b`` broadcast over all of ``a``'s."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(3, 8, 1)
        self.c = nn.Conv2d(8, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.c(self.a(x) * self.b(x)[:, :1])
        return out


def test_a_size_1_broadcast_couples_no_channels() -> None:
    graph = trace(ScaledByFirstChannel(), images())
    main = group(graph, "a.weight[dim 0]", "a.bias[dim 0]", "c.weight[dim 1]")
    assert main.prunable and main.size == 8
    # b's channel 0 is read alone (a group of one), its seven others feed nothing: neither joins a's channels
    first = [g for g in graph.groups if "b.weight[dim 0]" in members(g) and g.size == 1]
    rest = [g for g in graph.groups if "b.weight[dim 0]" in members(g) and g.size == 7]
    assert len(first) == 1 and len(rest) == 1
    assert member(rest[0], "b.weight", 0).index.flatten().tolist() == list(range(1, 8))


class Sliced(nn.Module):
    """``b(a(x)[:, 2:])`` (or ``narrow``): fixed bounds that would pick other channels of a smaller ``a``."""

    def __init__(self, narrow: bool) -> None:
        super().__init__()
        self.narrow = narrow
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.a(x))
        out: Tensor = self.b(h.narrow(1, 2, 6) if self.narrow else h[:, 2:])
        return out


@pytest.mark.parametrize("narrow", [False, True])
def test_a_slice_of_channels_by_fixed_bounds_pins_them(narrow: bool) -> None:
    graph = trace(Sliced(narrow), torch.randn(2, 4))
    sliced = group(graph, "a.weight[dim 0]", "a.bias[dim 0]", "b.weight[dim 1]")
    assert member(sliced, "a.weight", 0).index.flatten().tolist() == list(range(2, 8))
    assert not sliced.prunable and "fixed bounds" in (sliced.reason or "")
    assert graph.prunable == []


class Residual(nn.Module):
    """``a(x) + b(a(x)) + d(x)``: three writers of one stream, read by ``b`` and ``c``."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 1)
        self.b = nn.Conv2d(6, 6, 3, padding=1)
        self.d = nn.Conv2d(3, 6, 1, bias=False)
        self.c = nn.Conv2d(6, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.a(x)
        out: Tensor = self.c(h + self.b(h) + self.d(x))
        return out


def test_a_residual_add_ties_every_writer_and_reader_into_one_group() -> None:
    graph = trace(Residual(), images())
    stream = group(
        graph,
        "a.weight[dim 0]",
        "a.bias[dim 0]",
        "b.weight[dim 1]",
        "b.weight[dim 0]",
        "b.bias[dim 0]",
        "d.weight[dim 0]",
        "c.weight[dim 1]",
    )
    assert stream.prunable and stream.size == 6
    assert len(graph.prunable) == 1
    for m in stream.members:
        assert m.index.flatten().tolist() == list(range(6))  # one to one: channel i is entry i everywhere


# -- concatenation, split, chunk -------------------------------------------------------------------


class CatLastDim(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(4, 5)
        self.c = nn.Linear(11, 3)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.c(torch.cat([self.a(x), self.b(x)], dim=-1))
        return out


def test_cat_on_the_last_dim_of_2d_tensors_offsets_the_second_piece() -> None:
    graph = trace(CatLastDim(), torch.randn(2, 4))
    first = group(graph, "a.weight[dim 0]", "a.bias[dim 0]", "c.weight[dim 1]")
    second = group(graph, "b.weight[dim 0]", "b.bias[dim 0]", "c.weight[dim 1]")
    assert first.prunable and second.prunable
    assert member(first, "c.weight", 1).index.flatten().tolist() == list(range(6))
    assert member(second, "c.weight", 1).index.flatten().tolist() == list(range(6, 11))
    assert member(second, "b.weight", 0).index.flatten().tolist() == list(range(5))


class Split(nn.Module):
    """``chunk(2)`` of ``a`` (4 + 4 channels), ``split([3, 5])`` of ``b``, each piece read by its own conv."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.p = nn.Conv2d(4, 2, 1)
        self.q = nn.Conv2d(4, 2, 1)
        self.b = nn.Conv2d(3, 8, 1)
        self.r = nn.Conv2d(3, 2, 1)
        self.t = nn.Conv2d(5, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        u, v = self.a(x).chunk(2, dim=1)
        y, z = torch.split(self.b(x), [3, 5], dim=1)
        out: Tensor = self.p(u) + self.q(v) + self.r(y) + self.t(z)
        return out


def test_split_and_chunk_give_each_piece_its_offsets_and_split_sizes_pin() -> None:
    graph = trace(Split(), images())
    u = group(graph, "a.weight[dim 0]", "a.bias[dim 0]", "p.weight[dim 1]")
    v = group(graph, "a.weight[dim 0]", "a.bias[dim 0]", "q.weight[dim 1]")
    assert member(u, "a.weight", 0).index.flatten().tolist() == [0, 1, 2, 3]
    assert member(v, "a.weight", 0).index.flatten().tolist() == [4, 5, 6, 7]
    assert member(v, "q.weight", 1).index.flatten().tolist() == [0, 1, 2, 3]
    y = group(graph, "b.weight[dim 0]", "b.bias[dim 0]", "r.weight[dim 1]")
    z = group(graph, "b.weight[dim 0]", "b.bias[dim 0]", "t.weight[dim 1]")
    assert member(z, "b.weight", 0).index.flatten().tolist() == [3, 4, 5, 6, 7]
    # split's sizes are numbers in the forward: its pieces cannot shrink
    assert not y.prunable and not z.prunable
    assert "split" in (y.reason or "") and "split" in (z.reason or "")


class ChunkGate(nn.Module):
    """``u, v = a(x).chunk(2)``, then ``u * v``: channel i of the gate is rows i and 8 + i of ``a``."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 16, 1)
        self.c = nn.Conv2d(8, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        u, v = self.a(x).chunk(2, dim=1)
        out: Tensor = self.c(u * v)
        return out


def test_chunks_multiplied_together_make_one_channel_of_a_row_in_each_chunk() -> None:
    graph = trace(ChunkGate(), images())
    gate = group(graph, "a.weight[dim 0]", "a.bias[dim 0]", "c.weight[dim 1]")
    assert gate.prunable, gate.reason
    assert gate.size == 8
    assert member(gate, "a.weight", 0).index.tolist() == [[i, 8 + i] for i in range(8)]
    assert member(gate, "c.weight", 1).index.flatten().tolist() == list(range(8))


def test_chunks_read_apart_are_left_alone_when_one_chunk_could_shrink_without_the_other() -> None:
    model = Split()
    graph = trace(model, images())
    u = group(graph, "a.weight[dim 0]", "a.bias[dim 0]", "p.weight[dim 1]")
    v = group(graph, "a.weight[dim 0]", "a.bias[dim 0]", "q.weight[dim 1]")
    # chunk(2) of fewer channels splits them evenly again, so both chunks must keep as many: two groups cannot
    assert not u.prunable and not v.prunable
    assert "chunks" in (u.reason or "")


# -- flatten into a linear layer -------------------------------------------------------------------


class Flatten(nn.Module):
    def __init__(self, channels_last: bool) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 2 * 3, 5)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        if self.channels_last:
            h = h.permute(0, 2, 3, 1)
        out: Tensor = self.fc(h.flatten(1))
        return out


def test_a_channel_major_flatten_makes_each_channel_hxw_consecutive_features() -> None:
    graph = trace(Flatten(channels_last=False), torch.randn(2, 3, 2, 3))
    flat = group(graph, "conv.weight[dim 0]", "conv.bias[dim 0]", "fc.weight[dim 1]")
    assert flat.prunable and flat.size == 4
    assert member(flat, "fc.weight", 1).index.tolist() == [list(range(6 * c, 6 * c + 6)) for c in range(4)]
    assert member(flat, "conv.weight", 0).index.tolist() == [[c] for c in range(4)]


def test_an_nhwc_flatten_makes_each_channel_every_cth_feature() -> None:
    graph = trace(Flatten(channels_last=True), torch.randn(2, 3, 2, 3))
    flat = group(graph, "conv.weight[dim 0]", "conv.bias[dim 0]", "fc.weight[dim 1]")
    assert flat.prunable
    assert member(flat, "fc.weight", 1).index.tolist() == [list(range(c, 24, 4)) for c in range(4)]


# -- convolutions ----------------------------------------------------------------------------------


class Depthwise(nn.Module):
    """A depthwise conv with channel multiplier 2: input channel c feeds output channels 2c and 2c + 1."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.dw = nn.Conv2d(4, 8, 3, padding=1, groups=4)
        self.c = nn.Conv2d(8, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.c(self.dw(self.a(x)))
        return out


def test_a_depthwise_multiplier_couples_an_input_channel_with_its_output_rows() -> None:
    graph = trace(Depthwise(), images(size=5))
    dw = group(graph, "a.weight[dim 0]", "a.bias[dim 0]", "dw.weight[dim 0]", "dw.bias[dim 0]", "c.weight[dim 1]")
    assert dw.prunable and dw.size == 4
    assert member(dw, "a.weight", 0).index.tolist() == [[0], [1], [2], [3]]
    assert member(dw, "dw.weight", 0).index.tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert member(dw, "c.weight", 1).index.tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_a_compacted_depthwise_conv_stays_depthwise_with_its_multiplier() -> None:
    model = Depthwise()
    x = images(size=5)
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=x)
    masked = copy.deepcopy(model)
    pruneplug.compact(model)
    dw = model.dw
    assert (dw.in_channels, dw.out_channels, dw.groups) == (2, 4, 2)
    assert tuple(dw.weight.shape) == (4, 1, 3, 3)
    helpers.masked_and_compacted_agree(masked, model, (x,))


class Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.g = nn.Conv2d(8, 12, 3, padding=1, groups=4)
        self.c = nn.Conv2d(12, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.c(self.g(self.a(x)))
        return out


def test_a_grouped_conv_keeps_as_many_channels_in_every_group_and_keeps_groups() -> None:
    model = Grouped()
    x = images(size=5)
    graph = trace(model, x)
    inputs = group(graph, "a.weight[dim 0]", "a.bias[dim 0]", "g.weight[dim 1, grouped(4)]")
    outputs = group(graph, "g.weight[dim 0]", "g.bias[dim 0]", "c.weight[dim 1]")
    assert inputs.prunable and outputs.prunable
    assert inputs.blocks is not None and inputs.blocks.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert outputs.blocks is not None and outputs.blocks.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert member(inputs, "g.weight", 1).layout == ("grouped", 4)

    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=x)
    kept_inputs = model.a.weight_mask.flatten(1).any(1)  # a's rows are g's input channels
    kept_outputs = model.g.weight_mask.flatten(1).any(1)
    assert kept_inputs.view(4, 2).sum(1).tolist() == [1, 1, 1, 1]  # as many kept in every group
    assert kept_outputs.view(4, 3).sum(1).unique().numel() == 1
    masked = copy.deepcopy(model)
    pruneplug.compact(model)
    assert (model.g.in_channels, model.g.out_channels, model.g.groups) == (4, 8, 4)
    helpers.masked_and_compacted_agree(masked, model, (x,))


class Transposed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 1)
        self.up = nn.ConvTranspose2d(6, 4, 2, stride=2)
        self.c = nn.Conv2d(4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.c(self.up(self.a(x)))
        return out


def test_a_conv_transpose_takes_its_inputs_on_dim_0_and_its_outputs_on_dim_1() -> None:
    model = Transposed()
    x = images()
    graph = trace(model, x)
    group(graph, "a.weight[dim 0]", "a.bias[dim 0]", "up.weight[dim 0]")
    out = group(graph, "up.weight[dim 1]", "up.bias[dim 0]", "c.weight[dim 1]")
    assert graph.group_of(model.up, "weight") is out  # its output channels: dim 1 of a transposed weight
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=x)
    masked = copy.deepcopy(model)
    pruneplug.compact(model)
    assert (model.up.in_channels, model.up.out_channels) == (3, 2)
    helpers.masked_and_compacted_agree(masked, model, (x,))


# -- what is pinned --------------------------------------------------------------------------------


class Reduced(nn.Module):
    """``c(b(x)) + reduce(a(x), dim=1)``: ``a``'s channels are reduced over."""

    def __init__(self, reduction: str) -> None:
        super().__init__()
        self.reduction = reduction
        self.a = nn.Conv2d(3, 6, 1)
        self.b = nn.Conv2d(3, 6, 1)
        self.c = nn.Conv2d(6, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        reduced = getattr(self.a(x), self.reduction)(1, keepdim=True)
        out: Tensor = self.c(self.b(x)) + reduced
        return out


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_a_reduction_over_channels_pins_them(reduction: str) -> None:
    # mean would change with fewer channels; sum would not, but is pinned too (rules.py: the graph does not
    # track which channels are zero, so every reduction over a channel dim pins it)
    graph = trace(Reduced(reduction), images())
    reduced = group(graph, "a.weight[dim 0]", "a.bias[dim 0]")
    assert not reduced.prunable
    assert reduced.reason is not None and f"{reduction} over this dim" in reduced.reason
    assert group(graph, "b.weight[dim 0]", "b.bias[dim 0]", "c.weight[dim 1]").prunable


def test_the_model_s_inputs_and_outputs_are_pinned_without_being_ignored() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 2 * 2, 10))
    graph = trace(model, images())
    image = group(graph, "0.weight[dim 1]")
    classes = group(graph, "3.weight[dim 0]", "3.bias[dim 0]")
    assert not image.prunable and "inputs" in (image.reason or "")
    assert not classes.prunable and "outputs" in (classes.reason or "")
    assert [members(g) for g in graph.prunable] == [{"0.weight[dim 0]", "0.bias[dim 0]", "3.weight[dim 1]"}]


def test_ignore_leaves_the_groups_of_a_module_alone_by_object_or_name() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(2, 4)
    for ignore in ([model[2]], ["2"]):
        graph = trace(model, x, ignore=ignore)
        assert graph.prunable == []  # both hidden groups touch model[2]
        touching = [g for g in graph.groups if any(m.module == "2" for m in g.members)]
        assert len(touching) == 2 and all(g.reason == "2 is ignored" for g in touching)
    graph = trace(model, x, ignore=[model[4]])
    assert [members(g) for g in graph.prunable] == [{"0.weight[dim 0]", "0.bias[dim 0]", "2.weight[dim 1]"}]


# -- an operation without a rule -------------------------------------------------------------------


class Twist(torch.autograd.Function):
    """A custom autograd function: the graph cannot see what its forward does to channels."""

    @staticmethod
    def forward(ctx: object, x: Tensor) -> Tensor:
        return x * 2

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:
        return grad * 2


class Twisted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(8, 8)
        self.c = nn.Linear(8, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.b(Twist.apply(F.relu(self.a(x))))
        out: Tensor = self.c(F.relu(h))
        return out


def test_an_unknown_autograd_function_leaves_its_groups_alone_with_one_warning() -> None:
    model = Twisted()
    x = torch.randn(2, 4)
    with pytest.warns(pruneplug.ChannelGraphWarning) as caught:
        graph = pruneplug.trace_channels(model, x)
    messages = [str(w.message) for w in caught if issubclass(w.category, pruneplug.ChannelGraphWarning)]
    assert len(messages) == 1 and "Twist" in messages[0]
    # what goes in and what comes out are not known to be the same channels: two groups, both left alone
    for twisted in (group(graph, "a.weight[dim 0]", "a.bias[dim 0]"), group(graph, "b.weight[dim 1]")):
        assert not twisted.prunable and "Twist" in (twisted.reason or "")
    assert graph.warnings == messages
    assert group(graph, "b.weight[dim 0]", "b.bias[dim 0]", "c.weight[dim 1]").prunable

    with pytest.warns(pruneplug.ChannelGraphWarning):
        pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=x)
    assert not pruneplug.is_pruned(model.a)
    assert int((~model.b.weight_mask.any(1)).sum()) == 4  # b's pruned


# -- the graph object ------------------------------------------------------------------------------


def test_group_of_and_groups_of_find_a_tensor_s_groups() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 2))
    graph = trace(model, torch.randn(2, 4))
    hidden = graph.group_of(model[2], "weight", dim=1)
    out = graph.group_of(model[2], "weight")  # dim=None: its output channels
    assert hidden is not None and hidden.size == 8
    assert out is not None and out.size == 6 and out is graph.group_of("2", "weight", dim=0)
    assert graph.groups_of(model[2], "weight") == sorted([hidden, out], key=lambda g: g.id)
    assert graph.group_of(model[2], "bias") is out
    assert graph.group_of(model[0], "missing") is None
    with pytest.raises(pruneplug.InvalidTargetError):
        graph.group_of(nn.Linear(2, 2), "weight")
    text = str(graph)
    assert f"{len(graph.groups)} groups, 2 prunable, 14 prunable channels" in text
    assert "2.weight[dim 1]" in text and "left alone: it reaches the model's inputs" in text


@pytest.mark.parametrize("tracer", ["fx", "eager"])
def test_tracing_changes_nothing_on_a_training_model(tracer: str) -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 2, 1))
    helpers.randomize_norms(model)
    model.train()
    model[1].eval()  # a mixed state: the flags must all stay as they are
    before = snapshot(model)
    graph = trace(model, images(), tracer=tracer)
    assert_unchanged(before, model)
    assert int(model[1].num_batches_tracked) == 0
    model[1].train()
    before = snapshot(model)
    trace(model, images(), tracer=tracer)
    assert_unchanged(before, model)  # train-mode BatchNorm's running statistics and counter put back
    assert graph.tracer == tracer


def test_tracing_leaves_no_global_module_hook_behind() -> None:
    # a global hook left registered makes every later torch.compile(module) warn about it
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    trace(model, torch.randn(2, 4))
    with pytest.raises(pruneplug.ChannelTraceError):
        trace(model, torch.randn(2, 5))
    assert not nn.modules.module._has_any_global_hook()


class Branching(nn.Module):
    """A forward whose Python control flow depends on the data: torch.fx cannot read it."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(8, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.a(x))
        if x.sum() > 0:  # (a condition on h, a reduction over its channels, would pin them)
            h = h * 2
        out: Tensor = self.b(h)
        return out


def test_a_model_fx_cannot_read_is_recorded_eagerly_and_says_why() -> None:
    model, x = Branching(), torch.randn(2, 4)
    graph = trace(model, x)
    assert graph.tracer.startswith("eager (torch.fx could not trace it:")
    assert [members(g) for g in graph.prunable] == [{"a.weight[dim 0]", "a.bias[dim 0]", "b.weight[dim 1]"}]
    with pytest.raises(pruneplug.ChannelTraceError, match="torch.fx cannot trace the model"):
        trace(model, x, tracer="fx")
    with pytest.raises(pruneplug.InvalidParametersError, match="tracer must be"):
        trace(model, x, tracer="export")


class HandAttention(nn.Module):
    """Attention written out: q/k/v rows viewed as (heads, head size), key/value heads shared by query heads."""

    def __init__(self, width: int = 32, heads: int = 4, kv_heads: int = 2, head_size: int = 8, gqa: bool = True):
        super().__init__()
        self.head_size, self.gqa = head_size, gqa
        self.q = nn.Linear(width, heads * head_size)
        self.k = nn.Linear(width, kv_heads * head_size)
        self.v = nn.Linear(width, kv_heads * head_size)
        self.o = nn.Linear(heads * head_size, width)

    def forward(self, x: Tensor) -> Tensor:
        b, s, _ = x.shape
        q = self.q(x).view(b, s, -1, self.head_size).transpose(1, 2)
        k = self.k(x).view(b, s, -1, self.head_size).transpose(1, 2)
        v = self.v(x).view(b, s, -1, self.head_size).transpose(1, 2)
        if self.gqa:
            y = F.scaled_dot_product_attention(q, k, v, scale=self.head_size**-0.5, enable_gqa=True)
        else:  # repeat_kv: each key/value head expanded over the query heads it serves
            kv_heads, r = k.shape[1], q.shape[1] // k.shape[1]  # (from the shapes, which compaction changes)
            k = k[:, :, None].expand(b, kv_heads, r, s, self.head_size).reshape(b, -1, s, self.head_size)
            v = v[:, :, None].expand(b, kv_heads, r, s, self.head_size).reshape(b, -1, s, self.head_size)
            y = torch.softmax(q @ k.transpose(-1, -2) * self.head_size**-0.5, -1) @ v
        return self.o(y.transpose(1, 2).reshape(b, s, -1))


@pytest.mark.parametrize("gqa", [True, False], ids=["enable_gqa", "repeat_kv"])
def test_a_key_value_head_takes_the_query_heads_it_serves_along(gqa: bool) -> None:
    model = HandAttention(gqa=gqa).eval()
    x = torch.randn(2, 5, 32)
    graph = pruneplug.trace_channels(model, x)
    heads = graph.group_of("q", "weight")
    assert heads is not None and heads.prunable and heads.size == 2  # the 2 key/value heads
    index = {m.name: m.index for m in heads.members}
    assert index["q.weight"].tolist() == [list(range(0, 16)), list(range(16, 32))]  # 2 query heads of 8 each
    assert index["k.weight"].tolist() == [list(range(0, 8)), list(range(8, 16))]
    assert index["o.weight"].tolist() == index["q.weight"].tolist()  # o's columns, as q's rows
    pruneplug.prune_channels(
        model, "ln_structured", n=2, amount=0.5, example_inputs=x, group_filter=lambda g: g.size == 2
    )
    with torch.no_grad():
        masked = model(x)
    pruneplug.compact(model)
    assert (model.q.out_features, model.k.out_features, model.o.in_features) == (16, 8, 16)
    with torch.no_grad():
        assert torch.allclose(model(x), masked, atol=1e-6)


class FixedHeads(nn.Module):
    """nanoGPT-style: the head count is a number in the forward (``view(B, T, self.heads, -1)``)."""

    def __init__(self, width: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        q, k, v = (p(x).view(b, t, self.heads, -1).transpose(1, 2) for p in (self.q, self.k, self.v))
        return self.o(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, -1))


def test_heads_counted_by_a_number_in_the_forward_are_left_alone() -> None:
    """Only a size left to torch (-1) follows when heads go: a written head count would not shrink."""
    graph = pruneplug.trace_channels(FixedHeads().eval(), torch.randn(1, 3, 16))
    for name in ("q", "o"):
        group = graph.group_of(name, "weight", 0 if name == "q" else 1)
        assert group is not None and not group.prunable, graph.summary()
