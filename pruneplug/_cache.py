"""When the forward pre-hook may reuse the masked tensor it computed last time.

Recomputing ``<name>_orig * <name>_mask`` before every forward doubles the
cost of inference on the CPU. pruneplug reuses the last result when all of
these hold:

* the mask is a native (``torch.bool``) mask -- tensors pruned through
  :mod:`pruneplug.compat` keep torch's recompute-every-time behaviour;
* no gradient is wanted (``torch.no_grad()``, ``torch.inference_mode()``, or a
  frozen parameter) and the module is in eval mode;
* ``<name>_orig`` and ``<name>_mask`` are the same tensors, with the same
  storage and the same version counters as then, no optimizer has stepped
  since (fused optimizers update parameters without bumping version
  counters, so every ``Optimizer.step`` invalidates the cache), and the
  attribute still holds the tensor computed then.

Writes through ``tensor.data`` bypass version counters; after such a write,
call :func:`pruneplug.refresh`.
"""

from __future__ import annotations

import contextlib
import threading
import weakref

import torch
from torch import Tensor

__all__ = ["cache_key", "reusable", "remember", "held", "forget"]

_optimizer_steps = 0
_hook_lock = threading.Lock()
_hook_installed = False

# hook -> (key, weak reference to the tensor computed for it, the tensor itself if held).
# Kept outside the hooks so that hooks of any class (torch's too) stay picklable, and
# replaced in one assignment so that threads never see a key paired with another tensor.
_entries: weakref.WeakKeyDictionary[object, tuple[tuple[object, ...], weakref.ref[Tensor], Tensor | None]] = (
    weakref.WeakKeyDictionary()
)


def _count_step(*_: object) -> None:
    global _optimizer_steps
    _optimizer_steps += 1


def _watch_optimizers() -> None:
    global _hook_installed
    if _hook_installed:
        return
    with _hook_lock:
        if not _hook_installed:
            from torch.optim.optimizer import register_optimizer_step_post_hook

            register_optimizer_step_post_hook(_count_step)
            _hook_installed = True


def _version(t: Tensor) -> int:
    # Inference tensors keep no version counter; they cannot be modified outside inference mode.
    return -1 if t.is_inference() else t._version


def cache_key(orig: Tensor, mask: Tensor) -> tuple[object, ...]:
    """Everything whose change means the masked tensor must be recomputed."""
    return (
        _optimizer_steps,
        id(orig), _version(orig), orig.data_ptr(), orig.dtype, orig.device, orig.shape,
        id(mask), _version(mask), mask.data_ptr(), mask.dtype,
    )  # fmt: skip


def reusable(hook: object, key: tuple[object, ...], current: object) -> bool:
    """Whether ``current`` is the tensor the hook computed for ``key``, unchanged since.

    A tensor computed in inference mode is reused only in inference mode:
    autograd outside it refuses inference tensors.
    """
    entry = _entries.get(hook)
    if entry is None or not isinstance(current, Tensor):
        return False
    remembered_key, ref, _ = entry
    if ref() is not current:
        return False
    if current.is_inference() and not torch.is_inference_mode_enabled():
        return False
    return remembered_key == (*key, _version(current))


def remember(hook: object, key: tuple[object, ...], value: Tensor, *, hold: bool = False) -> None:
    """Record that ``value`` was computed for ``key``; ``hold`` keeps it alive (lazy modules)."""
    _watch_optimizers()
    with contextlib.suppress(TypeError):  # a hook that cannot be weakly referenced is simply not cached
        _entries[hook] = ((*key, _version(value)), weakref.ref(value), value if hold else None)


def held(hook: object) -> Tensor | None:
    """The masked tensor a lazy module's hook keeps, if any."""
    entry = _entries.get(hook)
    return None if entry is None else entry[2]


def forget(hook: object) -> None:
    """Drop what is remembered for ``hook``, so the next read recomputes."""
    _entries.pop(hook, None)
