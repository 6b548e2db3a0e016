"""Parity with the installed ``torch.nn.utils.prune``: same masks, same tensors, same layout.

Every test builds a module with distinct random magnitudes, deep-copies it
*before* pruning, prunes one copy with torch and the other with pruneplug
(through :mod:`pruneplug.compat` and through the native API), and compares
them entry by entry. Random strategies are seeded with ``torch.manual_seed``
before each library's call: pruneplug must draw from torch's global stream
exactly as torch does, so the same seed prunes the same entries.

Ties in magnitude or norm are not part of parity (torch's ``topk`` breaks them
arbitrarily), so every ranking here is made on values that are distinct:
``torch.randn`` weights and scores, and for the L0 norm (which counts
non-zeros, so it ties on a dense tensor) slices built with distinct counts.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from hypothesis import given, settings, strategies as st
from torch import Tensor, nn

import pruneplug
import pruneplug.compat as compat
from pruneplug.testing import assert_unchanged, snapshot

INF = math.inf

# --- modules ------------------------------------------------------------------------------------

Input = Callable[[torch.Generator], Tensor]

#: kind -> (constructor, the tensors that can be pruned, an input for forward)
MODULES: dict[str, tuple[Callable[[], nn.Module], tuple[str, ...], Input]] = {
    "linear": (lambda: nn.Linear(7, 9), ("weight", "bias"), lambda g: torch.randn(3, 7, generator=g)),
    "linear_f64": (
        lambda: nn.Linear(6, 5, dtype=torch.float64),
        ("weight", "bias"),
        lambda g: torch.randn(3, 6, dtype=torch.float64, generator=g),
    ),
    "conv1d": (lambda: nn.Conv1d(3, 5, 4), ("weight", "bias"), lambda g: torch.randn(2, 3, 9, generator=g)),
    "conv2d": (lambda: nn.Conv2d(3, 6, 3), ("weight", "bias"), lambda g: torch.randn(2, 3, 6, 6, generator=g)),
    "conv3d": (lambda: nn.Conv3d(2, 4, 2), ("weight", "bias"), lambda g: torch.randn(1, 2, 4, 4, 4, generator=g)),
    "convtranspose2d": (
        lambda: nn.ConvTranspose2d(4, 3, 3),
        ("weight", "bias"),
        lambda g: torch.randn(2, 4, 4, 4, generator=g),
    ),
    "lstm": (
        lambda: nn.LSTM(5, 3),
        ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0"),
        lambda g: torch.randn(4, 2, 5, generator=g),
    ),
    "embedding": (lambda: nn.Embedding(11, 6), ("weight",), lambda g: torch.randint(0, 11, (3, 4), generator=g)),
}


def build(kind: str, seed: int) -> nn.Module:
    """A module of ``kind`` whose every parameter holds distinct ``randn`` values."""
    module = MODULES[kind][0]()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return module


def forward(kind: str, module: nn.Module, seed: int = 0) -> Tensor:
    """Run ``module`` on a fixed input (the LSTM's output sequence for an LSTM)."""
    out = module(MODULES[kind][2](torch.Generator().manual_seed(seed)))
    return out[0] if isinstance(out, tuple) else out


def shape_of(module: nn.Module, name: str) -> torch.Size:
    """The shape of ``module.<name>``, pruned or not."""
    return getattr(module, name).shape


# --- one prune, described once and applied by each library ---------------------------------------


@dataclass(frozen=True)
class Step:
    """One call to a built-in pruning function, with everything it needs to be replayed."""

    strategy: str
    amount: int | float | None = None
    dim: int | None = None
    n: int | float | str | None = None
    mask_seed: int | None = None  # custom_from_mask: the mask is drawn from this seed
    mask_dtype: torch.dtype = torch.float32  # ... and has this dtype
    scores_seed: int | None = None  # importance scores drawn from this seed (None: none)
    rng_seed: int = 0  # torch.manual_seed before the call (random strategies)

    def mask(self, shape: torch.Size) -> Tensor:
        assert self.mask_seed is not None
        generator = torch.Generator().manual_seed(self.mask_seed)
        return (torch.rand(shape, generator=generator) > 0.4).to(self.mask_dtype)

    def scores(self, shape: torch.Size, dtype: torch.dtype) -> Tensor | None:
        if self.scores_seed is None:
            return None
        generator = torch.Generator().manual_seed(self.scores_seed)
        return torch.randn(shape, generator=generator, dtype=dtype)


def seed_if_random(step: Step) -> None:
    """Seed torch's global RNG for a strategy that draws from it (seeding is slow: only then)."""
    if step.strategy.startswith("random_"):
        torch.manual_seed(step.rng_seed)


def apply_library(lib: Any, module: nn.Module, name: str, step: Step) -> None:
    """Apply ``step`` with ``torch.nn.utils.prune`` or ``pruneplug.compat`` (same signatures)."""
    tensor = getattr(module, name)
    scores = step.scores(tensor.shape, tensor.dtype)
    seed_if_random(step)
    if step.strategy == "identity":
        lib.identity(module, name)
    elif step.strategy == "random_unstructured":
        lib.random_unstructured(module, name, amount=step.amount)
    elif step.strategy == "l1_unstructured":
        lib.l1_unstructured(module, name, amount=step.amount, importance_scores=scores)
    elif step.strategy == "random_structured":
        lib.random_structured(module, name, amount=step.amount, dim=step.dim)
    elif step.strategy == "ln_structured":
        lib.ln_structured(module, name, amount=step.amount, n=step.n, dim=step.dim, importance_scores=scores)
    elif step.strategy == "custom_from_mask":
        lib.custom_from_mask(module, name, mask=step.mask(tensor.shape))
    else:  # pragma: no cover - a typo in a test
        raise AssertionError(step.strategy)


def apply_native(module: nn.Module, name: str, step: Step) -> None:
    """Apply ``step`` with ``pruneplug.prune(module, name, "<strategy>", **params)``."""
    tensor = getattr(module, name)
    params: dict[str, Any] = {}
    if step.amount is not None:
        params["amount"] = step.amount
    if step.dim is not None:
        params["dim"] = step.dim
    if step.n is not None:
        params["n"] = step.n
    if step.mask_seed is not None:
        params["mask"] = step.mask(tensor.shape)
    scores = step.scores(tensor.shape, tensor.dtype)
    if scores is not None:
        params["importance_scores"] = scores
    seed_if_random(step)
    pruneplug.prune(module, name, step.strategy, **params)


FLAVORS = ("compat", "native")


def apply_ours(flavor: str, module: nn.Module, name: str, step: Step) -> None:
    if flavor == "compat":
        apply_library(compat, module, name, step)
    else:
        apply_native(module, name, step)


def prune_both(reference: nn.Module, ours: nn.Module, name: str, step: Step, flavor: str) -> None:
    """Apply ``step`` with torch to ``reference`` and with pruneplug to ``ours``; both leave the RNG alike."""
    apply_library(torch_prune, reference, name, step)
    after_torch = torch.get_rng_state()
    apply_ours(flavor, ours, name, step)
    assert torch.equal(torch.get_rng_state(), after_torch), "pruneplug drew a different number of random values"


# --- comparing a torch-pruned module with a pruneplug-pruned one ----------------------------------


def hook_layout(module: nn.Module) -> list[tuple[str, str, tuple[str, ...]]]:
    """The pruning hooks of ``module`` in order: class name, tensor, and the history of a container."""
    layout = []
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, torch_prune.BasePruningMethod):
            history = tuple(type(m).__name__ for m in hook) if isinstance(hook, torch_prune.PruningContainer) else ()
            layout.append((type(hook).__name__, hook._tensor_name, history))
    return layout


def assert_same(reference: nn.Module, ours: nn.Module, names: Sequence[str], flavor: str) -> None:
    """``ours`` (pruned by pruneplug) is pruned exactly as ``reference`` (pruned by torch)."""
    assert list(ours.state_dict()) == list(reference.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in reference.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in reference.named_buffers()]
    if flavor == "compat":
        assert hook_layout(ours) == hook_layout(reference)
    for name in names:
        theirs_tensor, our_tensor = getattr(reference, name), getattr(ours, name)
        assert our_tensor.dtype == theirs_tensor.dtype
        assert torch.equal(our_tensor, theirs_tensor), f"{name}: pruned tensors differ"
        theirs_mask = reference._buffers.get(name + "_mask")
        our_mask = ours._buffers.get(name + "_mask")
        assert (our_mask is None) == (theirs_mask is None)
        if theirs_mask is None:
            continue
        assert torch.equal(ours._parameters[name + "_orig"], reference._parameters[name + "_orig"])
        if flavor == "compat":
            assert our_mask.dtype == theirs_mask.dtype, f"{name}: mask dtype"
            assert torch.equal(our_mask, theirs_mask), f"{name}: masks differ"
        else:
            assert our_mask.dtype == torch.bool
            assert bool(((theirs_mask == 0) | (theirs_mask == 1)).all())
            assert torch.equal(our_mask, theirs_mask != 0), f"{name}: masks differ"
    if isinstance(reference, nn.RNNBase):
        assert [type(w) for w in ours._flat_weights] == [type(w) for w in reference._flat_weights]
        for mine, theirs in zip(ours._flat_weights, reference._flat_weights):
            assert torch.equal(mine, theirs)


def pair(kind: str, seed: int) -> tuple[nn.Module, nn.Module]:
    """A freshly built module and an identical deep copy, both still unpruned."""
    base = build(kind, seed)
    return copy.deepcopy(base), copy.deepcopy(base)


# --- single prunes: every built-in strategy on every module kind ----------------------------------


def make_l0_distinct(module: nn.Module, name: str, dim: int) -> bool:
    """Zero entries so that the slices of ``module.<name>`` along ``dim`` hold distinct non-zero counts.

    Slice ``i`` (in a shuffled order) loses ``i`` entries. Returns False if the
    slices are too small for that.
    """
    tensor = getattr(module, name)
    moved = tensor.detach().movedim(dim, 0).reshape(tensor.shape[dim], -1)
    count, size = moved.shape
    if size < count - 1:
        return False
    order = torch.randperm(count, generator=torch.Generator().manual_seed(count))
    with torch.no_grad():
        zeroed = moved.clone()
        for slice_index, zeros in zip(order.tolist(), range(count)):
            zeroed[slice_index, :zeros] = 0
        tensor.copy_(zeroed.reshape(tensor.movedim(dim, 0).shape).movedim(0, dim))
    return True


def norm_applies(n: int | float | str | None, shape: torch.Size) -> bool:
    """Whether torch.norm takes order ``n`` over all dims but one of ``shape``.

    ``"nuc"`` needs exactly two other dims, and ``"fro"`` at most two (torch
    itself raises beyond that).
    """
    if n == "nuc":
        return len(shape) == 3
    if n == "fro":
        return len(shape) <= 3
    return True


UNSTRUCTURED_STEPS = [
    Step("identity"),
    Step("random_unstructured", amount=0.37, rng_seed=11),
    Step("random_unstructured", amount=2, rng_seed=12),
    Step("random_unstructured", amount=1.0, rng_seed=13),
    Step("l1_unstructured", amount=0.5),
    Step("l1_unstructured", amount=3),
    Step("l1_unstructured", amount=0),
    Step("l1_unstructured", amount=0.3, scores_seed=5),
    Step("custom_from_mask", mask_seed=7),
    Step("custom_from_mask", mask_seed=9, mask_dtype=torch.bool),
]
STRUCTURED_STEPS = [
    Step("random_structured", amount=0.5, rng_seed=21),
    Step("random_structured", amount=1, rng_seed=22),
    Step("random_structured", amount=1.0, rng_seed=23),
    *[Step("ln_structured", amount=0.5, n=n) for n in (1, 2, 3, INF, -INF, "fro", 0, -1)],
    Step("ln_structured", amount=2, n=2, scores_seed=6),
    Step("ln_structured", amount=0.4, n=1, scores_seed=8),
    Step("ln_structured", amount=0.5, n="nuc"),
]


def _single_cases() -> list[Any]:
    cases = []
    for kind, (_, names, _) in MODULES.items():
        shapes = {name: shape_of(build(kind, 0), name) for name in names}
        for step in UNSTRUCTURED_STEPS + STRUCTURED_STEPS:
            structured = step.strategy.endswith("_structured")
            usable = [n for n in names if (not structured or len(shapes[n]) >= 2) and norm_applies(step.n, shapes[n])]
            if not usable:
                continue
            for flavor in FLAVORS:
                label = (
                    f"{flavor}-{kind}-{step.strategy}-a{step.amount}-n{step.n}-s{step.scores_seed}-m{step.mask_dtype}"
                )
                cases.append(pytest.param(flavor, kind, tuple(usable), step, id=label))
    return cases


@pytest.mark.parametrize(("flavor", "kind", "names", "step"), _single_cases())
def test_single_prune_matches_torch(flavor: str, kind: str, names: tuple[str, ...], step: Step) -> None:
    """One prune of each tensor (along every dim, for structured strategies) gives torch's result exactly."""
    structured = step.strategy.endswith("_structured")
    done = 0
    reference = ours = nn.Module()
    for name in names:
        ndim = len(shape_of(build(kind, 0), name))
        for dim in range(-ndim, ndim) if structured else [None]:
            base = build(kind, seed=done + 1)
            if step.n == 0 and not make_l0_distinct(base, name, dim if dim is not None else 0):
                continue
            reference, ours = copy.deepcopy(base), copy.deepcopy(base)
            this_step = Step(**{**step.__dict__, "dim": dim})
            prune_both(reference, ours, name, this_step, flavor)
            assert_same(reference, ours, names, flavor)
            done += 1
    assert done > 0
    assert torch.equal(forward(kind, ours), forward(kind, reference))
    assert_same(reference, ours, names, flavor)  # the forward pre-hooks agree too


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("kind", ["linear", "conv2d", "lstm"])
def test_pruning_every_tensor_of_a_module_matches_torch(flavor: str, kind: str) -> None:
    """Pruning several tensors of one module keeps torch's parameter, buffer and hook order."""
    reference, ours = pair(kind, 3)
    names = MODULES[kind][1]
    for index, name in enumerate(names):
        step = Step("random_unstructured", amount=0.5, rng_seed=index)
        prune_both(reference, ours, name, step, flavor)
        assert_same(reference, ours, names, flavor)
    for name in reversed(names):
        step = Step("l1_unstructured", amount=0.25)
        prune_both(reference, ours, name, step, flavor)
        assert_same(reference, ours, names, flavor)
    assert torch.equal(forward(kind, ours), forward(kind, reference))


# --- global pruning --------------------------------------------------------------------------------


def global_model(seed: int) -> nn.Module:
    """A model whose tensors have different shapes and kinds, all with distinct randn values."""
    model = nn.ModuleDict(
        {
            "linear": nn.Linear(6, 8),
            "conv": nn.Conv2d(2, 3, 2),
            "embedding": nn.Embedding(5, 4),
            "lstm": nn.LSTM(3, 2),
            "deconv": nn.ConvTranspose2d(3, 2, 2),
        }
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return model


GLOBAL_TARGETS = [
    ("linear", "weight"),
    ("linear", "bias"),
    ("conv", "weight"),
    ("embedding", "weight"),
    ("lstm", "weight_ih_l0"),
    ("lstm", "weight_hh_l0"),
    ("deconv", "weight"),
    ("conv", "bias"),
]


def resolve(model: nn.Module, targets: Sequence[tuple[str, str]]) -> list[tuple[nn.Module, str]]:
    return [(model[key], name) for key, name in targets]


def assert_model_same(reference: nn.Module, ours: nn.Module, flavor: str) -> None:
    for key in reference:
        names = [name for k, name in GLOBAL_TARGETS if k == key]
        assert_same(reference[key], ours[key], names, flavor)


@dataclass(frozen=True)
class GlobalStep:
    """One global prune over some of the targets."""

    method: str  # "l1_unstructured" or "random_unstructured"
    targets: tuple[tuple[str, str], ...]
    amount: int | float
    scored: tuple[tuple[str, str], ...] = ()  # targets given importance scores
    rng_seed: int = 0


def global_scores(model: nn.Module, step: GlobalStep) -> dict[tuple[nn.Module, str], Tensor] | None:
    if not step.scored:
        return None
    """Importance scores (distinct randn values, in the tensor's dtype) for the targets ``step`` scores."""
    generator = torch.Generator().manual_seed(step.rng_seed + 1000)
    scores = {}
    for key, name in step.scored:
        tensor = getattr(model[key], name)
        scores[(model[key], name)] = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
    return scores


def apply_global(flavor: str, model: nn.Module, step: GlobalStep) -> None:
    """Apply ``step`` with torch (``flavor="torch"``), ``pruneplug.compat`` or ``pruneplug.prune_global``."""
    targets = resolve(model, step.targets)
    scores = global_scores(model, step)
    if step.method == "random_unstructured":
        torch.manual_seed(step.rng_seed)
    if flavor == "native":
        pruneplug.prune_global(targets, step.method, amount=step.amount, importance_scores=scores)
        return
    lib: Any = torch_prune if flavor == "torch" else compat
    method = lib.L1Unstructured if step.method == "l1_unstructured" else lib.RandomUnstructured
    lib.global_unstructured(targets, pruning_method=method, importance_scores=scores, amount=step.amount)


def prune_global_both(reference: nn.Module, ours: nn.Module, step: GlobalStep, flavor: str) -> None:
    """Apply a global ``step`` with torch and with pruneplug; both leave the RNG alike."""
    apply_global("torch", reference, step)
    after_torch = torch.get_rng_state()
    apply_global(flavor, ours, step)
    assert torch.equal(torch.get_rng_state(), after_torch), "pruneplug drew a different number of random values"


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("method", ["l1_unstructured", "random_unstructured"])
@pytest.mark.parametrize("amount", [0, 0.0, 0.3, 17, 0.999, 1.0])
def test_global_prune_matches_torch(flavor: str, method: str, amount: int | float) -> None:
    """Global L1 and global random pruning over tensors of every kind give torch's masks."""
    base = global_model(4)
    reference, ours = copy.deepcopy(base), copy.deepcopy(base)
    step = GlobalStep(method, tuple(GLOBAL_TARGETS), amount, rng_seed=9)
    prune_global_both(reference, ours, step, flavor)
    assert_model_same(reference, ours, flavor)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_global_prune_with_importance_scores_matches_torch(flavor: str) -> None:
    """Importance scores given for some targets rank those targets; the others rank by value."""
    base = global_model(5)
    reference, ours = copy.deepcopy(base), copy.deepcopy(base)
    step = GlobalStep("l1_unstructured", tuple(GLOBAL_TARGETS[:5]), 0.45, scored=(GLOBAL_TARGETS[0], GLOBAL_TARGETS[3]))
    prune_global_both(reference, ours, step, flavor)
    assert_model_same(reference, ours, flavor)


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("dtypes", [(torch.float32, torch.float64), (torch.float16, torch.float32)])
def test_global_random_over_mixed_dtypes_draws_as_torch(flavor: str, dtypes: tuple[torch.dtype, ...]) -> None:
    """torch concatenates the targets (promoting their dtype) and draws in that dtype; so does pruneplug."""
    base = global_model(6)
    base["linear"].to(dtypes[0])
    base["conv"].to(dtypes[1])
    reference, ours = copy.deepcopy(base), copy.deepcopy(base)
    targets = (("linear", "weight"), ("conv", "weight"), ("linear", "bias"))
    prune_global_both(reference, ours, GlobalStep("random_unstructured", targets, 0.4, rng_seed=3), flavor)
    for key, name in targets:
        assert torch.equal(getattr(reference[key], name + "_mask").bool(), getattr(ours[key], name + "_mask").bool())


# --- large tensors: the streaming, chunked selection path ---------------------------------------------

#: Entries of the large weight: above pruneplug's direct-selection limit and more than one selection chunk
#: (2**20 entries), so the sampled window and the chunk-by-chunk passes are both used.
LARGE_SHAPE = (1000, 1100)


def large_linear(seed: int) -> nn.Linear:
    """A float64 Linear with 1.1M distinct randn weights (float64, so neither magnitudes nor random draws tie)."""
    module = nn.Linear(LARGE_SHAPE[1], LARGE_SHAPE[0], dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        module.weight.copy_(torch.randn(LARGE_SHAPE, generator=generator, dtype=torch.float64))
    return module


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("strategy", ["l1_unstructured", "random_unstructured"])
def test_large_tensor_iterative_pruning_matches_torch(flavor: str, strategy: str) -> None:
    """On a tensor of 1.1M entries, a fraction and then a count of the survivors are pruned as torch prunes them."""
    base = large_linear(1)
    reference, ours = copy.deepcopy(base), copy.deepcopy(base)
    for index, amount in enumerate([0.3, 123_457]):
        step = Step(strategy, amount=amount, rng_seed=index)
        prune_both(reference, ours, "weight", step, flavor)
        assert_same(reference, ours, ["weight"], flavor)


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("method", ["l1_unstructured", "random_unstructured"])
def test_large_global_pruning_matches_torch(flavor: str, method: str) -> None:
    """Global pruning over a 1.1M-entry tensor and a small one, twice, matches torch (scores for the small one)."""
    base = nn.ModuleDict({"big": large_linear(2), "small": nn.Linear(30, 20, dtype=torch.float64)})
    reference, ours = copy.deepcopy(base), copy.deepcopy(base)
    targets = (("big", "weight"), ("small", "weight"))
    scored = (("small", "weight"),) if method == "l1_unstructured" else ()
    for index, amount in enumerate([0.4, 300_001]):
        step = GlobalStep(method, targets, amount, scored=scored, rng_seed=index)
        prune_global_both(reference, ours, step, flavor)
        for key in base:
            assert_same(reference[key], ours[key], ["weight"], flavor)


# --- iterative sequences (hypothesis) --------------------------------------------------------------

#: Orders of the norm whose ranking stays tie-free on tensors holding pruned (zero) entries.
#: 0, -1 and -inf rank a slice with a zero entry as 0, so they are only drawn with importance scores.
SAFE_NORMS: list[int | float | str] = [1, 2, 3, INF, "fro"]
SCORED_ONLY_NORMS: list[int | float | str] = [-1, -INF]


def amounts(units: int) -> st.SearchStrategy[int | float]:
    """An amount for ``units`` prunable units: a count (0..units) or a fraction (0.0 and 1.0 included)."""
    return st.one_of(
        st.sampled_from([0, 0.0, 1.0]),
        st.integers(0, units),
        st.floats(0.0, 1.0, allow_nan=False),
    )


@st.composite
def steps_for(draw: st.DrawFn, shape: torch.Size) -> Step:
    """A random built-in prune that applies to a tensor of ``shape``."""
    ndim = len(shape)
    # weighted towards the strategies with the most to get wrong
    choices = ["ln_structured"] * 3 + ["random_structured"] * 2 if ndim >= 2 else []
    choices += ["l1_unstructured"] * 2 + ["random_unstructured"] * 2 + ["custom_from_mask", "identity"]
    strategy = draw(st.sampled_from(choices))
    seed = draw(st.integers(0, 2**16))
    if strategy == "identity":
        return Step(strategy)
    if strategy == "custom_from_mask":
        return Step(strategy, mask_seed=seed)
    if strategy in ("random_unstructured", "l1_unstructured"):
        scored = strategy == "l1_unstructured" and draw(st.booleans())
        return Step(strategy, amount=draw(amounts(shape.numel())), rng_seed=seed, scores_seed=seed if scored else None)
    dim = draw(st.integers(-ndim, ndim - 1))
    amount = draw(amounts(shape[dim]))
    if strategy == "random_structured":
        return Step(strategy, amount=amount, dim=dim, rng_seed=seed)
    scored = draw(st.booleans())
    candidates = [*SAFE_NORMS, *(SCORED_ONLY_NORMS if scored else []), "nuc"]
    norms = [n for n in candidates if norm_applies(n, shape)]
    return Step(strategy, amount=amount, dim=dim, n=draw(st.sampled_from(norms)), scores_seed=seed if scored else None)


def run_both(
    reference: nn.Module,
    ours: nn.Module,
    flavor: str,
    torch_call: Callable[[nn.Module], None],
    our_call: Callable[[nn.Module], None],
) -> bool:
    """Apply one prune to each module; on failure check both failed alike. Returns False on failure."""
    before = snapshot(ours)
    try:
        torch_call(reference)
    except (ValueError, IndexError, RuntimeError) as error:
        with pytest.raises(Exception) as caught:
            our_call(ours)
        if flavor == "compat":
            assert isinstance(caught.value, type(error)), f"torch raised {error!r}, pruneplug {caught.value!r}"
        else:
            assert isinstance(caught.value, pruneplug.PruneplugError)
        assert_unchanged(before, ours)
        return False
    after_torch = torch.get_rng_state()
    our_call(ours)
    assert torch.equal(torch.get_rng_state(), after_torch), "pruneplug drew a different number of random values"
    return True


@pytest.mark.parametrize("flavor", FLAVORS)
@settings(max_examples=60)
@given(data=st.data())
def test_iterative_sequences_match_torch(flavor: str, data: st.DataObject) -> None:
    """2-5 prunes of one tensor, mixing strategies, dims and amounts, match torch after every step."""
    kind = data.draw(st.sampled_from(sorted(MODULES)), label="kind")
    names = MODULES[kind][1]
    name = data.draw(st.sampled_from(names), label="tensor")
    shape = shape_of(build(kind, 0), name)
    reference, ours = pair(kind, data.draw(st.integers(0, 1000), label="seed"))
    steps = data.draw(st.lists(steps_for(shape), min_size=2, max_size=5), label="steps")
    for step in steps:
        ok = run_both(
            reference,
            ours,
            flavor,
            lambda m, step=step: apply_library(torch_prune, m, name, step),
            lambda m, step=step: apply_ours(flavor, m, name, step),
        )
        if not ok:
            break  # torch drops the hook of a tensor whose later prune fails: nothing left to compare
        assert_same(reference, ours, names, flavor)
    assert torch.equal(forward(kind, ours), forward(kind, reference))


@st.composite
def global_sequences(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """2-5 steps, each a global prune over some targets or a local prune of one of them."""
    probe = global_model(0)
    out: list[tuple[str, Any]] = []
    for _ in range(draw(st.integers(2, 5))):
        seed = draw(st.integers(0, 2**16))
        if draw(st.integers(0, 3)) == 0:
            target = draw(st.sampled_from(GLOBAL_TARGETS))
            out.append(("local", (target, draw(steps_for(shape_of(probe[target[0]], target[1]))))))
            continue
        targets = tuple(draw(st.lists(st.sampled_from(GLOBAL_TARGETS), min_size=1, max_size=5, unique=True)))
        total = sum(shape_of(probe[key], name).numel() for key, name in targets)
        method = draw(st.sampled_from(["l1_unstructured", "random_unstructured"]))
        scored: tuple[tuple[str, str], ...] = ()
        if method == "l1_unstructured":
            scored = tuple(t for t in targets if draw(st.booleans()))
        out.append(("global", GlobalStep(method, targets, draw(amounts(total)), scored, seed)))
    return out


@pytest.mark.parametrize("flavor", FLAVORS)
@settings(max_examples=40)
@given(sequence=global_sequences(), seed=st.integers(0, 1000))
def test_global_sequences_match_torch(flavor: str, sequence: list[tuple[str, Any]], seed: int) -> None:
    """Global and local prunes interleaved over many tensors match torch after every step."""
    base = global_model(seed)
    reference, ours = copy.deepcopy(base), copy.deepcopy(base)
    for kind, step in sequence:
        if kind == "global":
            ok = run_both(
                reference,
                ours,
                flavor,
                lambda m, step=step: apply_global("torch", m, step),
                lambda m, step=step: apply_global(flavor, m, step),
            )
        else:
            (key, name), local = step
            ok = run_both(
                reference,
                ours,
                flavor,
                lambda m, key=key, name=name, local=local: apply_library(torch_prune, m[key], name, local),
                lambda m, key=key, name=name, local=local: apply_ours(flavor, m[key], name, local),
            )
        if not ok:
            break
        assert_model_same(reference, ours, flavor)
