"""Gradients from the calibration batches, for scores that read ``.grad`` (``taylor`` through ``scored_*``).

The loss needs the whole model, so the gradients come from one pass over
the calibration batches on the model as it is before this prune: for each
batch ``loss(output, batch).backward()``, summed into the targets' ``.grad``.
Only the targets' weights require gradients meanwhile; afterwards every
parameter's ``.grad`` (the same tensor object, or ``None``) and
``requires_grad`` are the user's again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import CalibrationLossError, InvalidParametersError
from .running import Calibration, run_calibration
from .targets import Target, weight_of

__all__ = ["GRADIENT_SCORES", "Loss", "reads_gradients", "calibration_gradients"]

GRADIENT_SCORES = frozenset({"taylor"})
"""Importance scores that read the parameter's ``.grad``."""

Loss = Callable[[Any, Any], Tensor]
"""``loss(output, batch) -> scalar tensor``: the model's output for a batch, and the batch."""


def reads_gradients(method: object) -> bool:
    """Whether a configured strategy scores by a gradient (``scored_*`` with ``score="taylor"``)."""
    return getattr(method, "score", None) in GRADIENT_SCORES


@contextmanager
def calibration_gradients(
    model: nn.Module, targets: Sequence[Target], calibration: Calibration, loss: Loss
) -> Iterator[None]:
    """The targets' ``.grad`` summed over the calibration batches for the ``with`` block; the user's after.

    Raises:
        InvalidParametersError: ``calibration`` is a callable (``loss`` needs
            each batch), or ``loss`` is not callable.
        CalibrationBatchError: a batch raised (or was of a type the model cannot take).
        CalibrationLossError: the loss raised, returned no scalar tensor with
            a gradient, or no gradient reached a target.
    """
    if callable(calibration):
        raise InvalidParametersError(
            "gradients for the taylor score need calibration as an iterable of batches: loss(output, batch) is "
            "called on each; a callable run(model) hides them"
        )
    if not callable(loss):
        raise InvalidParametersError(
            f"loss must be a callable loss(output, batch) -> scalar tensor, got {type(loss).__name__}"
        )
    parameters = list(model.parameters())
    saved = [(p, p.grad, p.requires_grad) for p in parameters]
    weights = {id(w): t for t in targets if (w := weight_of(t.module)) is not None}
    try:
        for p in parameters:
            p.grad = None
            p.requires_grad_(id(p) in weights)

        def backward(index: int, output: Any, batch: Any) -> None:
            try:
                value = loss(output, batch)
            except Exception as error:
                raise CalibrationLossError(
                    f"loss(output, batch) raised {type(error).__name__} on calibration batch #{index}: {error}"
                ) from error
            if not isinstance(value, Tensor) or value.numel() != 1 or not value.requires_grad:
                what = (
                    type(value).__name__ if not isinstance(value, Tensor) else f"a tensor of shape {tuple(value.shape)}"
                )
                raise CalibrationLossError(
                    f"loss(output, batch) must return a scalar tensor that depends on the model's weights; "
                    f"calibration batch #{index} gave {what}"
                    + ("" if not isinstance(value, Tensor) or value.requires_grad else " without a gradient")
                )
            value.reshape(()).backward()

        with torch.enable_grad():
            run_calibration(model, calibration, each=backward)
        missing = [t.name for t in targets if (w := weight_of(t.module)) is not None and w.grad is None]
        if missing:
            raise CalibrationLossError(
                f"no gradient reached {', '.join(map(repr, missing))}: the loss does not depend on "
                f"{'it' if len(missing) == 1 else 'them'}"
            )
        yield
    finally:
        for p, grad, requires_grad in saved:
            p.requires_grad_(requires_grad)
            p.grad = grad
