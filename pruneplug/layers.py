"""Recognizing kinds of layers by what they have, for layers whose classes live in other libraries.

GPT-2's ``Conv1D`` (in transformers) is a linear layer that stores its weight
transposed, ``(in, out)``: compaction slices it along the other dim, and
calibration statistics meet its weight's dim 0. pruneplug recognizes it by
its shape and attributes, so transformers need not be imported.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["is_transposed_linear"]


def is_transposed_linear(module: nn.Module) -> bool:
    """A linear layer that stores its weight as ``(in, out)`` and its width as ``nf``: GPT-2's ``Conv1D``.

    Recognized by what it has (the class lives in transformers): a class named
    ``Conv1D`` with an int ``nf`` (its output width), a 2-D weight, and no
    children. :func:`pruneplug.compact` checks the outputs whatever lets it in.
    """
    if not any(c.__name__ == "Conv1D" for c in type(module).__mro__):
        return False
    weight = next(
        (
            store[key]
            for store in (module._parameters, module._buffers)
            for key in ("weight", "weight_orig")
            if store.get(key) is not None
        ),
        None,
    )
    width = getattr(module, "nf", None)
    # (nf is not compared with the weight: right after slicing, it still holds the old width)
    return (
        isinstance(width, int)
        and isinstance(weight, Tensor)
        and weight.dim() == 2
        and not any(True for _ in module.children())
    )
