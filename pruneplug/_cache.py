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

import threading
import weakref

from torch import Tensor

__all__ = ["cache_key", "reusable", "remember", "held", "forget", "without_cache"]

_KEY = "_pp_cache_key"
_REF = "_pp_cache_ref"
_HELD = "_pp_cache_held"

_optimizer_steps = 0
_hook_lock = threading.Lock()
_hook_installed = False


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
    """Whether ``current`` is the tensor the hook computed for ``key``, unchanged since."""
    state = getattr(hook, "__dict__", {})
    ref = state.get(_REF)
    if ref is None or ref() is not current or not isinstance(current, Tensor):
        return False
    return bool(state.get(_KEY) == (*key, _version(current)))


def remember(hook: object, key: tuple[object, ...], value: Tensor, *, hold: bool = False) -> None:
    """Record that ``value`` was computed for ``key``; ``hold`` keeps it alive (lazy modules)."""
    _watch_optimizers()
    state = getattr(hook, "__dict__", None)
    if state is not None:
        state[_KEY] = (*key, _version(value))
        state[_REF] = weakref.ref(value)
        if hold:
            state[_HELD] = value


def held(hook: object) -> Tensor | None:
    """The masked tensor a lazy module's hook keeps, if any."""
    value = getattr(hook, "__dict__", {}).get(_HELD)
    return value if isinstance(value, Tensor) else None


def forget(hook: object) -> None:
    """Drop what the hook remembers, so the next read recomputes."""
    state = getattr(hook, "__dict__", {})
    for attr in (_KEY, _REF, _HELD):
        state.pop(attr, None)


def without_cache(state: dict[str, object]) -> dict[str, object]:
    """A copy of a hook's ``__dict__`` without what it remembers (for copying and pickling)."""
    return {key: value for key, value in state.items() if key not in (_KEY, _REF, _HELD)}
