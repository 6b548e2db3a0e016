"""Bool or bit-packed masks: chosen when pruning (``mask_storage=``), switched with pack_masks/unpack_masks."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import Tensor, nn

import pruneplug
import pruneplug.compat as compat
from pruneplug import PackedMask


def model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(9, 7), nn.ReLU(), nn.Linear(7, 3))


def masks(net: nn.Module) -> dict[str, Tensor]:
    return {name: buffer for name, buffer in net.named_buffers() if name.endswith("_mask")}


def test_pack_and_unpack_masks_keep_what_the_model_computes() -> None:
    net = model()
    pruneplug.prune_global([(net[0], "weight"), (net[2], "weight")], "l1_unstructured", amount=0.4)
    pruneplug.prune(net[0], "bias", "l1_unstructured", amount=2)
    x = torch.randn(5, 9)
    expected, bools = net(x), {k: v.clone() for k, v in masks(net).items()}

    assert pruneplug.pack_masks(net) is net
    assert all(type(mask) is PackedMask for mask in masks(net).values())
    assert all(torch.equal(masks(net)[k], bools[k]) for k in bools)
    assert torch.equal(net(x), expected)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), expected)

    assert pruneplug.unpack_masks(net) is net
    assert all(type(mask) is Tensor and torch.equal(mask, bools[k]) for k, mask in masks(net).items())
    with torch.no_grad():
        assert torch.equal(net(x), expected)


def test_packing_a_cached_eval_weight_leaves_nothing_stale() -> None:
    net = model().eval()
    pruneplug.prune(net[0], "weight", "l1_unstructured", amount=0.5)
    x = torch.randn(2, 9)
    with torch.no_grad():
        net(x)
        pruneplug.pack_masks(net)
        net[0].weight_mask[0] = False  # a write to the packed mask is seen by the next read
        assert torch.equal(net[0].weight, net[0].weight_orig * net[0].weight_mask)
        assert not bool(net[0].weight[0].any())


def test_torch_masks_are_left_as_they_are() -> None:
    """Float masks (torch.nn.utils.prune's, pruneplug.compat's) keep their dtype; RNN weights stay eager."""
    net = model()
    torch_prune.l1_unstructured(net[0], "weight", amount=0.3)
    compat.random_unstructured(net[2], "weight", amount=0.3)
    rnn = nn.LSTM(3, 2)
    pruneplug.prune(rnn, "weight_hh_l0", "l1_unstructured", amount=0.5)
    pruneplug.pack_masks(net)
    pruneplug.pack_masks(rnn)
    assert net[0].weight_mask.dtype == torch.float32 and type(net[0].weight_mask) is Tensor
    assert net[2].weight_mask.dtype == torch.float32 and type(net[2].weight_mask) is Tensor
    assert type(rnn.weight_hh_l0_mask) is PackedMask
    assert torch.equal(rnn.weight_hh_l0, rnn.weight_hh_l0_orig * rnn.weight_hh_l0_mask)
    out, _ = rnn(torch.randn(4, 1, 3))
    assert out.shape == (4, 1, 2)


def test_not_a_module_is_refused() -> None:
    with pytest.raises(pruneplug.InvalidTargetError, match="expected a torch.nn.Module, got Tensor"):
        pruneplug.pack_masks(torch.ones(3))  # type: ignore[arg-type]


@pytest.mark.parametrize("call", ["prune", "prune_global", "load_pruned_state_dict"])
def test_an_unknown_mask_storage_is_refused_and_changes_nothing(call: str) -> None:
    net = model()
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(pruneplug.InvalidParametersError, match="mask_storage must be one of 'bool', 'packed'.*'bits'"):
        if call == "prune":
            pruneplug.prune(net[0], "weight", "l1_unstructured", amount=2, mask_storage="bits")  # type: ignore[arg-type]
        elif call == "prune_global":
            pruneplug.prune_global([(net[0], "weight")], "l1_unstructured", amount=2, mask_storage="bits")  # type: ignore[arg-type]
        else:
            pruneplug.load_pruned_state_dict(net, before, mask_storage="bits")  # type: ignore[arg-type]
    assert not pruneplug.is_pruned(net)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_structured_pruning_with_its_bias_stores_both_packed() -> None:
    conv = nn.Conv2d(3, 6, 3)
    pruneplug.prune(conv, "weight", "ln_structured", amount=2, n=2, dim=0, prune_bias=True, mask_storage="packed")
    assert type(conv.weight_mask) is PackedMask and type(conv.bias_mask) is PackedMask
    gone = ~conv.weight_mask.unpack().any(dim=(1, 2, 3))
    assert int(gone.sum()) == 2 and torch.equal(conv.bias_mask.unpack(), ~gone)
    # pruning on keeps the storage unless told otherwise
    pruneplug.prune(conv, "weight", "l1_unstructured", amount=5)
    assert type(conv.weight_mask) is PackedMask
    pruneplug.prune(conv, "weight", "l1_unstructured", amount=5, mask_storage="bool")
    assert type(conv.weight_mask) is Tensor and conv.weight_mask.dtype == torch.bool


def test_torch_and_compat_prune_and_remove_on_packed_masks() -> None:
    """Code written for torch keeps working on a model pruned with packed masks."""
    net = model()
    pruneplug.prune(net[0], "weight", "l1_unstructured", amount=0.5, mask_storage="packed")
    pruneplug.prune(net[2], "weight", "l1_unstructured", amount=0.5, mask_storage="packed")
    alive = net[0].weight_mask.unpack()
    compat.l1_unstructured(net[0], "weight", amount=3)
    assert not bool((net[0].weight_mask.bool() & ~alive).any()) and int((~net[0].weight_mask.bool()).sum()) == 35
    effective = net[2].weight.detach().clone()
    torch_prune.remove(net[2], "weight")
    assert torch.equal(net[2].weight, effective) and not hasattr(net[2], "weight_mask")
    pruneplug.remove(net)
    assert not pruneplug.is_pruned(net)


def test_report_counts_the_packed_bytes() -> None:
    net = model()
    pruneplug.prune(net[0], "weight", "l1_unstructured", amount=0.5)
    assert pruneplug.report(net).totals.mask_bytes == 63
    pruneplug.pack_masks(net)
    packed = pruneplug.report(net)
    assert packed.totals.mask_bytes == 8  # 63 entries, one bit each
    assert packed.tensor("0.weight").zeros == 32


def test_load_into_a_meta_model_with_assign_packs_the_masks() -> None:
    source = model()
    pruneplug.prune_global([(source[0], "weight"), (source[2], "weight")], "l1_unstructured", amount=0.5)
    with torch.device("meta"):
        target = nn.Sequential(nn.Linear(9, 7), nn.ReLU(), nn.Linear(7, 3))
    pruneplug.load_pruned_state_dict(target, source.state_dict(), assign=True, mask_storage="packed")
    assert all(type(mask) is PackedMask and mask.device.type == "cpu" for mask in masks(target).values())
    x = torch.randn(2, 9)
    assert torch.equal(target(x), source(x))
