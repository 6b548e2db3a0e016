"""RMSNorm classes of other libraries (Hugging Face's) and users, masked to see only the kept channels."""

from __future__ import annotations

import copy
import io
import pickle
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, strategies as st
from torch import Tensor, nn
from torch.nn.utils import parametrize

import pruneplug
from pruneplug.core.lazy import is_lazy
from pruneplug.core.norms import (
    ChannelMaskedNorm,
    _masked_class,
    is_rms_norm_like,
    mask_norm_channels,
    masks_channel_statistics,
    norm_channels_mask,
    unmask_norm_channels,
)
from pruneplug.errors import InvalidMaskError, InvalidTargetError

pytest.importorskip("transformers", reason="these norms are Hugging Face's (the 'test' extra has transformers)")

from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
from transformers.models.llama.modeling_llama import LlamaRMSNorm
from transformers.models.mistral.modeling_mistral import MistralRMSNorm
from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm


class MyRMSNorm(nn.Module):
    """A user's RMSNorm, epsilon named ``eps``, computing in the input's dtype."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


class FooRMSNorm(nn.Module):
    """Named like one, but with a bias: not RMSNorm-like."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.bias = nn.Parameter(torch.zeros(hidden_size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) + self.bias


CLASSES: list[type[nn.Module]] = [LlamaRMSNorm, Qwen2RMSNorm, MistralRMSNorm, GemmaRMSNorm, MyRMSNorm]
IDS = [cls.__name__ for cls in CLASSES]
EPS = 1e-5


def build(cls: type[nn.Module], channels: int, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The norm with a random weight (not the ones or zeros it starts with, which hide slicing errors)."""
    norm = cls(channels, eps=EPS)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(channels))
    return norm.to(dtype)


def compacted(norm: nn.Module, keep: Tensor) -> nn.Module:
    """By hand: a fresh norm of the same class over the kept channels, with the kept slice of the (masked) weight."""
    cls = next(cls for cls in type(norm).__mro__ if cls in CLASSES)  # under pruneplug's subclasses
    weight: Tensor = norm.weight
    small = cls(int(keep.sum()), eps=EPS)
    with torch.no_grad():
        small.weight.copy_(weight.detach()[keep])
    return small.to(weight.dtype)


def expected(norm: nn.Module, keep: Tensor, x: Tensor) -> Tensor:
    """The compacted norm's output on the kept channels, scattered into zeros."""
    index = keep.nonzero().squeeze(1)
    y = compacted(norm, keep)(x.index_select(-1, index))
    return y.new_zeros(x.shape).index_copy(-1, index, y)


def even_keep(channels: int) -> Tensor:
    return torch.tensor([True, False, True, False] * (channels // 4))


def tolerance(cls: type[nn.Module], dtype: torch.dtype) -> dict[str, float]:
    """How close masked and compacted are (measured over 300 random widths and keeps: at most 2/3 of this).

    float32: the scaling by sqrt(n/k) and back rounds twice and the squares are summed over
    more terms (measured up to 4.2e-7 relative at 4096 channels). Hugging Face's norms compute
    in float32 whatever the input, so float64 is as close as float32 for them. bfloat16: the scaled input
    and the output are rounded to bfloat16 once more than in the compacted norm (up to 4 units
    in the last place); MyRMSNorm, which sums its squares in bfloat16 too, about twice that.
    """
    if dtype == torch.float64 and cls is MyRMSNorm:  # (the others compute in float32; the scale is float64)
        return {"rtol": 1e-13, "atol": 1e-13}
    if dtype in (torch.float32, torch.float64):
        return {"rtol": 1e-6, "atol": 1e-6}
    return {"rtol": 2**-5 if cls is MyRMSNorm else 2**-6, "atol": 1e-2}


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=["fp32", "bf16", "fp64"])
def test_the_masked_norm_computes_what_the_compacted_one_does(cls: type[nn.Module], dtype: torch.dtype) -> None:
    norm = build(cls, 12, dtype)
    keep = even_keep(12)
    x = (3 * torch.randn(2, 5, 12)).to(dtype)  # nonzero at the pruned channels too
    want = expected(norm, keep, x)
    assert is_rms_norm_like(norm) and masks_channel_statistics(norm)
    mask_norm_channels(norm, keep)
    assert type(norm).__name__ == cls.__name__ and isinstance(norm, cls) and isinstance(norm, ChannelMaskedNorm)
    got = norm(x)
    assert got.dtype == want.dtype
    torch.testing.assert_close(got, want, **tolerance(cls, dtype))
    assert bool((got[..., ~keep] == 0).all())
    # The unmasked norm would count the zeros of pruned channels: the two must differ there.
    unmasked = build(cls, 12, dtype)
    unmasked.load_state_dict({"weight": norm.weight})
    assert not torch.allclose(unmasked(x * keep).float(), want.float(), atol=0.1)


@given(
    cls=st.sampled_from(CLASSES),
    channels=st.integers(1, 40),
    leading=st.lists(st.integers(1, 3), min_size=0, max_size=3),
    seed=st.integers(0, 2**31 - 1),
)
def test_any_width_shape_and_keep(cls: type[nn.Module], channels: int, leading: list[int], seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    norm = cls(channels, eps=EPS)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(channels, generator=generator))
    keep = torch.rand(channels, generator=generator) < 0.6
    keep[int(torch.randint(channels, (), generator=generator))] = True
    x = 3 * torch.randn([*leading, channels], generator=generator)
    want = expected(norm, keep, x)
    mask_norm_channels(norm, keep)
    got = norm(x)
    torch.testing.assert_close(got, want, **tolerance(cls, torch.float32))
    assert bool((got[..., ~keep] == 0).all())


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_what_sits_in_pruned_channels_does_not_leak(cls: type[nn.Module]) -> None:
    norm = build(cls, 8)
    keep = even_keep(8)
    x = torch.randn(3, 8)
    want = expected(norm, keep, x)
    mask_norm_channels(norm, keep)
    for junk in (1e30, float("inf"), float("nan")):
        dirty = torch.where(keep, x, junk)
        got = norm(dirty)
        torch.testing.assert_close(got, want, **tolerance(cls, torch.float32))
        assert bool((got[..., ~keep] == 0).all())


def test_pruned_channels_are_zero_whatever_the_forward_gives_there() -> None:
    norm = MyRMSNorm(4, eps=0.0)  # on zeros: 0 / sqrt(0), NaN everywhere
    keep = torch.tensor([True, False, True, True])
    mask_norm_channels(norm, keep)
    got = norm(torch.zeros(2, 4))
    assert bool(got[:, keep].isnan().all()) and bool((got[:, ~keep] == 0).all())  # as the compacted one


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_gradients_reach_kept_channels_and_the_kept_weights_only(cls: type[nn.Module]) -> None:
    norm = build(cls, 12)
    keep = even_keep(12)
    small = compacted(norm, keep)
    x = torch.randn(4, 12, requires_grad=True)
    x_small = x.detach()[:, keep].requires_grad_()
    upstream = torch.randn(4, 12)
    small(x_small).mul(upstream[:, keep]).sum().backward()
    mask_norm_channels(norm, keep)
    norm(x).mul(upstream).sum().backward()
    assert x.grad is not None and x_small.grad is not None and norm.weight.grad is not None
    torch.testing.assert_close(x.grad[:, keep], x_small.grad, rtol=1e-5, atol=1e-6)
    assert bool((x.grad[:, ~keep] == 0).all())
    assert small.weight.grad is not None
    torch.testing.assert_close(norm.weight.grad[keep], small.weight.grad, rtol=1e-5, atol=1e-6)
    assert bool((norm.weight.grad[~keep] == 0).all())


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_all_channels_kept_is_the_norm_itself(cls: type[nn.Module]) -> None:
    norm = build(cls, 12)
    x = torch.randn(3, 12)
    want = norm(x)
    mask_norm_channels(norm, torch.ones(12, dtype=torch.bool))
    assert torch.equal(norm(x), want)


def round_trips(module: nn.Module) -> list[nn.Module]:
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    return [copy.deepcopy(module), pickle.loads(pickle.dumps(module)), loaded]


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_unmask_state_dict_copies_and_pickles(cls: type[nn.Module]) -> None:
    norm = build(cls, 12)
    keep = even_keep(12)
    x = torch.randn(3, 12)
    mask_norm_channels(norm, keep)
    for copied in round_trips(norm):
        assert type(copied) is type(norm) and repr(copied) == repr(norm)
        assert torch.equal(copied.channels_mask, keep) and torch.equal(copied(x), norm(x))
    assert pickle.loads(pickle.dumps(type(norm))) is type(norm)

    state = norm.state_dict()
    assert torch.equal(state["channels_mask"], keep)
    fresh = build(cls, 12)
    pruneplug.load_pruned_state_dict(fresh, state)
    assert type(fresh) is type(norm) and torch.equal(fresh(x), norm(x))

    unmask_norm_channels(norm)
    assert type(norm) is cls and norm_channels_mask(norm) is None and "channels_mask" not in norm.state_dict()
    assert is_rms_norm_like(norm)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize("prune_first", [True, False])
def test_channel_masking_and_lazy_pruning_compose_in_either_order(cls: type[nn.Module], prune_first: bool) -> None:
    norm = build(cls, 12)
    keep = even_keep(12)
    if prune_first:
        pruneplug.prune(norm, "weight", "l1_unstructured", amount=4)
        assert is_rms_norm_like(norm)  # its parameter is weight_orig now
        mask_norm_channels(norm, keep)
    else:
        mask_norm_channels(norm, keep)
        pruneplug.prune(norm, "weight", "l1_unstructured", amount=4)
    assert is_lazy(norm) and isinstance(norm, ChannelMaskedNorm) and isinstance(norm, cls)
    assert is_rms_norm_like(norm) and type(norm).__name__ == cls.__name__ and "weight" not in vars(norm)
    assert int((norm.weight == 0).sum()) == 4
    x = torch.randn(4, 12)
    want = expected(norm, keep, x)  # the compacted norm gets the kept slice of the masked weight
    torch.testing.assert_close(norm(x), want, **tolerance(cls, torch.float32))
    for copied in round_trips(norm):
        assert type(copied) is type(norm) and torch.equal(copied(x), norm(x))

    unmask_norm_channels(norm)
    assert is_lazy(norm) and not isinstance(norm, ChannelMaskedNorm) and isinstance(norm, cls)
    mask_norm_channels(norm, keep)
    pruneplug.remove(norm)  # permanent pruning leaves the channel mask alone
    assert type(norm) is _masked_class(cls) and torch.equal(norm.channels_mask, keep)
    torch.testing.assert_close(norm(x), want, **tolerance(cls, torch.float32))
    unmask_norm_channels(norm)
    assert type(norm) is cls


class TwoDimRMSNorm(MyRMSNorm):
    def __init__(self, hidden_size: int) -> None:
        super().__init__(hidden_size)
        self.weight = nn.Parameter(torch.ones(2, hidden_size))


class NoEpsRMSNorm(MyRMSNorm):
    def __init__(self, hidden_size: int) -> None:
        super().__init__(hidden_size)
        del self.eps


class TextEpsRMSNorm(MyRMSNorm):
    def __init__(self, hidden_size: int) -> None:
        super().__init__(hidden_size)
        self.eps = "1e-6"  # type: ignore[assignment]


class FlagEpsRMSNorm(MyRMSNorm):
    def __init__(self, hidden_size: int) -> None:
        super().__init__(hidden_size)
        self.eps = True


class ChildRMSNorm(MyRMSNorm):
    def __init__(self, hidden_size: int) -> None:
        super().__init__(hidden_size)
        self.inner = nn.Identity()


class RMSNormalizer(MyRMSNorm):
    """Does the same, but its name does not end in RMSNorm."""


class Double(nn.Module):
    def forward(self, weight: Tensor) -> Tensor:
        return 2 * weight


def parametrized() -> nn.Module:
    norm = LlamaRMSNorm(4)
    parametrize.register_parametrization(norm, "weight", Double())
    return norm


@pytest.mark.parametrize(
    "make, error",
    [
        pytest.param(lambda: nn.RMSNorm(4), None, id="torch-RMSNorm"),  # (masked as torch's norms are)
        pytest.param(lambda: nn.LayerNorm(4), None, id="LayerNorm"),
        pytest.param(lambda: nn.GroupNorm(2, 4), None, id="GroupNorm"),
        pytest.param(lambda: nn.Linear(4, 4), "Linear: only LayerNorm.*RMSNorm classes of other", id="Linear"),
        pytest.param(lambda: FooRMSNorm(4), r"one parameter, a 1-D weight; it has weight, bias", id="two-params"),
        pytest.param(lambda: TwoDimRMSNorm(4), r"a 1-D weight; it has weight$", id="2d-weight"),
        pytest.param(lambda: NoEpsRMSNorm(4), "no number variance_epsilon or eps", id="no-eps"),
        pytest.param(lambda: TextEpsRMSNorm(4), "no number variance_epsilon or eps", id="text-eps"),
        pytest.param(lambda: FlagEpsRMSNorm(4), "no number variance_epsilon or eps", id="bool-eps"),
        pytest.param(lambda: ChildRMSNorm(4), r"child modules \(inner\)", id="child-module"),
        pytest.param(lambda: RMSNormalizer(4), "RMSNormalizer: only LayerNorm", id="other-name"),
        pytest.param(parametrized, "parametrized", id="parametrized"),
    ],
)
def test_what_is_not_rms_norm_like(make: Callable[[], nn.Module], error: str | None) -> None:
    module = make()
    assert not is_rms_norm_like(module)
    if error is not None:
        assert not masks_channel_statistics(module)
        with pytest.raises(InvalidTargetError, match=error):
            mask_norm_channels(module, torch.ones(4, dtype=torch.bool))
        assert "channels_mask" not in module._buffers and not isinstance(module, ChannelMaskedNorm)


def test_a_wrong_keep_names_the_module_and_tensor_and_changes_nothing() -> None:
    norm = build(LlamaRMSNorm, 12)
    with pytest.raises(InvalidMaskError, match=r"^LlamaRMSNorm\.channels_mask: keep has shape \(5,\).*12 channels"):
        mask_norm_channels(norm, torch.ones(5, dtype=torch.bool))
    with pytest.raises(InvalidMaskError, match=r"^LlamaRMSNorm\.channels_mask: keep keeps no channel"):
        mask_norm_channels(norm, torch.zeros(12, dtype=torch.bool))
    assert type(norm) is LlamaRMSNorm and "channels_mask" not in norm._buffers
    pruneplug.prune(norm, "weight", "l1_unstructured", amount=2)  # the width is weight_orig's then
    with pytest.raises(InvalidMaskError, match=r"^LlamaRMSNorm\.channels_mask: keep has shape \(13,\).*12 channels"):
        mask_norm_channels(norm, torch.ones(13, dtype=torch.bool))


def test_an_input_of_another_width_is_refused() -> None:
    norm = build(MyRMSNorm, 4)
    mask_norm_channels(norm, torch.tensor([True, False, True, True]))
    with pytest.raises(RuntimeError, match=r"MyRMSNorm: expected an input of shape \(\*, C\) with C = 4.*\(2, 6\)"):
        norm(torch.randn(2, 6))
