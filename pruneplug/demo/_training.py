"""Training, fine-tuning and scoring a classifier on in-memory tensors.

Deliberately plain (Adam, cross-entropy, mini-batches from a seeded
permutation): the demo is about pruning, and every run must be repeatable
under the same seed. Pruned models train as they are: the optimizer updates
``<name>_orig``, pruned entries get zero gradient, and the mask keeps them at
zero.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["train", "evaluate", "accumulate_gradients"]


def train(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int,
    seed: int,
    learning_rate: float = 2e-3,
    batch_size: int = 64,
    on_epoch: Callable[[int], None] | None = None,
) -> nn.Module:
    """Train ``model`` in place with Adam for ``epochs`` passes; returns ``model``.

    Mini-batches come from a permutation drawn from a generator seeded with
    ``seed`` (the global RNG is not touched), so the same model, data and
    seed always give the same weights.

    Args:
        on_epoch: called with the number of epochs done after each one (for progress bars).

    Raises:
        ValueError: ``epochs`` or ``batch_size`` is negative or zero (``epochs=0`` is allowed).
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(images[batch]), labels[batch]).backward()
            optimizer.step()
        if on_epoch is not None:
            on_epoch(epoch + 1)
    optimizer.zero_grad(set_to_none=True)
    return model


def evaluate(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    """The share of ``images`` that ``model`` classifies as ``labels``, in [0, 1]."""
    if len(labels) == 0:
        raise ValueError("cannot evaluate on an empty test set")
    model.eval()
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    return int((predicted == labels).sum()) / len(labels)  # exact, not a float32 mean


def accumulate_gradients(model: nn.Module, images: Tensor, labels: Tensor) -> nn.Module:
    """Leave the gradient of the loss on ``images`` in every parameter's ``.grad``; returns ``model``.

    Importance scores such as ``taylor`` (``|w * dL/dw|``) read ``.grad``
    when a mask is computed; strategies that do not use it ignore it.
    """
    model.eval()  # no dropout or batch-norm updates: the gradient of the trained network as it is
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(images), labels).backward()
    return model
