"""Loading a checkpoint into the model a factory built: pruned, compacted, or plain.

A compacted checkpoint (``pruneplug apply --compact``) holds the
architecture at smaller widths, so some of its tensors have other shapes
than the freshly built model's: the model is then resized to them and
loaded by :func:`pruneplug.load_compacted`, with a note on stderr naming
the tensors that differ (the wrong ``--model`` gets resized too, and the note
says so). Any other checkpoint goes through
:func:`~pruneplug.io.checkpoints.load_into`, which re-creates its masks. Both
refuse a checkpoint whose dtypes differ from the model's rather than
convert it, and name the file when it does not fit.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from ..compaction import load_compacted
from ..errors import PruneplugError
from ..io.checkpoints import Checkpoint, CheckpointError, _check_dtypes as check_dtypes, load_into
from ..storage.formats import MaskStorage
from ._app import err_console

__all__ = ["load_weights", "resized"]

_SUFFIXES = ("_orig", "_mask")


def resized(model: nn.Module, state_dict: Mapping[str, Tensor]) -> list[str]:
    """The tensors of ``state_dict`` (by the model's names) whose shapes differ from ``model``'s."""
    own = model.state_dict()
    found = []
    for key, value in state_dict.items():
        base = next((key[: -len(s)] for s in _SUFFIXES if key.endswith(s) and key[: -len(s)] in own), key)
        target = own.get(key, own.get(base))
        if isinstance(target, Tensor) and tuple(target.shape) != tuple(value.shape) and base not in found:
            found.append(base)
    return found


def load_weights(
    model: nn.Module, checkpoint: Checkpoint, *, mask_storage: MaskStorage | None = None
) -> dict[str, tuple[str, ...]]:
    """Load ``checkpoint`` into ``model`` (resized first when it is compacted); return the history it carries.

    The result is what :func:`~pruneplug.io.checkpoints.load_into` returns.

    Raises:
        CheckpointError: the checkpoint does not fit the model, even resized, or its dtypes differ.
    """
    different = resized(model, checkpoint.state_dict)
    if not different:
        return load_into(model, checkpoint, mask_storage=mask_storage)
    check_dtypes(model, checkpoint)
    try:
        load_compacted(model, checkpoint.state_dict)
    except PruneplugError as error:
        raise CheckpointError(f"does not fit the model, even resized: {error.reason}", path=checkpoint.path) from error
    shown = ", ".join(different[:6]) + (f" ... ({len(different)} in all)" if len(different) > 6 else "")
    err_console.print(f"pruneplug: note: {checkpoint.path} is compacted; the model was resized to it ({shown})")
    earlier: dict[str, tuple[str, ...]] = {name: () for name in checkpoint.masked}
    earlier.update(checkpoint.history)
    return earlier
