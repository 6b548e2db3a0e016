"""The LLaMA shapes the transformer benchmarks build (TinyLlama-1.1B's, and a small one), and their weights' size.

Plain data and torch only: the scripts import ``transformers`` themselves
(``benchmarks/transformers.py`` shares its name, so they take care of
``sys.path`` first).
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["FULL", "QUICK", "weight_bytes"]

# TinyLlama-1.1B's shape.
FULL: dict[str, Any] = {
    "vocab_size": 32000,
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}
QUICK: dict[str, Any] = {
    **FULL,
    "vocab_size": 1024,
    "hidden_size": 256,
    "intermediate_size": 704,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
}


def weight_bytes(module: nn.Module) -> int:
    """The bytes of the module's parameters and buffers (each tensor once)."""
    tensors = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())
