"""PackedMask: one bit per entry, seen by every torch operation as the bool mask it stands for."""

from __future__ import annotations

import copy
import io
import math
import pickle

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import Tensor

import pruneplug
from pruneplug import PackedMask
from pruneplug.storage.packed import (
    added_entries,
    flat_mask,
    is_packed,
    mask_range,
    pack_bits,
    pack_mask,
    packed_alike,
    plain,
    storage_of,
    unpack_bits,
)

SHAPES = st.lists(st.integers(0, 9), min_size=0, max_size=3).map(tuple)


def random_mask(shape: tuple[int, ...], seed: int) -> Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < 0.5


@settings(max_examples=80)
@given(shape=SHAPES, seed=st.integers(0, 2**31 - 1), transposed=st.booleans())
def test_pack_and_unpack_round_trip_any_shape(shape: tuple[int, ...], seed: int, transposed: bool) -> None:
    """Any bool tensor -- empty, 0-d, sizes not a multiple of 8, non-contiguous -- packs into ceil(n/8) bytes
    and unpacks to itself."""
    mask = random_mask(shape, seed)
    if transposed and mask.dim() >= 2:
        mask = mask.transpose(0, -1)
    packed = PackedMask.pack(mask)
    assert packed.packed.dtype == torch.uint8 and packed.packed.numel() == math.ceil(mask.numel() / 8)
    assert (packed.dtype, packed.shape, packed.device) == (torch.bool, mask.shape, mask.device)
    assert type(packed.unpack()) is Tensor and torch.equal(packed.unpack(), mask)
    assert torch.equal(unpack_bits(pack_bits(mask), mask.shape), mask)


def test_operations_see_the_bool_mask() -> None:
    mask = random_mask((5, 7), 1)
    packed = PackedMask.pack(mask)
    values = torch.randn(5, 7)
    assert torch.equal(packed, mask) and bool((packed == mask).all())
    assert int(packed.sum()) == int(mask.sum()) and int(packed.count_nonzero()) == int(mask.count_nonzero())
    assert torch.equal(values * packed, values * mask)
    assert torch.equal(values[packed], values[mask])
    assert torch.equal(packed[2], mask[2]) and torch.equal(packed[:, 1:3], mask[:, 1:3])
    assert torch.equal(~packed, ~mask) and torch.equal(packed.any(dim=1), mask.any(dim=1))
    assert packed.float().dtype == torch.float32 and torch.equal(packed.float(), mask.float())
    assert type(packed & mask) is Tensor  # results are plain tensors; only the storage is packed
    assert packed.tolist() == mask.tolist() and (packed.numpy() == mask.numpy()).all()
    assert repr(packed) == f"PackedMask({mask!r})"


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda m: m.__setitem__((1, 2), False), id="setitem one entry"),
        pytest.param(lambda m: m.__setitem__(slice(0, 2), False), id="setitem slice"),
        pytest.param(lambda m: m.__setitem__(torch.tensor([0, 3]), True), id="setitem index tensor"),
        pytest.param(lambda m: m.__setitem__(m.clone(), False), id="setitem bool mask"),
        pytest.param(lambda m: m.logical_and_(random_mask((5, 7), 9)), id="in-place op"),
        pytest.param(lambda m: m.fill_(True), id="fill_"),
        pytest.param(lambda m: m.copy_(random_mask((5, 7), 8)), id="copy_"),
        pytest.param(lambda m: torch.logical_or(m, random_mask((5, 7), 7), out=m), id="out="),
        pytest.param(lambda m: m.data.__setitem__((0, 0), False), id=".data setitem"),
    ],
)
def test_writes_to_the_mask_are_packed_back(write: object) -> None:
    """In-place operations, ``out=`` and item assignment change the packed bits, bump the version counter
    and leave the object (and its packed storage) the same."""
    mask = random_mask((5, 7), 2)
    packed = PackedMask.pack(mask)
    storage, version = packed.packed, packed.packed._version
    expected = mask.clone()
    write(expected)  # type: ignore[operator]
    write(packed)  # type: ignore[operator]
    assert torch.equal(packed.unpack(), expected)
    assert packed.packed is storage and packed.packed._version > version


def test_copies_are_packed_and_independent() -> None:
    mask = random_mask((4, 9), 3)
    packed = PackedMask.pack(mask)
    buffer = io.BytesIO()
    torch.save(packed, buffer)
    buffer.seek(0)
    copies = [
        packed.clone(),
        copy.deepcopy(packed),
        pickle.loads(pickle.dumps(packed)),
        torch.load(buffer, weights_only=False),
        packed.to("cpu", copy=True),
    ]
    for other in copies:
        assert type(other) is PackedMask and torch.equal(other, mask)
        other[0, 0] = not bool(mask[0, 0])
        assert torch.equal(packed, mask), "a copy shares bits with the original"
    alias = packed.detach()
    assert type(alias) is PackedMask and alias.packed is packed.packed
    assert type(packed.to("meta")) is PackedMask and packed.to("meta").device.type == "meta"


def test_gradients_flow_through_a_product_with_a_packed_mask() -> None:
    mask = random_mask((3, 4), 4)
    weight = torch.randn(3, 4, requires_grad=True)
    (weight * PackedMask.pack(mask)).sum().backward()
    assert weight.grad is not None and torch.equal(weight.grad, mask.float())


def test_bad_input_is_refused() -> None:
    with pytest.raises(TypeError, match="only bool masks can be packed, got torch.float32"):
        PackedMask.pack(torch.ones(3))
    with pytest.raises(ValueError, match=r"shape \(3, 5\) needs 2 uint8 bytes"):
        PackedMask(torch.zeros(3, dtype=torch.uint8), (3, 5))


def test_plain_and_storage_of() -> None:
    mask = random_mask((10,), 5)
    packed = PackedMask.pack(mask)
    assert PackedMask.pack(packed) is packed
    assert plain(mask) is mask and type(plain(packed)) is Tensor and torch.equal(plain(packed), mask)
    assert storage_of(mask) is mask and storage_of(packed) is packed.packed
    assert is_packed(packed) and not is_packed(mask) and not is_packed(None)
    assert pack_mask(packed) is packed and type(pack_mask(mask)) is PackedMask and torch.equal(pack_mask(mask), mask)


def test_a_view_of_the_same_shape_is_an_alias() -> None:
    """``view_as(itself)`` (how DTensor wraps and unwraps a shard) keeps the bits packed and shared."""
    mask = random_mask((3, 4), 6)
    packed = PackedMask.pack(mask)
    for alias in (packed.view_as(packed), packed.view(3, 4)):
        assert type(alias) is PackedMask and alias.packed is packed.packed
    packed.view(3, 4)[1, 2] = not bool(mask[1, 2])
    assert bool(packed[1, 2]) is not bool(mask[1, 2]), "a write through a same-shape view was lost"
    other = packed.view(4, 3)  # another shape: a plain temporary, as documented
    assert type(other) is Tensor and torch.equal(other, packed.unpack().view(4, 3))


@settings(max_examples=80)
@given(shape=SHAPES, seed=st.integers(0, 2**31 - 1))
def test_added_entries_counts_from_the_bytes(shape: tuple[int, ...], seed: int) -> None:
    mask, previous = random_mask(shape, seed), random_mask(shape, seed + 1)
    expected = int((mask & ~previous).sum())
    assert added_entries(PackedMask.pack(mask), PackedMask.pack(previous)) == expected
    assert added_entries(PackedMask.pack(mask & previous), PackedMask.pack(previous)) == 0


def test_added_entries_ignores_the_padding_and_needs_masks_packed_alike() -> None:
    garbage = PackedMask(torch.tensor([255], dtype=torch.uint8), (3,))  # bits past the third entry set
    assert added_entries(garbage, PackedMask.pack(torch.ones(3, dtype=torch.bool))) == 0
    assert added_entries(garbage, PackedMask.pack(torch.tensor([True, False, False]))) == 2
    with pytest.raises(ValueError, match="packed alike"):
        added_entries(
            PackedMask.pack(torch.ones(2, 4, dtype=torch.bool)), PackedMask.pack(torch.ones(8, dtype=torch.bool))
        )
    assert not packed_alike(PackedMask.pack(torch.ones(3, dtype=torch.bool)), torch.ones(3, dtype=torch.bool))


@pytest.mark.parametrize("shape", [(0,), (3,), (8,), (2, 5)])
@pytest.mark.parametrize("value", [True, False])
def test_filled_masks_are_made_as_bytes(shape: tuple[int, ...], value: bool) -> None:
    filled = PackedMask.filled(shape, value)
    assert torch.equal(filled.unpack(), torch.full(shape, value))
    assert torch.equal(filled.packed, PackedMask.pack(torch.full(shape, value)).packed)  # padding 0 as pack_bits


@settings(max_examples=60)
@given(data=st.data(), shape=SHAPES.filter(lambda shape: math.prod(shape) > 0), seed=st.integers(0, 2**31 - 1))
def test_flat_ranges_unpack_only_their_bytes(data: st.DataObject, shape: tuple[int, ...], seed: int) -> None:
    """``mask_range(flat_mask(m), a, b)`` is ``m.reshape(-1)[a:b]`` for any range, packed or not."""
    mask = random_mask(shape, seed)
    numel = mask.numel()
    start = data.draw(st.integers(0, numel), label="start")
    stop = data.draw(st.integers(start, numel), label="stop")
    packed = PackedMask.pack(mask)
    flat = flat_mask(packed)
    assert type(flat) is PackedMask and flat.shape == (numel,) and flat.packed is packed.packed  # nothing unpacked
    assert torch.equal(mask_range(flat, start, stop), mask.reshape(-1)[start:stop])
    assert torch.equal(mask_range(flat_mask(mask), start, stop), mask.reshape(-1)[start:stop])


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda m: m.masked_fill_(m, False), id="masked_fill_ by itself"),
        pytest.param(lambda m: m.logical_xor_(m), id="logical_xor_ with itself"),
        pytest.param(lambda m: m.logical_xor_(m.detach()), id="with an alias of itself"),
    ],
)
def test_an_operation_that_gets_the_mask_twice_keeps_its_result(write: object) -> None:
    mask = random_mask((4, 6), 11)
    packed = PackedMask.pack(mask)
    write(packed)  # type: ignore[operator]
    assert not bool(packed.unpack().any())


def test_in_place_operations_that_change_the_shape_are_refused() -> None:
    mask = random_mask((3, 4), 12)
    packed = PackedMask.pack(mask)
    for change in (lambda m: m.t_(), lambda m: m.unsqueeze_(0), lambda m: m.resize_(12)):
        with pytest.raises(pruneplug.PackedMaskError, match=r"change a bit-packed mask's shape from \(3, 4\)"):
            change(packed)
        assert packed.shape == (3, 4) and torch.equal(packed.unpack(), mask)
    square = random_mask((5, 5), 13)
    packed_square = PackedMask.pack(square)
    packed_square.t_()  # the same shape: allowed, and it transposes
    assert torch.equal(packed_square.unpack(), square.t())


def test_setting_data_packs_the_new_values() -> None:
    packed = PackedMask.pack(random_mask((3, 4), 14))
    version = packed.packed._version
    replacement = random_mask((3, 4), 15)
    packed.data = replacement
    assert torch.equal(packed.unpack(), replacement) and packed.packed._version > version
    assert type(packed.data) is PackedMask and packed.data.packed is packed.packed
    with pytest.raises(pruneplug.PackedMaskError, match=r"bool tensor of its shape \(3, 4\), got torch.bool \(4, 3\)"):
        packed.data = replacement.t()
    with pytest.raises(pruneplug.PackedMaskError, match="got torch.float32"):
        packed.data = torch.ones(3, 4)


def test_share_memory_shares_the_packed_bytes() -> None:
    mask = random_mask((9,), 16)
    packed = PackedMask.pack(mask)
    assert packed.share_memory_() is packed and packed.is_shared() and packed.packed.is_shared()
    assert torch.equal(packed.unpack(), mask)


def test_unpack_is_compact_and_any_nonzero_byte_is_true() -> None:
    odd = PackedMask.pack(random_mask((5, 3), 17)).unpack()
    assert odd.untyped_storage().nbytes() == 15  # not a view into the byte-padded buffer
    raw = torch.tensor([255, 0, 2, 0, 1, 0, 0, 0, 7], dtype=torch.uint8).view(torch.bool)
    assert PackedMask.pack(raw).unpack().tolist() == [True, False, True, False, True, False, False, False, True]
