"""When the forward pre-hook may reuse the masked tensor it computed last time.

Recomputing ``<name>_orig * <name>_mask`` before every forward doubles the
cost of inference on the CPU. pruneplug reuses the last result when all of
these hold:

* the mask is a native (``torch.bool``, plain or bit-packed) mask -- tensors pruned through
  :mod:`pruneplug.compat` keep torch's recompute-every-time behaviour;
* no gradient is wanted (``torch.no_grad()``, ``torch.inference_mode()``, or a
  frozen parameter) and the module is in eval mode;
* nothing is being traced, compiled or exported, and ``<name>_orig`` is a
  plain tensor with data (not a fake, meta or functorch-wrapped one, as
  ``torch.export``, ``torch.compile``, ``torch.func`` and ``torch.jit.trace``
  hand in) -- those see a fresh product, as torch would give them;
* neither ``<name>_orig`` nor ``<name>_mask`` was created in inference mode
  (inference tensors have no version counter, so their changes could not be
  seen);
* ``<name>_orig`` and ``<name>_mask`` are the same tensors, with the same
  storage (the same storage object, offset and strides: replacing
  ``param.data`` counts) and the same version counters as then, no optimizer has stepped
  since (fused optimizers update parameters without bumping version
  counters, so every ``Optimizer.step`` invalidates the cache), and the
  attribute still holds the tensor computed then.

Writes through ``tensor.data`` bypass version counters; after such a write,
call :func:`pruneplug.refresh`.

Inside :func:`uncached`, nothing is kept: pruneplug's own forwards (tracing
the channel graph, compaction's output checks) run there, so that a
model's masked tensors are not all held at once -- one extra copy of every
pruned weight, which a 1 B-parameter model cannot spare.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch._subclasses.fake_tensor import is_fake
from torch.distributed.tensor import DTensor
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from ..storage.packed import storage_of

__all__ = ["cacheable", "cache_key", "reusable", "remember", "held", "forget", "uncached"]

_optimizer_steps = 0
_hook_lock = threading.Lock()
_hook_installed = False

# hook -> (key, weak reference to the tensor computed for it, the tensor itself if held, pins).
# Kept outside the hooks so that hooks of any class (torch's too) stay picklable, and
# replaced in one assignment so that threads never see a key paired with another tensor.
# The pins are weak references to the storages of _orig and _mask: they keep the storage
# objects' addresses (which the key holds) from being reused, without keeping their data.
_Entry = tuple[tuple[object, ...], weakref.ref[Tensor], Tensor | None, tuple[StorageWeakRef, ...]]
_entries: weakref.WeakKeyDictionary[object, _Entry] = weakref.WeakKeyDictionary()
_PLAIN_TYPES = (Tensor, nn.Parameter)
_off = threading.local()  # .depth: how many uncached() blocks this thread is in


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


@contextlib.contextmanager
def uncached() -> Iterator[None]:
    """Compute masked tensors afresh meanwhile, in this thread, and keep none of them."""
    _off.depth = getattr(_off, "depth", 0) + 1
    try:
        yield
    finally:
        _off.depth -= 1


def cacheable(orig: Tensor, mask: Tensor) -> bool:
    """Whether a masked tensor of these may be kept at all (see the module's docstring)."""
    if getattr(_off, "depth", 0):
        return False
    if torch.compiler.is_compiling() or torch._C._get_tracing_state() is not None:  # dynamo/export, jit.trace
        return False
    if isinstance(orig, DTensor) or isinstance(mask, DTensor):
        return False  # a DTensor product, or under FSDP2 a whole gathered weight: it must not outlive its use
    for tensor in (orig, storage_of(mask)):
        if tensor.is_meta or _functorch_wrapped(tensor) or tensor.is_inference():
            return False  # (inference tensors have no version counter: their changes cannot be seen)
        if type(tensor) not in _PLAIN_TYPES and (is_fake(tensor) or is_traceable_wrapper_subclass(tensor)):
            return False  # (the checks for subclasses are slower; plain tensors and parameters skip them)
    return True


def _functorch_wrapped(tensor: Tensor) -> bool:
    return bool(torch._C._functorch.is_functorch_wrapped_tensor(tensor))


def _where(t: Tensor) -> tuple[object, ...]:
    return (t.untyped_storage()._cdata, t.storage_offset(), t.stride(), t.data_ptr())


def cache_key(orig: Tensor, mask: Tensor) -> tuple[object, ...]:
    """Everything whose change means the masked tensor must be recomputed (call when :func:`cacheable`)."""
    return (
        _optimizer_steps,
        id(orig), _version(orig), _where(orig), orig.dtype, orig.device, orig.shape,
        id(mask), _version(mask), _where(storage_of(mask)), _version(storage_of(mask)), mask.dtype,
    )  # fmt: skip


def reusable(hook: object, key: tuple[object, ...], current: object) -> bool:
    """Whether ``current`` is the tensor the hook computed for ``key``, unchanged since.

    A tensor computed in inference mode is reused only in inference mode:
    autograd outside it refuses inference tensors.
    """
    try:
        entry = _entries.get(hook)
    except TypeError:  # an unhashable hook is never remembered
        return False
    if entry is None or not isinstance(current, Tensor):
        return False
    remembered_key, ref, _, _ = entry
    if ref() is not current:
        return False
    if current.is_inference() and not torch.is_inference_mode_enabled():
        return False
    return remembered_key == (*key, _version(current))


def remember(
    hook: object, key: tuple[object, ...], value: Tensor, sources: tuple[Tensor, Tensor], *, hold: bool = False
) -> None:
    """Record that ``value`` was computed for ``key`` from ``sources`` (``_orig``, ``_mask``).

    ``hold`` keeps ``value`` alive (lazy modules, where nothing else holds it).
    """
    _watch_optimizers()
    pins = tuple(StorageWeakRef(storage_of(source).untyped_storage()) for source in sources)
    with contextlib.suppress(TypeError):  # a hook that cannot be weakly referenced or hashed is not cached
        _entries[hook] = ((*key, _version(value)), weakref.ref(value), value if hold else None, pins)


def held(hook: object) -> Tensor | None:
    """The masked tensor a lazy module's hook keeps, if any."""
    try:
        entry = _entries.get(hook)
    except TypeError:
        return None
    return None if entry is None else entry[2]


def forget(hook: object) -> None:
    """Drop what is remembered for ``hook``, so the next read recomputes."""
    with contextlib.suppress(TypeError):
        _entries.pop(hook, None)
