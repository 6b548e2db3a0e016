"""Checkpoints and copies: load_pruned_state_dict, load_state_dict freshness, copy/deepcopy/pickle."""

from __future__ import annotations

import copy
import io
import pickle
import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

import pruneplug
from pruneplug.models import LeNet
from pruneplug.testing import assert_unchanged, snapshot


def pruned_lenet(by: str) -> LeNet:
    model = LeNet()
    if by == "torch":
        torch_prune.ln_structured(model.conv1, "weight", amount=2, n=2, dim=0)
        torch_prune.l1_unstructured(model.fc1, "weight", amount=0.5)
        torch_prune.random_unstructured(model.fc1, "bias", amount=10)
    else:
        pruneplug.prune(model.conv1, "weight", "ln_structured", amount=2, n=2, dim=0)
        pruneplug.prune(model.fc1, "weight", "l1_unstructured", amount=0.5)
        pruneplug.prune(model.fc1, "bias", "random_unstructured", amount=10)
    return model


@pytest.mark.parametrize("saved_by", ["torch", "pruneplug"])
def test_pruned_checkpoint_loads_into_a_fresh_model_in_one_call(saved_by: str) -> None:
    source = pruned_lenet(saved_by)
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    fresh = LeNet()
    with pytest.raises(RuntimeError):  # what torch makes you do without pruneplug
        fresh.load_state_dict(state)
    fresh = LeNet()
    assert pruneplug.load_pruned_state_dict(fresh, state) is fresh
    assert list(fresh.state_dict()) == list(source.state_dict())
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(fresh(x), source(x))
    for name in ("conv1.weight", "fc1.weight", "fc1.bias"):
        module_name, _, tensor = name.rpartition(".")
        ours, theirs = fresh.get_submodule(module_name), source.get_submodule(module_name)
        assert torch.equal(getattr(ours, tensor), getattr(theirs, tensor))  # current at once, no forward needed
        assert getattr(ours, tensor + "_mask").dtype == torch.bool
    assert [type(m).__name__ for m in pruneplug.pruning_history(fresh.conv1, "weight")] == ["Identity"]
    pruneplug.prune(fresh.conv1, "weight", "ln_structured", amount=1, n=2, dim=0)  # and pruning goes on
    assert int((~fresh.conv1.weight_mask.flatten(1).any(1)).sum()) == 3


def test_load_pruned_state_dict_checks_before_touching() -> None:
    state = pruned_lenet("pruneplug").state_dict()
    fresh = LeNet()
    before = snapshot(fresh)

    bad_values = dict(state)
    bad_values["fc1.weight_mask"] = torch.full_like(state["fc1.weight_mask"], 0.5, dtype=torch.float32)
    with pytest.raises(pruneplug.InvalidMaskError, match="'fc1.weight_mask'.*values other than 0 and 1"):
        pruneplug.load_pruned_state_dict(fresh, bad_values)

    bad_shape = dict(state)
    bad_shape["conv1.weight_mask"] = torch.ones(3, 3, dtype=torch.bool)
    with pytest.raises(pruneplug.InvalidMaskError, match=r"has shape \(3, 3\) but conv1.weight has shape"):
        pruneplug.load_pruned_state_dict(fresh, bad_shape)

    missing = {k: v for k, v in state.items() if k != "fc3.bias"}
    with pytest.raises(pruneplug.InvalidTargetError, match="missing keys: fc3.bias"):
        pruneplug.load_pruned_state_dict(fresh, missing)

    extra = {**state, "fc4.weight": torch.ones(1)}
    with pytest.raises(pruneplug.InvalidTargetError, match="unexpected keys: fc4.weight"):
        pruneplug.load_pruned_state_dict(fresh, extra)

    wrong_arch = {**state, "fc2.weight": torch.ones(5, 5)}
    with pytest.raises(pruneplug.InvalidTargetError, match=r"size mismatch for fc2.weight: checkpoint \(5, 5\)"):
        pruneplug.load_pruned_state_dict(fresh, wrong_arch)

    assert_unchanged(before, fresh)


def test_load_pruned_state_dict_non_strict_and_unpruned() -> None:
    plain = LeNet().state_dict()
    model = LeNet()
    pruneplug.load_pruned_state_dict(model, plain)
    assert not pruneplug.is_pruned(model)
    partial = {k: v for k, v in pruned_lenet("torch").state_dict().items() if k.startswith("fc1.")}
    model = LeNet()
    pruneplug.load_pruned_state_dict(model, partial, strict=False)
    assert pruneplug.is_pruned(model.fc1) and not pruneplug.is_pruned(model.conv1)


@pytest.mark.parametrize("pruned_by", ["torch", "pruneplug"])
def test_load_state_dict_into_a_pruned_model_is_current_at_once(pruned_by: str) -> None:
    model = pruned_lenet("pruneplug")
    other = pruned_lenet(pruned_by)
    model.load_state_dict(other.state_dict())
    assert torch.equal(model.fc1.weight, other.fc1.weight_orig * other.fc1.weight_mask)
    assert torch.equal(model.conv1.weight, other.conv1.weight)


def test_deepcopy_copy_and_pickle_of_pruned_models() -> None:
    model = pruned_lenet("pruneplug")
    x = torch.randn(2, 1, 28, 28)
    expected = model(x)

    clone = copy.deepcopy(model)
    assert torch.equal(clone(x), expected)
    assert clone.fc1.weight_orig is not model.fc1.weight_orig
    assert clone.fc1.weight.grad_fn is not None  # still differentiable w.r.t. the clone's weight_orig
    clone.fc1.weight.sum().backward()
    assert clone.fc1.weight_orig.grad is not None and model.fc1.weight_orig.grad is None
    pruneplug.prune(clone.fc1, "weight", "l1_unstructured", amount=100)
    assert int((~model.fc1.weight_mask).sum()) == 15360  # the original is untouched

    shallow = copy.copy(model.fc1)
    assert shallow.weight_orig is model.fc1.weight_orig and torch.equal(shallow.weight, model.fc1.weight)

    restored = pickle.loads(pickle.dumps(model))
    assert torch.equal(restored(x), expected)
    assert restored.fc1.weight.grad_fn is not None  # recomputed from weight_orig, not a stale copy
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert torch.equal(loaded(x), expected) and pruneplug.is_pruned(loaded)


def test_deepcopy_of_a_pruned_lstm() -> None:
    lstm = nn.LSTM(6, 5, num_layers=2)
    pruneplug.prune(lstm, "weight_ih_l0", "l1_unstructured", amount=0.5)
    pruneplug.prune(lstm, "weight_hh_l1", "random_structured", amount=2, dim=0)
    x = torch.randn(4, 3, 6)
    expected, _ = lstm(x)
    clone = copy.deepcopy(lstm)
    out, _ = clone(x)
    assert torch.equal(out, expected)
    assert sum(isinstance(w, nn.Parameter) for w in clone._flat_weights) == len(clone._flat_weights) - 2
    assert clone._flat_weights[0] is clone.weight_ih_l0


def test_unpruned_instances_copy_exactly_as_before() -> None:
    """Registering the copy reducer for a class must not change copies of its unpruned instances."""
    pruneplug.prune(nn.Linear(2, 2), "weight", "identity")  # registers nn.Linear
    layer = nn.Linear(3, 3)
    clone = copy.deepcopy(layer)
    assert torch.equal(clone.weight, layer.weight) and clone.weight is not layer.weight
    assert vars(clone).keys() == vars(layer).keys()
    assert pickle.loads(pickle.dumps(layer)).weight.shape == (3, 3)


def test_no_grad_forward_reuses_the_masked_tensor_until_something_changes() -> None:
    layer = nn.Linear(8, 8).eval()
    pruneplug.prune(layer, "weight", "l1_unstructured", amount=0.5)
    x = torch.randn(2, 8)
    with torch.no_grad():
        layer(x)
        cached = layer.weight
        layer(x)
        assert layer.weight is cached
        layer.weight_orig.mul_(2)
        layer(x)
        assert layer.weight is not cached and torch.equal(layer.weight, layer.weight_orig * layer.weight_mask)
        cached = layer.weight
        layer.weight_mask[0] = False
        layer(x)
        assert layer.weight is not cached and bool((layer.weight[0] == 0).all())
    with torch.inference_mode():
        layer(x)
        cached = layer.weight
        layer(x)
        assert layer.weight is cached
    out = layer(x)  # grad mode: a fresh graph every time
    assert layer.weight.grad_fn is not None
    out.sum().backward()
    assert torch.equal(layer.weight_orig.grad, x.sum(0).expand(8, 8) * layer.weight_mask)


def test_eval_after_a_fused_optimizer_step_sees_the_new_weights() -> None:
    """Fused optimizers do not bump version counters; every optimizer step invalidates the cache."""
    layer = nn.Linear(6, 3)
    pruneplug.prune(layer, "weight", "l1_unstructured", amount=0.5)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.1, fused=True)
    x = torch.randn(5, 6)
    layer.eval()
    with torch.no_grad():
        layer(x)
    layer.train()
    layer(x).sum().backward()
    optimizer.step()
    layer.eval()
    with torch.no_grad():
        out = layer(x)
    expected = x @ (layer.weight_orig * layer.weight_mask).T + layer.bias
    assert torch.allclose(out, expected)


def test_writes_through_data_need_refresh() -> None:
    """``.data`` bypasses version counters (documented); pruneplug.refresh recomputes at once."""
    layer = nn.Linear(4, 4).eval()
    pruneplug.prune(layer, "weight", "l1_unstructured", amount=0.5)
    with torch.no_grad():
        layer(torch.randn(1, 4))
        layer.weight_orig.data.mul_(2)
        assert pruneplug.refresh(layer) is layer
        assert torch.equal(layer.weight, layer.weight_orig * layer.weight_mask)
    layer.train()  # in train mode nothing is reused, even without autograd
    with torch.no_grad():
        layer(torch.randn(1, 4))
        layer.weight_orig.data.mul_(2)
        layer(torch.randn(1, 4))
        assert torch.equal(layer.weight, layer.weight_orig * layer.weight_mask)


def test_a_value_that_is_not_a_tensor_is_refused_before_anything_is_loaded() -> None:
    state = dict(pruned_lenet("pruneplug").state_dict())
    state["fc3.bias"] = [0.0] * 10
    fresh = LeNet()
    before = snapshot(fresh)
    with pytest.raises(pruneplug.InvalidTargetError, match="not a tensor where the model has one: fc3.bias"):
        pruneplug.load_pruned_state_dict(fresh, state)
    assert_unchanged(before, fresh)


def test_assign_loads_a_pruned_checkpoint_into_a_model_built_on_meta() -> None:
    """Large models are built on ``meta`` and given their weights with ``assign=True``; masks come along."""
    torch.manual_seed(0)
    source = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))
    pruneplug.prune_global([(source[0], "weight"), (source[1], "weight")], "l1_unstructured", amount=0.5)
    checkpoint = {key: value.clone() for key, value in source.state_dict().items()}
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when a load into meta tensors does nothing
        pruneplug.load_pruned_state_dict(model, checkpoint, assign=True)
    assert model[0].weight_orig.device.type == "cpu" and model[0].weight_mask.dtype == torch.bool
    assert model[0].weight_orig is not None and isinstance(model[0].weight_orig, nn.Parameter)
    x = torch.randn(3, 8)
    assert torch.equal(model(x), source(x))
    assert pruneplug.is_pruned(model[0]) and pruneplug.is_pruned(model[1])


# --- masks are checked whatever the target's state; shared modules; mask storage after any load ------------


def stack() -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))


def pruned_stack(by: str) -> nn.Sequential:
    """A stack as a load may find it: unpruned, pruned by pruneplug (bool or packed masks) or by torch."""
    model = stack()
    for layer in (model[0], model[2]):
        if by == "torch":
            torch_prune.l1_unstructured(layer, "weight", amount=0.5)
        elif by != "fresh":
            pruneplug.prune(layer, "weight", "random_unstructured", amount=0.25, mask_storage=by)
    return model


BAD_MASKS: dict[str, Callable[[torch.Tensor], object]] = {
    "0.5": lambda mask: torch.full(mask.shape, 0.5),
    "-3": lambda mask: torch.where(mask.bool(), 1.0, -3.0),
    "nan": lambda mask: torch.where(mask.bool(), 1.0, float("nan")),
    "complex": lambda mask: mask.to(torch.complex64),
    "misshapen": lambda mask: mask.reshape(-1),
    "not a tensor": lambda mask: mask.tolist(),
}


@pytest.mark.parametrize("assign", [False, True])
@pytest.mark.parametrize("target", ["fresh", "bool", "packed", "torch"])
@pytest.mark.parametrize("bad", list(BAD_MASKS))
def test_a_bad_mask_is_refused_whatever_the_target_and_changes_nothing(bad: str, target: str, assign: bool) -> None:
    """Into an already pruned model a mask of 0.5 used to load as 'all kept', undoing the pruning silently."""
    checkpoint = dict(pruned_stack("bool").state_dict())
    checkpoint["2.weight_mask"] = BAD_MASKS[bad](checkpoint["2.weight_mask"])
    model = pruned_stack(target)
    before = snapshot(model)
    with pytest.raises(pruneplug.InvalidMaskError, match=r"Linear\.weight: state_dict\['2\.weight_mask'\]"):
        pruneplug.load_pruned_state_dict(model, checkpoint, assign=assign)
    assert_unchanged(before, model)


def test_a_bad_mask_names_what_is_wrong() -> None:
    checkpoint = dict(pruned_stack("bool").state_dict())
    mask = checkpoint["0.weight_mask"].float()
    mask[1, 2] = 0.5
    checkpoint["0.weight_mask"] = mask
    with pytest.raises(
        pruneplug.InvalidMaskError,
        match=r"'0\.weight_mask'\] holds values other than 0 and 1 \(1 of them, the first 0\.5\)",
    ):
        pruneplug.load_pruned_state_dict(pruned_stack("bool"), checkpoint)
    checkpoint["0.weight_mask"] = mask.to(torch.complex64)
    with pytest.raises(pruneplug.InvalidMaskError, match="complex64"):
        pruneplug.load_pruned_state_dict(pruned_stack("bool"), checkpoint)


def test_a_buffer_named_like_a_mask_that_is_not_a_mask_is_loaded_as_it_is() -> None:
    """Only masks of pruned tensors are checked: a model's own ``*_mask`` buffer may hold anything."""
    model = stack()
    model[0].register_buffer("attention_mask", torch.zeros(3))
    checkpoint = {**model.state_dict(), "0.attention_mask": torch.tensor([0.5, -3.0, float("nan")])}
    pruneplug.load_pruned_state_dict(model, checkpoint)
    assert torch.equal(model[0].attention_mask[:2], torch.tensor([0.5, -3.0]))


def expected_layout(target: str, storage: str | None) -> tuple[type, torch.dtype]:
    """How a mask is stored after a load, as load_pruned_state_dict's docstring promises."""
    if target == "torch":
        return torch.Tensor, torch.float32  # torch's float masks stay as they are
    packed = storage == "packed" or (storage is None and target == "packed")
    return (pruneplug.PackedMask if packed else torch.Tensor), torch.bool


@pytest.mark.parametrize("saved_by", ["torch", "bool", "packed"])
@pytest.mark.parametrize("storage", [None, "bool", "packed"])
@pytest.mark.parametrize("assign", [False, True])
@pytest.mark.parametrize("target", ["fresh", "bool", "packed", "torch"])
def test_masks_are_stored_as_promised_after_any_load(
    saved_by: str, storage: str | None, assign: bool, target: str
) -> None:
    source = pruned_stack(saved_by)
    checkpoint = {key: value.clone() for key, value in source.state_dict().items()}
    model = pruned_stack(target)
    pruneplug.load_pruned_state_dict(model, checkpoint, assign=assign, mask_storage=storage)
    kind, dtype = expected_layout(target, storage)
    x = torch.randn(3, 6)
    for layer, origin in ((model[0], source[0]), (model[2], source[2])):
        assert type(layer.weight_mask) is kind and layer.weight_mask.dtype == dtype
        assert torch.equal(layer.weight_mask.bool(), origin.weight_mask.bool())
        assert torch.equal(layer.weight, layer.weight_orig * layer.weight_mask)
    assert torch.equal(model(x), source(x))


@pytest.mark.parametrize("storage", [None, "bool", "packed"])
def test_assign_into_a_meta_model_stores_torchs_float_masks_as_asked(storage: str | None) -> None:
    """A checkpoint of torch.nn.utils.prune (float masks) loaded with assign=True used to keep its float32 masks."""
    source = pruned_stack("torch")
    checkpoint = {key: value.clone() for key, value in source.state_dict().items()}
    with torch.device("meta"):
        model = stack()
    pruneplug.load_pruned_state_dict(model, checkpoint, assign=True, mask_storage=storage)
    kind = pruneplug.PackedMask if storage == "packed" else torch.Tensor
    for layer in (model[0], model[2]):
        assert type(layer.weight_mask) is kind and layer.weight_mask.dtype == torch.bool
        assert layer.weight_orig.device.type == "cpu"
        assert torch.equal(layer.weight, layer.weight_orig * layer.weight_mask)
    x = torch.randn(3, 6)
    assert torch.equal(model(x), source(x))
    assert [key for key, value in model.state_dict().items() if value.dtype != torch.float32] == [
        "0.weight_mask",
        "2.weight_mask",
    ]


# --- a module reached by several paths --------------------------------------------------------------------


def shared(by: str) -> nn.Sequential:
    """``lin`` reached as ``0`` and as ``2``; its weight pruned by pruneplug or torch, or not (``fresh``)."""
    lin = nn.Linear(3, 3)
    if by == "torch":
        torch_prune.l1_unstructured(lin, "weight", amount=0.5)
    elif by != "fresh":
        pruneplug.prune(lin, "weight", "l1_unstructured", amount=0.5, mask_storage=by)
    return nn.Sequential(lin, nn.ReLU(), lin)


@pytest.mark.parametrize("assign", [False, True])
@pytest.mark.parametrize("target", ["fresh", "bool", "packed", "torch"])
@pytest.mark.parametrize("saved_by", ["torch", "bool"])
def test_a_shared_module_loads_through_every_path(saved_by: str, target: str, assign: bool) -> None:
    source = shared(saved_by)
    checkpoint = {key: value.clone() for key, value in source.state_dict().items()}
    model = shared(target)
    pruneplug.load_pruned_state_dict(model, checkpoint, assign=assign)
    assert model[0] is model[2] and len(model[0]._forward_pre_hooks) == 1  # set up once
    assert list(model.state_dict()) == list(checkpoint)
    assert torch.equal(model[0].weight_mask.bool(), source[0].weight_mask.bool())
    assert torch.equal(model[0].weight, model[0].weight_orig * model[0].weight_mask)
    x = torch.randn(2, 3)
    assert torch.equal(model(x), source(x))
    if target == "fresh":  # as torch's own recipe does it
        reference = shared("fresh")
        torch_prune.identity(reference[0], "weight")
        reference.load_state_dict(checkpoint)
        assert torch.equal(reference(x), model(x))


@pytest.mark.parametrize("target", ["fresh", "bool", "torch"])
def test_a_shared_module_whose_paths_disagree_is_refused(target: str) -> None:
    checkpoint = dict(shared("bool").state_dict())
    checkpoint["2.weight_mask"] = ~checkpoint["2.weight_mask"]
    model = shared(target)
    before = snapshot(model)
    with pytest.raises(
        pruneplug.InvalidMaskError, match=r"state_dict\['0\.weight_mask'\] and state_dict\['2\.weight_mask'\] differ"
    ):
        pruneplug.load_pruned_state_dict(model, checkpoint)
    assert_unchanged(before, model)


@pytest.mark.parametrize("target", ["fresh", "bool", "torch"])
def test_the_mask_of_every_path_to_a_shared_module_is_checked(target: str) -> None:
    checkpoint = dict(shared("bool").state_dict())
    checkpoint["2.weight_mask"] = torch.full((3, 3), 0.5)
    model = shared(target)
    before = snapshot(model)
    with pytest.raises(pruneplug.InvalidMaskError, match=r"'2\.weight_mask'\] holds values other than 0 and 1"):
        pruneplug.load_pruned_state_dict(model, checkpoint)
    assert_unchanged(before, model)


def test_a_shared_module_is_set_up_from_any_one_of_its_paths_when_not_strict() -> None:
    checkpoint = {key: value for key, value in shared("bool").state_dict().items() if key.startswith("2.")}
    model = shared("fresh")
    pruneplug.load_pruned_state_dict(model, checkpoint, strict=False)
    assert torch.equal(model[0].weight_mask, checkpoint["2.weight_mask"])
    assert list(model.state_dict()) == [
        "0.bias",
        "0.weight_orig",
        "0.weight_mask",
        "2.bias",
        "2.weight_orig",
        "2.weight_mask",
    ]
