"""Masked tensors computed on read (native API): memory, identity of the class, copies, interop."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

import pruneplug
import pruneplug.compat as compat
from pruneplug.core.lazy import _classes, is_lazy
from pruneplug.testing import assert_unchanged, snapshot


def test_nothing_extra_is_kept_after_pruning() -> None:
    """Before any read, a native prune keeps only the mask: no second copy of the weight."""
    layer = nn.Linear(64, 64)
    pruneplug.prune(layer, "weight", "l1_unstructured", amount=0.5)
    assert "weight" not in vars(layer)
    assert torch.equal(layer.weight, layer.weight_orig * layer.weight_mask)
    assert "weight" not in vars(layer)  # reading does not store it either


def test_the_class_keeps_its_name_and_comes_back_after_remove() -> None:
    layer = nn.Linear(3, 2)
    pruneplug.prune(layer, "weight", "l1_unstructured", amount=1)
    assert isinstance(layer, nn.Linear) and type(layer).__name__ == "Linear"
    assert repr(layer) == "Linear(in_features=3, out_features=2, bias=True)"
    assert is_lazy(layer) and type(layer) is not nn.Linear
    pruneplug.prune(layer, "bias", "l1_unstructured", amount=1)
    pruneplug.remove(layer, "weight")
    assert is_lazy(layer)  # the bias is still pruned
    pruneplug.remove(layer, "bias")
    assert type(layer) is nn.Linear and not is_lazy(layer)


def test_reads_follow_every_change_under_autograd() -> None:
    """In training each read is fresh: gradients flow, in-place and .data writes are seen."""
    layer = nn.Linear(4, 4)
    pruneplug.prune(layer, "weight", "random_unstructured", amount=6)
    with torch.no_grad():
        layer.weight_orig.data.mul_(3)  # even writes through .data: training-mode reads are never cached
    assert torch.equal(layer.weight, layer.weight_orig * layer.weight_mask)
    layer.weight.abs().sum().backward()  # a regularizer on the masked weight reaches weight_orig
    assert bool((layer.weight_orig.grad[~layer.weight_mask] == 0).all())
    assert bool((layer.weight_orig.grad[layer.weight_mask] != 0).all())
    layer.weight = torch.zeros(4, 4)  # assigning the derived tensor is ignored, as torch's next forward would
    assert torch.equal(layer.weight, layer.weight_orig * layer.weight_mask)


def test_copies_pickles_and_saves_stay_lazy() -> None:
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))
    pruneplug.prune(model[0], "weight", "l1_unstructured", amount=10)
    x = torch.randn(3, 6)
    expected = model(x)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model)), torch.load(buffer, weights_only=False)):
        assert is_lazy(other[0]) and type(other[0]) is type(model[0])
        assert torch.equal(other(x), expected)
        pruneplug.remove(other)
        assert type(other[0]) is nn.Linear
    assert is_lazy(model[0])


def test_rnns_keep_torch_s_eager_attribute() -> None:
    lstm = nn.LSTM(4, 3)
    pruneplug.prune(lstm, "weight_hh_l0", "l1_unstructured", amount=0.5)
    assert not is_lazy(lstm) and type(lstm) is nn.LSTM
    assert lstm._flat_weights[1] is lstm.__dict__["weight_hh_l0"]


def test_compat_and_torch_pruning_on_a_lazy_module() -> None:
    """Tensors pruned by compat or torch on a lazy module are computed on read too (never stale)."""
    conv = nn.Conv2d(2, 4, 3)
    pruneplug.prune(conv, "weight", "ln_structured", amount=1, n=2, dim=0)
    compat.l1_unstructured(conv, "bias", amount=1)
    torch_prune.l1_unstructured(conv, "weight", amount=5)
    assert is_lazy(conv) and "weight" not in vars(conv) and "bias" not in vars(conv)
    assert conv.bias_mask.dtype == torch.float32 and conv.weight_mask.dtype == torch.float32
    with torch.no_grad():
        conv.weight_orig.add_(1.0)
    assert torch.equal(conv.weight, conv.weight_orig * conv.weight_mask)
    torch_prune.remove(conv, "weight")
    pruneplug.remove(conv)
    assert type(conv) is nn.Conv2d


def test_a_module_pruned_by_torch_becomes_lazy_when_pruneplug_prunes_it() -> None:
    layer = nn.Linear(5, 5)
    torch_prune.l1_unstructured(layer, "weight", amount=5)
    assert "weight" in vars(layer)
    pruneplug.prune(layer, "bias", "l1_unstructured", amount=1)
    assert is_lazy(layer) and "weight" not in vars(layer)
    assert torch.equal(layer.weight, layer.weight_orig * layer.weight_mask)


def test_dataparallel_style_replicas_compute_the_masked_tensor() -> None:
    """DataParallel replicas hold parameters as plain attributes; the lazy read must still work."""
    layer = nn.Linear(4, 3)
    pruneplug.prune(layer, "weight", "l1_unstructured", amount=2)
    replica = layer._replicate_for_data_parallel()
    for key, parameter in layer._parameters.items():
        setattr(replica, key, parameter.detach().clone())
    x = torch.randn(2, 4)
    assert torch.allclose(replica(x), layer(x))


def test_a_tensor_cached_in_inference_mode_is_not_handed_to_autograd() -> None:
    layer = nn.Linear(4, 3)
    pruneplug.prune(layer, "weight", "l1_unstructured", amount=2)
    layer.eval().requires_grad_(False)
    with torch.inference_mode():
        layer(torch.randn(1, 4))
    x = torch.randn(1, 4, requires_grad=True)
    layer(x).sum().backward()  # would fail if the inference tensor were reused
    assert x.grad is not None


def test_lazy_modules_with_torch_style_hooks_pickle_after_an_eval_forward() -> None:
    layer = nn.Linear(4, 3)
    pruneplug.prune(layer, "weight", torch_prune.L1Unstructured, amount=2)
    layer.eval()
    with torch.no_grad():
        layer(torch.randn(1, 4))
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    assert torch.equal(torch.load(buffer, weights_only=False).weight_mask, layer.weight_mask)


def test_torch_s_remove_gives_the_class_back_once_nothing_is_pruned() -> None:
    layer = nn.Linear(4, 3)
    pruneplug.prune(layer, "weight", "l1_unstructured", amount=2)
    torch_prune.l1_unstructured(layer, "weight", amount=2)
    torch_prune.remove(layer, "weight")
    assert type(layer) is nn.Linear and not pruneplug.is_pruned(layer)


def test_parametrize_on_top_of_pruning_survives_remove() -> None:
    """parametrize builds its own class on the lazy one; removing the pruning must not undo it."""
    layer = nn.Linear(4, 3)
    pruneplug.prune(layer, "bias", "l1_unstructured", amount=1)
    nn.utils.parametrize.register_parametrization(layer, "weight", Double())
    pruneplug.remove(layer, "bias")
    x = torch.randn(2, 4)
    assert torch.allclose(layer(x), x @ (2 * layer.parametrizations.weight.original).T + layer.bias)
    nn.utils.parametrize.remove_parametrizations(layer, "weight")
    assert type(layer) is nn.Linear  # both undone: the class is the original again


def test_pruning_a_parametrized_module_keeps_parametrize_removable() -> None:
    layer = nn.utils.parametrizations.weight_norm(nn.Linear(4, 3))
    pruneplug.prune(layer, "bias", "l1_unstructured", amount=1)
    nn.utils.parametrize.remove_parametrizations(layer, "weight")
    pruneplug.remove(layer, "bias")
    assert type(layer) is nn.Linear and layer(torch.randn(2, 4)).shape == (2, 3)


class Double(nn.Module):
    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return 2 * weight


class _RefusesSubclasses(nn.Linear):
    def __init_subclass__(cls, **kwargs: object) -> None:
        raise RuntimeError("this class takes no subclasses")


class _RefusesNewClass(nn.Linear):
    def __setattr__(self, name: str, value: object) -> None:
        if name == "__class__":
            raise ValueError("this module keeps its class")
        super().__setattr__(name, value)


class _RefusesAfterNewClass(nn.Linear):
    def __setattr__(self, name: str, value: object) -> None:
        super().__setattr__(name, value)
        if name == "__class__":
            raise ValueError("changed my mind")


@pytest.mark.parametrize("make", [_RefusesSubclasses, _RefusesNewClass, _RefusesAfterNewClass])
def test_a_module_that_cannot_become_lazy_is_pruned_eagerly(make: type[nn.Linear]) -> None:
    """Any Exception from making the lazy subclass or switching to it falls back to torch's eager attribute."""
    layer = make(4, 3)
    pruneplug.prune(layer, "weight", "l1_unstructured", amount=5)
    assert type(layer) is make and not is_lazy(layer)
    if make is _RefusesSubclasses:
        assert make not in _classes  # no half-made class is kept
    assert torch.equal(vars(layer)["weight"], layer.weight_orig * layer.weight_mask)  # stored, as torch does
    assert int((layer.weight == 0).sum()) == 5
    pruneplug.remove(layer, "weight")
    assert type(layer) is make and isinstance(layer.weight, nn.Parameter)


def test_an_interrupt_while_making_the_lazy_class_propagates_and_changes_nothing() -> None:
    """BaseException (KeyboardInterrupt) is not a refusal to fall back on: it propagates, the module as it was."""

    class Interrupted(nn.Linear):
        def __init_subclass__(cls, **kwargs: object) -> None:
            raise KeyboardInterrupt

    layer = Interrupted(4, 3)
    before = snapshot(layer)
    with pytest.raises(KeyboardInterrupt):
        pruneplug.prune(layer, "weight", "l1_unstructured", amount=5)
    assert Interrupted not in _classes
    assert_unchanged(before, layer)
