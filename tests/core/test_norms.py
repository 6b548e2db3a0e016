"""Norms whose statistics span channels, masked to see only the kept channels: masked == compacted."""

from __future__ import annotations

import copy
import io
import pickle
import threading
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, strategies as st
from torch import Tensor, nn
from torch.nn.utils import parametrize

import pruneplug
import pruneplug.compat as compat
from pruneplug.core.lazy import is_lazy
from pruneplug.core.norms import (
    ChannelMaskedNorm,
    _masked_class,
    mask_norm_channels,
    masks_channel_statistics,
    norm_channels_mask,
    unmask_norm_channels,
)
from pruneplug.errors import InvalidMaskError, InvalidTargetError, NotPrunedError
from pruneplug.testing import assert_unchanged, snapshot

Factory = Callable[[int], nn.Module]

# Every configuration of the three norms, each built for C channels (GroupNorm: 3 groups, C a multiple of 3).
CONFIGS: dict[str, Factory] = {
    "layer_norm": lambda c: nn.LayerNorm(c),
    "layer_norm_no_bias": lambda c: nn.LayerNorm(c, bias=False),
    "layer_norm_no_affine": lambda c: nn.LayerNorm(c, elementwise_affine=False, eps=1e-3),
    "group_norm": lambda c: nn.GroupNorm(3, c),
    "group_norm_no_affine": lambda c: nn.GroupNorm(3, c, affine=False, eps=1e-3),
    "rms_norm": lambda c: nn.RMSNorm(c),
    "rms_norm_eps": lambda c: nn.RMSNorm(c, eps=1e-4),
    "rms_norm_no_affine": lambda c: nn.RMSNorm(c, elementwise_affine=False),
}


def build(config: str, channels: int) -> nn.Module:
    """The norm, with weight and bias drawn at random (not torch's ones and zeros, which hide slicing errors)."""
    norm = CONFIGS[config](channels)
    with torch.no_grad():
        for parameter in norm.parameters():
            parameter.copy_(torch.randn_like(parameter))
    return norm


def compacted(norm: nn.Module, keep: Tensor) -> nn.Module:
    """By hand: a fresh norm of the kept channels only, with the kept slices of weight and bias."""
    kept = int(keep.sum())
    weight: Tensor | None = getattr(norm, "weight", None)
    bias: Tensor | None = getattr(norm, "bias", None)
    if isinstance(norm, nn.GroupNorm):
        small: nn.Module = nn.GroupNorm(norm.num_groups, kept, eps=norm.eps, affine=norm.affine)
    elif isinstance(norm, nn.LayerNorm):
        small = nn.LayerNorm(kept, eps=norm.eps, elementwise_affine=weight is not None, bias=bias is not None)
    else:
        assert isinstance(norm, nn.RMSNorm)
        small = nn.RMSNorm(kept, eps=norm.eps, elementwise_affine=weight is not None)
    with torch.no_grad():
        if weight is not None:
            small.weight.copy_(weight[keep])
        if bias is not None:
            small.bias.copy_(bias[keep])
    return small.train(norm.training)


def channel_dim(norm: nn.Module, x: Tensor) -> int:
    return 1 if isinstance(norm, nn.GroupNorm) else x.dim() - 1


def expected(norm: nn.Module, keep: Tensor, x: Tensor) -> Tensor:
    """The compacted norm's output on the kept channels, scattered into zeros."""
    dim = channel_dim(norm, x)
    index = keep.nonzero().squeeze(1)
    y = compacted(norm, keep)(x.index_select(dim, index))
    return torch.zeros_like(x).index_copy(dim, index, y)


def pruned_part(norm: nn.Module, keep: Tensor, y: Tensor) -> Tensor:
    return y.index_select(channel_dim(norm, y), (~keep).nonzero().squeeze(1))


def uneven_keep(channels: int) -> Tensor:
    """Keeps the first channel of each group and one more in the first group only (3 groups)."""
    keep = torch.zeros(channels, dtype=torch.bool)
    keep[:: channels // 3] = True
    keep[1] = True
    return keep


def even_keep(channels: int) -> Tensor:
    """Keeps channels 0 and 2 of every group of 4 (3 groups of 4 for 12 channels)."""
    return torch.tensor([True, False, True, False] * (channels // 4))


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("training", [True, False])
def test_the_masked_norm_computes_what_the_compacted_one_does(config: str, training: bool) -> None:
    norm = build(config, 12).train(training)
    keep = even_keep(12)
    shape = (5, 12, 3, 2) if isinstance(norm, nn.GroupNorm) else (2, 5, 12)
    x = torch.randn(shape)
    want = expected(norm, keep, x)
    mask_norm_channels(norm, keep)
    got = norm(x)
    assert torch.allclose(got, want, rtol=0, atol=1e-6)
    assert bool((pruned_part(norm, keep, got) == 0).all())
    # The unmasked norm would count the zeros of pruned channels: the two must differ there.
    zeroed = x * keep.view(-1, 1, 1) if isinstance(norm, nn.GroupNorm) else x * keep
    assert not torch.allclose(compacted(norm, torch.ones(12, dtype=torch.bool))(zeroed), norm(zeroed), atol=1e-4)


@given(
    config=st.sampled_from(sorted(CONFIGS)),
    groups_of=st.integers(1, 5),
    leading=st.lists(st.integers(1, 3), min_size=0, max_size=3),
    seed=st.integers(0, 2**31 - 1),
    training=st.booleans(),
)
def test_any_shape_and_keep(config: str, groups_of: int, leading: list[int], seed: int, training: bool) -> None:
    generator = torch.Generator().manual_seed(seed)
    channels = 3 * groups_of
    norm = CONFIGS[config](channels).train(training)
    with torch.no_grad():
        for parameter in norm.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    if isinstance(norm, nn.GroupNorm):  # as many kept in each of the 3 groups
        per_group = int(torch.randint(1, groups_of + 1, (), generator=generator))
        keep = torch.zeros(3, groups_of, dtype=torch.bool)
        for group in keep:
            group[torch.randperm(groups_of, generator=generator)[:per_group]] = True
        keep = keep.flatten()
        shape = [2, channels, *leading]
    else:
        keep = torch.rand(channels, generator=generator) < 0.6
        keep[int(torch.randint(channels, (), generator=generator))] = True
        shape = [*leading, channels]
    x = torch.randn(shape, generator=generator)
    want = expected(norm, keep, x)
    mask_norm_channels(norm, keep)
    got = norm(x)
    assert torch.allclose(got, want, rtol=0, atol=1e-6)
    assert bool((pruned_part(norm, keep, got) == 0).all())


@pytest.mark.parametrize("config", CONFIGS)
def test_gradients_reach_kept_channels_and_the_kept_weights_only(config: str) -> None:
    norm = build(config, 12)
    keep = even_keep(12)
    small = compacted(norm, keep)
    x = torch.randn((4, 12, 3) if isinstance(norm, nn.GroupNorm) else (4, 12), requires_grad=True)
    dim = channel_dim(norm, x)
    index = keep.nonzero().squeeze(1)
    x_small = x.detach().index_select(dim, index).requires_grad_()
    upstream = torch.randn(x.shape)
    small(x_small).mul(upstream.index_select(dim, index)).sum().backward()
    mask_norm_channels(norm, keep)
    norm(x).mul(upstream).sum().backward()
    assert x.grad is not None and x_small.grad is not None
    assert torch.allclose(x.grad.index_select(dim, index), x_small.grad, atol=1e-6)
    assert bool((pruned_part(norm, keep, x.grad) == 0).all())
    for name, parameter in norm.named_parameters():
        small_grad = getattr(small, name).grad
        assert parameter.grad is not None and small_grad is not None
        assert torch.allclose(parameter.grad[keep], small_grad, atol=1e-6)
        assert bool((parameter.grad[~keep] == 0).all())


def test_the_class_keeps_its_name_repr_and_isinstance_and_comes_back() -> None:
    norm, other = nn.LayerNorm(4), nn.LayerNorm(6)
    before = repr(norm)
    keep = torch.tensor([True, False, True, True])
    mask_norm_channels(norm, keep)
    mask_norm_channels(other, torch.ones(6, dtype=torch.bool))
    cls = type(norm)
    assert cls is not nn.LayerNorm and cls is type(other)  # one subclass per class
    assert isinstance(norm, nn.LayerNorm) and isinstance(norm, ChannelMaskedNorm)
    assert (cls.__name__, cls.__qualname__, cls.__module__) == ("LayerNorm", "LayerNorm", nn.LayerNorm.__module__)
    assert repr(norm) == before
    mask = norm_channels_mask(norm)
    assert mask is not None and mask.dtype == torch.bool and torch.equal(mask, keep) and mask is not keep
    assert "channels_mask" in norm.state_dict() and masks_channel_statistics(norm)
    unmask_norm_channels(norm)
    assert type(norm) is nn.LayerNorm and norm_channels_mask(norm) is None
    assert "channels_mask" not in norm.state_dict() and not hasattr(norm, "channels_mask")
    with pytest.raises(NotPrunedError, match="not masked"):
        unmask_norm_channels(norm)


def test_masking_again_replaces_the_mask() -> None:
    norm = build("layer_norm", 4)
    mask_norm_channels(norm, torch.tensor([True, True, False, True]))
    keep = torch.tensor([False, True, True, False])
    mask_norm_channels(norm, keep)
    assert torch.equal(norm.channels_mask, keep) and list(norm.state_dict()).count("channels_mask") == 1
    x = torch.randn(3, 4)
    assert torch.allclose(norm(x), expected(norm, keep, x), atol=1e-6)


def test_the_subclass_is_made_once_across_threads() -> None:
    class Fresh(nn.GroupNorm):
        pass

    made: list[type[nn.Module]] = []
    threads = [threading.Thread(target=lambda: made.append(_masked_class(Fresh))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 8 and len(set(made)) == 1


@pytest.mark.parametrize(
    "module, reason",
    [
        (nn.BatchNorm1d(4), "only LayerNorm and RMSNorm"),
        (nn.LayerNorm((2, 4)), "last 2 dims"),
        (nn.RMSNorm((2, 4)), "last 2 dims"),
        (nn.Linear(4, 4), "only LayerNorm"),
    ],
)
def test_unsupported_modules_are_refused_unchanged(module: nn.Module, reason: str) -> None:
    before = snapshot(module)
    assert not masks_channel_statistics(module)
    with pytest.raises(InvalidTargetError, match=reason):
        mask_norm_channels(module, torch.ones(4, dtype=torch.bool))
    assert_unchanged(before, module)


def test_a_subclass_with_its_own_forward_is_refused_and_one_without_works() -> None:
    class Scaled(nn.LayerNorm):
        def forward(self, input: Tensor) -> Tensor:
            return 2 * super().forward(input)

    class Named(nn.LayerNorm):
        pass

    with pytest.raises(InvalidTargetError, match="overrides forward"):
        mask_norm_channels(Scaled(4), torch.ones(4, dtype=torch.bool))
    norm = Named(4)
    keep = torch.tensor([True, False, True, True])
    x = torch.randn(2, 4)
    want = expected(norm, keep, x)
    mask_norm_channels(norm, keep)
    assert isinstance(norm, Named) and type(norm).__name__ == "Named"
    assert torch.allclose(norm(x), want, atol=1e-6)


def test_a_parametrized_norm_is_refused_unchanged() -> None:
    class Double(nn.Module):
        def forward(self, weight: Tensor) -> Tensor:
            return 2 * weight

    norm = nn.LayerNorm(4)
    parametrize.register_parametrization(norm, "weight", Double())
    before = snapshot(norm)
    with pytest.raises(InvalidTargetError, match="parametrized"):
        mask_norm_channels(norm, torch.ones(4, dtype=torch.bool))
    assert_unchanged(before, norm)


@pytest.mark.parametrize(
    "keep, error",
    [
        (torch.tensor([1, 0, 1, 1]), "must be a bool tensor"),
        ([True, False, True, True], "must be a bool tensor, got list"),
        (torch.ones(5, dtype=torch.bool), r"shape \(5,\) but the module has 4 channels"),
        (torch.ones(1, 4, dtype=torch.bool), r"shape \(1, 4\)"),
        (torch.zeros(4, dtype=torch.bool), "keeps no channel"),
    ],
)
def test_a_wrong_keep_is_refused_and_changes_nothing(keep: object, error: str) -> None:
    fresh, masked = nn.LayerNorm(4), nn.LayerNorm(4)
    mask_norm_channels(masked, torch.tensor([True, False, True, True]))
    for norm in (fresh, masked):
        before = snapshot(norm)
        with pytest.raises(InvalidMaskError, match=error):
            mask_norm_channels(norm, keep)  # type: ignore[arg-type]
        assert_unchanged(before, norm)


def test_group_norm_groups_must_keep_as_many_channels() -> None:
    norm = nn.GroupNorm(3, 6)
    before = snapshot(norm)
    with pytest.raises(InvalidMaskError, match=r"GroupNorm.*keeps \[2, 1, 1\] channels in the 3 groups"):
        mask_norm_channels(norm, uneven_keep(6))
    assert_unchanged(before, norm)
    # Kept after masking too: an edit of the buffer that unbalances the groups fails the next forward.
    mask_norm_channels(norm, torch.tensor([True, False] * 3))
    with torch.no_grad():
        norm.channels_mask[1] = True
    with pytest.raises(InvalidMaskError, match=r"keeps \[2, 1, 1\]"):
        norm(torch.randn(2, 6))


def test_an_input_with_another_channel_count_is_refused() -> None:
    layer, group = nn.LayerNorm(4), nn.GroupNorm(2, 4, affine=False)
    mask_norm_channels(layer, torch.tensor([True, False, True, True]))
    mask_norm_channels(group, torch.tensor([True, False, True, False]))
    with pytest.raises(RuntimeError, match=r"\(\*, C\) with C = 4 channels.*got shape \(2, 6\)"):
        layer(torch.randn(2, 6))
    with pytest.raises(RuntimeError, match=r"\(N, C, \*\) with C = 4 channels.*got shape \(2, 6, 3\)"):
        group(torch.randn(2, 6, 3))  # the unmasked GroupNorm without weights would take it


def round_trips(module: nn.Module) -> list[nn.Module]:
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    return [copy.deepcopy(module), pickle.loads(pickle.dumps(module)), loaded]


@pytest.mark.parametrize("config", ["layer_norm", "group_norm", "rms_norm_no_affine"])
def test_copies_and_pickles_stay_masked(config: str) -> None:
    norm = build(config, 12)
    keep = even_keep(12)
    mask_norm_channels(norm, keep)
    x = torch.randn(2, 12, 3) if isinstance(norm, nn.GroupNorm) else torch.randn(3, 12)
    for copied in round_trips(norm):
        assert type(copied) is type(norm) and repr(copied) == repr(norm)
        assert torch.equal(copied.channels_mask, keep)
        assert torch.equal(copied(x), norm(x))
    assert pickle.loads(pickle.dumps(type(norm))) is type(norm)  # the class itself pickles too
    assert pickle.loads(pickle.dumps(ChannelMaskedNorm)) is ChannelMaskedNorm


def pruned_weight(norm: nn.Module) -> Tensor:
    weight: Tensor = norm.weight
    return weight.detach()


@pytest.mark.parametrize("config", ["layer_norm", "group_norm", "rms_norm"])
@pytest.mark.parametrize("prune_first", [True, False])
def test_channel_masking_and_lazy_pruning_compose_in_either_order(config: str, prune_first: bool) -> None:
    norm = build(config, 12)
    keep = even_keep(12)
    base = type(norm)
    if prune_first:
        pruneplug.prune(norm, "weight", "l1_unstructured", amount=4)
        mask_norm_channels(norm, keep)
    else:
        mask_norm_channels(norm, keep)
        pruneplug.prune(norm, "weight", "l1_unstructured", amount=4)
    assert is_lazy(norm) and isinstance(norm, ChannelMaskedNorm) and isinstance(norm, base)
    assert type(norm).__name__ == base.__name__ and "weight" not in vars(norm)
    x = torch.randn(4, 12, 2) if isinstance(norm, nn.GroupNorm) else torch.randn(4, 12)
    assert int((norm.weight == 0).sum()) == 4
    want = expected(norm, keep, x)  # the compacted norm gets the kept slices of the masked weight
    for training in (True, False):
        assert torch.allclose(norm.train(training)(x), want, atol=1e-6)
    for copied in round_trips(norm):
        assert type(copied) is type(norm) and torch.equal(copied(x), norm(x))
        assert torch.equal(copied.weight_mask, norm.weight_mask)

    masked_weight = pruned_weight(norm).clone()
    pruneplug.remove(norm)  # permanent pruning leaves the channel mask alone
    assert not is_lazy(norm) and type(norm) is _masked_class(base)
    assert torch.equal(norm.channels_mask, keep) and "channels_mask" in norm.state_dict()
    assert torch.equal(norm.weight.detach(), masked_weight)
    assert torch.allclose(norm(x), want, atol=1e-6)


def test_unmasking_channels_of_a_pruned_norm_leaves_it_lazily_pruned() -> None:
    norm = build("layer_norm", 4)
    mask_norm_channels(norm, torch.tensor([True, False, True, True]))
    pruneplug.prune(norm, "weight", "l1_unstructured", amount=1)
    unmask_norm_channels(norm)
    assert is_lazy(norm) and not isinstance(norm, ChannelMaskedNorm) and "channels_mask" not in norm._buffers
    x = torch.randn(3, 4)
    assert torch.allclose(norm(x), nn.functional.layer_norm(x, (4,), norm.weight, norm.bias), atol=1e-6)
    pruneplug.remove(norm, "weight")
    assert type(norm) is nn.LayerNorm


def test_an_eagerly_pruned_norm_copies_and_pickles_masked() -> None:
    """The drop-in prunes eagerly (the class stays the channel-masked one) and registers its copy support for it."""
    norm = build("layer_norm", 6)
    keep = torch.tensor([True, True, False, True, False, True])
    mask_norm_channels(norm, keep)
    compat.l1_unstructured(norm, "weight", amount=2)
    assert not is_lazy(norm) and "weight" in vars(norm) and type(norm) is _masked_class(nn.LayerNorm)
    x = torch.randn(3, 6)
    assert torch.allclose(norm(x), expected(norm, keep, x), atol=1e-6)
    for copied in round_trips(norm):
        assert type(copied) is type(norm) and torch.equal(copied(x), norm(x))


def test_a_deleted_channel_mask_is_reported_by_the_forward() -> None:
    norm = nn.LayerNorm(4)
    mask_norm_channels(norm, torch.tensor([True, False, True, True]))
    del norm.channels_mask
    with pytest.raises(InvalidMaskError, match="channels_mask buffer was deleted"):
        norm(torch.randn(2, 4))
    unmask_norm_channels(norm)
    assert type(norm) is nn.LayerNorm


def model_with_norms() -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 12), nn.LayerNorm(12), nn.Unflatten(1, (12, 1)), nn.GroupNorm(3, 12))


def test_load_pruned_state_dict_masks_the_channels_of_a_fresh_model() -> None:
    model = model_with_norms()
    keep = even_keep(12)
    mask_norm_channels(model[1], keep)
    mask_norm_channels(model[3], keep)
    pruneplug.prune(model[3], "weight", "l1_unstructured", amount=3)
    state = model.state_dict()
    assert {"1.channels_mask", "3.channels_mask", "3.weight_orig", "3.weight_mask"} <= set(state)

    with pytest.raises(RuntimeError, match="Unexpected key.*channels_mask"):
        model_with_norms().load_state_dict(state)  # torch's own load does not know the key, as expected
    fresh = model_with_norms()
    pruneplug.load_pruned_state_dict(fresh, state)
    for index in (1, 3):
        assert type(fresh[index]) is type(model[index]) and torch.equal(fresh[index].channels_mask, keep)
    assert is_lazy(fresh[3]) and torch.equal(fresh[3].weight_mask, model[3].weight_mask)
    x = torch.randn(5, 3)
    assert torch.equal(fresh(x), model(x))
    pruneplug.load_pruned_state_dict(fresh, state)  # into a masked model: loads as any buffer
    assert torch.equal(fresh(x), model(x))


@pytest.mark.parametrize(
    "bad, error",
    [
        (uneven_keep(12), r"state_dict\['3.channels_mask'\] keeps \[2, 1, 1\]"),
        (torch.ones(12, dtype=torch.uint8), r"state_dict\['3.channels_mask'\] must be a bool tensor"),
        (torch.ones(6, dtype=torch.bool), r"state_dict\['3.channels_mask'\] has shape \(6,\)"),
        (torch.zeros(12, dtype=torch.bool), "keeps no channel"),
    ],
)
@pytest.mark.parametrize("masked_already", [False, True])
def test_load_pruned_state_dict_checks_the_channel_masks_first(bad: Tensor, error: str, masked_already: bool) -> None:
    model = model_with_norms()
    mask_norm_channels(model[1], even_keep(12))
    mask_norm_channels(model[3], even_keep(12))
    pruneplug.prune(model[0], "weight", "l1_unstructured", amount=3)
    state = model.state_dict()
    state["3.channels_mask"] = bad
    target = model_with_norms()
    if masked_already:
        mask_norm_channels(target[3], torch.ones(12, dtype=torch.bool))
    before = snapshot(target)
    with pytest.raises(InvalidMaskError, match=error):
        pruneplug.load_pruned_state_dict(target, state)
    assert_unchanged(before, target)


def test_load_pruned_state_dict_undoes_the_channel_masks_when_loading_fails() -> None:
    model = model_with_norms()
    mask_norm_channels(model[1], even_keep(12))
    state = model.state_dict()
    target = model_with_norms()
    target[0].register_load_state_dict_pre_hook(lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
    before = snapshot(target)
    with pytest.raises(KeyboardInterrupt):
        pruneplug.load_pruned_state_dict(target, state)
    assert_unchanged(before, target)


def test_load_pruned_state_dict_wants_one_channel_mask_for_a_shared_norm() -> None:
    norm = nn.LayerNorm(4)
    model = nn.Sequential(norm, nn.ReLU(), norm)
    state = {
        "0.weight": norm.weight.detach(),
        "0.bias": norm.bias.detach(),
        "0.channels_mask": torch.tensor([True, True, False, True]),
        "2.weight": norm.weight.detach(),
        "2.bias": norm.bias.detach(),
        "2.channels_mask": torch.tensor([True, False, True, True]),
    }
    before = snapshot(model)
    with pytest.raises(InvalidMaskError, match="'0.channels_mask'.*'2.channels_mask'.*differ"):
        pruneplug.load_pruned_state_dict(model, state)
    assert_unchanged(before, model)
    state["2.channels_mask"] = state["0.channels_mask"]
    pruneplug.load_pruned_state_dict(model, state)
    assert torch.equal(norm.channels_mask, state["0.channels_mask"])
