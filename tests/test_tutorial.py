"""Every code cell of the seed tutorial (../shared/seed), run with pruneplug.

The cells of sections 1 and 2 run twice: with the native API
(``pruneplug.prune`` by strategy name, bool masks) and with the one-line
migration (``import pruneplug.compat as prune``, torch's exact behaviour).
The tutorial's printed results that do not depend on random initialisation
are asserted literally, and every mask is compared with what
``torch.nn.utils.prune`` gives on an identical copy from the same random
state. Section 3's custom class runs as the tutorial writes it (``.apply``,
through ``pruneplug.compat``), registered natively, and as a class written
for torch registered as it is.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

import pruneplug
import pruneplug.compat as compat
from pruneplug.models import LeNet


@dataclass
class Flavor:
    """One way of calling the tutorial's functions."""

    name: str
    random_structured: Callable[..., object]
    ln_structured: Callable[..., object]
    random_unstructured: Callable[..., object]
    l1_unstructured: Callable[..., object]
    remove: Callable[..., object]
    global_l1: Callable[..., object]
    mask_dtype: torch.dtype


NATIVE = Flavor(
    "native",
    random_structured=lambda m, name, amount, dim: pruneplug.prune(
        m, name, "random_structured", amount=amount, dim=dim
    ),
    ln_structured=lambda m, name, amount, n, dim: pruneplug.prune(
        m, name, "ln_structured", amount=amount, n=n, dim=dim
    ),
    random_unstructured=lambda m, name, amount: pruneplug.prune(m, name, "random_unstructured", amount=amount),
    l1_unstructured=lambda m, name, amount: pruneplug.prune(m, name, "l1_unstructured", amount=amount),
    remove=lambda m, name: pruneplug.remove(m, name),
    global_l1=lambda params, amount: pruneplug.prune_global(params, "l1_unstructured", amount=amount),
    mask_dtype=torch.bool,
)


def torch_api_flavor(name: str, lib: Any) -> Flavor:
    """The tutorial's calls through a module with torch's API (torch's own, or ``pruneplug.compat``)."""
    return Flavor(
        name,
        random_structured=lambda m, name, amount, dim: lib.random_structured(m, name=name, amount=amount, dim=dim),
        ln_structured=lambda m, name, amount, n, dim: lib.ln_structured(m, name=name, amount=amount, n=n, dim=dim),
        random_unstructured=lambda m, name, amount: lib.random_unstructured(m, name=name, amount=amount),
        l1_unstructured=lambda m, name, amount: lib.l1_unstructured(m, name=name, amount=amount),
        remove=lambda m, name: lib.remove(m, name),
        global_l1=lambda params, amount: lib.global_unstructured(
            params, pruning_method=lib.L1Unstructured, amount=amount
        ),
        mask_dtype=torch.float32,
    )


COMPAT = torch_api_flavor("compat", compat)
TORCH = torch_api_flavor("torch", torch_prune)


def same_as_torch(steps: Callable[[Flavor, nn.Module], None], flavor: Flavor) -> None:
    """Run ``steps`` with ``flavor`` and with torch on copies of one LeNet from one random state; compare."""
    ours = LeNet()
    theirs = copy.deepcopy(ours)
    state = torch.get_rng_state()
    steps(flavor, ours)
    torch.set_rng_state(state)
    steps(TORCH, theirs)
    masks = {k: v for k, v in theirs.state_dict().items() if k.endswith("_mask")}
    assert masks.keys() == {k for k in ours.state_dict() if k.endswith("_mask")}
    for key, mask in masks.items():
        assert torch.equal(ours.state_dict()[key].float(), mask), key
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))


@pytest.fixture(params=[NATIVE, COMPAT], ids=lambda f: f.name)
def flavor(request: pytest.FixtureRequest) -> Flavor:
    return request.param


def keys(model: nn.Module) -> list[str]:
    return list(model.state_dict().keys())


def channel_zeros(mask: torch.Tensor) -> list[int]:
    """Which output channels of a conv mask are entirely zero."""
    return [i for i in range(mask.shape[0]) if not bool(mask[i].any())]


# In [344]-[348]: the network, its summary, parameters, buffers and state_dict.


def test_lenet_matches_the_tutorial_summary() -> None:
    model = LeNet()
    per_layer = [
        sum(p.numel() for p in m.parameters()) for m in (model.conv1, model.conv2, model.fc1, model.fc2, model.fc3)
    ]
    assert per_layer == [156, 2416, 30840, 10164, 850]
    assert sum(p.numel() for p in model.parameters()) == 44426
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
    module = model.conv1
    assert [n for n, _ in module.named_parameters()] == ["weight", "bias"]
    assert list(module.named_buffers()) == []
    assert keys(model) == [
        "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight",
        "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias",
    ]  # fmt: skip


# In [349]-[356]: random_structured then ln_structured on conv1.weight (iterative pruning).


def test_section_1_1_structured_and_iterative_pruning(flavor: Flavor) -> None:
    model = LeNet()
    module = model.conv1
    original = module.weight.detach().clone()

    returned = flavor.random_structured(module, name="weight", amount=2, dim=0)
    assert returned is module
    assert repr(returned) == "Conv2d(1, 6, kernel_size=(5, 5), stride=(1, 1))"
    assert keys(model)[:3] == ["conv1.bias", "conv1.weight_orig", "conv1.weight_mask"]
    assert [n for n, _ in module.named_parameters()] == ["bias", "weight_orig"]
    assert [n for n, _ in module.named_buffers()] == ["weight_mask"]
    mask = module.weight_mask
    assert mask.dtype == flavor.mask_dtype
    assert len(channel_zeros(mask)) == 2
    assert torch.equal(module.weight_orig, original)  # the original values are kept
    assert torch.equal(module.weight, original * mask)
    assert not isinstance(module.weight, nn.Parameter)
    hooks = list(module._forward_pre_hooks.values())
    assert len(hooks) == 1 and type(hooks[0]).__name__ == "RandomStructured"

    flavor.ln_structured(module, name="weight", amount=0.5, n=2, dim=0)
    assert keys(model)[:3] == ["conv1.bias", "conv1.weight_orig", "conv1.weight_mask"]
    assert len(channel_zeros(module.weight_mask)) == 4  # 2 + half of the 4 left
    for hook in module._forward_pre_hooks.values():
        if hook._tensor_name == "weight":
            break
    assert [type(m).__name__ for m in hook] == ["RandomStructured", "LnStructured"]
    assert isinstance(hook, torch_prune.PruningContainer)


def test_section_1_masks_are_torchs(flavor: Flavor) -> None:
    """The structured, iterative and bias steps of section 1 draw and rank exactly as torch."""

    def steps(flavor: Flavor, model: nn.Module) -> None:
        flavor.random_structured(model.conv1, name="weight", amount=2, dim=0)
        flavor.ln_structured(model.conv1, name="weight", amount=0.5, n=2, dim=0)
        flavor.random_unstructured(model.conv1, name="bias", amount=1)
        for _, m in model.named_modules():
            if isinstance(m, torch.nn.Conv2d):
                flavor.l1_unstructured(m, name="bias", amount=0.2)

    same_as_torch(steps, flavor)


# In [357]-[359]: pruning biases, looping over modules, and remove.


def test_section_1_1_3_bias_pruning_and_remove(flavor: Flavor) -> None:
    model = LeNet()
    module = model.conv1
    flavor.random_structured(module, name="weight", amount=2, dim=0)
    flavor.ln_structured(module, name="weight", amount=0.5, n=2, dim=0)

    flavor.random_unstructured(module, name="bias", amount=1)
    assert keys(model)[:4] == ["conv1.weight_orig", "conv1.bias_orig", "conv1.weight_mask", "conv1.bias_mask"]
    assert int((module.bias_mask == 0).sum()) == 1
    assert len(module._forward_pre_hooks) == 2

    for _, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            flavor.l1_unstructured(m, name="bias", amount=0.2)
    assert keys(model)[:7] == [
        "conv1.weight_orig", "conv1.bias_orig", "conv1.weight_mask", "conv1.bias_mask",
        "conv2.weight", "conv2.bias_orig", "conv2.bias_mask",
    ]  # fmt: skip
    assert int((module.bias_mask == 0).sum()) == 1 + round(0.2 * 5)
    assert int((model.conv2.bias_mask == 0).sum()) == round(0.2 * 16)
    pruned_weight = module.weight.detach().clone()
    pruned_bias = module.bias.detach().clone()

    for _, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            flavor.remove(m, "bias")
    flavor.remove(module, "weight")
    assert keys(model) == [
        "conv1.bias", "conv1.weight", "conv2.weight", "conv2.bias", "fc1.weight",
        "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias",
    ]  # fmt: skip
    assert [n for n, _ in module.named_parameters()] == ["bias", "weight"]
    assert list(module.named_buffers()) == []
    assert len(module._forward_pre_hooks) == 0
    assert isinstance(module.weight, nn.Parameter)
    assert torch.equal(module.weight, pruned_weight)
    assert torch.equal(module.bias, pruned_bias)


# In [363]-[364]: global pruning and per-layer sparsity.


def test_section_2_global_pruning(flavor: Flavor) -> None:
    model = LeNet()
    reference = copy.deepcopy(model)
    parameters_to_prune = (
        (model.conv1, "weight"),
        (model.conv2, "weight"),
        (model.fc1, "weight"),
        (model.fc2, "weight"),
    )
    flavor.global_l1(parameters_to_prune, amount=0.2)
    assert keys(model) == [
        "conv1.bias", "conv1.weight_orig", "conv1.weight_mask", "conv2.bias", "conv2.weight_orig",
        "conv2.weight_mask", "fc1.bias", "fc1.weight_orig", "fc1.weight_mask", "fc2.bias",
        "fc2.weight_orig", "fc2.weight_mask", "fc3.weight", "fc3.bias",
    ]  # fmt: skip
    layers = [model.conv1, model.conv2, model.fc1, model.fc2]
    zeros = [int(torch.sum(m.weight == 0)) for m in layers]
    total = sum(m.weight.nelement() for m in layers)
    assert f"{100.0 * sum(zeros) / total:.2f}" == "20.00"
    per_layer = [100.0 * z / m.weight.nelement() for z, m in zip(zeros, layers)]
    assert len(set(per_layer)) > 1  # the point of global pruning: layers differ

    torch_prune.global_unstructured(
        [
            (reference.conv1, "weight"),
            (reference.conv2, "weight"),
            (reference.fc1, "weight"),
            (reference.fc2, "weight"),
        ],
        pruning_method=torch_prune.L1Unstructured,
        amount=0.2,
    )
    for ours, theirs in zip(layers, [reference.conv1, reference.conv2, reference.fc1, reference.fc2]):
        assert torch.equal(ours.weight_mask.float(), theirs.weight_mask)


# The custom pruning class of section 3, written exactly as the tutorial writes it.


def test_section_3_custom_pruning_with_compat() -> None:
    class custom_prune(compat.BasePruningMethod):
        PRUNING_TYPE = "unstructured"

        def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
            mask = default_mask.clone()
            mask.view(-1)[::2] = 0
            return mask

    def custome_unstructured_pruning(module: nn.Module, name: str) -> nn.Module:
        custom_prune.apply(module, name)
        return module

    model = LeNet()
    custome_unstructured_pruning(model.fc1, name="bias")
    expected = torch.tensor([0.0, 1.0] * 60)
    assert torch.equal(model.fc1.bias_mask, expected)
    assert model.fc1.bias_mask.dtype == torch.float32


def test_section_3_custom_pruning_registered_natively(registry: pruneplug.Registry) -> None:
    class Alternating(pruneplug.BasePruningMethod):
        PRUNING_TYPE = "unstructured"
        name = "alternating"

        def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
            mask = default_mask.clone()
            mask.view(-1)[::2] = 0
            return mask

    pruneplug.register(Alternating)
    model = LeNet()
    pruneplug.prune(model.fc1, "bias", "alternating")
    assert model.fc1.bias_mask.tolist() == [False, True] * 60


def test_section_3_torch_written_class_registers_as_it_is(registry: pruneplug.Registry) -> None:
    class custom_prune(torch_prune.BasePruningMethod):
        PRUNING_TYPE = "unstructured"

        def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
            mask = default_mask.clone()
            mask.view(-1)[::2] = 0
            return mask

    spec = pruneplug.register(custom_prune, name="alternating")
    assert spec.kind == "unstructured"
    model = LeNet()
    pruneplug.prune(model.fc1, "bias", "alternating")
    assert model.fc1.bias_mask.tolist() == [False, True] * 60
    assert pruneplug.is_pruned(model) and torch_prune.is_pruned(model)
