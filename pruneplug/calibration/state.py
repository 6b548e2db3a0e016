"""The model's state while calibrating, and putting it back: training modes, caches, and (on failure) everything pruned.

:func:`calibrating` puts the model in eval mode with Hugging Face key/value
caches off and pruneplug's masked-tensor cache unused (it would keep one
extra copy of every pruned weight), and gives back the user's training
modes and cache setting afterwards, whatever happens.

:class:`Rollback` keeps what a calibrated prune changes on its targets --
each module's attributes, parameters, buffers and hooks
(:class:`~pruneplug.core.commit.ModuleSnapshot`), and the values of every
weight a strategy updates in place (SparseGPT's) -- so that a failure in any
block leaves the model exactly as it was. Those old values go to a temporary
file, not to memory: a calibrated prune of a whole model updates every
weight of it, and holding their old values until the end would take a
second copy of all of them (4.4 GB for a 1.1 B-parameter model in fp32).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from io import BufferedRandom

import torch
from torch import Tensor, nn

from ..core.cache import uncached
from ..core.commit import ModuleSnapshot
from .targets import weight_of

__all__ = ["calibrating", "Rollback"]


@contextmanager
def calibrating(model: nn.Module) -> Iterator[None]:
    """Eval mode, no key/value cache, no masked-tensor cache for the ``with`` block; the user's settings after."""
    modes = [(module, module.training) for module in model.modules()]
    config = getattr(model, "config", None)
    cache_setting = getattr(config, "use_cache", None) if config is not None else None
    try:
        if isinstance(cache_setting, bool):
            config.use_cache = False  # type: ignore[union-attr]
        model.eval()
        with uncached():
            yield
    finally:
        for module, training in modes:
            module.training = training
        if isinstance(cache_setting, bool):
            config.use_cache = cache_setting  # type: ignore[union-attr]


class Rollback:
    """What a calibrated prune changes on ``modules``, kept to be put back by :meth:`restore`.

    The old values of the weights a strategy updates (:meth:`keep_values`)
    are written to one temporary file (``tempfile``'s directory: ``TMPDIR``,
    else the system's), read back only by :meth:`restore`, and gone when
    :meth:`close` is called or the object is collected. Where that file
    cannot be created or written (a read-only or full disk), the values are
    kept in CPU memory instead, as a copy of each weight.
    """

    def __init__(self, modules: Iterable[nn.Module]) -> None:
        self._snapshots = [ModuleSnapshot(module) for module in modules]
        # (weight, its old values' offset in the file, or a CPU copy of them where the file failed)
        self._values: list[tuple[Tensor, int | Tensor]] = []
        self._kept: set[int] = set()
        self._file: BufferedRandom | None = None
        self._to_file = True

    def keep_values(self, module: nn.Module) -> None:
        """Keep the values of ``module``'s weight (``weight_orig`` if pruned) before a strategy updates them.

        Each weight is kept once, in the temporary file (or, failing that, as
        a CPU copy: an accelerator holds no second copy of its weights either way).
        """
        weight = weight_of(module)
        if weight is None or id(weight) in self._kept:
            return
        offset = self._write(weight.detach().to("cpu").contiguous())  # no copy of a contiguous CPU weight
        self._values.append((weight, weight.detach().to("cpu", copy=True) if offset is None else offset))
        self._kept.add(id(weight))

    @property
    def held_bytes(self) -> int:
        """Bytes of old values kept in memory (those the temporary file could not take)."""
        return sum(kept.numel() * kept.element_size() for _, kept in self._values if isinstance(kept, Tensor))

    @property
    def filed_bytes(self) -> int:
        """Bytes of old values in the temporary file."""
        return sum(w.numel() * w.element_size() for w, kept in self._values if not isinstance(kept, Tensor))

    def _write(self, values: Tensor) -> int | None:
        """Append ``values``' bytes to the temporary file; their offset, or None where the file failed."""
        if not self._to_file:
            return None
        try:
            if self._file is None:
                # open across calls, closed by close() (or when collected)
                self._file = tempfile.TemporaryFile(prefix="pruneplug-rollback-")  # noqa: SIM115
            offset = self._file.seek(0, os.SEEK_END)
            self._file.write(_bytes_of(values).numpy().data)
        except OSError:
            self._to_file = False
            return None
        return offset

    def _read(self, weight: Tensor, offset: int) -> Tensor:
        """The old values of ``weight`` at ``offset`` in the file, as a CPU tensor of its dtype and shape."""
        assert self._file is not None
        size = weight.numel() * weight.element_size()
        if size == 0:
            return torch.empty(weight.shape, dtype=weight.dtype)
        buffer = bytearray(size)
        view = memoryview(buffer)
        self._file.seek(offset)
        done = 0
        while done < size:
            count = self._file.readinto(view[done:])
            if not count:
                raise OSError(f"the rollback file ended {size - done} bytes early")
            done += count
        return torch.frombuffer(buffer, dtype=torch.uint8).view(weight.dtype).view(weight.shape)

    def restore(self) -> None:
        """Put every module back as it was, weights included."""
        for snapshot in reversed(self._snapshots):
            snapshot.restore()
        with torch.no_grad():
            for weight, kept in reversed(self._values):
                saved = kept if isinstance(kept, Tensor) else self._read(weight, kept)
                weight.copy_(saved.to(weight.device))

    def close(self) -> None:
        """Delete the temporary file (the old values in it can no longer be restored)."""
        if self._file is not None:
            self._file.close()
            self._file = None


def _bytes_of(values: Tensor) -> Tensor:
    """A contiguous CPU tensor's memory as a flat ``uint8`` tensor (any dtype; bfloat16 has no numpy type)."""
    return values.reshape(-1).view(torch.uint8)
