"""The nm plugin, tested as installed: found through its entry point, conformant, exact N:M masks."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import Tensor, nn

import pruneplug
from pruneplug.testing import Shape, StrategyConformance

RATIOS = [{"n": 1, "m": 2}, {"n": 2, "m": 4}, {"n": 1, "m": 4}, {"n": 3, "m": 4}, {"n": 2, "m": 8}]


@pytest.fixture
def registry() -> Iterator[pruneplug.Registry]:
    """A fresh default registry that loads installed plugins, as a user's first call does."""
    with pruneplug.use_registry(pruneplug.Registry(load_entry_points=True)) as fresh:
        yield fresh


def nm_shapes() -> st.SearchStrategy[Shape]:
    """Linear-like (out, in) and Conv-like (out, in, k, k) shapes whose dim 1 splits into groups of 4 and 8."""
    inputs = st.sampled_from([8, 16])
    return st.one_of(
        st.tuples(st.integers(1, 4), inputs),
        st.tuples(st.integers(1, 3), inputs, st.integers(1, 2), st.integers(1, 2)),
    )


class TestNMConformance(StrategyConformance):
    """pruneplug's conformance checks, on the strategy found by name through the entry point."""

    strategy = "nm"
    params = st.sampled_from(RATIOS)
    shapes = nm_shapes()
    dtypes = (torch.float32, torch.float16, torch.bfloat16)
    invalid_params = ({"n": 4, "m": 4}, {"n": 0}, {"m": 3}, {"dim": 4}, {"n": 2.0})


def groups_of(mask: Tensor, m: int, dim: int = 1) -> Tensor:
    """``mask`` as rows of ``m`` consecutive entries along ``dim``."""
    return mask.movedim(dim, -1).reshape(-1, m)


def test_found_through_the_entry_point(registry: pruneplug.Registry) -> None:
    """No registration code: a fresh registry finds it, with its distribution and parameters."""
    spec = registry.get("nm")
    assert spec.distribution == "pruneplug-nm" and spec.provider == "nm"
    assert spec.version == importlib.metadata.version("pruneplug-nm")
    assert [(p.name, p.default) for p in spec.parameters()] == [("n", 2), ("m", 4), ("dim", 1)]


def test_a_2_4_mask_has_exactly_2_zeros_in_every_group_of_4_along_dim_1(registry: pruneplug.Registry) -> None:
    """The default is 2:4 along the input features: every group of 4 keeps its 2 largest magnitudes."""
    layer = nn.Linear(16, 8)
    pruneplug.prune(layer, "weight", "nm")
    groups = groups_of(layer.weight_mask, 4)
    assert groups.shape == (32, 4)
    assert ((~groups).sum(dim=1) == 2).all()
    magnitude = groups_of(layer.weight_orig.detach().abs(), 4)
    kept_min = magnitude.masked_fill(~groups, float("inf")).min(dim=1).values
    pruned_max = magnitude.masked_fill(groups, -1.0).max(dim=1).values
    assert (kept_min >= pruned_max).all()


def test_conv_weights_group_input_channels(registry: pruneplug.Registry) -> None:
    """For a Conv2d weight (out, in, kh, kw) the groups run along the input channels, per output and position."""
    conv = nn.Conv2d(8, 2, 3)
    pruneplug.prune(conv, "weight", "nm", n=1, m=4)
    assert ((groups_of(conv.weight_mask, 4)).sum(dim=1) == 1).all()


def test_ties_keep_the_earlier_entries(registry: pruneplug.Registry) -> None:
    """Equal magnitudes (signs do not matter): the earliest positions of the group win."""
    layer = nn.Linear(8, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]]))
    pruneplug.prune(layer, "weight", "nm")
    assert layer.weight_mask.tolist() == [[True, True, False, False, True, True, False, False]]


def test_other_dims(registry: pruneplug.Registry) -> None:
    """``dim`` picks the dimension the groups run along (negative counts from the end)."""
    weight = torch.arange(24.0).reshape(4, 6)
    mask = pruneplug.compute_mask("nm", weight, n=1, m=2, dim=0)
    assert mask.tolist() == [[False] * 6, [True] * 6, [False] * 6, [True] * 6]
    assert torch.equal(
        pruneplug.compute_mask("nm", weight, n=1, m=3, dim=-1), pruneplug.compute_mask("nm", weight, n=1, m=3)
    )


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    first=st.sampled_from(RATIOS),
    second=st.sampled_from(RATIOS),
    earlier=st.booleans(),
)
def test_iterative_pruning_is_nm_compliant_and_intersects(
    seed: int, first: dict[str, int], second: dict[str, int], earlier: bool
) -> None:
    """Each prune keeps the ``n`` largest still-unpruned entries of every group and never revives one.

    Computed independently: the expected mask sorts (alive, magnitude, -position) per group.
    """
    generator = torch.Generator().manual_seed(seed)
    layer = nn.Linear(16, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.randint(-2, 3, (3, 16), generator=generator).float())  # many ties and zeros
    values = layer.weight.detach().clone()
    with pruneplug.use_registry(pruneplug.Registry(load_entry_points=True)):
        if earlier:
            pruneplug.prune(layer, "weight", "random_unstructured", amount=0.3)
        for params in (first, second):
            before = layer._buffers.get("weight_mask", torch.ones(3, 16, dtype=torch.bool)).clone()
            pruneplug.prune(layer, "weight", "nm", **params)
            after = layer.weight_mask
            assert torch.equal(after, expected_nm(values, before, params["n"], params["m"]))


def expected_nm(values: Tensor, alive: Tensor, n: int, m: int) -> Tensor:
    """The N:M mask along dim 1 by definition, one group at a time."""
    out = torch.zeros_like(alive)
    for row in range(values.shape[0]):
        for start in range(0, values.shape[1], m):
            group = range(start, start + m)
            order = sorted(group, key=lambda i: (not bool(alive[row, i]), -abs(float(values[row, i])), i))
            for i in order[:n]:
                out[row, i] = bool(alive[row, i])
    return out


@pytest.mark.parametrize(
    ("make", "params", "error", "fragment"),
    [
        (lambda: nn.Linear(6, 2), {}, pruneplug.InvalidParametersError, "m=4 does not divide the size 6 of dim 1"),
        (lambda: nn.Linear(8, 2), {"n": 4}, pruneplug.InvalidParametersError, "n=4 must be smaller than m=4"),
        (lambda: nn.Linear(8, 2), {"n": 0}, pruneplug.InvalidParametersError, "n: Input should be greater than"),
        (lambda: nn.Linear(8, 2), {"m": 4.0}, pruneplug.InvalidParametersError, "m: Input should be a valid integer"),
        (lambda: nn.Linear(8, 2), {"dim": 2}, pruneplug.InvalidDimError, "dim=2 is out of range for a tensor with 2"),
    ],
)
def test_invalid_uses_name_the_problem_and_change_nothing(
    registry: pruneplug.Registry, make: Any, params: dict[str, Any], error: type[Exception], fragment: str
) -> None:
    """Each problem is a pruneplug error naming it, with the module, tensor and strategy added by the core."""
    layer = make()
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    with pytest.raises(error, match=fragment) as caught:
        pruneplug.prune(layer, "weight", "nm", **params)
    assert caught.value.strategy == "nm"  # type: ignore[attr-defined]
    assert not pruneplug.is_pruned(layer)
    assert state.keys() == layer.state_dict().keys()
    assert all(torch.equal(v, layer.state_dict()[k]) for k, v in state.items())


def test_a_bias_has_one_dim(registry: pruneplug.Registry) -> None:
    """A 1-dim tensor has no groups along dim 1: the error says why, in the core's context."""
    with pytest.raises(
        pruneplug.InvalidDimError, match=r"Linear.bias, strategy 'nm': N:M sparsity needs a tensor with at least 2 dims"
    ):
        pruneplug.prune(nn.Linear(8, 4), "bias", "nm")


def test_torch_style_masks_through_compat(registry: pruneplug.Registry) -> None:
    """Through ``pruneplug.compat`` (torch's float masks) the class gives the same mask."""
    from pruneplug_nm import NMSparsity

    layer = nn.Linear(8, 4)
    native = pruneplug.compute_mask("nm", layer.weight.detach())
    NMSparsity.apply(layer, "weight", n=2, m=4)
    assert layer.weight_mask.dtype == torch.float32
    assert torch.equal(layer.weight_mask != 0, native)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_2_4_weights_convert_to_semi_structured_sparse_tensors(registry: pruneplug.Registry) -> None:
    """A pruned, removed fp16 Linear weight converts with ``to_sparse_semi_structured`` and multiplies the same."""
    major, _ = torch.cuda.get_device_capability()
    if major < 8:
        pytest.skip("semi-structured sparsity needs compute capability 8.0 or newer")
    from torch.sparse import to_sparse_semi_structured

    torch.manual_seed(0)
    layer = nn.Linear(128, 128).half().cuda()
    pruneplug.prune(layer, "weight", "nm")
    pruneplug.remove(layer, "weight")
    dense = layer.weight.detach()
    sparse = to_sparse_semi_structured(dense)
    assert torch.equal(sparse.to_dense(), dense)
    x = torch.randn(128, 128, dtype=torch.float16, device="cuda")
    torch.testing.assert_close(torch.mm(sparse, x), torch.mm(dense, x), rtol=1e-2, atol=1e-2)
