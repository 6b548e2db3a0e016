"""Small models, test strategies and statistics for the tests of data-aware pruning.

Shared by tests/calibration, tests/strategies/test_calibrated.py and
tests/statistics. Loaded by the test modules with importlib (the suite runs
with ``--import-mode=importlib``, so test folders are not packages).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

import pruneplug
from pruneplug.selection.scores import current_target
from pruneplug.statistics.spec import INPUT_SQ_NORMS, Statistic, input_dim
from pruneplug.strategies import UnstructuredStrategy


class MLPBlock(nn.Module):
    """A residual MLP block: ``x + fc2(relu(fc1(x)))``."""

    def __init__(self, width: int = 8, hidden: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fc2(torch.relu(self.fc1(x)))


class Stack(nn.Module):
    """An embedding-free stack: ``head(norm(blocks(inp(x))))``, its blocks in ``self.blocks``."""

    def __init__(self, depth: int = 3, width: int = 8, d_in: int = 6, d_out: int = 4) -> None:
        super().__init__()
        self.inp = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList(MLPBlock(width) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, d_out)

    def forward(self, x: Tensor) -> Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))


class FailsOnThreeRows(MLPBlock):
    """An MLP block that raises ``ValueError`` on a batch of 3 rows, once calibration reaches it."""

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] == 3:
            raise ValueError("three rows are not allowed here")
        return super().forward(x)


def make_fragile(model: Stack, index: int) -> None:
    """Replace ``model.blocks[index]`` by a :class:`FailsOnThreeRows` holding the same weights."""
    fragile = FailsOnThreeRows()
    fragile.load_state_dict(model.blocks[index].state_dict())
    model.blocks[index] = fragile


class AttentionBlock(nn.Module):
    """A tiny pre-norm transformer block taking a mask keyword and returning a tuple, as older HF layers did."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(width, width)
        self.v = nn.Linear(width, width)
        self.o = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = MLPBlock(width)

    def forward(self, hidden_states: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, None]:
        h = self.ln1(hidden_states)
        scores = self.q(h) @ self.k(h).transpose(-1, -2) / h.shape[-1] ** 0.5
        if attention_mask is not None:
            scores = scores.masked_fill(~attention_mask, float("-inf"))
        h = hidden_states + self.o(torch.softmax(scores, dim=-1) @ self.v(h))
        return self.mlp(self.ln2(h)), None


class TinyTransformer(nn.Module):
    """Token embedding, ``layers`` of :class:`AttentionBlock` called with ``attention_mask=``, and an LM head."""

    def __init__(self, depth: int = 3, width: int = 8, vocab: int = 11) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.layers = nn.ModuleList(AttentionBlock(width) for _ in range(depth))
        self.lm_head = nn.Linear(width, vocab, bias=False)

    def forward(self, ids: Tensor) -> Tensor:
        h = self.embed(ids)
        causal = torch.ones(ids.shape[-1], ids.shape[-1], dtype=torch.bool).tril()
        for layer in self.layers:
            h = layer(h, attention_mask=causal)[0]
        return self.lm_head(h)


def tiny_llama(layers: int = 2) -> nn.Module:
    """A randomly initialised LLaMA, hidden size 32, built from a config."""
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return transformers.LlamaForCausalLM(config).eval()


def tiny_gpt2(layers: int = 2) -> nn.Module:
    """A randomly initialised GPT-2, hidden size 32 (its linear layers are ``Conv1D``), built from a config."""
    import transformers

    config = transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=layers, n_head=4, n_positions=64)
    return transformers.GPT2LMHeadModel(config).eval()


def token_batches(count: int = 3, length: int = 7, vocab: int = 64, seed: int = 1) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (2, length), generator=generator) for _ in range(count)]


def feature_batches(count: int = 3, rows: int = 5, d_in: int = 6, seed: int = 1) -> list[Tensor]:
    """Batches whose input features have unequal scales (so data-aware scores differ from magnitude)."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-1, 1, d_in)
    return [torch.randn(rows, d_in, generator=generator) * scales for _ in range(count)]


def exact_statistics(x: Tensor) -> dict[str, Tensor]:
    """The built-in statistics of the inputs ``x`` ``(rows, d_in)`` by their formulas: mean of x_j², mean of x xᵀ."""
    return {"input_sq_norms": x.square().mean(0), "input_hessian": x.T @ x / x.shape[0]}


@contextmanager
def forward_hooks(modules: Iterable[nn.Module], hook: Callable[[nn.Module, Any, Any], None]) -> Iterator[None]:
    """``hook`` on the forward of every module in ``modules`` while the block runs (under ``no_grad``), then removed."""
    handles = [module.register_forward_hook(hook) for module in modules]
    try:
        with torch.no_grad():
            yield
    finally:
        for handle in handles:
            handle.remove()


def collect_statistics(
    layers: Iterable[nn.Module], run: Callable[[], object], statistics: Sequence[Statistic] = (INPUT_SQ_NORMS,)
) -> dict[nn.Module, dict[str, Tensor]]:
    """``statistics`` of ``layers`` while ``run()`` runs, collected with plain forward hooks (not the driver's)."""
    accumulators = {module: [statistic.create(module) for statistic in statistics] for module in layers}

    def hook(module: nn.Module, args: tuple[Tensor, ...], output: Any) -> None:
        for accumulator in accumulators[module]:
            accumulator.add(args[0])

    with forward_hooks(accumulators, hook):
        run()
    return {
        module: {statistic.name: accumulator.result() for statistic, accumulator in zip(statistics, made)}
        for module, made in accumulators.items()
    }


def norms_for(module: nn.Module) -> Tensor:
    """The ``input_sq_norms`` statistic in reach of the strategy pruning ``module`` now."""
    return pruneplug.statistics_for(module, ["input_sq_norms"], strategy="calib_norm_scaled", tensor="weight")[
        "input_sq_norms"
    ]


class NormScaled(UnstructuredStrategy):
    """``|W_ij| · sqrt(mean x_j²)`` ranked over the whole tensor: Wanda per tensor, for the driver's tests."""

    name: ClassVar[str | None] = "calib_norm_scaled"

    def required_statistics(self) -> tuple[str, ...]:
        return ("input_sq_norms",)

    def scores(self, t: Tensor, alive: Tensor | None) -> Tensor:
        target = current_target()
        assert target is not None
        shape = [1] * t.dim()
        shape[input_dim(target.module)] = -1
        return t.abs() * norms_for(target.module).sqrt().reshape(shape)


class HalvesKept(UnstructuredStrategy):
    """Prunes the smallest ``|w|`` and halves the entries it keeps (an :class:`UpdatesValues` strategy).

    Raises on the modules listed in ``FAILING`` (by ``id``), to test that a
    failure in a later block restores the values updated in earlier ones.
    """

    name: ClassVar[str | None] = "calib_halves_kept"
    FAILING: ClassVar[set[int]] = set()

    def required_statistics(self) -> tuple[str, ...]:
        return ("input_sq_norms",)

    def scores(self, t: Tensor, alive: Tensor | None) -> Tensor:
        return t.abs()

    def prune_and_update(self, t: Tensor, alive: Tensor | None) -> tuple[Tensor, Tensor]:
        target = current_target()
        assert target is not None
        norms_for(target.module)  # read like a real data-aware strategy would
        if id(target.module) in self.FAILING:
            raise RuntimeError("calib_halves_kept was told to fail here")
        keep = self.keep_entries(t, alive)
        return keep, t * 0.5


class NeedsUnknown(UnstructuredStrategy):
    """Declares a statistic that no plugin registers."""

    name: ClassVar[str | None] = "calib_needs_unknown"

    def required_statistics(self) -> tuple[str, ...]:
        return ("no_such_statistic",)

    def scores(self, t: Tensor, alive: Tensor | None) -> Tensor:
        return t.abs()


def state_of(model: nn.Module) -> dict[str, Any]:
    """Everything a prune may change, comparable with ``==`` after :func:`same`: tensors cloned."""
    return {
        "tensors": {
            f"{n}/{k}": v.detach().clone()
            for n, m in model.named_modules()
            for k, v in [*m._parameters.items(), *m._buffers.items()]
            if v is not None
        },
        "parameter_ids": {f"{n}/{k}": id(v) for n, m in model.named_modules() for k, v in m._parameters.items()},
        "hooks": {
            n: (len(m._forward_pre_hooks), len(m._forward_hooks), len(m._state_dict_hooks))
            for n, m in model.named_modules()
        },
        "classes": {n: type(m) for n, m in model.named_modules()},
        "training": {n: m.training for n, m in model.named_modules()},
        "grads": {
            n: (None if p.grad is None else p.grad.clone(), id(p.grad), p.requires_grad)
            for n, p in model.named_parameters()
        },
    }


def same(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether two :func:`state_of` records are equal (tensors exactly, bit for bit)."""
    if before.keys() != after.keys():
        return False
    for key in before:
        a, b = before[key], after[key]
        if key == "tensors":
            if a.keys() != b.keys() or any(not torch.equal(a[k], b[k]) or a[k].dtype != b[k].dtype for k in a):
                return False
        elif key == "grads":
            if a.keys() != b.keys():
                return False
            for k in a:
                (ga, ia, ra), (gb, ib, rb) = a[k], b[k]
                if ra != rb or ia != ib or (ga is None) != (gb is None) or (ga is not None and not torch.equal(ga, gb)):
                    return False
        elif a != b:
            return False
    return True
