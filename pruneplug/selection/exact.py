"""Exact selection of the k lowest scores: in one tensor, over slices, or across many tensors.

Every strategy that ranks entries ends here. The contract is exact: exactly
``k`` entries are selected, only among the *alive* ones (not yet pruned), the
lowest scores first; among equal scores the earliest position (row-major,
then source order) goes first, so ties never make a threshold prune more or
less than asked. NaN scores rank above ``+inf`` (pruned last).

How, without ``topk`` or a sort:

1. a strided sample of the scores places a narrow window ``[lo, hi]`` around
   the k-th lowest value;
2. one streaming pass counts the alive scores below ``lo`` and gathers the few
   inside the window, whose exact k-th value is the threshold ``T``;
3. a second streaming pass writes the masks (``s > T``, fixing up ties only
   when there are more ties at ``T`` than are to be pruned).

Sources are read chunk by chunk (about a million entries at a time, so the
intermediate tensors stay in cache) and nothing is concatenated across
tensors: global selection over a whole model holds one chunk of scores at a
time when the scores are elementwise (``|w|``), one tensor's otherwise. If the
sample misplaced the window (rare), the pass is repeated with a wider one.

On the CPU the selection's own ops run on as many intra-op threads as there
are CPUs free of other processes' work (see :func:`_selection_threads`);
scores computed whole, and what ``finish`` does, get the caller's threads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..storage.packed import flat_mask, mask_range
from .threads import free_cpus, intra_op_threads

__all__ = ["ScoreSource", "keep_highest", "keep_highest_across", "select_lowest", "select_lowest_slices"]

#: Below this many alive entries in all, the threshold is taken from all alive scores at once.
_DIRECT_LIMIT = 1 << 18
#: Size of the sample used to place the window around the k-th value.
_SAMPLE_SIZE = 1 << 16
#: Entries per chunk on the CPU (4 MiB of fp32: cache-sized) and on accelerators.
_CPU_CHUNK = 1 << 20
_DEVICE_CHUNK = 1 << 26


@dataclass(frozen=True)
class ScoreSource:
    """The scores of one tensor, computed on demand.

    Build one with :meth:`elementwise` when each entry's score depends on that
    entry alone (``|w|``): then any chunk or sample is scored on its own and
    the full score tensor never exists. Otherwise use :meth:`whole`: the
    scores are computed in one piece (once for a single source, once per pass
    for several, so that only one tensor's scores are held at a time).

    Attributes:
        read: returns a flat tensor -- the raw values (elementwise) or the scores (whole).
        score: elementwise scoring ``score(values, out)`` of a slice of ``read()``'s
            result, which may write into ``out`` (a buffer it can reuse), or ``None``.
        alive: flat bool tensor of the entries that may be selected, or ``None`` (all);
            a :class:`~pruneplug.PackedMask` stays packed, unpacked a chunk at a time.
        numel: number of entries.
        device: where the values live (and where the result masks are made).
    """

    read: Callable[[], Tensor]
    score: Callable[[Tensor, Tensor], Tensor] | None
    alive: Tensor | None
    numel: int
    device: torch.device

    @classmethod
    def elementwise(
        cls, values: Tensor, score: Callable[[Tensor, Tensor], Tensor], alive: Tensor | None = None
    ) -> ScoreSource:
        """Scores ``score(values[i])``, computed for any part of ``values`` on its own.

        ``score(part, out)`` returns the scores of ``part``; it may write them
        into ``out`` (a float buffer of ``part``'s size) to save an allocation.
        """
        flat = values.detach().reshape(-1)
        return cls(lambda: flat, score, _flat_alive(alive), flat.numel(), flat.device)

    @classmethod
    def whole(
        cls, scores: Callable[[], Tensor], numel: int, device: torch.device, alive: Tensor | None = None
    ) -> ScoreSource:
        """Scores computed in one piece by ``scores()`` (called once per pass if there are several sources)."""
        return cls(lambda: scores().detach().reshape(-1), None, _flat_alive(alive), numel, device)


def _flat_alive(alive: Tensor | None) -> Tensor | None:
    return None if alive is None else flat_mask(alive)


def _score_dtype(dtype: torch.dtype) -> torch.dtype:
    """A dtype that holds the scores exactly and compares exactly against Python floats."""
    if dtype == torch.float64 or not (dtype.is_floating_point or dtype.is_complex):
        return torch.float64  # float64, and integers below 2**53
    return torch.float32  # float32, and float16/bfloat16 exactly


def _chunk_size(device: torch.device) -> int:
    return _CPU_CHUNK if device.type == "cpu" else _DEVICE_CHUNK


def _selection_threads(sources: Sequence[ScoreSource]) -> int:
    """How many intra-op threads the selection's own ops should run on: the caller's, fewer if CPUs are busy.

    A pass makes about ten short ops per million entries (a fraction of a
    millisecond each), and on the CPU each is an OpenMP parallel region that
    ends at a barrier. With a CPU free for every thread that costs little;
    beside a busy process the team waits at every barrier for whichever thread
    was descheduled, while the waiting threads spin, taking CPU from the one
    with the work. Global L1 over 4 x 4096^2 on 2 CPUs took 3.4x its idle time
    beside one busy process, 20x and more under a load of about 10; on one
    thread, 1.05x (but one thread idle takes 1.3-1.5x the time of two, so
    threads are given up only when other processes want the CPUs).
    """
    threads = torch.get_num_threads()
    if threads == 1 or all(s.device.type != "cpu" for s in sources) or sum(s.numel for s in sources) <= _DIRECT_LIMIT:
        return threads  # small selections make few parallel regions: not worth the look
    free = free_cpus()
    return threads if free is None else max(1, min(threads, free))


class _Buffers:
    """Chunk-sized scratch tensors, reused across chunks and passes.

    Allocating and freeing a few MiB per chunk makes the C allocator hand
    memory back to the OS and fault it in again, which costs more than the
    arithmetic; reusing buffers keeps every pass at memory speed.
    """

    def __init__(self) -> None:
        self._tensors: dict[tuple[str, torch.dtype, torch.device], Tensor] = {}

    def get(self, role: str, size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        key = (role, dtype, device)
        buffer = self._tensors.get(key)
        if buffer is None or buffer.numel() < size:
            buffer = torch.empty(size, dtype=dtype, device=device)
            self._tensors[key] = buffer
        return buffer[:size]


class _Widen(Exception):
    """A source's scores need float64: the pass must start again comparing in float64."""


class _Pass:
    """One read of every source: chunks of scores, in the selection's dtype, with their alive masks.

    All sources are compared in one dtype -- a threshold taken from float64
    scores would round differently against float32 ones. The selection starts
    in float32; a pass that meets scores needing float64 finishes (so every
    source is read as often as the others) and is then done again in float64.
    """

    def __init__(
        self,
        sources: Sequence[ScoreSource],
        kept: list[Tensor | None] | None,
        buffers: _Buffers,
        dtype: torch.dtype,
        threads: int,
    ) -> None:
        self.sources = sources
        self.kept = kept
        self.buffers = buffers
        self.dtype = dtype
        self.threads = threads
        self.too_narrow = False

    def check(self) -> None:
        """After the pass: raise :class:`_Widen` if it met scores its dtype could not hold."""
        if self.too_narrow:
            raise _Widen

    def _in_dtype(self, scores: Tensor, role: str) -> Tensor:
        if _score_dtype(scores.dtype) == torch.float64 and self.dtype != torch.float64:
            self.too_narrow = True
        if scores.dtype == self.dtype:
            return scores
        return self.buffers.get(role, scores.numel(), self.dtype, scores.device).copy_(scores)

    def _values(self, index: int) -> Tensor:
        source = self.sources[index]
        if self.kept is not None and self.kept[index] is not None:
            return self.kept[index]  # type: ignore[return-value]
        with intra_op_threads(self.threads):  # whole scores may be heavy work (not ours): the caller's threads
            values = source.read()
        if values.numel() != source.numel:
            raise ValueError(f"scores have {values.numel()} entries, expected {source.numel}")
        if self.kept is not None:
            self.kept[index] = values  # read once (one source: a view for elementwise scores, costs nothing)
        return values

    def _scored(self, source: ScoreSource, part: Tensor) -> Tensor:
        if source.score is not None:
            dtype = torch.float64 if _score_dtype(part.dtype) == torch.float64 else self.dtype
            part = source.score(part, self.buffers.get("score", part.numel(), dtype, part.device))
        return self._in_dtype(part, "cast")

    def chunks(self, index: int) -> Iterator[tuple[int, Tensor, Tensor | None]]:
        """``(start, scores, alive)`` for consecutive chunks of source ``index``."""
        source = self.sources[index]
        values = self._values(index)
        size = _chunk_size(source.device)
        for start in range(0, source.numel, size):
            stop = min(start + size, source.numel)
            alive = None if source.alive is None else mask_range(source.alive, start, stop)
            yield start, self._scored(source, values[start:stop]), alive

    def sample(self, index: int, stride: int) -> Tensor:
        source = self.sources[index]
        part = self._values(index)[::stride]
        if source.score is not None:
            part = source.score(part, torch.empty_like(part, dtype=_score_dtype(part.dtype)))
        if _score_dtype(part.dtype) == torch.float64 and self.dtype != torch.float64:
            self.too_narrow = True
        scores = part.to(self.dtype)
        if source.alive is not None:
            scores = scores[source.alive[::stride]]
        return scores[~torch.isnan(scores)].to(torch.float64).cpu()


class _Selection:
    """The threshold search shared by every entry point."""

    def __init__(
        self,
        sources: Sequence[ScoreSource],
        rewind: Callable[[], None] | None,
        guess: Callable[[int, int], tuple[float, float] | None] | None = None,
        *,
        keep_reads: bool = False,
        threads: int,
    ) -> None:
        self.sources = sources
        self.rewind = rewind
        self.guess = guess
        self.keep_reads = keep_reads or len(sources) == 1
        self.kept: list[Tensor | None] = [None] * len(sources)
        self.buffers = _Buffers()
        self.threads = threads  # the caller's intra-op threads, for reading whole scores
        self.passes = 0
        self.dtype = torch.float32  # widened to float64 by the first source that needs it

    def new_pass(self) -> _Pass:
        # Several sources are re-read on each pass; random scores must then draw the same numbers.
        if self.passes and self.rewind is not None and len(self.sources) > 1:
            self.rewind()
        self.passes += 1
        return _Pass(self.sources, self.kept if self.keep_reads else None, self.buffers, self.dtype, self.threads)

    def window(self, k: int, total: int) -> tuple[float, float]:
        """Bounds that hold the k-th lowest alive score with overwhelming probability."""
        if total <= _DIRECT_LIMIT:
            return -math.inf, math.inf
        guessed = self.guess(k, total) if self.guess is not None else None
        if guessed is not None:
            return guessed  # scores of a known distribution: no sampling pass (a miss only costs a wider pass)
        reader = self.new_pass()
        numel = sum(s.numel for s in self.sources)
        # A bigger sample gives a narrower window, so less to gather from a big total.
        size = _SAMPLE_SIZE if total < (1 << 24) else 4 * _SAMPLE_SIZE
        stride = max(1, numel // size)
        sample = torch.cat([reader.sample(i, stride) for i in range(len(self.sources))])
        reader.check()
        if sample.numel() < 64:
            return -math.inf, math.inf
        rank = k / total * sample.numel()
        # A strided sample's rank error is about sqrt(n); four of those is a wide enough margin.
        margin = 4.0 * math.sqrt(sample.numel()) + 8.0
        low, high = math.floor(rank - margin), math.ceil(rank + margin)
        lo = -math.inf if low < 1 else float(torch.kthvalue(sample, low).values)
        hi = math.inf if high > sample.numel() else float(torch.kthvalue(sample, high).values)
        return lo, hi

    def threshold(self, k: int, total: int) -> tuple[float, int, int]:
        """``(T, below, at)``: the k-th lowest alive score, how many alive scores are < T and == T."""
        while True:
            try:
                return self._threshold(k, total)
            except _Widen:
                self.dtype = torch.float64

    def _threshold(self, k: int, total: int) -> tuple[float, int, int]:
        lo, hi = self.window(k, total)
        while True:
            reader = self.new_pass()
            below = 0
            inside: list[Tensor] = []
            for index, source in enumerate(self.sources):
                count = torch.zeros((), dtype=torch.int64, device=source.device)
                for _, scores, alive in reader.chunks(index):
                    lt = torch.lt(scores, lo, out=self.buffers.get("lt", scores.numel(), torch.bool, scores.device))
                    within = torch.le(scores, hi, out=self.buffers.get("in", scores.numel(), torch.bool, scores.device))
                    if alive is not None:
                        lt.logical_and_(alive)
                        within.logical_and_(alive)
                    count += torch.count_nonzero(lt)
                    torch.logical_xor(within, lt, out=within)  # lo <= score <= hi (lt is a subset of within)
                    inside.append(scores[within].cpu())
                below += int(count)
            reader.check()
            pooled = torch.cat(inside)
            if below < k <= below + pooled.numel():
                threshold = float(torch.kthvalue(pooled, k - below).values)
                at = int(torch.count_nonzero(pooled == threshold))
                return threshold, below + int(torch.count_nonzero(pooled < threshold)), at
            if below < k and hi == math.inf:
                return math.nan, below + pooled.numel(), 0  # the k-th lowest is a NaN score
            # The sample misplaced the window (rare): widen it towards the side that missed.
            lo, hi = (-math.inf, lo) if below >= k else (hi, math.inf)


def keep_highest_across(
    sources: Sequence[ScoreSource],
    k: int,
    *,
    rewind: Callable[[], None] | None = None,
    guess: Callable[[int, int], tuple[float, float] | None] | None = None,
    keep_reads: bool = False,
    finish: Callable[[int, Tensor], Tensor] | None = None,
) -> list[Tensor]:
    """Prune the ``k`` lowest alive scores across all sources; return what stays alive.

    Returns one flat bool tensor per source: ``True`` where an entry was
    alive and is not among the ``k`` lowest. ``finish(index, keep)``, if
    given, is applied to each source's result as soon as it is complete and
    its result returned instead (global pruning packs masks there, so that
    no two unpacked masks are ever held at once). Ties at the threshold are pruned
    in order: earlier sources first, then earlier positions. ``rewind``
    restarts random scores between passes (see ``RandomUnstructured``);
    ``guess(k, total)`` may return bounds likely to hold the k-th lowest score
    (for scores of a known distribution), saving the sampling pass.
    ``keep_reads`` keeps every source's scores after the first read (for
    random scores that cannot be rewound), instead of reading them again.

    >>> cpu = torch.device("cpu")
    >>> magnitude = lambda values, out: torch.abs(values, out=out)
    >>> a = ScoreSource.elementwise(torch.tensor([3.0, -1.0, 2.0]), magnitude)
    >>> b = ScoreSource.elementwise(torch.tensor([1.0, 5.0]), magnitude)
    >>> [m.tolist() for m in keep_highest_across([a, b], 2)]
    [[True, False, True], [False, True]]
    """
    total = sum(s.numel if s.alive is None else int(torch.count_nonzero(s.alive)) for s in sources)
    if not 0 <= k <= total:
        raise ValueError(f"cannot select {k} of {total} alive entries")
    done = finish or (lambda index, keep: keep)
    if k == 0 or k == total:
        return [
            done(
                index,
                torch.full((s.numel,), k == 0, dtype=torch.bool, device=s.device)
                if s.alive is None
                else (s.alive.clone() if k == 0 else torch.zeros_like(s.alive)),
            )
            for index, s in enumerate(sources)
        ]
    threads = torch.get_num_threads()
    selection = _Selection(sources, rewind, guess, keep_reads=keep_reads, threads=threads)
    with intra_op_threads(_selection_threads(sources)):
        threshold, below, at = selection.threshold(k, total)
        ties_to_prune = k - below
        reader = selection.new_pass()
        out = []
        for index, source in enumerate(sources):
            keep = torch.empty(source.numel, dtype=torch.bool, device=source.device)
            nan_threshold = math.isnan(threshold)
            for start, scores, alive in reader.chunks(index):
                part = keep[start : start + scores.numel()]
                # "not <=" rather than ">" so that NaN scores (rank above +inf) stay.
                if nan_threshold:
                    part.copy_(torch.isnan(scores))  # every other score goes; NaNs are the ties
                elif at == ties_to_prune:
                    torch.le(scores, threshold, out=part).logical_not_()  # every tie goes: one comparison
                else:
                    torch.lt(scores, threshold, out=part).logical_not_()
                if alive is not None:
                    part &= alive
                if ties_to_prune > 0 and (nan_threshold or at != ties_to_prune):
                    ties = part & (torch.isnan(scores) if nan_threshold else scores == threshold)
                    positions = ties.nonzero().reshape(-1)[:ties_to_prune]
                    part[positions] = False
                    ties_to_prune -= positions.numel()
            with intra_op_threads(threads):
                out.append(done(index, keep))
    return out


def keep_highest(scores: Tensor, k: int, alive: Tensor | None = None) -> Tensor:
    """Bool mask, shaped like ``scores``: alive entries that are not among the ``k`` lowest.

    >>> keep_highest(torch.tensor([[4.0, 1.0], [1.0, 3.0]]), 2).tolist()
    [[True, False], [False, True]]
    >>> keep_highest(torch.tensor([2.0, 2.0, 2.0]), 2).tolist()  # ties: earliest go first
    [False, False, True]
    """
    source = ScoreSource.whole(lambda: scores, scores.numel(), scores.device, alive)
    return keep_highest_across([source], k)[0].reshape(scores.shape)


def select_lowest(scores: Tensor, k: int, alive: Tensor | None = None) -> Tensor:
    """Bool mask of the ``k`` lowest scores among the alive entries, shaped like ``scores``.

    >>> select_lowest(torch.tensor([2.0, 2.0, 2.0]), 2).tolist()
    [True, True, False]
    """
    keep = keep_highest(scores, k, alive)
    return ~keep if alive is None else alive.reshape(scores.shape) & ~keep


def select_lowest_slices(slice_scores: Tensor, k: int, alive: Tensor | None = None) -> Tensor:
    """Bool mask over slices (1-D): the ``k`` lowest-scoring alive slices.

    Slices are few (channels, rows), so a stable sort is both exact and cheap.

    >>> select_lowest_slices(torch.tensor([0.5, 0.1, 0.9, 0.1]), 2).tolist()
    [False, True, False, True]
    """
    flat = slice_scores.detach().reshape(-1).cpu()
    flat = flat.to(_score_dtype(flat.dtype))
    candidates = torch.arange(flat.numel()) if alive is None else alive.reshape(-1).cpu().nonzero().reshape(-1)
    if not 0 <= k <= candidates.numel():
        raise ValueError(f"cannot select {k} of {candidates.numel()} alive slices")
    order = torch.sort(flat[candidates], stable=True).indices[:k]  # NaN sorts last
    selected = torch.zeros(flat.numel(), dtype=torch.bool)
    selected[candidates[order]] = True
    return selected.to(slice_scores.device)
