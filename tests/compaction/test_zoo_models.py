"""The compaction tests' model zoo (``zoo.py``): every model builds, runs, and has the structure it is there for.

A zoo model that silently lost its grouped conv, its skip concatenation or its
unequal split would let the compaction tests pass without testing that case, so
each structural feature named in issue #13 is checked here by module attributes
and, for what happens in ``forward``, on a ``torch.fx`` trace of the model.
Parameter counts are computed by formula, independently of the zoo's code.
"""

from __future__ import annotations

import importlib.util
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.fx
from torch import Tensor, nn

from pruneplug.models import LeNet

_spec = importlib.util.spec_from_file_location("compaction_zoo", Path(__file__).with_name("zoo.py"))
assert _spec is not None and _spec.loader is not None
zoo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(zoo)

ALL: dict[str, Callable[[], tuple[nn.Module, tuple[Tensor, ...]]]] = {**zoo.ZOO, **zoo.EXTRA}

# name: (example input shapes, output shape)
SHAPES: dict[str, tuple[list[tuple[int, ...]], tuple[int, ...]]] = {
    "resnet_basic": ([(2, 3, 32, 32)], (2, 10)),
    "resnet_bottleneck": ([(2, 3, 32, 32)], (2, 10)),
    "mobilenet_v2": ([(2, 3, 32, 32)], (2, 10)),
    "densenet_block": ([(2, 3, 32, 32)], (2, 10)),
    "unet": ([(2, 3, 32, 32)], (2, 2, 32, 32)),
    "vgg": ([(2, 3, 32, 32)], (2, 10)),
    "vit": ([(2, 3, 16, 16)], (2, 10)),
    "resnext": ([(2, 3, 32, 32)], (2, 10)),
    "cat_split": ([(2, 3, 16, 16)], (2, 10)),
    "lenet": ([(2, 1, 28, 28)], (2, 10)),
    "mlp": ([(2, 20)], (2, 10)),
    "se_block": ([(2, 3, 16, 16)], (2, 10)),
    "groupnorm_net": ([(2, 3, 16, 16)], (2, 10)),
    "conv1d_net": ([(2, 2, 64)], (2, 4)),
    "instancenorm_net": ([(2, 3, 16, 16)], (2, 10)),
    "prelu_net": ([(2, 3, 16, 16)], (2, 10)),
    "embedding_mlp": ([(2, 8)], (2, 5)),
}


def build(name: str) -> tuple[Any, tuple[Tensor, ...]]:
    """The zoo's model ``name`` (typed loosely: the tests reach into its submodules) and its example inputs."""
    return ALL[name]()


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv(cin: int, cout: int, k: int, *, groups: int = 1, bias: bool = True) -> int:
    """Parameters of a ``k x k`` convolution (``k`` alone for 1-D)."""
    return cout * (cin // groups) * k * k + (cout if bias else 0)


def norm(channels: int) -> int:
    """Parameters of an affine BatchNorm, LayerNorm, GroupNorm or InstanceNorm: a weight and a bias per channel."""
    return 2 * channels


def linear(cin: int, cout: int) -> int:
    return cin * cout + cout


def traced(model: nn.Module) -> torch.fx.GraphModule:
    return torch.fx.symbolic_trace(model)


def calls(graph: torch.fx.GraphModule, target: object) -> list[Any]:
    """The calls of ``target`` (a function, or a method's name) in ``graph``, in order.

    The nodes are typed ``Any``: the tests walk their arguments, which torch types as any argument at all.
    """
    ops = ("call_function", "call_method")
    return [node for node in graph.graph.nodes if node.op in ops and node.target == target]


def modules(model: nn.Module, kind: type[nn.Module]) -> list[Any]:
    return [module for module in model.modules() if type(module) is kind]


def test_the_registries_hold_the_issue_s_models() -> None:
    assert list(zoo.ZOO) == [
        "resnet_basic",
        "resnet_bottleneck",
        "mobilenet_v2",
        "densenet_block",
        "unet",
        "vgg",
        "vit",
        "resnext",
        "cat_split",
        "lenet",
        "mlp",
    ]
    assert list(zoo.EXTRA) == [
        "se_block",
        "groupnorm_net",
        "conv1d_net",
        "instancenorm_net",
        "prelu_net",
        "embedding_mlp",
    ]
    assert list(SHAPES) == list(ALL)


@pytest.mark.parametrize("name", list(ALL))
def test_a_model_runs_its_example_inputs_in_eval_and_in_train_mode(name: str) -> None:
    model, inputs = build(name)
    input_shapes, output_shape = SHAPES[name]
    assert isinstance(model, nn.Module)
    assert isinstance(inputs, tuple)
    assert [tuple(x.shape) for x in inputs] == input_shapes
    model.eval()
    with torch.no_grad():
        out = model(*inputs)
    assert tuple(out.shape) == output_shape
    assert torch.isfinite(out).all()
    model.train()
    out = model(*inputs)
    assert tuple(out.shape) == output_shape
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    # every parameter reaches the output: a compaction that dropped one would change the result
    unused = [key for key, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert unused == []


@pytest.mark.parametrize("name", list(ALL))
def test_the_caller_s_seed_decides_the_weights_and_the_inputs(name: str) -> None:
    torch.manual_seed(1)
    first, first_inputs = build(name)
    torch.manual_seed(1)
    again, again_inputs = build(name)
    torch.manual_seed(2)
    other, _ = build(name)
    first_state, again_state, other_state = first.state_dict(), again.state_dict(), other.state_dict()
    assert all(torch.equal(first_state[key], again_state[key]) for key in first_state)
    assert all(torch.equal(x, y) for x, y in zip(first_inputs, again_inputs))
    assert n_params(first) == n_params(other)
    assert not all(torch.equal(first_state[key], other_state[key]) for key in first_state)


@pytest.mark.parametrize("name", list(ALL))
def test_a_model_is_small(name: str) -> None:
    """The zoo runs under every compaction test: no model is larger than LeNet (44,426 parameters)."""
    model, _ = build(name)
    assert n_params(model) <= 44_426


# --- parameter counts by formula ---------------------------------------------------------------------------------


def test_the_mlp_s_parameter_count() -> None:
    model, _ = build("mlp")
    assert n_params(model) == linear(20, 32) + linear(32, 32) + linear(32, 10) == 2_058


def test_lenet_is_the_tutorial_s() -> None:
    model, (x,) = build("lenet")
    assert type(model) is LeNet
    expected = conv(1, 6, 5) + conv(6, 16, 5) + linear(16 * 4 * 4, 120) + linear(120, 84) + linear(84, 10)
    assert n_params(model) == expected == 44_426
    assert x.dtype == torch.float32


def basic_block(cin: int, cout: int) -> int:
    shortcut = conv(cin, cout, 1, bias=False) + norm(cout) if cin != cout else 0
    return conv(cin, cout, 3, bias=False) + norm(cout) + conv(cout, cout, 3, bias=False) + norm(cout) + shortcut


def test_the_basic_resnet_s_parameter_count() -> None:
    model, _ = build("resnet_basic")
    stem = conv(3, 8, 3, bias=False) + norm(8)
    blocks = 2 * basic_block(8, 8) + basic_block(8, 16) + basic_block(16, 16)
    assert n_params(model) == stem + blocks + linear(16, 10) == 11_122


def test_the_vit_s_parameter_count() -> None:
    model, _ = build("vit")
    dim, tokens = 32, (16 // 4) ** 2 + 1
    attention = 3 * dim * dim + 3 * dim + linear(dim, dim)  # in_proj (q, k, v) and out_proj
    block = norm(dim) + attention + norm(dim) + linear(dim, 64) + linear(64, dim)
    embed = conv(3, dim, 4) + dim + tokens * dim  # patch conv, class token, position embedding
    assert n_params(model) == embed + 2 * block + norm(dim) + linear(dim, 10) == 19_626


def test_the_unet_s_parameter_count() -> None:
    model, _ = build("unet")

    def double(cin: int, cout: int) -> int:
        return conv(cin, cout, 3, bias=False) + norm(cout) + conv(cout, cout, 3, bias=False) + norm(cout)

    def up(cin: int, cout: int) -> int:
        return cin * cout * 2 * 2 + cout

    encoder = double(3, 8) + double(8, 16) + double(16, 32)
    decoder = up(32, 16) + double(32, 16) + up(16, 8) + double(16, 8) + conv(8, 2, 1)
    assert n_params(model) == encoder + decoder == 29_634


def test_the_densenet_s_parameter_count() -> None:
    model, _ = build("densenet_block")
    layers = sum(norm(8 + 4 * i) + conv(8 + 4 * i, 4, 3, bias=False) for i in range(3))
    transition = norm(20) + conv(20, 10, 1, bias=False)
    expected = conv(3, 8, 3, bias=False) + layers + transition + norm(10) + linear(10, 10)
    assert n_params(model) == expected == 1_954


# --- the structure each model is in the zoo for -------------------------------------------------------------------


def test_the_basic_resnet_has_residual_adds_and_one_strided_1x1_shortcut() -> None:
    model, _ = build("resnet_basic")
    blocks = modules(model, zoo.BasicBlock)
    assert len(blocks) == 4
    assert [block.downsample is not None for block in blocks] == [False, False, True, False]
    shortcut_conv, shortcut_bn = blocks[2].downsample
    assert (shortcut_conv.in_channels, shortcut_conv.out_channels) == (8, 16)
    assert shortcut_conv.kernel_size == (1, 1) and shortcut_conv.stride == (2, 2)
    assert isinstance(shortcut_bn, nn.BatchNorm2d) and shortcut_bn.num_features == 16
    assert isinstance(model.maxpool, nn.MaxPool2d) and isinstance(model.avgpool, nn.AdaptiveAvgPool2d)
    assert model.fc.out_features == 10
    assert len(calls(traced(model), operator.add)) == 4


def test_the_bottleneck_resnet_expands_by_4_and_downsamples_where_width_or_stride_change() -> None:
    model, _ = build("resnet_bottleneck")
    blocks = modules(model, zoo.Bottleneck)
    assert len(blocks) == 4
    assert all(block.conv3.out_channels == 4 * block.conv1.out_channels for block in blocks)
    shortcuts = [block.downsample for block in blocks]
    assert [s is not None for s in shortcuts] == [True, False, True, False]
    first, second = shortcuts[0][0], shortcuts[2][0]
    # the first stage changes the width only, the second the width and the resolution
    assert (first.in_channels, first.out_channels, first.stride) == (8, 16, (1, 1))
    assert (second.in_channels, second.out_channels, second.stride) == (16, 32, (2, 2))
    assert blocks[2].conv2.stride == (2, 2)
    assert len(calls(traced(model), operator.add)) == 4


def test_mobilenet_v2_has_depthwise_convs_a_ratio_1_block_and_a_multiplier_2_block() -> None:
    model, _ = build("mobilenet_v2")
    blocks = modules(model, zoo.InvertedResidual)
    assert len(blocks) == 4
    depthwise = [block.depthwise[0] for block in blocks]
    assert all(c.groups == c.in_channels and c.kernel_size == (3, 3) for c in depthwise)
    assert [c.out_channels // c.in_channels for c in depthwise] == [1, 1, 1, 2]
    assert (depthwise[3].in_channels, depthwise[3].out_channels, depthwise[3].groups) == (24, 48, 24)
    assert [block.expand is None for block in blocks] == [True, False, False, False]
    assert [block.use_residual for block in blocks] == [True, False, True, False]
    assert len(calls(traced(model), operator.add)) == 2
    assert len(modules(model, nn.ReLU6)) == 1 + 2 * 3 + 1 + 1  # stem, blocks (ratio 1 has one), head


def test_the_densenet_block_concatenates_every_earlier_output_along_the_channels() -> None:
    model, _ = build("densenet_block")
    cats = calls(traced(model), torch.cat)
    # each layer's input (the first a one-tensor cat, as in torchvision), then the block's output
    assert [len(node.args[0]) for node in cats] == [1, 2, 3, 4]
    assert all(node.kwargs == {"dim": 1} for node in cats)
    assert [layer.conv.in_channels for layer in model.block.layers] == [8, 12, 16]
    transition = model.transition
    assert [type(m) for m in transition.children()] == [nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.AvgPool2d]
    assert transition.conv.kernel_size == (1, 1) and (transition.conv.in_channels, transition.conv.out_channels) == (
        20,
        10,
    )


def test_the_unet_upsamples_by_transposed_convs_and_concatenates_the_skips() -> None:
    model, (x,) = build("unet")
    ups = modules(model, nn.ConvTranspose2d)
    assert [(up.in_channels, up.out_channels, up.stride) for up in ups] == [(32, 16, (2, 2)), (16, 8, (2, 2))]
    cats = calls(traced(model), torch.cat)
    assert len(cats) == 2 and all(node.kwargs == {"dim": 1} for node in cats)
    # the upsampled tensor first, the encoder's output at the same resolution second
    assert [node.args[0][0].target for node in cats] == ["up2", "up1"]
    assert [str(node.args[0][1].target).split(".")[0] for node in cats] == ["enc2", "enc1"]
    assert model.out.kernel_size == (1, 1) and model.out.out_channels == 2
    assert len(modules(model, nn.MaxPool2d)) == 1  # one module, called at both levels
    assert model(x).shape[2:] == x.shape[2:]


def test_vgg_flattens_the_feature_map_without_pooling_it_to_1x1() -> None:
    model, _ = build("vgg")
    assert modules(model, nn.AdaptiveAvgPool2d) == []
    flattens = calls(traced(model), torch.flatten)
    assert len(flattens) == 1 and flattens[0].args[1:] == (1,)
    assert flattens[0].args[0].target == "features.6"  # the last maxpool's 4x4 map, pooled no further
    last_conv = modules(model, nn.Conv2d)[-1]
    first_fc, *_, last_fc = modules(model, nn.Linear)
    assert first_fc.in_features == last_conv.out_channels * 4 * 4 == 512
    assert last_fc.out_features == 10
    assert [type(m) for m in model.classifier] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]


def test_the_vit_has_patch_tokens_a_class_token_a_position_embedding_and_batch_first_attention() -> None:
    model, _ = build("vit")
    patch = model.patch_embed
    assert patch.kernel_size == patch.stride == (4, 4) and patch.out_channels == 32
    assert isinstance(model.cls_token, nn.Parameter) and model.cls_token.shape == (1, 1, 32)
    assert isinstance(model.pos_embed, nn.Parameter) and model.pos_embed.shape == (1, 17, 32)
    # drawn at random like the weights: a zero token or embedding would hide a slicing mistake
    assert model.cls_token.count_nonzero() == 32 and model.pos_embed.count_nonzero() == 17 * 32
    attentions = modules(model, nn.MultiheadAttention)
    assert [(a.embed_dim, a.num_heads, a.batch_first) for a in attentions] == [(32, 4, True)] * 2
    assert len(modules(model, nn.LayerNorm)) == 2 * 2 + 1
    assert len(modules(model, nn.GELU)) == 2
    graph = traced(model)
    (flatten,) = calls(graph, "flatten")
    assert flatten.args[0].target == "patch_embed" and flatten.args[1:] == (2,)
    assert [node.args[1:] for node in calls(graph, "transpose")] == [(1, 2)]
    (cat,) = calls(graph, torch.cat)
    assert cat.kwargs == {"dim": 1} and cat.args[0][0].args[0].target == "cls_token"
    adds = calls(graph, operator.add)
    assert adds[0].args[1].target == "pos_embed"
    assert len(adds) == 1 + 2 * 2  # the position embedding, then two residuals a block


def test_resnext_s_3x3_convs_are_grouped_with_at_least_4_channels_a_group() -> None:
    model, _ = build("resnext")
    blocks = modules(model, zoo.ResNeXtBlock)
    assert len(blocks) == 3
    grouped = [block.conv2 for block in blocks]
    assert all(c.groups == 4 and c.in_channels // c.groups >= 4 and c.kernel_size == (3, 3) for c in grouped)
    assert [c.in_channels // c.groups for c in grouped] == [4, 4, 8]
    assert [block.downsample is not None for block in blocks] == [True, False, True]
    assert len(calls(traced(model), operator.add)) == 3


def test_cat_split_cuts_unequally_chunks_and_multiplies_the_halves() -> None:
    model, _ = build("cat_split")
    graph = traced(model)
    assert len(calls(graph, torch.cat)) == 2
    (split,) = calls(graph, torch.split)
    assert split.args[1] == [8, 16] and split.kwargs == {"dim": 1}
    (chunk,) = calls(graph, "chunk")
    assert chunk.args[1:] == (2,) and chunk.kwargs == {"dim": 1}
    (product,) = calls(graph, operator.mul)
    assert [(arg.args[0], arg.args[1]) for arg in product.args] == [(chunk, 0), (chunk, 1)]
    assert model.gate.out_channels == 2 * model.fc.in_features


def test_the_squeeze_excitation_scales_the_feature_map_by_a_sigmoid_of_its_pooled_self() -> None:
    model, _ = build("se_block")
    graph = traced(model)
    (sigmoid,) = calls(graph, torch.sigmoid)
    assert sigmoid.args[0].target == "se.fc2"
    (product,) = calls(graph, operator.mul)
    assert product.args[1] is sigmoid and str(product.args[0].target).startswith("conv1")
    assert (model.se.fc1.in_channels, model.se.fc1.out_channels, model.se.fc2.out_channels) == (16, 4, 16)


def test_the_norm_nets_norm_per_channel_with_affine_parameters() -> None:
    groupnorm, _ = build("groupnorm_net")
    assert [(m.num_groups, m.num_channels, m.affine) for m in modules(groupnorm, nn.GroupNorm)] == [
        (4, 16, True),
        (4, 32, True),
    ]
    instancenorm, _ = build("instancenorm_net")
    norms = modules(instancenorm, nn.InstanceNorm2d)
    assert [(m.num_features, m.affine, m.weight.shape[0]) for m in norms] == [(8, True, 8), (16, True, 16)]


def test_the_prelu_net_has_one_slope_per_channel() -> None:
    model, _ = build("prelu_net")
    slopes = [m.num_parameters for m in modules(model, nn.PReLU)]
    assert slopes == [c.out_channels for c in modules(model, nn.Conv2d)] == [8, 16]


def test_the_conv1d_net_runs_on_signals() -> None:
    model, (x,) = build("conv1d_net")
    assert x.dim() == 3
    assert [(c.in_channels, c.out_channels) for c in modules(model, nn.Conv1d)] == [(2, 8), (8, 16)]
    assert [b.num_features for b in modules(model, nn.BatchNorm1d)] == [8, 16]
    assert model.fc.in_features == 16


def test_the_embedding_mlp_sums_embedded_token_ids() -> None:
    model, (tokens,) = build("embedding_mlp")
    assert tokens.dtype == torch.int64 and int(tokens.min()) >= 0 and int(tokens.max()) < 100
    assert (model.embedding.num_embeddings, model.embedding.embedding_dim) == (100, 16)
    (total,) = calls(traced(model), "sum")
    assert total.kwargs == {"dim": 1}
    assert n_params(model) == 100 * 16 + linear(16, 32) + linear(32, 5)
