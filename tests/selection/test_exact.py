"""Property tests of the exact selectors in ``pruneplug.selection.exact``.

Every selector is checked against one simple reference: a stable sort of the
alive entries by ``(score, position)``, NaN ranked above ``+inf`` (pruned
last, as the module documents), where -0.0 and 0.0 are equal and ties go to
the earlier position -- across sources, to the earlier source. The sampled
window path (used above ``_DIRECT_LIMIT`` alive entries) is forced on small
tensors by monkeypatching the limits, with distributions that make the window
miss and widen.

Hypothesis does not control torch's RNG: tensors are drawn as lists, or
built from a drawn seed with a ``torch.Generator``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator, Sequence

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import Tensor

import pruneplug.selection.exact as select
import pruneplug.selection.threads as threads
from pruneplug import PackedMask
from pruneplug.selection.exact import (
    ScoreSource,
    keep_highest,
    keep_highest_across,
    select_lowest,
    select_lowest_slices,
)

CPU = torch.device("cpu")
SPECIALS = (math.nan, math.inf, -math.inf, -0.0, 0.0)
FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
#: Integer dtypes and the ranges drawn for them (int64 within 2**53, the range documented as exact).
INT_RANGES = {
    torch.uint8: (0, 255),
    torch.int8: (-128, 127),
    torch.int16: (-(2**15), 2**15 - 1),
    torch.int32: (-(2**31), 2**31 - 1),
    torch.int64: (-(2**53), 2**53),
}
SEEDS = st.integers(0, 2**31 - 1)


# --- the reference ---------------------------------------------------------------------


def rank_key(value: float, position: int) -> tuple[bool, float, int]:
    """Sort key: NaN above everything (+inf included), then the value, then the position."""
    is_nan = isinstance(value, float) and math.isnan(value)
    return (is_nan, 0.0 if is_nan else value, position)


def reference(values: Sequence[float], alive: Sequence[bool], k: int) -> list[bool]:
    """The k lowest alive entries by a stable sort of (score, position)."""
    order = sorted((i for i, a in enumerate(alive) if a), key=lambda i: rank_key(values[i], i))
    chosen = set(order[:k])
    return [i in chosen for i in range(len(values))]


def flat_list(t: Tensor) -> list[float]:
    """Exact Python values (half floats widen exactly; ints stay ints)."""
    return t.reshape(-1).tolist()  # type: ignore[no-any-return]


def alive_list(alive: Tensor | None, n: int) -> list[bool]:
    return [True] * n if alive is None else alive.reshape(-1).tolist()


# --- drawing scores ------------------------------------------------------------------------


@st.composite
def score_tensors(draw: st.DrawFn, max_size: int = 40) -> Tensor:
    """A score tensor of any dtype and shape, with many ties and the special values.

    Values come from a small palette (so ties and repeated NaN/inf/-0.0 are common) or are drawn freely.
    """
    dtype = draw(st.sampled_from(FLOAT_DTYPES + tuple(INT_RANGES)), label="dtype")
    shape = draw(st.lists(st.integers(1, 6), min_size=1, max_size=3), label="shape")
    n = math.prod(shape)
    if n > max_size or draw(st.integers(0, 15), label="empty") == 0:
        shape = [max_size if n > max_size else 0]
        n = shape[0]
    if dtype.is_floating_point:
        element = st.one_of(
            st.sampled_from(SPECIALS), st.integers(-3, 3).map(float), st.floats(allow_nan=True, allow_infinity=True)
        )
    else:
        lo, hi = INT_RANGES[dtype]
        element = st.one_of(st.integers(max(lo, -3), min(hi, 3)), st.integers(lo, hi))
    if draw(st.booleans(), label="from a palette"):
        palette = draw(st.lists(element, min_size=1, max_size=5), label="palette")
        element = st.sampled_from(palette)
    values = draw(st.lists(element, min_size=n, max_size=n), label="values")
    if dtype.is_floating_point:
        return torch.tensor(values, dtype=torch.float64).to(dtype).reshape(shape)
    return torch.tensor(values, dtype=dtype).reshape(shape)


def draw_alive(data: st.DataObject, shape: torch.Size) -> Tensor | None:
    if data.draw(st.booleans(), label="all alive"):
        return None
    flags = data.draw(st.lists(st.booleans(), min_size=math.prod(shape), max_size=math.prod(shape)), label="alive")
    return torch.tensor(flags, dtype=torch.bool).reshape(shape)


def draw_k(data: st.DataObject, values: Sequence[float], alive: Sequence[bool]) -> int:
    """0, everything alive, anything between, or a k that reaches into the NaN scores (ranked last)."""
    available = sum(alive)
    numbers = sum(1 for v, a in zip(values, alive) if a and not (isinstance(v, float) and math.isnan(v)))
    return data.draw(
        st.one_of(st.just(0), st.just(available), st.integers(0, available), st.integers(numbers, available)),
        label="k",
    )


# --- select_lowest and select_lowest_slices --------------------------------------------------


@settings(max_examples=60)
@given(data=st.data(), scores=score_tensors())
def test_select_lowest_matches_a_stable_sort(data: st.DataObject, scores: Tensor) -> None:
    """``select_lowest`` selects exactly k alive entries: the k lowest, NaN last, ties by position, any dtype."""
    alive = draw_alive(data, scores.shape)
    live = alive_list(alive, scores.numel())
    k = draw_k(data, flat_list(scores), live)
    chosen = select_lowest(scores, k, alive)
    assert chosen.dtype == torch.bool and chosen.shape == scores.shape
    assert int(chosen.sum()) == k
    assert not bool((chosen.reshape(-1) & ~torch.tensor(live, dtype=torch.bool)).any()), "a dead entry was selected"
    assert flat_list(chosen) == reference(flat_list(scores), live, k)
    kept = keep_highest(scores, k, alive)
    assert flat_list(kept) == [a and not c for a, c in zip(live, flat_list(chosen))]


@settings(max_examples=60)
@given(data=st.data(), scores=score_tensors())
def test_select_lowest_slices_matches_a_stable_sort(data: st.DataObject, scores: Tensor) -> None:
    """``select_lowest_slices`` selects exactly k alive slices: the k lowest, NaN last, ties by position."""
    flat = scores.reshape(-1)
    alive = draw_alive(data, flat.shape)
    live = alive_list(alive, flat.numel())
    k = draw_k(data, flat_list(flat), live)
    chosen = select_lowest_slices(flat, k, alive)
    assert chosen.dtype == torch.bool and chosen.shape == flat.shape
    assert int(chosen.sum()) == k
    assert flat_list(chosen) == reference(flat_list(flat), live, k)


NAN, INF = math.nan, math.inf
EDGE_CASES = [
    # (values, alive or None, k)
    ([NAN, 1.0, NAN], None, 2),  # the k-th lowest is a NaN: every number goes, then the first NaN
    ([NAN, NAN, NAN, NAN], None, 2),
    ([NAN, INF, NAN, INF, 5.0], None, 3),  # +inf before NaN
    ([NAN, INF, NAN, INF, 5.0], None, 4),
    ([INF, NAN, -INF, NAN, INF], [True, True, False, True, True], 3),  # a dead -inf is never taken
    ([-0.0, 0.0, -0.0, 0.0], None, 3),  # -0.0 and 0.0 tie: by position
    ([0.0, -0.0, 1.0, -1.0], [True, False, True, True], 2),
    ([2.0, 2.0, 2.0, 1.0, 2.0], None, 3),
    ([2.0, 2.0, 2.0, 1.0, 2.0], [False, True, True, True, True], 3),
    ([NAN, -INF, -INF, NAN, 0.0], [False, True, True, True, True], 4),
]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(("values", "alive", "k"), EDGE_CASES)
def test_special_values_and_ties(dtype: torch.dtype, values: list[float], alive: list[bool] | None, k: int) -> None:
    """NaN ranks above +inf, -0.0 ties with 0.0, ties go to the earlier position, dead entries are never taken:
    for ``select_lowest``, ``select_lowest_slices`` and ``keep_highest_across`` over one source or split in two."""
    scores = torch.tensor(values, dtype=dtype)
    live = alive_list(None if alive is None else torch.tensor(alive), len(values))
    mask = None if alive is None else torch.tensor(alive)
    expected = reference(flat_list(scores), live, k)
    assert select_lowest(scores, k, mask).tolist() == expected
    assert select_lowest_slices(scores, k, mask).tolist() == expected
    for cut in range(1, len(values)):
        parts = [scores[:cut], scores[cut:]]
        masks = [None, None] if mask is None else [mask[:cut], mask[cut:]]
        kept = keep_highest_across(
            [ScoreSource.whole(lambda p=p: p, p.numel(), CPU, m) for p, m in zip(parts, masks)], k
        )
        assert [b for t in kept for b in t.tolist()] == [a and not e for a, e in zip(live, expected)]


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_integer_scores_beyond_float32_precision_are_ranked_exactly(dtype: torch.dtype) -> None:
    """Integers that float32 cannot tell apart (2**24 and 2**24 + 1) still rank by value."""
    scores = torch.tensor([2**24 + 1, 2**24, 3, 2**24 + 1, -(2**31 - 1), 2**24], dtype=dtype)
    assert select_lowest(scores, 3).tolist() == [False, True, True, False, True, False]
    assert select_lowest(scores, 4).tolist() == [False, True, True, False, True, True]
    assert select_lowest_slices(scores, 3).tolist() == [False, True, True, False, True, False]


@settings(max_examples=30)
@given(data=st.data(), scores=score_tensors())
def test_selecting_more_than_is_alive_is_refused(data: st.DataObject, scores: Tensor) -> None:
    """k above the alive count, or negative, raises ValueError instead of selecting something else."""
    flat = scores.reshape(-1)
    alive = draw_alive(data, flat.shape)
    available = sum(alive_list(alive, flat.numel()))
    k = data.draw(st.sampled_from([-1, available + 1, available + 7]), label="k")
    with pytest.raises(ValueError):
        select_lowest(flat, k, alive)
    with pytest.raises(ValueError):
        select_lowest_slices(flat, k, alive)
    with pytest.raises(ValueError):
        keep_highest_across([ScoreSource.whole(lambda: flat, flat.numel(), CPU, alive)], k)


# --- across sources ----------------------------------------------------------------------


def make_source(scores: Tensor, alive: Tensor | None, kind: str) -> tuple[ScoreSource, list[float]]:
    """A source of ``scores`` read whole, or elementwise through a scoring function; and what it ranks by."""
    if kind == "whole":
        return ScoreSource.whole(lambda: scores, scores.numel(), CPU, alive), flat_list(scores)
    function: Callable[[Tensor], Tensor] = torch.abs if kind == "elementwise abs" else torch.neg

    def score(values: Tensor, out: Tensor | None = None) -> Tensor:  # may be handed a buffer; need not use it
        return function(values)

    return ScoreSource.elementwise(scores, score, alive), flat_list(function(scores))


@settings(max_examples=60)
@given(data=st.data(), parts=st.lists(score_tensors(max_size=20), min_size=1, max_size=4))
def test_keep_highest_across_matches_a_stable_sort_of_the_concatenation(
    data: st.DataObject, parts: list[Tensor]
) -> None:
    """Across sources (read whole or elementwise): exactly k alive entries go, the k lowest of the
    concatenation, ties to the earlier source and then the earlier position; the rest of the alive stay."""
    sources, ranked, live = [], [], []
    for part in parts:
        alive = draw_alive(data, part.shape)
        kind = data.draw(st.sampled_from(["whole", "elementwise abs", "elementwise neg"]), label="kind")
        if part.dtype in (torch.uint8, torch.int8) and kind != "whole":
            kind = "whole"  # abs/neg wrap around in 8 bits; that is torch's arithmetic, not selection
        source, values = make_source(part, alive, kind)
        sources.append(source)
        ranked += values
        live += alive_list(alive, part.numel())
    k = draw_k(data, ranked, live)
    kept = keep_highest_across(sources, k)
    assert [t.dtype for t in kept] == [torch.bool] * len(parts)
    assert [t.shape for t in kept] == [(p.numel(),) for p in parts]
    pooled = [bool(b) for t in kept for b in t.tolist()]
    expected = reference(ranked, live, k)
    assert sum(a and not b for a, b in zip(live, pooled)) == k
    assert not any(b and not a for a, b in zip(live, pooled)), "a dead entry came back"
    assert pooled == [a and not e for a, e in zip(live, expected)]


# --- the sampled window path -----------------------------------------------------------------


@pytest.fixture
def sampled(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Force the sampled-window path on small tensors, in small chunks; yields a pass counter."""
    monkeypatch.setattr(select, "_DIRECT_LIMIT", 16)
    monkeypatch.setattr(select, "_SAMPLE_SIZE", 512)
    monkeypatch.setattr(select, "_CPU_CHUNK", 97)  # odd, so chunks split runs of ties
    passes: list[int] = []
    new_pass = select._Selection.new_pass

    def counting(self: select._Selection) -> select._Pass:
        passes.append(1)
        return new_pass(self)

    monkeypatch.setattr(select._Selection, "new_pass", counting)
    yield passes


DISTRIBUTIONS = (
    "normal",
    "ties",
    "all equal",
    "two clusters",
    "sorted",
    "reversed",
    "periodic high",
    "periodic low",
    "specials",
)


def distribution(kind: str, n: int, stride: int, generator: torch.Generator) -> Tensor:
    """``n`` float64 scores shaped to fool (or not) a strided sample of step ``stride``."""
    position = torch.arange(n, dtype=torch.float64)
    noise = torch.rand(n, generator=generator, dtype=torch.float64)
    if kind == "normal":
        return torch.randn(n, generator=generator, dtype=torch.float64)
    if kind == "ties":
        return torch.randint(-3, 4, (n,), generator=generator).to(torch.float64)
    if kind == "all equal":
        return torch.full((n,), 0.25, dtype=torch.float64)
    if kind == "two clusters":
        return torch.where(noise < 0.5, noise * 1e-3, 1e6 + noise * 1e-3)
    if kind == "sorted":
        return position
    if kind == "reversed":
        return -position
    sampled = position.remainder(stride) == 0  # exactly what the strided sample sees
    if kind == "periodic high":
        return torch.where(sampled, 1e3 + position, noise)
    if kind == "periodic low":
        return torch.where(sampled, -1e3 - position, noise)
    scores = torch.randint(-2, 3, (n,), generator=generator).to(torch.float64)
    specials = torch.tensor(SPECIALS, dtype=torch.float64)
    where = torch.rand(n, generator=generator) < 0.3
    picks = specials[torch.randint(0, len(SPECIALS), (n,), generator=generator)]
    return torch.where(where, picks, scores)


@settings(max_examples=50)
@given(
    data=st.data(),
    kind=st.sampled_from(DISTRIBUTIONS),
    n=st.integers(1024, 3000),
    seed=SEEDS,
    dtype=st.sampled_from(FLOAT_DTYPES),
)
def test_the_sampled_window_is_exact_even_when_it_misses(
    sampled: list[int], data: st.DataObject, kind: str, n: int, seed: int, dtype: torch.dtype
) -> None:
    """Above ``_DIRECT_LIMIT`` the threshold comes from a sampled window; whatever the distribution (all
    equal, two clusters, sorted, reversed, or periodic so that the strided sample misses and the window
    must widen), the selection equals the reference, over one or several sources, with alive masks plain or
    bit-packed."""
    generator = torch.Generator().manual_seed(seed)
    values = distribution(kind, n, max(1, n // select._SAMPLE_SIZE), generator).to(dtype)
    cuts = sorted(data.draw(st.lists(st.integers(1, n - 1), max_size=2, unique=True), label="cuts"))
    parts = [p for p in values.tensor_split(cuts) if p.numel()]
    alives = []
    for part in parts:
        density = data.draw(st.sampled_from([None, 0.9, 0.5]), label="alive density")
        alives.append(None if density is None else torch.rand(part.numel(), generator=generator) < density)
    live = [a for part, alive in zip(parts, alives) for a in alive_list(alive, part.numel())]
    available = sum(live)
    numbers = sum(1 for v, a in zip(flat_list(values), live) if a and not math.isnan(v))
    k = data.draw(
        st.one_of(
            st.sampled_from([0, 1, available // 4, available // 2, 3 * available // 4, available - 1, available]),
            st.integers(0, available),
            st.integers(numbers, available),  # into the NaN scores, if any
        ),
        label="k",
    )
    k = max(0, min(k, available))
    # an alive mask may come bit-packed (global pruning of packed masks): read in odd-sized chunks
    given = [None if a is None or not data.draw(st.booleans(), label="packed") else PackedMask.pack(a) for a in alives]
    given = [g if g is not None else a for g, a in zip(given, alives)]
    kept = keep_highest_across([ScoreSource.whole(lambda p=p: p, p.numel(), CPU, a) for p, a in zip(parts, given)], k)
    pooled = [bool(b) for t in kept for b in t.tolist()]
    expected = reference(flat_list(values), live, k)
    assert sum(a and not b for a, b in zip(live, pooled)) == k
    assert pooled == [a and not e for a, e in zip(live, expected)]
    if len(parts) == 1:
        chosen = select_lowest(parts[0], k, alives[0])
        assert flat_list(chosen) == expected


@pytest.mark.parametrize("kind", ["periodic high", "periodic low"])
@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75])
def test_a_misplaced_window_widens(sampled: list[int], kind: str, fraction: float) -> None:
    """The periodic distributions really do fool the sample (the threshold pass is repeated with a wider
    window), and the result is still exact."""
    n = 4096
    values = distribution(kind, n, n // select._SAMPLE_SIZE, torch.Generator().manual_seed(0))
    k = int(fraction * n)
    chosen = select_lowest(values, k)
    assert len(sampled) >= 4, "window, missed threshold, widened threshold, masks"
    assert flat_list(chosen) == reference(flat_list(values), [True] * n, k)


# --- rewinding random scores --------------------------------------------------------------------


class RandomScores:
    """Scores that draw from a generator, as ``random_unstructured`` does; records every draw."""

    def __init__(self, generator: torch.Generator, n: int, dtype: torch.dtype) -> None:
        self.generator, self.n, self.dtype = generator, n, dtype
        self.draws: list[Tensor] = []

    def __call__(self) -> Tensor:
        values = torch.rand(self.n, generator=self.generator, dtype=self.dtype)
        self.draws.append(values)
        return values


@settings(max_examples=40)
@given(
    data=st.data(),
    sizes=st.lists(st.integers(1, 900), min_size=1, max_size=4),
    seed=SEEDS,
    windowed=st.booleans(),
    dtype=st.sampled_from((torch.float32, torch.float64, torch.float16, torch.bfloat16)),
)
def test_rewind_makes_every_pass_see_the_same_draws(
    monkeypatch: pytest.MonkeyPatch,
    data: st.DataObject,
    sizes: list[int],
    seed: int,
    windowed: bool,
    dtype: torch.dtype,
) -> None:
    """With several sources, scores are re-read on every pass; ``rewind`` (called before each pass after the
    first) makes each read draw the same numbers, so the selection is exact for those numbers and the stream
    ends where one read leaves it. A single source is read once and never rewound."""
    if windowed:
        monkeypatch.setattr(select, "_DIRECT_LIMIT", 16)
        monkeypatch.setattr(select, "_SAMPLE_SIZE", 256)
        monkeypatch.setattr(select, "_CPU_CHUNK", 61)
    generator = torch.Generator().manual_seed(seed)
    start = generator.get_state()
    rewinds: list[int] = []

    def rewind() -> None:
        rewinds.append(1)
        generator.set_state(start)

    scorers = [RandomScores(generator, n, dtype) for n in sizes]
    alives = [
        None
        if data.draw(st.booleans(), label="all alive")
        else torch.rand(n, generator=torch.Generator().manual_seed(seed + 1)) < 0.7
        for n in sizes
    ]
    live = [a for n, alive in zip(sizes, alives) for a in alive_list(alive, n)]
    available = sum(live)
    k = data.draw(st.integers(1, available - 1), label="k") if available > 1 else 0
    sources = [ScoreSource.whole(s, s.n, CPU, a) for s, a in zip(scorers, alives)]
    kept = keep_highest_across(sources, k, rewind=rewind)
    if k == 0:
        return
    calls = len(scorers[0].draws)
    assert all(len(s.draws) == calls for s in scorers)
    for scorer in scorers:
        assert all(torch.equal(d, scorer.draws[0]) for d in scorer.draws), "a pass saw different draws"
    if len(sizes) == 1:
        assert calls == 1 and not rewinds
    else:
        assert len(rewinds) == calls - 1
    once = torch.Generator().manual_seed(seed)
    firsts = [torch.rand(n, generator=once, dtype=dtype) for n in sizes]
    assert all(torch.equal(f, s.draws[0]) for f, s in zip(firsts, scorers))
    assert torch.equal(generator.get_state(), once.get_state()), "the stream is not where one read leaves it"
    pooled = [bool(b) for t in kept for b in t.tolist()]
    expected = reference(flat_list(torch.cat(firsts)), live, k)
    assert pooled == [a and not e for a, e in zip(live, expected)]


# --- intra-op threads ---------------------------------------------------------------------------


@pytest.fixture
def two_threads() -> Iterator[None]:
    """Two intra-op threads for the test (OpenMP only: elsewhere the count cannot change), restored after."""
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        pytest.skip("torch's native thread pool cannot change its size")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class ThreadLog:
    """Sources that record how many intra-op threads each scoring call ran with."""

    def __init__(self) -> None:
        self.chunks: list[int] = []
        self.reads: list[int] = []
        self.finished: list[int] = []

    def magnitude(self, values: Tensor, out: Tensor) -> Tensor:
        self.chunks.append(torch.get_num_threads())
        return torch.abs(values, out=out)

    def whole(self, scores: Tensor) -> Tensor:
        self.reads.append(torch.get_num_threads())
        return scores

    def finish(self, index: int, keep: Tensor) -> Tensor:
        self.finished.append(torch.get_num_threads())
        return keep


@pytest.mark.parametrize(("free", "expected"), [(0, 1), (1, 1), (2, 2), (8, 2), (None, 2)])
def test_the_selection_gives_up_threads_when_cpus_are_busy(
    sampled: list[int], two_threads: None, monkeypatch: pytest.MonkeyPatch, free: int | None, expected: int
) -> None:
    """Beside busy processes the selection's own short ops run on no more threads than CPUs are free (at
    least one; all of the caller's where that is unknown), so no thread waits at a barrier for one that was
    descheduled. Scores computed whole (a strategy's work) and ``finish`` keep the caller's threads, the
    caller's count is restored, and the result is the same on any number of threads."""
    monkeypatch.setattr(select, "free_cpus", lambda: free, raising=False)
    log = ThreadLog()
    values = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    whole = values.flip(0).clone()
    sources = [
        ScoreSource.elementwise(values, log.magnitude),
        ScoreSource.whole(lambda: log.whole(whole), whole.numel(), CPU),
    ]
    kept = keep_highest_across(sources, 900, finish=log.finish)
    assert set(log.chunks) == {expected}
    assert set(log.reads) == {2} and log.finished == [2, 2]
    assert torch.get_num_threads() == 2
    pooled = torch.cat([values.abs(), whole])
    assert torch.equal(torch.cat(kept), ~torch.tensor(reference(flat_list(pooled), [True] * 2000, 900)))


def test_the_callers_threads_come_back_when_scoring_fails(
    sampled: list[int], two_threads: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A score that raises mid-pass leaves the caller's thread count as it was."""
    monkeypatch.setattr(select, "free_cpus", lambda: 1, raising=False)

    def failing(values: Tensor, out: Tensor) -> Tensor:
        raise RuntimeError("scoring failed")

    with pytest.raises(RuntimeError, match="scoring failed"):
        keep_highest_across([ScoreSource.elementwise(torch.randn(1000), failing)], 10)
    assert torch.get_num_threads() == 2


def fake_proc(monkeypatch: pytest.MonkeyPatch, cpus: int, running: int, states: list[str]) -> None:
    """A /proc where ``running`` threads of the machine are runnable, and this process's threads are in ``states``."""
    files = {"/proc/loadavg": f"2.00 1.50 1.00 {running}/300 4321\n"}
    files |= {f"/proc/self/task/{i}/stat": f"{i} (pt main) {state} 1 2 3" for i, state in enumerate(states)}
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(cpus)))
    monkeypatch.setattr(threads.os, "listdir", lambda path: [str(i) for i in range(len(states))])
    monkeypatch.setattr(threads, "open", lambda path: io.StringIO(files[path]), raising=False)


@pytest.mark.parametrize(
    ("cpus", "running", "states", "free"),
    [
        (2, 1, ["R", "S", "S"], 2),  # only this thread runs
        (2, 2, ["R", "R"], 2),  # this process's own spinning worker is not a neighbour
        (2, 2, ["R", "S"], 1),  # one busy neighbour
        (2, 9, ["R", "S"], -6),  # a load of about 9
        (2, 1, ["R", "R", "R"], 2),  # the two counts were read at different moments
        (16, 5, ["R"], 12),
    ],
)
def test_free_cpus_counts_other_processes_runnable_threads(
    monkeypatch: pytest.MonkeyPatch, cpus: int, running: int, states: list[str], free: int
) -> None:
    """Free CPUs: those this process may use, minus the machine's runnable threads that are not its own."""
    fake_proc(monkeypatch, cpus, running, states)
    assert threads.free_cpus() == free


def test_free_cpus_is_unknown_without_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Linux's /proc the probe says nothing, and the selection keeps the caller's threads."""

    def missing(path: str) -> io.StringIO:
        raise FileNotFoundError(path)

    monkeypatch.setattr(threads, "open", missing, raising=False)
    assert threads.free_cpus() is None
