"""``--model MODULE:FACTORY``: build the model a checkpoint belongs to from an importable factory.

``pruneplug.models:LeNet`` imports :mod:`pruneplug.models` and calls
``LeNet()``; ``mypkg.nets:build.resnet18`` follows attributes after the
colon. The current directory is searched first, as ``python -m`` does, so a
``models.py`` in the directory pruneplug runs from works (:func:`cwd_importable`;
``pruneplug apply`` imports a plan's calibration functions the same way). Anything that goes wrong is
the user's input, reported as :class:`~pruneplug.cli._app.BadInput` (exit status 2).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn
from torch.nn.parameter import is_lazy

from ..errors import close_matches_hint
from ._app import BadInput

__all__ = ["build_model", "cwd_importable"]


@contextmanager
def cwd_importable() -> Iterator[None]:
    """The current directory first on ``sys.path`` for the ``with`` block (as ``python -m`` puts it there)."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _import(module_name: str, spec: str) -> object:
    try:
        with cwd_importable():
            return importlib.import_module(module_name)
    except ImportError as error:
        raise BadInput(f"--model {spec!r}: cannot import {module_name!r}: {error}") from error
    except Exception as error:  # the user's module raised while importing
        raise BadInput(f"--model {spec!r}: importing {module_name!r} raised {type(error).__name__}: {error}") from error
    except SystemExit as error:  # e.g. a training script that parses its own arguments at import
        raise BadInput(
            f"--model {spec!r}: importing {module_name!r} called sys.exit({error.code!r}); "
            "the factory's module must be importable without running a script"
        ) from error


def build_model(spec: str) -> nn.Module:
    """The model built by the factory ``spec`` (``"package.module:Factory"``), called without arguments."""
    module_name, colon, attributes = spec.partition(":")
    if not colon or not module_name or not attributes:
        raise BadInput(f"--model {spec!r}: expected MODULE:FACTORY, for example pruneplug.models:LeNet")
    found: object = _import(module_name, spec)
    for attribute in attributes.split("."):
        if not hasattr(found, attribute):
            names = [n for n in dir(found) if not n.startswith("_")]
            hint = close_matches_hint(attribute, names)
            raise BadInput(f"--model {spec!r}: {module_name!r} has no attribute {attribute!r}.{hint}")
        found = getattr(found, attribute)
    if isinstance(found, nn.Module):
        return found
    if not callable(found):
        raise BadInput(f"--model {spec!r}: {attributes!r} is a {type(found).__name__}, not a model factory")
    try:
        model = found()
    except Exception as error:
        raise BadInput(f"--model {spec!r}: calling {attributes}() raised {type(error).__name__}: {error}") from error
    except SystemExit as error:
        raise BadInput(f"--model {spec!r}: calling {attributes}() called sys.exit({error.code!r})") from error
    if not isinstance(model, nn.Module):
        raise BadInput(f"--model {spec!r}: {attributes}() returned a {type(model).__name__}, not a torch.nn.Module")
    _check_materialized(model, spec)
    return model


def _check_materialized(model: nn.Module, spec: str) -> None:
    """Refuse models whose tensors hold no data: lazy modules before their first forward, meta tensors."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    lazy = [name for name, tensor in tensors if is_lazy(tensor)]
    if lazy:
        raise BadInput(
            f"--model {spec!r}: the model has uninitialized (lazy) tensors: {', '.join(lazy[:5])}; "
            "give their sizes when building it, or run one forward pass inside the factory"
        )
    meta = [name for name, tensor in tensors if tensor.is_meta]
    if meta:
        raise BadInput(
            f"--model {spec!r}: the model has tensors on the meta device (no data): {', '.join(meta[:5])}; "
            "the factory must build the model on the CPU"
        )
