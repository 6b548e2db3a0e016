"""Which blocks a sequential calibration goes through, and which layers it prunes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

import pruneplug
from pruneplug.calibration.blocks import find_blocks
from pruneplug.calibration.targets import is_linear_layer, select_targets

_spec = importlib.util.spec_from_file_location("calibration_helpers", Path(__file__).with_name("helpers.py"))
assert _spec is not None and _spec.loader is not None
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


# --------------------------------------------------------------------------------------------- blocks


def test_the_default_blocks_are_the_longest_modulelist_of_one_class() -> None:
    model = helpers.Stack(depth=3)
    model.extra = nn.ModuleList([nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2), nn.Tanh()])  # longer, mixed classes
    model.pair = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])  # one class, shorter
    blocks = find_blocks(model, None)
    assert [b.name for b in blocks] == ["blocks.0", "blocks.1", "blocks.2"]
    assert [b.module for b in blocks] == list(model.blocks)


def test_a_tie_goes_to_the_list_with_more_parameters() -> None:
    model = nn.Module()
    model.small = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])
    model.large = nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 8)])
    assert [b.name for b in find_blocks(model, None)] == ["large.0", "large.1"]


def test_the_default_blocks_of_llama_and_gpt2() -> None:
    assert [b.name for b in find_blocks(helpers.tiny_llama(), None)] == ["model.layers.0", "model.layers.1"]
    assert [b.name for b in find_blocks(helpers.tiny_gpt2(), None)] == ["transformer.h.0", "transformer.h.1"]


def test_a_model_without_a_list_of_blocks_is_told_what_to_pass() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(pruneplug.InvalidTargetError, match=r"no nn.ModuleList.*blocks=\[.*sequential=False"):
        find_blocks(model, None)


def test_blocks_given_by_the_lists_name_by_module_names_or_by_modules() -> None:
    model = helpers.Stack(depth=3)
    expected = ["blocks.0", "blocks.1", "blocks.2"]
    assert [b.name for b in find_blocks(model, "blocks")] == expected
    assert [b.name for b in find_blocks(model, model.blocks)] == expected
    assert [b.name for b in find_blocks(model, ["blocks.0", "blocks.2"])] == ["blocks.0", "blocks.2"]
    assert [b.module for b in find_blocks(model, [model.blocks[1], model.head])] == [model.blocks[1], model.head]
    sequential = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    assert [b.name for b in find_blocks(sequential, list(sequential))] == ["0", "1"]


@pytest.mark.parametrize(
    ("blocks", "message"),
    [
        ("blokcs", r"names no module.*'blocks'"),
        (["blocks.0", "blocks.7"], r"blocks\[1\] names no module"),
        ("head", r"'head' is a Linear, not an nn.ModuleList"),
        ([nn.Linear(2, 2)], r"blocks\[0\] is a Linear that is not part of the model"),
        (["blocks.0", "blocks.0"], r"listed twice"),
        (["blocks.0", "blocks.0.fc1"], r"'blocks.0.fc1' lies inside block 'blocks.0'"),
        ([], r"blocks is empty"),
        ([3], r"blocks\[0\] must be a module or a module's qualified name, got int"),
        (7, r"blocks must be a ModuleList"),
    ],
)
def test_bad_blocks_are_named(blocks: object, message: str) -> None:
    with pytest.raises(pruneplug.InvalidTargetError, match=message):
        find_blocks(helpers.Stack(), blocks)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- targets


def test_gpt2_conv1d_is_a_linear_layer_and_others_are_not() -> None:
    gpt2 = helpers.tiny_gpt2()
    attention = gpt2.transformer.h[0].attn
    assert is_linear_layer(attention.c_attn) and is_linear_layer(nn.Linear(2, 2))
    assert not is_linear_layer(attention) and not is_linear_layer(nn.Conv2d(2, 2, 1))


def test_sequential_default_targets_are_the_linear_layers_inside_the_blocks_and_the_rest_is_reported() -> None:
    model = helpers.Stack(depth=2)
    selection = select_targets(model, None, find_blocks(model, None), sequential=True)
    assert [t.name for t in selection.targets] == ["blocks.0.fc1", "blocks.0.fc2", "blocks.1.fc1", "blocks.1.fc2"]
    assert [t.block for t in selection.targets] == [0, 0, 1, 1]
    assert selection.skipped == ("inp", "head")


def test_one_pass_default_targets_leave_out_the_lm_head_only() -> None:
    llama = helpers.tiny_llama()
    selection = select_targets(llama, None, None, sequential=False)
    names = [t.name for t in selection.targets]
    assert "lm_head" not in names and selection.skipped == ("lm_head",)
    assert len(names) == 2 * 7  # q, k, v, o, gate, up, down per layer
    gpt2 = helpers.tiny_gpt2()  # its lm_head is tied to the token embedding
    selection = select_targets(gpt2, None, None, sequential=False)
    assert selection.skipped == ("lm_head",)
    assert [t.name for t in selection.targets][:4] == [
        "transformer.h.0.attn.c_attn",
        "transformer.h.0.attn.c_proj",
        "transformer.h.0.mlp.c_fc",
        "transformer.h.0.mlp.c_proj",
    ]


def test_a_tied_head_of_a_model_without_get_output_embeddings_is_left_out_too() -> None:
    model = helpers.TinyTransformer(depth=1)
    model.lm_head.weight = model.embed.weight
    assert select_targets(model, None, None, sequential=False).skipped == ("lm_head",)


def test_targets_by_name_module_or_predicate_in_the_models_order() -> None:
    model = helpers.Stack(depth=2)
    blocks = find_blocks(model, None)
    by_name = select_targets(model, ["blocks.1.fc2", "blocks.0.fc1"], blocks, sequential=True)
    assert [t.name for t in by_name.targets] == ["blocks.0.fc1", "blocks.1.fc2"]
    by_module = select_targets(model, model.blocks[1].fc1, blocks, sequential=True)
    assert [t.name for t in by_module.targets] == ["blocks.1.fc1"]
    by_predicate = select_targets(model, lambda name, module: name.endswith("fc2"), None, sequential=False)
    assert [t.name for t in by_predicate.targets] == ["blocks.0.fc2", "blocks.1.fc2"]
    assert by_predicate.skipped == ()


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (
            ["blocks.0.fc3"],
            r"targets names no module of Stack: 'blocks.0.fc3'. Did you mean 'blocks.0.fc2' or 'blocks.0.fc1'",
        ),
        ([nn.Linear(2, 2)], r"targets\[0\] is a Linear that is not part of the model"),
        (["blocks.0.fc1", "blocks.0.fc1"], r"listed twice"),
        (["blocks.0"], r"'blocks.0' is a MLPBlock without a weight parameter"),
        ([1.5], r"targets\[0\] must be a module"),
        (lambda name, module: False, r"no layer of Stack was selected"),
        (5, r"targets must be qualified module names, modules, or a predicate"),
    ],
)
def test_bad_targets_are_named(targets: object, message: str) -> None:
    with pytest.raises(pruneplug.InvalidTargetError, match=message):
        select_targets(helpers.Stack(depth=2), targets, None, sequential=False)  # type: ignore[arg-type]


def test_a_target_outside_the_blocks_is_refused_when_sequential() -> None:
    model = helpers.Stack(depth=2)
    with pytest.raises(pruneplug.InvalidTargetError, match=r"'head' lies outside the blocks.*sequential=False"):
        select_targets(model, ["blocks.0.fc1", "head"], find_blocks(model, None), sequential=True)


def test_a_tied_weight_named_twice_is_refused() -> None:
    model = helpers.Stack(depth=2)
    model.blocks[1].fc1.weight = model.blocks[0].fc1.weight
    with pytest.raises(pruneplug.InvalidTargetError, match=r"share one tied weight"):
        select_targets(model, ["blocks.0.fc1", "blocks.1.fc1"], None, sequential=False)


def test_an_already_pruned_layer_is_still_a_target() -> None:
    model = helpers.Stack(depth=1)
    pruneplug.prune(model.blocks[0].fc1, "weight", "l1_unstructured", amount=0.25)
    selection = select_targets(model, None, find_blocks(model, None), sequential=True)
    assert [t.name for t in selection.targets] == ["blocks.0.fc1", "blocks.0.fc2"]
    assert torch.equal(selection.targets[0].module.weight_mask, model.blocks[0].fc1.weight_mask)
