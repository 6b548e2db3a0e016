"""The model's state while calibrating, and putting it back: training modes, caches, and (on failure) everything pruned.

:func:`calibrating` puts the model in eval mode with Hugging Face key/value
caches off and pruneplug's masked-tensor cache unused (it would keep one
extra copy of every pruned weight), and gives back the user's training
modes and cache setting afterwards, whatever happens.

:class:`Rollback` keeps what a calibrated prune changes on its targets --
each module's attributes, parameters, buffers and hooks
(:class:`~pruneplug.core.commit.ModuleSnapshot`), and the values of every
weight a strategy updates in place (SparseGPT's) -- so that a failure in any
block leaves the model exactly as it was. Those old values are the size of
every pruned weight together: they are written to a temporary file for
weights in CPU memory (the model's own memory holds no second copy; the
kernel's page cache holds what it can spare), and kept in CPU memory for
weights on an accelerator. The file is deleted when the call ends.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

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

    Use it as a context manager: leaving it deletes the temporary file of old values.
    """

    def __init__(self, modules: Iterable[nn.Module]) -> None:
        self._snapshots = [ModuleSnapshot(module) for module in modules]
        self._values: list[tuple[Tensor, Tensor | Path]] = []
        self._kept: set[int] = set()
        self._folder: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Rollback:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def keep_values(self, module: nn.Module) -> None:
        """Keep the values of ``module``'s weight (``weight_orig`` if pruned) before a strategy updates them.

        Each weight is kept once: in a temporary file when it lives in CPU
        memory, as a CPU copy when it lives on an accelerator.
        """
        weight = weight_of(module)
        if weight is None or id(weight) in self._kept:
            return
        self._kept.add(id(weight))
        if weight.device.type != "cpu":
            self._values.append((weight, weight.detach().to("cpu", copy=True)))
            return
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="pruneplug-rollback-")
        path = Path(self._folder.name) / f"{len(self._values)}.pt"
        values = weight.detach()
        whole = values.is_contiguous() and values.untyped_storage().nbytes() == values.numel() * values.element_size()
        torch.save(values if whole else values.clone(), path)  # (torch.save writes a view's whole storage)
        self._values.append((weight, path))

    def restore(self) -> None:
        """Put every module back as it was, weights included."""
        for snapshot in reversed(self._snapshots):
            snapshot.restore()
        with torch.no_grad():
            for weight, saved in reversed(self._values):
                old = torch.load(saved, mmap=True, weights_only=True) if isinstance(saved, Path) else saved
                weight.copy_(old.to(weight.device))
