"""The module paths of pruneplug 0.1.0's flat layout, kept importable for what was pickled with them.

A model saved whole (``torch.save(model)``, ``pickle.dumps``, a multiprocessing
queue) records the module of every class and function it holds:
``pruneplug._lazy`` for a lazily masked module, ``pruneplug._container`` for a
history, ``pruneplug._packed`` for a bit-packed mask, ``pruneplug._serialization``
for the load hooks. Since the package moved into folders by layer, those
modules live elsewhere under the same names; this finder makes each old path
an alias of its new module, so files saved before the move still load.
Nothing imports an old path itself: the aliases are made only when asked for.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

__all__ = ["MOVED", "install"]

MOVED = {
    "pruneplug._errors": "pruneplug.errors",
    "pruneplug._params": "pruneplug.params",
    "pruneplug._packed": "pruneplug.storage.packed",
    "pruneplug._amount": "pruneplug.selection.amount",
    "pruneplug._select": "pruneplug.selection.exact",
    "pruneplug._scores": "pruneplug.selection.scores",
    "pruneplug._cache": "pruneplug.core.cache",
    "pruneplug._lazy": "pruneplug.core.lazy",
    "pruneplug._method": "pruneplug.core.method",
    "pruneplug._container": "pruneplug.core.method",
    "pruneplug._serialization": "pruneplug.core.module_hooks",
    "pruneplug._storage": "pruneplug.core.packing",
    "pruneplug._registry": "pruneplug.registry",
    "pruneplug._state_dict": "pruneplug.io.state_dict",
    "pruneplug._checkpoints": "pruneplug.io.checkpoints",
    "pruneplug._report": "pruneplug.io.report",
    "pruneplug._tables": "pruneplug.io.tables",
}
"""Old module path -> the module that holds its names now (``_reparam``, ``_api`` and ``_global``
were split, and nothing of theirs is ever pickled)."""


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path of :data:`MOVED` and hands out the new module itself (no copy)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module was imported under its own name."""


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModules())


install()
