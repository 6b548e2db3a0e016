"""The module snapshot: every kind of change is caught and named, and an untouched model shows none."""

from __future__ import annotations

import copy
import gc
import math
import weakref
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import Tensor, nn

import pruneplug
import pruneplug.compat as compat
from pruneplug.testing import ModuleState, assert_unchanged, snapshot


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.fc2 = nn.Linear(3, 2)
        self.register_buffer("steps", torch.zeros(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.fc1(x))


def changes(model: nn.Module, change: Callable[[], object], *, identity: bool = True) -> list[str]:
    """The diff lines ``change()`` causes on ``model``."""
    before = snapshot(model)
    change()
    return before.diff(snapshot(model), identity=identity)


def no_grad_set(tensor: Tensor, index: tuple[int, ...], value: float) -> None:
    with torch.no_grad():
        tensor[index] = value


# --- each kind of change is caught --------------------------------------------------------------


def test_a_parameter_replaced_by_an_equal_copy_is_an_identity_change() -> None:
    net = Net()
    lines = changes(net, lambda: setattr(net.fc1, "weight", nn.Parameter(net.fc1.weight.detach().clone())))
    assert lines == ["fc1.weight: parameter object replaced"]
    again = Net()
    assert changes(again, lambda: setattr(again.fc1, "weight", nn.Parameter(again.fc1.weight.detach().clone())),
                   identity=False) == []  # fmt: skip


def test_a_value_change_names_the_entry_and_both_values() -> None:
    net = Net()
    with torch.no_grad():
        net.fc1.weight.fill_(0.5)
    lines = changes(net, lambda: no_grad_set(net.fc1.weight, (1, 2), -0.5))
    assert lines == [
        "fc1.weight: values differ at 1 entry (first at (1, 2): 0.5 -> -0.5)",
        "state_dict['fc1.weight']: values differ at 1 entry (first at (1, 2): 0.5 -> -0.5)",
    ]


def test_minus_zero_differs_from_zero() -> None:
    net = Net()
    with torch.no_grad():
        net.fc2.bias.zero_()
    lines = changes(net, lambda: no_grad_set(net.fc2.bias, (1,), -0.0))
    assert "fc2.bias: values differ at 1 entry (first at (1,): 0.0 -> -0.0)" in lines


def test_nan_equals_the_same_nan_and_differs_from_another() -> None:
    net = Net()
    no_grad_set(net.fc1.bias, (0,), math.nan)
    assert changes(net, lambda: None) == []
    assert changes(net, lambda: no_grad_set(net.fc1.bias, (0,), math.nan)) == []
    other_nan = torch.tensor(0x7FC00001, dtype=torch.int32).view(torch.float32)  # a NaN of other bits
    lines = changes(net, lambda: no_grad_set(net.fc1.bias, (0,), float(other_nan)))
    # (float() keeps the payload: the line shows the bits, as the reprs are both nan)
    assert lines and lines[0].startswith("fc1.bias: values differ at 1 entry (first at (0,): nan (bits ")


def test_dtype_shape_type_and_requires_grad() -> None:
    net = Net()
    assert changes(net, lambda: net.fc1.half()) == [
        "fc1.weight: dtype torch.float32 -> torch.float16",
        "fc1.bias: dtype torch.float32 -> torch.float16",
        "state_dict['fc1.weight']: dtype torch.float32 -> torch.float16",
        "state_dict['fc1.bias']: dtype torch.float32 -> torch.float16",
    ]
    assert changes(net, lambda: net.fc2.bias.requires_grad_(False)) == ["fc2.bias: requires_grad True -> False"]
    assert changes(net, lambda: setattr(net, "steps", torch.zeros(3))) == [
        "steps: buffer object replaced",
        "steps: shape (2,) -> (3,)",
        "state_dict['steps']: shape (2,) -> (3,)",
    ]


def test_a_grad_is_recorded() -> None:
    net = Net()
    lines = changes(net, lambda: net(torch.ones(1, 4)).sum().backward())
    assert "fc1.weight: .grad None -> a tensor" in lines
    lines = changes(net, lambda: net(torch.ones(1, 4)).sum().backward())  # accumulates into the same grad
    assert any(line.startswith("fc2.bias.grad: values differ") for line in lines), lines


def test_a_class_change_shows_the_bases_when_the_names_agree() -> None:
    net = Net()
    lines = changes(net, lambda: pruneplug.prune(net.fc2, "weight", "l1_unstructured", amount=1))
    assert lines[0] == "fc2: class Linear(Module) -> Linear(LazyMaskedModule, Linear)"

    class Other(nn.Linear):
        pass

    assert changes(net, lambda: setattr(net.fc1, "__class__", Other)) == ["fc1: class Linear -> Other"]


def test_submodules_added_removed_and_replaced() -> None:
    net = Net()
    assert changes(net, lambda: setattr(net, "fc3", nn.ReLU())) == ["fc3: submodule added (ReLU)"]
    assert changes(net, lambda: delattr(net, "fc3")) == ["fc3: submodule removed (ReLU)"]
    lines = changes(net, lambda: setattr(net, "fc1", copy.deepcopy(net.fc1)))
    assert lines == ["fc1: module object replaced", "fc1.weight: parameter object replaced",
                     "fc1.bias: parameter object replaced"]  # fmt: skip
    assert changes(net, lambda: net.fc1.eval()) == ["fc1: training True -> False"]


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


HOOKS: dict[str, Callable[[nn.Module], Any]] = {
    "forward pre-hook": lambda m: m.register_forward_pre_hook(_noop),
    "forward hook": lambda m: m.register_forward_hook(_noop),
    "backward pre-hook": lambda m: m.register_full_backward_pre_hook(_noop),
    "backward hook": lambda m: m.register_full_backward_hook(_noop),
    "state_dict pre-hook": lambda m: m.register_state_dict_pre_hook(_noop),
    "state_dict hook": lambda m: m.register_state_dict_post_hook(_noop),
    "load_state_dict pre-hook": lambda m: m.register_load_state_dict_pre_hook(_noop),
    "load_state_dict post-hook": lambda m: m.register_load_state_dict_post_hook(_noop),
}


@pytest.mark.parametrize("kind", list(HOOKS))
def test_a_hook_of_every_kind_added_and_removed(kind: str) -> None:
    net = Net()
    before = snapshot(net)
    handle = HOOKS[kind](net.fc1)
    with_hook = snapshot(net)
    assert before.diff(with_hook) == [f"fc1: {kind} {handle.id} added (_noop)"]
    handle.remove()
    assert with_hook.diff(snapshot(net)) == [f"fc1: {kind} {handle.id} removed (_noop)"]
    assert_unchanged(before, net)


def test_hooks_reordered_replaced_and_called_otherwise() -> None:
    net = Net()
    first = net.register_forward_pre_hook(_noop)
    second = net.register_forward_pre_hook(_noop)
    hooks = net._forward_pre_hooks
    assert changes(net, lambda: hooks.move_to_end(first.id)) == [
        f"<root>: forward pre-hooks reordered: [{first.id}, {second.id}] -> [{second.id}, {first.id}]"
    ]
    assert changes(net, lambda: hooks.__setitem__(first.id, print)) == [
        f"<root>: forward pre-hook {first.id} replaced: _noop -> print"
    ]
    assert changes(net, lambda: hooks.__setitem__(first.id, copy.copy(pruneplug.PruningContainer()))) == [
        f"<root>: forward pre-hook {first.id} replaced: print -> PruningContainer on '?'"
    ]
    method = pruneplug.PruningContainer()
    assert changes(net, lambda: hooks.__setitem__(first.id, method)) == [
        f"<root>: forward pre-hook {first.id} object replaced (PruningContainer on '?')"
    ]
    net._forward_pre_hooks_with_kwargs[second.id] = True
    assert changes(net, lambda: net._forward_pre_hooks_with_kwargs.pop(second.id)) == [
        f"<root>: forward pre-hook {second.id} is called with kwargs -> plainly"
    ]


def test_a_tensor_hook_on_a_parameter() -> None:
    net = Net()
    handle = None

    def add() -> None:
        nonlocal handle
        handle = net.fc1.weight.register_hook(lambda grad: grad)

    lines = changes(net, add)
    assert len(lines) == 1 and lines[0].startswith("fc1.weight: grad hook ") and lines[0].endswith(" added (<lambda>)")
    assert handle is not None
    assert changes(net, handle.remove)[0].endswith(" removed (<lambda>)")


def test_the_pruning_history_is_compared() -> None:
    """A container that gains a method in place (torch's add_pruning_method) keeps its key: its history tells."""
    net = Net()
    pruneplug.prune(net.fc1, "weight", "l1_unstructured", amount=2)
    pruneplug.prune(net.fc1, "weight", "random_unstructured", amount=1)
    ((key, container),) = net.fc1._forward_pre_hooks.items()
    method = pruneplug.get_strategy("identity").create()
    method._tensor_name = "weight"
    assert changes(net, lambda: container.add_pruning_method(method)) == [
        f"fc1: forward pre-hook {key} history ['L1Unstructured', 'RandomUnstructured'] -> "
        "['L1Unstructured', 'RandomUnstructured', 'Identity']"
    ]
    methods = container._pruning_methods
    assert changes(net, lambda: setattr(container, "_pruning_methods", tuple(copy.copy(m) for m in methods))) == [
        f"fc1: forward pre-hook {key} history: each method object replaced"
    ]


def test_buffer_persistence_and_plain_attributes() -> None:
    net = Net()
    assert changes(net, lambda: net._non_persistent_buffers_set.add("steps")) == [
        "steps: persistent -> not persistent",
        "state_dict key 'steps' removed",
    ]
    assert changes(net, lambda: setattr(net.fc1, "note", "x")) == ["fc1: attribute 'note' added"]
    assert changes(net, lambda: setattr(net.fc1, "scale", torch.ones(1))) == ["fc1.scale: attribute added"]
    assert changes(net, lambda: net.fc1.__dict__.pop("scale")) == ["fc1.scale: attribute removed"]


class ExtraState(nn.Linear):
    """A module whose state_dict holds an extra entry when ``extra`` is set (a key with no tensor behind it)."""

    extra = False

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if type(self).extra:
            destination[prefix + "extra"] = torch.ones(1)


def test_a_state_dict_key_added() -> None:
    layer = ExtraState(2, 2)
    assert changes(layer, lambda: setattr(ExtraState, "extra", True)) == ["state_dict key 'extra' added"]


def test_a_stale_effective_weight() -> None:
    """torch's layout stores ``weight``: changing it alone (a stale weight) shows only as the tensor read."""
    layer = nn.Linear(3, 2)
    torch_prune.l1_unstructured(layer, "weight", amount=2)
    lines = changes(layer, lambda: layer.weight.detach().mul_(2))
    assert len(lines) == 1 and lines[0].startswith("weight (as read): values differ at 4 entries"), lines
    assert changes(layer, lambda: setattr(layer, "weight", layer.weight.clone())) == [
        "weight: attribute object replaced"
    ]


def test_a_lazy_module_s_weight_as_read() -> None:
    layer = nn.Linear(3, 2)
    pruneplug.prune(layer, "weight", "l1_unstructured", amount=2)
    lines = changes(layer, lambda: layer.weight_mask.fill_(False))
    assert "weight (as read): values differ at 4 entries" in lines[1], lines


def test_a_state_dict_or_tensor_that_cannot_be_read() -> None:
    class Broken(nn.Linear):
        broken = False

        def state_dict(self, *args: Any, **kwargs: Any) -> Any:
            if type(self).broken:
                raise RuntimeError("no state")
            return super().state_dict(*args, **kwargs)

    layer = Broken(2, 2)
    assert changes(layer, lambda: setattr(Broken, "broken", True)) == [
        "state_dict(): 2 entries -> state_dict() raises RuntimeError: no state"
    ]
    assert changes(layer, lambda: None) == []


# --- what is not a change -----------------------------------------------------------------------


def pruned(storage: str) -> nn.Module:
    net = Net()
    if storage == "torch":
        torch_prune.l1_unstructured(net.fc1, "weight", amount=3)
        torch_prune.random_structured(net.fc1, "weight", amount=1, dim=0)
    elif storage == "compat":
        compat.l1_unstructured(net.fc1, "weight", amount=3)
        compat.ln_structured(net.fc2, "weight", amount=1, n=2, dim=0)
    else:
        pruneplug.prune(net.fc1, "weight", "l1_unstructured", amount=3, mask_storage=storage)  # type: ignore[arg-type]
        pruneplug.prune(net.fc1, "weight", "random_structured", amount=1, dim=0)
        pruneplug.prune_global([(net.fc2, "weight"), (net.fc2, "bias")], "l1_unstructured", amount=2)
    with torch.no_grad():
        net.fc2.bias[0] = math.nan
        net.fc1.bias[0] = -0.0
    return net


STORAGES = ["bool", "packed", "torch", "compat"]


@pytest.mark.parametrize("storage", STORAGES)
def test_an_untouched_pruned_model_shows_no_difference(storage: str) -> None:
    net = pruned(storage)
    before = snapshot(net)
    assert before.diff(snapshot(net)) == []
    assert_unchanged(before, net)
    net.eval()
    with torch.no_grad():
        net(torch.ones(1, 4))  # fills pruneplug's cache of masked tensors: nothing the model holds
    if storage in ("bool", "packed"):  # (torch's layout stores a new masked tensor at every forward)
        assert snapshot(net).diff(snapshot(net)) == []
        net.train()
        assert_unchanged(before, net)


@pytest.mark.parametrize("storage", STORAGES)
def test_a_deep_copy_differs_in_identity_only(storage: str) -> None:
    net = pruned(storage)
    before = snapshot(net)
    lines = before.diff(snapshot(copy.deepcopy(net)))
    assert lines and all("object replaced" in line for line in lines), lines
    assert any(line == "fc1.weight_orig: parameter object replaced" for line in lines)
    assert before.diff(snapshot(copy.deepcopy(net)), identity=False) == []
    assert_unchanged(before, copy.deepcopy(net), identity=False)
    with pytest.raises(AssertionError, match="fc1: module object replaced"):
        assert_unchanged(before, copy.deepcopy(net))


def test_meta_tensors_compare_by_kind_only() -> None:
    layer = nn.Linear(2, 2, device="meta")
    assert changes(layer, lambda: None) == []
    assert changes(layer, lambda: layer.to(torch.float16)) == [
        "weight: dtype torch.float32 -> torch.float16",
        "bias: dtype torch.float32 -> torch.float16",
        "state_dict['weight']: dtype torch.float32 -> torch.float16",
        "state_dict['bias']: dtype torch.float32 -> torch.float16",
    ]


# --- the snapshot itself ------------------------------------------------------------------------


def test_a_snapshot_is_immutable_and_keeps_nothing_alive() -> None:
    layer = nn.Linear(2, 2)
    state = ModuleState(layer)
    with pytest.raises(AttributeError, match="immutable"):
        state._modules = ()  # type: ignore[misc]
    seen = weakref.ref(layer.weight)
    del layer
    gc.collect()
    assert seen() is None
    assert repr(state) == "<ModuleState of a Linear: 1 modules, 2 state_dict entries>"


def test_a_replaced_object_is_caught_even_when_the_old_one_is_gone() -> None:
    """A freed parameter's ``id`` may be reused by its replacement: identity is not judged by ``id``."""
    layer = nn.Linear(2, 2)
    before = snapshot(layer)
    layer.weight = nn.Parameter(layer.weight.detach().clone())
    gc.collect()
    assert before.diff(snapshot(layer)) == ["weight: parameter object replaced"]


def test_assert_unchanged_lists_every_line() -> None:
    layer = nn.Linear(2, 2)
    before = snapshot(layer)
    layer.weight = nn.Parameter(layer.weight.detach() + 1)
    with pytest.raises(AssertionError) as caught:
        assert_unchanged(before, layer)
    lines = str(caught.value).splitlines()
    assert lines[0] == "the model changed:"
    assert lines[1] == "  weight: parameter object replaced"
    assert lines[2].startswith("  weight: values differ at 4 entries")
    with pytest.raises(TypeError, match="before must be a ModuleState"):
        assert_unchanged(layer, layer)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="records a torch.nn.Module, got Tensor"):
        ModuleState(torch.ones(1))  # type: ignore[arg-type]
