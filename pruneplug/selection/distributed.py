"""Exact selection of the k lowest scores across ranks: each rank holds a shard, only counts travel.

The contract is :mod:`~pruneplug.selection.exact`'s, on the unsharded
scores: exactly ``k`` entries are selected, only among the alive ones, the
lowest scores first; among equal scores the earliest position (row-major in
the unsharded tensor, then source order) goes first; NaN ranks above
``+inf``; ``-0.0`` equals ``0.0``. Every rank gets the masks of its own
shards, and they are the matching slices of what one process computes on the
whole tensors, for any number of ranks and any sharding.

How, without gathering scores:

1. each score maps to an integer *key* with the same order as the float
   comparisons of the one-process selection (the float32 bits, or float64's
   when any rank's scores need float64; one key for both zeros, one key above
   ``+inf`` for every NaN);
2. a radix select over the keys, ``bits`` at a time from the top: each rank
   counts its alive candidates per digit value, the counts are summed over
   the ranks (one all-reduce of ``2**bits`` int64 per pass), and every rank
   picks the same digit, the one holding the k-th lowest key. After the last
   pass the threshold key ``T`` is known, with how many alive entries lie
   below it;
3. if only some of the ties at ``T`` are to be pruned, a second radix select
   over their global positions (source, then row-major index in the
   unsharded tensor) finds the last one to prune. Positions do not depend on
   the sharding, so neither does the result.

What travels per call is independent of the model's size:
``(1 + key passes + position passes)`` all-reduces, carrying
``14 * 8 + (key passes + position passes) * 2**bits * 8`` bytes, where
``key passes = ceil(32 / bits)`` (``ceil(64 / bits)`` for float64 scores) and
``position passes`` is 0 unless the ties at the threshold are split, and then
``ceil(log2(total entries) / bits)``; a last pass whose digit is narrower
(``w`` bits left) carries ``2**w * 8`` bytes, and when ``k`` is 0 or every
alive entry the first key pass is the only one. The first all-reduce checks that the
ranks agree on ``k``, the sources' shapes and ``bits``, and carries any rank's
input error, so that bad input raises on every rank instead of leaving the
others waiting. Every all-reduce waits at most ``timeout``.

Each rank reads its scores a chunk at a time (:func:`_chunk_size`): once
per pass while the entries that share the digits picked so far (the
candidates) are more than max(chunk, 1/64 of its own), then once to gather
them (12 bytes each; later passes count them in memory), and once to write
the masks. For spread scores that is three or four reads; beyond the masks
(bool, or packed to one bit per entry a chunk at a time with ``pack=True``)
it holds the temporaries of one chunk (about 1/20 of its scores, a few MiB
at most) and at most max(chunk, 1/64 of its entries) candidates, except
for the ties at the threshold (all of them when most scores are equal).
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import (
    DistributedSelectionError,
    InvalidAmountError,
    InvalidImportanceScoresError,
    InvalidMaskError,
    PruneplugError,
)
from ..storage.packed import PackedMask, flat_mask, mask_range, pack_bits, plain

__all__ = [
    "DistributedSelection",
    "LocalScores",
    "count_alive_distributed",
    "keep_highest_across_distributed",
    "select_lowest_distributed",
]

#: Entries per chunk when a rank reads its scores: about 1/128 of its entries, a power of two from 2**14 to
#: 2**18, so that the temporaries of a chunk (some 24 bytes an entry) stay near 1/20 of float32 scores at
#: any size, and a few MiB at most (powers of two: packed masks are packed a chunk at a time, in whole bytes).
_MIN_CHUNK, _MAX_CHUNK, _CHUNK_FRACTION = 1 << 14, 1 << 18, 128
#: A rank holds its candidates in memory once they are at most max(chunk, 1/64 of its entries) (12 bytes each).
_HOLD_FRACTION = 64
#: Digit width of the radix select: 2**11 counts (16 KiB) per all-reduce, three passes for float32 keys
#: (the fastest of 8, 11 and 16 bits on 10 M entries over 2 gloo ranks: benchmarks/distributed_selection.py).
DEFAULT_BITS = 11
DEFAULT_TIMEOUT = timedelta(seconds=60)


@dataclass(frozen=True)
class LocalScores:
    """This rank's shard of one source's scores: a box of the unsharded tensor.

    Attributes:
        scores: the shard's scores, shaped like the box (any dtype the
            one-process selection takes); its values instead when ``score``
            is given.
        global_shape: shape of the unsharded tensor.
        offset: index in the unsharded tensor of the shard's first entry
            (``scores[0, ..., 0]``), one per dim.
        alive: bool tensor shaped like ``scores``: the entries that may be
            selected (``None``: all). A :class:`~pruneplug.PackedMask` is
            read a chunk at a time, never unpacked whole.
        counted: ``False`` on a rank whose shard duplicates another rank's
            (a ``Replicate`` placement): it gets its masks but adds nothing to
            the counts, so that no entry is counted twice.
        score: elementwise scoring ``score(values, out)`` of a flat part of
            ``scores`` (which then holds values), which may write into ``out``
            (a float buffer of the part's size): the shard's scores are then
            computed a chunk at a time and never held whole. ``None``:
            ``scores`` are the scores.
    """

    scores: Tensor
    global_shape: tuple[int, ...]
    offset: tuple[int, ...]
    alive: Tensor | None = None
    counted: bool = True
    score: Callable[[Tensor, Tensor], Tensor] | None = None

    @classmethod
    def unsharded(cls, scores: Tensor, alive: Tensor | None = None, *, counted: bool = True) -> LocalScores:
        """The whole tensor on this rank (one process, or a source no rank shards)."""
        return cls(scores, tuple(scores.shape), (0,) * scores.dim(), alive, counted)

    @classmethod
    def from_dtensor(cls, scores: Tensor, alive: Tensor | None = None) -> LocalScores:
        """This rank's shard of a DTensor of scores (``Shard(d)`` and ``Replicate`` placements).

        ``alive`` may be a DTensor placed like ``scores`` or this rank's
        local bool tensor.
        """
        from torch.distributed.tensor import DTensor

        if not isinstance(scores, DTensor):
            raise InvalidImportanceScoresError(f"expected a DTensor of scores, got {type(scores).__name__}")
        return cls.shard_of(scores, scores.to_local(), alive)

    @classmethod
    def shard_of(
        cls,
        tensor: Tensor,
        scores: Tensor,
        alive: Tensor | None = None,
        score: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> LocalScores:
        """``scores`` of this rank's shard of the DTensor ``tensor`` (``Shard(d)`` and ``Replicate`` placements).

        ``scores`` is shaped like ``tensor.to_local()`` (values, with an
        elementwise ``score``); ``alive`` is a DTensor placed like ``tensor``
        or a local bool tensor. Replicas other than the first (coordinate 0
        on every mesh dim that replicates) are not counted.
        """
        from torch.distributed.tensor import DTensor, Replicate, Shard
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        if not isinstance(tensor, DTensor):
            raise InvalidImportanceScoresError(f"expected a DTensor, got {type(tensor).__name__}")
        for placement in tensor.placements:
            if type(placement) not in (Shard, Replicate):  # Partial sums, strided shards: not a box of entries
                raise InvalidImportanceScoresError(
                    f"placement {placement} is not supported: only Shard(d) and Replicate"
                )
        mesh = tensor.device_mesh
        _, offset = compute_local_shape_and_global_offset(tensor.shape, mesh, tensor.placements)
        counted = all(
            mesh.get_local_rank(dim) == 0 for dim, placement in enumerate(tensor.placements) if placement.is_replicate()
        )
        local_alive = alive.to_local() if isinstance(alive, DTensor) else alive
        return cls(scores, tuple(tensor.shape), tuple(offset), local_alive, counted, score)


@dataclass(frozen=True)
class DistributedSelection:
    """What :func:`keep_highest_across_distributed` returns.

    Attributes:
        keep: one bool tensor per source (a :class:`~pruneplug.PackedMask`
            with ``pack=True``), shaped like its local scores: ``True``
            where an entry was alive and is not among the ``k`` lowest.
        all_reduces: how many all-reduces the call made.
        bytes_communicated: the payload of those all-reduces, in bytes (what
            this rank contributes; a ring all-reduce moves about twice that).
    """

    keep: list[Tensor]
    all_reduces: int
    bytes_communicated: int


@dataclass
class _Collective:
    """All-reduces over one group, each waiting at most ``timeout``, counted."""

    group: dist.ProcessGroup | None
    timeout: timedelta
    device: torch.device
    calls: int = 0
    bytes: int = field(default=0)

    def all_reduce(self, tensor: Tensor, op: dist.ReduceOp.RedOpType) -> Tensor:
        self.calls += 1
        self.bytes += tensor.numel() * tensor.element_size()
        tensor = tensor.to(self.device)
        try:
            dist.all_reduce(tensor, op=op, group=self.group, async_op=True).wait(self.timeout)  # type: ignore[union-attr]
        except RuntimeError as error:
            raise DistributedSelectionError(
                f"all-reduce {self.calls} of the selection failed or did not finish within {self.timeout} "
                f"(a rank that is not selecting, or a broken group): {error}"
            ) from error
        return tensor.cpu()

    def all_reduce_status(self, counts: Tensor, error: Exception | None) -> Tensor:
        """Sum ``counts`` over the ranks with one more entry, 1 where a rank failed; raise on every rank if one did.

        A rank that failed computing its counts (its scores raised) sends
        zeros and the flag, so that the others learn of it at this all-reduce
        instead of waiting for the timeout at the next one.
        """
        flagged = torch.cat([counts.to(torch.int64), torch.tensor([int(error is not None)], dtype=torch.int64)])
        reduced = self.all_reduce(flagged, dist.ReduceOp.SUM)
        if error is not None:
            raise error
        if int(reduced[-1]):
            raise DistributedSelectionError(
                f"{int(reduced[-1])} other rank(s) failed while scoring or selecting (their errors say why); "
                "nothing was selected"
            )
        return reduced[:-1]


def _comm_device(group: dist.ProcessGroup | None) -> torch.device:
    """Where the counts go for the all-reduce: the current CUDA device for a NCCL-only group, else the CPU."""
    if str(dist.get_backend(group)) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _needs_float64(dtype: torch.dtype) -> bool:
    """As the one-process selection: float64 and integer scores compare in float64, others in float32."""
    return dtype == torch.float64 or not (dtype.is_floating_point or dtype.is_complex)


class _Keys:
    """Order-preserving integer keys of float scores, held in a signed tensor of the same width.

    A key is the float's bits with the sign bit flipped for non-negative
    floats and every bit flipped for negative ones: as unsigned integers
    these order like the floats. Digits are read with shifts and masks, which
    see the same bits whether the tensor is signed or not.
    """

    def __init__(self, wide: bool) -> None:
        self.float = torch.float64 if wide else torch.float32
        self.int = torch.int64 if wide else torch.int32
        self.width = 64 if wide else 32
        self.nan_key = self.of_float(math.inf) + 1

    def of_float(self, value: float) -> int:
        """The key (as an unsigned integer) of one float."""
        if math.isnan(value):
            return self.nan_key
        value += 0.0  # -0.0 + 0.0 is +0.0: one key for the two zeros, which compare equal
        bits = int.from_bytes(struct.pack(">d" if self.width == 64 else ">f", value), "big")
        top = 1 << (self.width - 1)
        return bits | top if bits < top else (~bits) & ((1 << self.width) - 1)

    def to_float(self, key: int) -> float:
        if key == self.nan_key:
            return math.nan
        top = 1 << (self.width - 1)
        bits = key ^ top if key >= top else (~key) & ((1 << self.width) - 1)
        return float(struct.unpack(">d" if self.width == 64 else ">f", bits.to_bytes(self.width // 8, "big"))[0])

    def of(self, scores: Tensor) -> Tensor:
        values = scores.to(self.float) + 0.0
        bits = values.view(self.int)
        keys = bits ^ ((bits >> (self.width - 1)) | torch.iinfo(self.int).min)
        nan_key = self.nan_key - (1 << self.width)  # as a signed integer: NaN keys are above the top bit
        return torch.where(torch.isnan(values), torch.tensor(nan_key, dtype=self.int, device=keys.device), keys)


def _digit(values: Tensor, shift: int, width: int) -> Tensor:
    return (values >> shift) & ((1 << width) - 1)


def _pick(counts: Tensor, rank: int) -> tuple[int, int, int]:
    """``(digit, rank within it, count in it)`` of the ``rank``-th (1-based) entry, given counts per digit."""
    cumulative = torch.cumsum(counts, 0)
    digit = int(torch.searchsorted(cumulative, torch.tensor([rank], dtype=cumulative.dtype))[0])
    before = int(cumulative[digit - 1]) if digit > 0 else 0
    return digit, rank - before, int(counts[digit])


def _widths(total_bits: int, bits: int) -> list[int]:
    """Digit widths from the top: ``bits`` each, the last one what remains."""
    return [min(bits, total_bits - start) for start in range(0, total_bits, bits)]


def _global_positions(shard: LocalScores, local: Tensor, base: int) -> Tensor:
    """Positions in source order, row-major in the unsharded tensors, of some flat local indices."""
    position = torch.full_like(local, base)
    remaining = local
    stride = 1
    for size, offset, global_size in zip(
        reversed(shard.scores.shape), reversed(shard.offset), reversed(shard.global_shape), strict=True
    ):
        position += (remaining % size + offset) * stride
        remaining = remaining // size
        stride *= global_size
    return position


def _check(shard: LocalScores, index: int) -> None:
    scores = shard.scores
    name = f"source {index}"
    if scores.is_complex():
        raise InvalidImportanceScoresError(f"{name}: complex scores cannot be ranked")
    if len(shard.global_shape) != scores.dim() or len(shard.offset) != scores.dim():
        raise InvalidImportanceScoresError(
            f"{name}: scores have {scores.dim()} dims, global_shape {shard.global_shape} and offset {shard.offset}"
        )
    for dim, (size, offset, global_size) in enumerate(zip(scores.shape, shard.offset, shard.global_shape, strict=True)):
        if offset < 0 or offset + size > global_size:
            raise InvalidImportanceScoresError(
                f"{name}: the shard spans [{offset}, {offset + size}) of dim {dim}, "
                f"outside its global size {global_size}"
            )
    if shard.alive is not None and (shard.alive.dtype != torch.bool or shard.alive.shape != scores.shape):
        raise InvalidMaskError(
            f"{name}: alive must be a bool tensor shaped like the scores {tuple(scores.shape)}, "
            f"got {shard.alive.dtype} {tuple(shard.alive.shape)}"
        )


def _agree(shards: Sequence[LocalScores], k: int, bits: int, collective: _Collective) -> bool:
    """Check every rank's input and that the ranks agree; return whether the keys must be float64.

    One all-reduce (max) of each rank's facts and their negatives gives every
    rank the largest and the smallest value of each fact.
    """
    local_error: PruneplugError | None = None
    try:
        for index, shard in enumerate(shards):
            _check(shard, index)
        if not 1 <= bits <= 16:
            raise InvalidImportanceScoresError(f"bits must be within 1..16, got {bits}")
    except PruneplugError as error:
        local_error = error
    shapes = zlib.crc32(repr([s.global_shape for s in shards]).encode())
    total = sum(math.prod(s.global_shape) for s in shards)
    wide = any(_needs_float64(s.scores.dtype) for s in shards)
    facts = [k, len(shards), shapes, total, bits, int(wide), int(local_error is not None)]
    reduced = collective.all_reduce(torch.tensor(facts + [-f for f in facts], dtype=torch.int64), dist.ReduceOp.MAX)
    highest, lowest = reduced[: len(facts)].tolist(), [-v for v in reduced[len(facts) :].tolist()]
    if local_error is not None:
        raise local_error
    if highest[-1]:
        raise DistributedSelectionError("another rank's input is invalid (its error says which); nothing was selected")
    names = ["k", "the number of sources", "the sources' global shapes", "the total number of entries", "bits"]
    disagree = [name for name, hi, lo in zip(names, highest, lowest, strict=False) if hi != lo]
    if disagree:
        raise DistributedSelectionError(f"the ranks disagree on {', '.join(disagree)}; nothing was selected")
    return bool(highest[5])


class _Candidates:
    """This rank's entries that may still be the k-th lowest: per source, flat local indices and keys."""

    def __init__(self, count: int) -> None:
        self.indices: list[Tensor] = [torch.empty(0, dtype=torch.int64)] * count
        self.keys: list[Tensor] = [torch.empty(0, dtype=torch.int64)] * count

    def narrow(self, index: int, where: Tensor) -> None:
        self.indices[index] = self.indices[index][where]
        self.keys[index] = self.keys[index][where]


def _chunk_size(shards: Sequence[LocalScores]) -> int:
    """Entries per chunk for this rank's shards (see :data:`_CHUNK_FRACTION`)."""
    wanted = sum(shard.scores.numel() for shard in shards) // _CHUNK_FRACTION
    return min(_MAX_CHUNK, max(_MIN_CHUNK, 1 << max(0, wanted.bit_length() - 1)))


def _chunks(shard: LocalScores, chunk: int) -> Iterator[tuple[int, Tensor, Tensor | None]]:
    """``(start, scores, alive)`` of consecutive chunks of the shard (the scores valid until the next chunk)."""
    values = shard.scores.detach().reshape(-1)
    alive = None if shard.alive is None else flat_mask(shard.alive)
    buffer = None
    for start in range(0, values.numel(), chunk):
        part = values[start : start + chunk]
        if shard.score is not None:
            if buffer is None:  # one buffer for every chunk: scores of a chunk are used before the next is read
                dtype = torch.float64 if _needs_float64(values.dtype) else torch.float32
                buffer = torch.empty(min(chunk, values.numel()), dtype=dtype, device=values.device)
            part = shard.score(part, buffer[: part.numel()])
        yield start, part, None if alive is None else mask_range(alive, start, start + part.numel())


def _matches(keys: Tensor, prefix: int, done: int, width: int) -> Tensor:
    """Whether each key's top ``done`` bits (of ``width``) are ``prefix``."""
    return _digit(keys, width - done, done) == prefix


def _scan_counts(
    shards: Sequence[LocalScores], keys: _Keys, prefix: int, done: int, shift: int, width: int, chunk: int
) -> tuple[Tensor, Tensor]:
    """Counts per digit of the alive entries that match ``prefix``, read from the shards: ``(counted, local)``.

    ``counted`` is what goes into the all-reduce (counted shards only);
    ``local`` counts every shard of this rank, for deciding what to hold.
    """
    bins = 1 << width
    counted = torch.zeros(bins + 1, dtype=torch.int64)  # the last bin takes the entries that do not match
    local = counted if all(s.counted for s in shards) else torch.zeros(bins + 1, dtype=torch.int64)
    for shard in shards:
        for _, scores, alive in _chunks(shard, chunk):
            chunk_keys = keys.of(scores)
            digits = _digit(chunk_keys, shift, width)
            hit = alive
            if done:
                hit = _matches(chunk_keys, prefix, done, keys.width)
                if alive is not None:
                    hit &= alive
            if hit is not None:
                digits = torch.where(hit, digits, bins)
            found = torch.bincount(digits, minlength=bins + 1).cpu()
            if shard.counted:
                counted += found
            if local is not counted:
                local += found
    return counted[:bins].contiguous(), local[:bins]


def _collect(shards: Sequence[LocalScores], keys: _Keys, prefix: int, done: int, chunk: int) -> _Candidates:
    """This rank's alive entries whose keys start with ``prefix`` (``done`` bits), read from the shards."""
    candidates = _Candidates(len(shards))
    for index, shard in enumerate(shards):
        indices, found = [], []
        for start, scores, alive in _chunks(shard, chunk):
            chunk_keys = keys.of(scores)
            hit = _matches(chunk_keys, prefix, done, keys.width)
            if alive is not None:
                hit &= alive
            where = hit.nonzero().reshape(-1)
            indices.append(where.cpu() + start)
            found.append(chunk_keys[where].cpu())
        if indices:
            candidates.indices[index], candidates.keys[index] = torch.cat(indices), torch.cat(found)
    return candidates


def _candidate_counts(
    shards: Sequence[LocalScores], candidates: _Candidates, shift: int, width: int
) -> tuple[Tensor, Tensor]:
    """Counts per digit of the held candidates: ``(counted, local)`` as :func:`_scan_counts`."""
    counted = torch.zeros(1 << width, dtype=torch.int64)
    local = torch.zeros(1 << width, dtype=torch.int64)
    for index, shard in enumerate(shards):
        found = torch.bincount(_digit(candidates.keys[index], shift, width), minlength=1 << width)
        local += found
        if shard.counted:
            counted += found
    return counted, local


def _select_key(
    shards: Sequence[LocalScores], k: int, keys: _Keys, bits: int, collective: _Collective, chunk: int
) -> tuple[int, int, int, _Candidates | None] | None:
    """Radix select of the k-th lowest alive key: ``(key, its rank among the ties, ties, candidates)``.

    The candidates (entries whose keys start with the digits picked so far)
    are read from the shards on each pass until few enough remain on this
    rank (:data:`_HOLD_FRACTION` of its entries); then they are gathered once
    and the later passes count them in memory. Every pass makes one
    all-reduce either way, so ranks that decide differently stay in step,
    and carries whether a rank failed (:meth:`_Collective.all_reduce_status`).
    The candidates are ``None`` if they were never few enough to gather.
    Returns ``None`` when ``k`` is 0 or every alive entry (nothing to search).
    """
    widths = _widths(keys.width, bits)
    limit = max(chunk, sum(s.scores.numel() for s in shards) // _HOLD_FRACTION)
    prefix, done, rank, ties = 0, 0, k, 0
    candidates: _Candidates | None = None
    gather = False  # gather the candidates before the next pass (inside its error check)
    for step, width in enumerate(widths):
        shift = keys.width - done - width
        counted = local = torch.zeros(1 << width, dtype=torch.int64)
        error: Exception | None = None
        try:
            if gather:
                candidates, gather = _collect(shards, keys, prefix, done, chunk), False
            if candidates is None:
                counted, local = _scan_counts(shards, keys, prefix, done, shift, width, chunk)
            else:
                counted, local = _candidate_counts(shards, candidates, shift, width)
        except Exception as exc:  # told to every rank by this pass's all-reduce
            error = exc
        counts = collective.all_reduce_status(counted, error)
        if step == 0:
            total = int(counts.sum())
            if not 0 <= k <= total:
                raise InvalidAmountError(f"cannot select {k} of {total} alive entries (over every rank)")
            if k in (0, total):
                return None
        digit, rank, ties = _pick(counts, rank)
        prefix, done = (prefix << width) | digit, done + width
        if candidates is not None:
            for index in range(len(shards)):
                candidates.narrow(index, _digit(candidates.keys[index], shift, width) == digit)
        elif step + 1 < len(widths) and int(local[digit]) <= limit:
            gather = True
    return prefix, rank, ties, candidates


def _select_position(
    positions: Sequence[Tensor],
    counted: Sequence[bool],
    rank: int,
    total: int,
    bits: int,
    collective: _Collective,
    error: Exception | None,
) -> int:
    """Radix select of the ``rank``-th lowest (1-based) of the ranks' tie positions, all below ``total``.

    ``error``: this rank failed to find its ties; the first all-reduce tells every rank, which all raise.
    """
    width_total = max(1, (total - 1).bit_length())
    shift = width_total
    prefix = 0
    remaining = list(positions)
    for width in _widths(width_total, bits):
        shift -= width
        counts = torch.zeros(1 << width, dtype=torch.int64)
        for values, is_counted in zip(remaining, counted, strict=True):
            if is_counted:
                counts += torch.bincount(_digit(values, shift, width), minlength=1 << width)
        counts = collective.all_reduce_status(counts, error)
        digit, rank, _ = _pick(counts, rank)
        prefix = (prefix << width) | digit
        remaining = [values[_digit(values, shift, width) == digit] for values in remaining]
    return prefix


def count_alive_distributed(
    shards: Sequence[LocalScores], group: dist.ProcessGroup | None = None, *, timeout: timedelta = DEFAULT_TIMEOUT
) -> int:
    """How many entries are alive over every rank (each counted once): one all-reduce of 8 bytes."""
    if not dist.is_available() or not dist.is_initialized():
        raise DistributedSelectionError("torch.distributed is not initialized: call init_process_group first")
    local = sum(s.scores.numel() if s.alive is None else _count_alive(s.alive) for s in shards if s.counted)
    collective = _Collective(group, timeout, _comm_device(group))
    return int(collective.all_reduce(torch.tensor([local], dtype=torch.int64), dist.ReduceOp.SUM)[0])


def _count_alive(alive: Tensor) -> int:
    """``alive.count_nonzero()``; a :class:`~pruneplug.PackedMask` counted a chunk at a time."""
    if not isinstance(alive, PackedMask):
        return int(alive.count_nonzero())
    flat = flat_mask(alive)
    numel = flat.numel()
    return sum(
        int(mask_range(flat, start, min(start + _MAX_CHUNK, numel)).count_nonzero())
        for start in range(0, numel, _MAX_CHUNK)
    )


def keep_highest_across_distributed(
    shards: Sequence[LocalScores],
    k: int,
    group: dist.ProcessGroup | None = None,
    *,
    timeout: timedelta = DEFAULT_TIMEOUT,
    bits: int = DEFAULT_BITS,
    pack: bool = False,
) -> DistributedSelection:
    """Prune the ``k`` lowest alive scores across every rank's shards; return what stays alive here.

    Every rank of ``group`` (default: the whole world) calls this with its
    shard of each source, in the same source order, and the same ``k``: the
    number to prune over the unsharded sources. Each rank gets the masks of
    its own shards; put together they are what
    :func:`~pruneplug.selection.exact.keep_highest_across` returns on the
    unsharded scores in one process.

    ``pack``: the masks are :class:`~pruneplug.PackedMask` (one bit per
    entry), packed a chunk at a time as they are made: the extra memory of
    the call is then about 1/32 of float32 scores instead of 1/4.

    Raises:
        InvalidImportanceScoresError: this rank's scores or ``k`` are invalid
            (every other rank raises :class:`DistributedSelectionError`).
        InvalidMaskError: this rank's alive mask does not fit its scores.
        DistributedSelectionError: the ranks disagree on ``k`` or the sources'
            shapes, another rank's input is invalid, or an all-reduce did not
            finish within ``timeout``.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise DistributedSelectionError("torch.distributed is not initialized: call init_process_group first")
    collective = _Collective(group, timeout, _comm_device(group))
    keys = _Keys(_agree(shards, k, bits, collective))
    chunk = _chunk_size(shards)
    found = _select_key(shards, k, keys, bits, collective, chunk)
    keep: list[Tensor] = []
    if found is None:
        # k is 0 or every alive entry; the first count told every rank which (and checked k).
        for shard in shards:
            shape, device = shard.scores.shape, shard.scores.device
            if k == 0 and shard.alive is not None:  # (a packed alive mask's clone stays packed)
                kept = shard.alive.clone()
                keep.append(PackedMask.pack(kept) if pack else plain(kept))
            elif pack:  # made as bytes: no whole bool shard
                keep.append(PackedMask.filled(shape, shard.alive is None and k == 0, device))
            else:
                keep.append(torch.full(shape, shard.alive is None and k == 0, dtype=torch.bool, device=device))
        return DistributedSelection(keep, collective.calls, collective.bytes)
    threshold_key, rank, ties, held = found
    threshold = keys.to_float(threshold_key)
    bases = [0]
    for shard in shards:
        bases.append(bases[-1] + math.prod(shard.global_shape))
    error: Exception | None = None
    candidates = _Candidates(len(shards))
    tie_positions = list(candidates.indices)
    try:
        # never few enough to gather on the way: gather the ties at the threshold now, which the masks need
        candidates = held if held is not None else _collect(shards, keys, threshold_key, keys.width, chunk)
        # candidates now hold exactly this rank's alive entries whose key is the threshold's.
        tie_positions = [
            _global_positions(shard, candidates.indices[index], bases[index]) for index, shard in enumerate(shards)
        ]
    except Exception as exc:  # told to every rank by the next all-reduce
        error = exc
    if rank == ties:
        last = bases[-1]  # every tie is pruned
    else:
        counted = [shard.counted for shard in shards]
        last = _select_position(tie_positions, counted, rank, bases[-1], bits, collective, error)
        error = None  # (raised there if it was not None)
    try:
        if error is None:
            keep = _masks(shards, keys, threshold, candidates, tie_positions, last, pack, chunk)
    except Exception as exc:
        error = exc
    collective.all_reduce_status(torch.zeros(0, dtype=torch.int64), error)  # all masks made, or none kept
    return DistributedSelection(keep, collective.calls, collective.bytes)


def _masks(
    shards: Sequence[LocalScores],
    keys: _Keys,
    threshold: float,
    candidates: _Candidates,
    tie_positions: Sequence[Tensor],
    last: int,
    pack: bool,
    chunk: int,
) -> list[Tensor]:
    """This rank's masks: alive entries above the threshold, and the ties past position ``last``.

    ``pack``: each chunk is packed to bits as soon as it is made (chunks are
    whole bytes), so no bool mask of a whole shard is ever held.
    """
    keep: list[Tensor] = []
    for index, shard in enumerate(shards):
        device = shard.scores.device
        numel = shard.scores.numel()
        flat = torch.empty(min(numel, chunk) if pack else numel, dtype=torch.bool, device=device)
        packed = torch.empty((numel + 7) // 8 if pack else 0, dtype=torch.uint8, device=device)
        # (the ties are gathered chunk by chunk, so their indices ascend)
        pruned_ties = candidates.indices[index][tie_positions[index] <= last].to(device)
        for start, scores, alive in _chunks(shard, chunk):
            part = flat[: scores.numel()] if pack else flat[start : start + scores.numel()]
            if math.isnan(threshold):
                part.copy_(torch.isnan(scores.to(keys.float)))  # every other score goes; NaNs are the ties
            else:
                torch.lt(scores.to(keys.float), threshold, out=part).logical_not_()  # NaN scores stay
            if alive is not None:
                part &= alive
            bounds = torch.searchsorted(pruned_ties, torch.tensor([start, start + scores.numel()], device=device))
            part[pruned_ties[int(bounds[0]) : int(bounds[1])] - start] = False
            if pack:
                packed[start // 8 : start // 8 + (scores.numel() + 7) // 8] = pack_bits(part)
        keep.append(PackedMask(packed, shard.scores.shape) if pack else flat.reshape(shard.scores.shape))
    return keep


def select_lowest_distributed(
    shards: Sequence[LocalScores],
    k: int,
    group: dist.ProcessGroup | None = None,
    *,
    timeout: timedelta = DEFAULT_TIMEOUT,
    bits: int = DEFAULT_BITS,
) -> list[Tensor]:
    """Bool masks of this rank's entries among the ``k`` lowest alive scores over every rank.

    The complement, among alive entries, of
    :func:`keep_highest_across_distributed`'s ``keep``.
    """
    selection = keep_highest_across_distributed(shards, k, group, timeout=timeout, bits=bits)
    return [
        ~keep if shard.alive is None else shard.alive & ~keep
        for shard, keep in zip(shards, selection.keep, strict=True)
    ]
