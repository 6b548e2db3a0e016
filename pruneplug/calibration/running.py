"""Running the user's calibration data through the model, and through one block at a time.

Calibration is an iterable of batches -- a Tensor is run as ``model(batch)``,
a tuple or list as ``model(*batch)``, a Mapping as ``model(**batch)`` -- or a
callable ``run(model)`` that runs the model itself. Errors a batch raises
become a :class:`~pruneplug.errors.CalibrationBatchError` naming the batch,
with the original error as its ``__cause__``; blocks that cannot be run one
after another raise a :class:`~pruneplug.errors.CalibrationBlockError`.

For a sequential calibration the inputs of the first block are captured once
per batch (a forward pre-hook that stops the forward right there, through a
private exception, when the batches are run here), then each block is
replayed on the stored inputs: its output, the hidden state, replaces the
first positional argument (or ``hidden_states=``) for the next block; the
other arguments (attention masks, position embeddings) are the same for
every block. Hugging Face key/value caches are turned off: a cache passed
along would grow on every replay.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import CalibrationBatchError, CalibrationBlockError, CalibrationError, InvalidParametersError

__all__ = [
    "Calibration",
    "BlockInputs",
    "check_calibration",
    "reusable",
    "run_calibration",
    "capture_inputs",
    "run_block",
    "hidden_of",
    "with_hidden",
]

Calibration = Iterable[Any] | Callable[[nn.Module], object]
"""Calibration data: an iterable of batches, or a callable ``run(model)`` that runs the model on them."""

BlockInputs = tuple[tuple[Any, ...], dict[str, Any]]
"""The positional and keyword arguments one batch gives a block."""


class _StopForward(Exception):
    """Raised by the capturing pre-hook to end a forward once the first block's inputs are stored."""


def check_calibration(calibration: object) -> None:
    """Refuse calibration that is neither an iterable of batches nor a callable, before anything runs.

    Raises:
        InvalidParametersError: a single tensor (it would be iterated row by
            row), a string, or anything neither iterable nor callable.
    """
    if isinstance(calibration, Tensor):
        raise InvalidParametersError(
            "calibration is a single tensor; pass an iterable of batches (e.g. [tensor], or a DataLoader): "
            "iterating a tensor would run the model on one row at a time"
        )
    if isinstance(calibration, (str, bytes)) or not (callable(calibration) or isinstance(calibration, Iterable)):
        raise InvalidParametersError(
            "calibration must be an iterable of batches (tensors, tuples or dicts of model inputs) "
            f"or a callable run(model); got {type(calibration).__name__}"
        )


def reusable(calibration: Calibration, passes: int) -> Calibration:
    """``calibration`` as something that can be run ``passes`` times: a one-shot iterator is read into a list.

    Raises:
        CalibrationBatchError: reading the iterator raised (the batch's index named, the error chained).
    """
    if passes > 1 and not callable(calibration) and iter(calibration) is calibration:
        return [batch for _, batch in _batches(calibration)]
    return calibration


def _accepts(model: nn.Module, keyword: str) -> bool:
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return keyword in parameters


def _call(model: nn.Module, batch: object, index: int, extra: Mapping[str, Any]) -> Any:
    if isinstance(batch, Tensor):
        return model(batch, **extra)
    if isinstance(batch, (tuple, list)):
        return model(*batch, **extra)
    if isinstance(batch, Mapping):
        return model(**{**batch, **extra})
    raise CalibrationBatchError(
        f"calibration batch #{index} is a {type(batch).__name__}; a batch is a Tensor (run as model(batch)), "
        "a tuple or list (model(*batch)) or a Mapping (model(**batch))"
    )


def _batches(calibration: Iterable[Any]) -> Iterator[tuple[int, Any]]:
    """Each batch with its index; an error raised while reading one names it."""
    iterator = iter(calibration)
    index = 0
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except Exception as error:
            raise CalibrationBatchError(
                f"reading calibration batch #{index} raised {type(error).__name__}: {error}"
            ) from error
        yield index, batch
        index += 1


def run_calibration(
    model: nn.Module,
    calibration: Calibration,
    *,
    each: Callable[[int, Any, Any], None] | None = None,
    stop: type[BaseException] | None = None,
) -> int:
    """Run every batch through ``model``; returns how many batches ran (``-1`` for a callable).

    Args:
        model: the model to run.
        calibration: the batches, or ``run(model)``.
        each: called as ``each(index, output, batch)`` after every batch
            (the gradient pass computes its loss there); iterables only.
        stop: an exception that ends one batch's forward early on purpose.

    Raises:
        CalibrationBatchError: a batch raised (its index named, the error
            chained), the iterable gave no batches, or the callable raised.
        CalibrationError: what ``each`` raised (the gradient pass's
            :class:`~pruneplug.errors.CalibrationLossError`).
    """
    if callable(calibration):
        try:
            calibration(model)
        except CalibrationError:  # raised by a hook of ours (a block without a hidden state): already says what
            raise
        except Exception as error:
            raise CalibrationBatchError(f"the calibration run raised {type(error).__name__}: {error}") from error
        return -1
    extra = {"use_cache": False} if _accepts(model, "use_cache") else {}
    count = 0
    for index, batch in _batches(calibration):
        try:
            output = _call(model, batch, index, extra)
            if each is not None:
                each(index, output, batch)
        except CalibrationError:
            raise
        except Exception as error:
            if stop is not None and isinstance(error, stop):
                pass
            else:
                raise CalibrationBatchError(
                    f"calibration batch #{index} raised {type(error).__name__}: {error}"
                ) from error
        count += 1
    if count == 0:
        raise CalibrationBatchError("the calibration iterable gave no batches; give at least one")
    return count


def _is_cache(value: object) -> bool:
    """A Hugging Face key/value cache (known by its base class's name: transformers is optional)."""
    return any(cls.__name__ == "Cache" for cls in type(value).__mro__)


def _stored(value: Any) -> Any:
    """An argument as kept for replay: tensors detached, key/value caches dropped."""
    if isinstance(value, Tensor):
        return value.detach()
    if _is_cache(value):
        return None
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_stored(v) for v in value)
    if isinstance(value, list):
        return [_stored(v) for v in value]
    return value


def hidden_of(inputs: BlockInputs, block: str) -> Tensor:
    """The hidden state in a block's inputs: the first positional argument, or ``hidden_states=``.

    Raises:
        CalibrationBlockError: neither is a tensor.
    """
    args, kwargs = inputs
    if args and isinstance(args[0], Tensor):
        return args[0]
    hidden = kwargs.get("hidden_states")
    if isinstance(hidden, Tensor):
        return hidden
    raise CalibrationBlockError(
        f"block {block!r} was called without a tensor as its first positional argument or as hidden_states=; "
        "a block must take the hidden state so that the next block's inputs can be made from its output"
    )


def with_hidden(inputs: BlockInputs, hidden: Tensor) -> BlockInputs:
    """The same inputs with the hidden state replaced by ``hidden`` (the previous block's output)."""
    args, kwargs = inputs
    if args and isinstance(args[0], Tensor):
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def capture_inputs(model: nn.Module, block: nn.Module, block_name: str, calibration: Calibration) -> list[BlockInputs]:
    """The first block's inputs, once per batch (per call of the block, for a callable calibration).

    Batches run here stop at the block; a callable ``run(model)`` runs whole.

    Raises:
        CalibrationBatchError: as :func:`run_calibration`.
        CalibrationBlockError: a batch (or the whole callable run) never
            reached the block, or the block took no hidden state.
    """
    stored: list[BlockInputs] = []
    stops = not callable(calibration)

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        inputs = (_stored(args), {k: (False if k == "use_cache" else _stored(v)) for k, v in kwargs.items()})
        hidden_of(inputs, block_name)
        stored.append(inputs)
        if stops:
            raise _StopForward

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        batches = run_calibration(model, calibration, each=_reached(block_name), stop=_StopForward)
    finally:
        handle.remove()
    if batches == -1 and not stored:
        raise CalibrationBlockError(f"the calibration run never called block {block_name!r}")
    return stored


def _reached(block_name: str) -> Callable[[int, Any, Any], None]:
    """Raise when a batch ran to its end: it never called the block (which would have stopped it)."""

    def check(index: int, output: Any, batch: Any) -> None:
        raise CalibrationBlockError(
            f"calibration batch #{index} ran through the model without calling block {block_name!r}"
        )

    return check


def run_block(block: nn.Module, inputs: BlockInputs, block_name: str) -> Tensor:
    """The block's output hidden state for one batch's stored inputs (``out[0]`` if it returns a tuple).

    Raises:
        CalibrationBlockError: the block returned neither a tensor nor a
            tuple or list starting with one.
    """
    args, kwargs = inputs
    with torch.no_grad():
        out = block(*args, **kwargs)
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    if isinstance(out, Tensor):
        return out
    raise CalibrationBlockError(
        f"block {block_name!r} returned a {type(out).__name__}; a block must return the hidden state, "
        "alone or first in a tuple"
    )
