"""A small character-level transformer LM trained on the CPython documentation, for the calibration benchmark.

The text is ``pydoc_data.topics.topics`` (the help topics that ship with
Python: about 465 KB of English, nothing downloaded), joined in sorted-key
order. Its characters are the vocabulary. It is split into three contiguous
ranges: the first 90 % to train on, the next 5 % to draw calibration
sequences from, the last 5 % held out to measure perplexity on; no text is in
two of them.

The model is a pre-norm decoder: token embedding plus learned positions,
``blocks`` (an ``nn.ModuleList``, where pruneplug's sequential calibration
finds the layers), each causal self-attention (``q``/``k``/``v``/``o``
``nn.Linear``) and an MLP (``fc1``/``fc2``, GELU), then a final LayerNorm and
an untied LM head.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from pydoc_data.topics import topics
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CharLM",
    "CharLMConfig",
    "Corpus",
    "TrainConfig",
    "calibration_batches",
    "corpus",
    "load_or_train",
    "perplexity",
    "train",
    "unigram_perplexity",
]

SPLIT = (0.90, 0.05, 0.05)  # train, calibration, test


# --- the data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    """The documentation text as character ids, in three contiguous splits, and its vocabulary."""

    vocab: str  # the distinct characters, sorted; id i is vocab[i]
    train: Tensor  # int64, 1-D
    calibration: Tensor
    test: Tensor


def corpus() -> Corpus:
    """``pydoc_data.topics`` joined in sorted-key order, as ids, split 90 / 5 / 5 % into contiguous ranges."""
    text = "\n\n".join(topics[key] for key in sorted(topics))
    vocab = "".join(sorted(set(text)))
    index = {char: i for i, char in enumerate(vocab)}
    ids = torch.tensor([index[char] for char in text], dtype=torch.long)
    train_end = int(len(ids) * SPLIT[0])
    calibration_end = train_end + int(len(ids) * SPLIT[1])
    return Corpus(vocab, ids[:train_end], ids[train_end:calibration_end], ids[calibration_end:])


def calibration_batches(ids: Tensor, sequences: int, context: int, batch: int, seed: int) -> list[Tensor]:
    """``sequences`` windows of ``context`` ids at random places in ``ids`` (as the papers draw theirs), in batches.

    The places come from a generator seeded with ``seed``, so every call with
    the same arguments gives the same windows.
    """
    if len(ids) < context:
        raise ValueError(f"the calibration split has {len(ids)} ids, fewer than the context of {context}")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - context + 1, (sequences,), generator=generator)
    windows = torch.stack([ids[start : start + context] for start in starts.tolist()])
    return list(windows.split(batch))


def unigram_perplexity(train_ids: Tensor, test_ids: Tensor, vocab_size: int) -> float:
    """The perplexity on ``test_ids`` of character frequencies counted on ``train_ids`` (add-one smoothed).

    The floor a language model must clearly beat: it knows which characters
    are common and nothing about context.
    """
    counts = torch.bincount(train_ids, minlength=vocab_size).double() + 1.0
    log_probs = (counts / counts.sum()).log()
    return math.exp(-log_probs[test_ids].mean().item())


# --- the model -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CharLMConfig:
    """The model's shape."""

    vocab_size: int
    context: int = 128
    d_model: int = 128
    heads: int = 4
    blocks: int = 4
    mlp_ratio: int = 4


class Attention(nn.Module):
    """Causal multi-head self-attention with separate query, key, value and output projections."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is no multiple of the number of heads {heads}")
        self.heads = heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.o = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, width = x.shape
        q, k, v = (
            proj(x).view(batch, length, self.heads, width // self.heads).transpose(1, 2)
            for proj in (self.q, self.k, self.v)
        )
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(y.transpose(1, 2).reshape(batch, length, width))


class MLP(nn.Module):
    """Two linear layers with a GELU between them."""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, hidden)
        self.fc2 = nn.Linear(hidden, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """A pre-norm decoder block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    def __init__(self, d_model: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, hidden)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class CharLM(nn.Module):
    """Token embedding + learned positions, ``blocks``, a final LayerNorm and an untied LM head: ids → logits."""

    def __init__(self, config: CharLMConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.tok = nn.Embedding(config.vocab_size, d)
        self.pos = nn.Embedding(config.context, d)
        self.blocks = nn.ModuleList(Block(d, config.heads, config.mlp_ratio * d) for _ in range(config.blocks))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.vocab_size, bias=False)

    def forward(self, ids: Tensor) -> Tensor:
        length = ids.shape[-1]
        if length > self.config.context:
            raise ValueError(f"{length} ids are more than the model's context of {self.config.context}")
        x = self.tok(ids) + self.pos(torch.arange(length, device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


# --- training and evaluation ----------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """How the model is trained: AdamW, linear warm-up then cosine decay, random windows of the train split."""

    steps: int = 800
    batch: int = 32
    lr: float = 3e-3
    warmup: int = 20
    weight_decay: float = 0.1
    seed: int = 0


def train(
    model_config: CharLMConfig, data: Corpus, config: TrainConfig, log: Callable[[str], None] = print
) -> tuple[CharLM, dict[str, Any]]:
    """A fresh model trained on ``data.train`` with seeds fixed; returns it (in eval mode) and what training took."""
    torch.manual_seed(config.seed)
    model = CharLM(model_config)
    decay = [p for name, p in model.named_parameters() if p.dim() >= 2 and not name.startswith(("tok", "pos"))]
    other = [p for name, p in model.named_parameters() if not (p.dim() >= 2 and not name.startswith(("tok", "pos")))]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": other, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.95),
    )

    def factor(step: int) -> float:
        if step < config.warmup:
            return (step + 1) / config.warmup
        progress = (step - config.warmup) / max(1, config.steps - config.warmup)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    generator = torch.Generator().manual_seed(config.seed)
    context = model_config.context
    model.train()
    load = os.getloadavg()[0]
    start = time.perf_counter()
    losses: list[float] = []
    for step in range(config.steps):
        starts = torch.randint(0, len(data.train) - context - 1, (config.batch,), generator=generator)
        windows = torch.stack([data.train[s : s + context + 1] for s in starts.tolist()])
        logits = model(windows[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if (step + 1) % max(1, config.steps // 10) == 0 or step + 1 == config.steps:
            recent = losses[-max(1, config.steps // 10) :]
            log(
                f"  step {step + 1}/{config.steps}: train loss {sum(recent) / len(recent):.3f} "
                f"({time.perf_counter() - start:.0f} s)"
            )
    seconds = time.perf_counter() - start
    model.eval()
    return model, {
        "seconds": seconds,
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "threads": torch.get_num_threads(),
        "load_average": [load, os.getloadavg()[0]],  # when training started and ended
    }


@torch.no_grad()
def perplexity(model: nn.Module, ids: Tensor, context: int, batch: int = 64) -> float:
    """exp of the mean next-character loss over all of ``ids``, in non-overlapping windows of ``context``.

    Each window predicts its characters from those before it in the window
    (the first from none); the last, shorter window is included, so every
    id but the first is predicted exactly once.
    """
    was_training = model.training
    model.eval()
    full = (len(ids) - 1) // context
    inputs = ids[: full * context].view(full, context)
    targets = ids[1 : full * context + 1].view(full, context)
    total, count = 0.0, 0
    for chunk_in, chunk_target in zip(inputs.split(batch), targets.split(batch)):
        logits = model(chunk_in)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk_target.reshape(-1), reduction="sum").item()
        count += chunk_target.numel()
    rest = len(ids) - 1 - full * context
    if rest:
        logits = model(ids[full * context : full * context + rest][None])
        total += F.cross_entropy(logits[0], ids[full * context + 1 :], reduction="sum").item()
        count += rest
    model.train(was_training)
    return math.exp(total / count)


def load_or_train(
    model_config: CharLMConfig,
    data: Corpus,
    config: TrainConfig,
    cache: Path | None,
    log: Callable[[str], None] = print,
) -> tuple[CharLM, dict[str, Any]]:
    """The trained model from ``cache`` when it holds one of these configs, else trained afresh (and saved there).

    The cache is a ``torch.save`` file of the configs, the vocabulary, what
    training took and the state dict; one made for other configs or another
    text is not used (and is overwritten).
    """
    key = {"model": asdict(model_config), "train": asdict(config), "vocab": data.vocab, "tokens": len(data.train)}
    if cache is not None and cache.exists():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        if saved.get("key") == key:
            model = CharLM(model_config)
            model.load_state_dict(saved["state"])
            log(f"  trained weights from {cache}")
            return model.eval(), {**saved["info"], "cached": True}
        log(f"  {cache} holds another configuration: training afresh")
    model, info = train(model_config, data, config, log)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": key, "info": info, "state": model.state_dict()}, cache)
    return model, {**info, "cached": False}
