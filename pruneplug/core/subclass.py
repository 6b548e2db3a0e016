"""Per-class subclasses swapped in for a module's class, made once per base class.

The lazy masks (:mod:`.lazy`) and the channel-masked norms (:mod:`.norms`)
both swap a module's class for a subclass of it that adds a mixin: the same
name, qualified name, module and docstring, so ``repr`` and ``isinstance``
are unchanged, as ``torch.nn.utils.parametrize`` does.
"""

from __future__ import annotations

import threading
import types

from torch import nn

__all__ = ["mixed_class"]


def mixed_class(
    base: type[nn.Module],
    mixin: type,
    marker: str,
    made: dict[type[nn.Module], type[nn.Module]],
    lock: threading.Lock,
) -> type[nn.Module]:
    """``mixin`` put in front of ``base``, created once and kept in ``made``; ``cls.<marker>`` is ``base``.

    Raises whatever creating the class raises (a class whose
    ``__init_subclass__`` or metaclass refuses subclasses); nothing is kept then.
    """
    cls = made.get(base)
    if cls is not None:
        return cls
    with lock:
        cls = made.get(base)
        if cls is None:
            namespace = {
                "__module__": base.__module__,
                "__qualname__": base.__qualname__,
                "__doc__": base.__doc__,
                marker: base,
            }
            cls = types.new_class(base.__name__, (mixin, base), exec_body=lambda ns: ns.update(namespace))
            made[base] = cls
    return cls
