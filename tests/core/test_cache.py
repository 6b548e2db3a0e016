"""The eval/no-grad cache of masked tensors: never stale, never in the way of tracing tools."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from hypothesis import given, settings, strategies as st
from torch import Tensor, nn
from torch.func import functional_call, vmap

import pruneplug
import pruneplug.compat as compat
from pruneplug.core.cache import held, uncached
from pruneplug.core.lazy import lazily_masked_hook


def pruned_stack(prune: Callable[[nn.Module], None]) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    prune(model[0])
    return model.eval().requires_grad_(False)


NATIVE = [
    pytest.param(lambda m: pruneplug.prune(m, "weight", "l1_unstructured", amount=8), id="native"),
    pytest.param(
        lambda m: pruneplug.prune(m, "weight", "l1_unstructured", amount=8, mask_storage="packed"), id="packed"
    ),
]
NATIVE_AND_COMPAT = [
    *NATIVE,
    pytest.param(lambda m: compat.l1_unstructured(m, "weight", amount=8), id="compat"),
]


def expected(model: nn.Sequential, x: Tensor) -> Tensor:
    first = model[0]
    hidden = torch.relu(x @ (first.weight_orig * first.weight_mask).T + first.bias)
    return hidden @ model[2].weight.T + model[2].bias


@pytest.mark.parametrize("prune", NATIVE_AND_COMPAT)
@pytest.mark.filterwarnings("ignore:The tensor attribute:UserWarning")  # torch's own, for its stored weight
def test_torch_export_sees_the_masked_weight(prune: Callable[[nn.Module], None]) -> None:
    model, x = pruned_stack(prune), torch.randn(3, 4)
    with torch.no_grad():
        model(x)  # something cached first
        program = torch.export.export(model, (x,))
    assert torch.allclose(program.module()(x), expected(model, x))


@pytest.mark.parametrize("prune", NATIVE_AND_COMPAT)
def test_torch_compile_fullgraph_without_graph_breaks(prune: Callable[[nn.Module], None]) -> None:
    model, x = pruned_stack(prune), torch.randn(3, 4)
    with torch.no_grad():
        model(x)
        compiled = torch.compile(model, backend="eager", fullgraph=True)
        assert torch.allclose(compiled(x), expected(model, x))
        assert torch._dynamo.explain(model)(x).graph_break_count == 0


@pytest.mark.parametrize("prune", NATIVE)
def test_vmap_over_functional_call(prune: Callable[[nn.Module], None]) -> None:
    model, x = pruned_stack(prune), torch.randn(3, 4)
    params = {name: torch.stack([p, 2 * p]) for name, p in model.named_parameters()}
    with torch.no_grad():
        model(x)
        out = vmap(lambda p: functional_call(model, p, (x,)))(params)
    assert torch.allclose(out[0], expected(model, x))


def test_jit_trace_follows_the_parameters() -> None:
    model, x = pruned_stack(NATIVE[0].values[0]), torch.randn(3, 4)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model(x)
        traced = torch.jit.trace(model, (x,))
        model[0].weight_orig.mul_(2)
        assert torch.allclose(traced(x), expected(model, x))


def test_jit_trace_refuses_packed_masks_it_would_freeze() -> None:
    """A trace would hold a packed mask's bytes as a constant: tracing says so; unpacked, it traces."""
    model, x = pruned_stack(NATIVE[1].values[0]), torch.randn(3, 4)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(pruneplug.PackedMaskError, match=r"unpack_masks\(model\) before tracing"):
            torch.jit.trace(model, (x,))
        traced = torch.jit.trace(pruneplug.unpack_masks(model), (x,))
        model[0].weight_mask[0] = False
        assert torch.allclose(traced(x), expected(model, x))


@pytest.mark.parametrize("prune", NATIVE_AND_COMPAT)
def test_replacing_data_with_other_strides_is_seen(prune: Callable[[nn.Module], None]) -> None:
    """``param.data = ...`` keeps the Parameter and its version counter; the storage tells."""
    layer = pruned_stack(prune)[0]
    with torch.no_grad():
        layer(torch.randn(1, 4))
        layer.weight_orig.data = layer.weight_orig.data.t()
        layer(torch.randn(1, 4))
        assert torch.equal(layer.weight, layer.weight_orig * layer.weight_mask)


def test_a_dtype_round_trip_never_serves_the_old_weight() -> None:
    """half() then float() frees and reallocates storage, often at the same address."""
    for size in (16, 64, 256):
        layer = nn.Linear(size, size).eval()
        pruneplug.prune(layer, "weight", "l1_unstructured", amount=0.5)
        with torch.no_grad():
            layer(torch.randn(1, size))
            layer.half().float()
            assert torch.equal(layer.weight, layer.weight_orig * layer.weight_mask)


def test_a_new_storage_at_the_old_address_is_seen() -> None:
    """Two storages over one buffer share an address: the storage object, not the pointer, decides."""
    layer = nn.Linear(4, 4).eval()
    pruneplug.prune(layer, "weight", "l1_unstructured", amount=0.5)
    memory = bytearray(64)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # frombuffer on a bytearray warns that it is not read-only
        first = torch.frombuffer(memory, dtype=torch.float32).view(4, 4)
        first.fill_(1.0)
        layer.weight_orig.data = first
        layer(torch.randn(1, 4))
        second = torch.frombuffer(memory, dtype=torch.float32).view(4, 4)
        first.fill_(2.0)
        layer.weight_orig.data = second
        assert torch.equal(layer.weight, layer.weight_orig * layer.weight_mask)


def test_parameter_subclasses_are_cached_too() -> None:
    class MyParameter(nn.Parameter):
        pass

    layer = nn.Linear(8, 8).eval()
    layer.weight = MyParameter(layer.weight.detach().clone())
    pruneplug.prune(layer, "weight", "l1_unstructured", amount=0.5)
    with torch.no_grad():
        assert layer.weight is layer.weight


def test_an_unhashable_strategy_still_runs_in_eval(registry: pruneplug.Registry) -> None:
    class FirstK(torch_prune.BasePruningMethod):
        PRUNING_TYPE = "unstructured"

        def __init__(self, k: int) -> None:
            self.k = k

        def __eq__(self, other: object) -> bool:  # makes instances unhashable
            return isinstance(other, FirstK) and other.k == self.k

        def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
            mask = default_mask.clone()
            mask.view(-1)[: self.k] = 0
            return mask

    pruneplug.register(FirstK, name="first_k")
    layer = nn.Linear(4, 3).eval()
    pruneplug.prune(layer, "weight", "first_k", k=2)
    with torch.no_grad():
        out = layer(torch.ones(1, 4))
    assert torch.allclose(out, torch.ones(1, 4) @ (layer.weight_orig * layer.weight_mask).T + layer.bias)


# --- never stale, whatever happens in between ------------------------------------------------------

OPERATIONS = [
    "scale in place",
    "copy_ new values",
    "replace .data",
    "transpose .data",
    "dtype round trip",
    "optimizer step",
    "prune again",
    "load_state_dict",
    "train then eval",
    "read in inference mode",
    "pack masks",
    "unpack masks",
    "mask setitem",
]


@given(st.lists(st.sampled_from(OPERATIONS), min_size=1, max_size=8))
@settings(max_examples=60)
def test_eval_reads_always_equal_orig_times_mask(operations: list[str]) -> None:
    """After any sequence of changes, an eval/no-grad read is ``weight_orig * weight_mask`` at that moment."""
    torch.manual_seed(0)
    layer = nn.Linear(6, 6)
    pruneplug.prune(layer, "weight", "l1_unstructured", amount=0.3)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    snapshot = {k: v.clone() for k, v in layer.state_dict().items()}
    x = torch.randn(2, 6)
    layer.eval()

    def check() -> None:
        with torch.no_grad():
            expected = layer.weight_orig * layer.weight_mask
            assert torch.equal(layer.weight, expected)
            assert torch.allclose(layer(x), x @ expected.T + layer.bias)

    check()
    for operation in operations:
        with torch.no_grad():
            if operation == "scale in place":
                layer.weight_orig.mul_(1.5)
            elif operation == "copy_ new values":
                layer.weight_orig.copy_(torch.randn(6, 6))
            elif operation == "replace .data":
                layer.weight_orig.data = torch.randn(6, 6)
            elif operation == "transpose .data":
                layer.weight_orig.data = layer.weight_orig.data.t()
            elif operation == "dtype round trip":
                layer.double().float()
            elif operation == "prune again" and int(layer.weight_mask.sum()) > 2:
                pruneplug.prune(layer, "weight", "l1_unstructured", amount=1)
            elif operation == "load_state_dict":
                layer.load_state_dict({**snapshot, "weight_mask": layer.weight_mask}, strict=False)
            elif operation == "pack masks":
                pruneplug.pack_masks(layer)
            elif operation == "unpack masks":
                pruneplug.unpack_masks(layer)
            elif operation == "mask setitem" and int(layer.weight_mask.sum()) > 2:
                layer.weight_mask[tuple(layer.weight_mask.nonzero()[0].tolist())] = False
        if operation == "optimizer step":
            layer.train()
            optimizer.zero_grad()
            layer(x).sum().backward()
            optimizer.step()
            layer.eval()
        elif operation == "train then eval":
            layer.train()
            layer(x)
            layer.eval()
        elif operation == "read in inference mode":
            with torch.inference_mode():
                assert torch.equal(layer.weight, layer.weight_orig * layer.weight_mask)
        check()


@pytest.mark.parametrize("storage", ["bool", "packed"])
def test_masks_made_in_inference_mode_are_never_stale(storage: str) -> None:
    """Inference tensors have no version counter: a mask pruned in inference mode and changed there in
    place is seen at the next read (it is not cached)."""
    layer, x = nn.Linear(4, 3).eval(), torch.randn(2, 4)
    with torch.inference_mode():
        pruneplug.prune(layer, "weight", "l1_unstructured", amount=3, mask_storage=storage)
        layer(x)
        layer.weight_mask[layer.weight_mask.nonzero()[0].tolist()] = False
        assert torch.equal(layer.weight, layer.weight_orig * layer.weight_mask)
        assert torch.allclose(layer(x), x @ (layer.weight_orig * layer.weight_mask).T + layer.bias)


@pytest.mark.parametrize("prune", NATIVE)
def test_nothing_is_kept_inside_uncached_and_what_was_kept_stays_right(prune: Callable[[nn.Module], None]) -> None:

    model = pruned_stack(prune)
    hook = lazily_masked_hook(model[0], "weight")
    x = torch.randn(3, 4)
    with uncached():
        assert torch.allclose(model(x), expected(model, x))
    assert held(hook) is None  # nothing kept while uncached
    model(x)
    kept = held(hook)
    assert kept is not None  # kept again outside
    with uncached(), uncached():  # (nested)
        assert torch.allclose(model(x), expected(model, x))
    assert held(hook) is kept
    with torch.no_grad():
        model[0].weight_orig.mul_(2)  # a change seen inside and after
    with uncached():
        assert torch.allclose(model(x), expected(model, x))
    assert torch.allclose(model(x), expected(model, x))
