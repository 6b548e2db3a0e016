"""Bool or bit-packed masks: chosen when pruning (``mask_storage=``), switched with pack_masks/unpack_masks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import Tensor, nn

import pruneplug
import pruneplug.compat as compat
from pruneplug import PackedMask
from pruneplug.testing import assert_unchanged, snapshot


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
    before = snapshot(net)
    with pytest.raises(pruneplug.InvalidParametersError, match="mask_storage must be one of 'bool', 'packed'.*'bits'"):
        if call == "prune":
            pruneplug.prune(net[0], "weight", "l1_unstructured", amount=2, mask_storage="bits")  # type: ignore[arg-type]
        elif call == "prune_global":
            pruneplug.prune_global([(net[0], "weight")], "l1_unstructured", amount=2, mask_storage="bits")  # type: ignore[arg-type]
        else:
            pruneplug.load_pruned_state_dict(net, net.state_dict(), mask_storage="bits")  # type: ignore[arg-type]
    assert_unchanged(before, net)


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


def packed_linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(6, 5)  # 30 entries: not a whole number of bytes
    pruneplug.prune(layer, "weight", "l1_unstructured", amount=0.5, mask_storage="packed")
    return layer


def test_share_memory_of_a_packed_model() -> None:
    layer = packed_linear()
    mask = layer.weight_mask.unpack()
    layer.share_memory()
    assert layer.weight_mask.is_shared() and torch.equal(layer.weight_mask, mask)


def test_inference_mode_reads_state_dicts_and_prunes() -> None:
    layer, other = packed_linear(), packed_linear(1)
    with torch.inference_mode():
        state = layer.state_dict()
        alias = layer.weight_mask.detach()
        pruneplug.prune(layer, "weight", "l1_unstructured", amount=2)
        pruneplug.prune_global([(other, "weight")], "l1_unstructured", amount=2)
        out = layer(torch.ones(1, 6))
    assert type(alias) is PackedMask and type(state["weight_mask"]) is Tensor
    assert int((~layer.weight_mask.unpack()).sum()) == 17 and int((~other.weight_mask.unpack()).sum()) == 17
    with torch.no_grad():  # (the masks are inference tensors now, as bool ones would be)
        assert torch.equal(out, torch.ones(1, 6) @ (layer.weight_orig * layer.weight_mask).T + layer.bias)


@pytest.mark.parametrize("how", ["load_state_dict", "load_pruned_state_dict"])
def test_loading_with_assign_keeps_packed_masks_packed(how: str) -> None:
    """``assign=True`` replaces buffers with the checkpoint's (plain bool) tensors; packed masks are packed
    again, bool ones stay bool."""
    source, target = packed_linear(0), packed_linear(1)
    pruneplug.prune(target, "bias", "l1_unstructured", amount=1)  # a bool mask beside the packed one
    pruneplug.prune(source, "bias", "l1_unstructured", amount=2)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    if how == "load_state_dict":
        target.load_state_dict(state, assign=True)
    else:
        pruneplug.load_pruned_state_dict(target, state, assign=True)
    assert type(target.weight_mask) is PackedMask and type(target.bias_mask) is Tensor
    assert torch.equal(target.weight_mask, source.weight_mask) and torch.equal(target.bias_mask, source.bias_mask)
    x = torch.randn(3, 6)
    assert torch.equal(target(x), source(x))


def test_safetensors_save_and_load_model_with_packed_masks(tmp_path: object) -> None:
    from pathlib import Path

    from safetensors.torch import load_file, load_model, save_model

    path = Path(str(tmp_path)) / "layer.safetensors"
    source, target = packed_linear(0), packed_linear(1)
    save_model(source, str(path))
    assert load_file(str(path))["weight_mask"].dtype == torch.bool
    load_model(target, str(path))
    assert type(target.weight_mask) is PackedMask and torch.equal(target.weight_mask, source.weight_mask)


def test_pack_masks_on_a_module_torch_pruned_keeps_state_dicts_plain_and_assign_packed() -> None:
    class KeepLarge(torch_prune.BasePruningMethod):
        PRUNING_TYPE = "unstructured"

        def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
            return (t.abs() > t.abs().median()) & default_mask.bool()

    layer, source = nn.Linear(6, 5), nn.Linear(6, 5)
    KeepLarge.apply(layer, "weight")
    KeepLarge.apply(source, "weight")
    pruneplug.pack_masks(layer)
    assert type(layer.weight_mask) is PackedMask and type(layer.state_dict()["weight_mask"]) is Tensor
    layer.load_state_dict({k: v.clone() for k, v in source.state_dict().items()}, assign=True)
    assert type(layer.weight_mask) is PackedMask and torch.equal(layer.weight_mask, source.weight_mask)


def test_state_dicts_hold_copies_and_keep_vars_the_buffers() -> None:
    """``state_dict()`` unpacks (writing into it does not change the model, unlike a bool mask's alias);
    ``keep_vars=True`` hands out the packed buffer itself, which writes through."""
    layer = packed_linear()
    before = layer.weight_mask.unpack()
    layer.state_dict()["weight_mask"].fill_(False)
    assert torch.equal(layer.weight_mask, before)
    kept = layer.state_dict(keep_vars=True)["weight_mask"]
    assert kept is layer.weight_mask
    kept.fill_(False)
    assert not bool(layer.weight.any())
