"""What :class:`~pruneplug.testing.ModuleState` records of one tensor or hook, and the differences between records.

Values are copied when captured and compared bit for bit: NaN equals a NaN
of the same bits, ``-0.0`` differs from ``0.0``, and a bit-packed mask is
compared by the bool mask it stands for (its type is recorded too). Objects
are held weakly where Python allows it, so that a snapshot neither keeps
a model's tensors alive nor mistakes a new object for a freed one that had
the same ``id``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor
from torch.nn.utils import prune as torch_prune

from ..storage.packed import is_packed, plain

__all__ = [
    "HookRecord",
    "Identity",
    "Line",
    "TensorRecord",
    "hook_differences",
    "identity_of",
    "keyed_changes",
    "record_hook",
    "record_tensor",
    "same_bits",
    "tensor_differences",
]

K = TypeVar("K")
V = TypeVar("V")

_INTEGERS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


class Identity:
    """Which object a snapshot saw: ``same_as(x)`` is ``x is`` that object (held weakly when it can be)."""

    __slots__ = ("_get",)

    def __init__(self, obj: object) -> None:
        get: Callable[[], object]
        try:
            get = weakref.ref(obj)
        except TypeError:  # (ints, tuples, objects with __slots__ and no __weakref__): held strongly
            get = lambda: obj  # noqa: E731
        self._get = get

    def same_as(self, obj: object) -> bool:
        """Whether ``obj`` is the object seen (never true once that object is gone)."""
        seen = self._get()
        return seen is not None and seen is obj

    def same(self, other: Identity) -> bool:
        """Whether both identities are of one object, still alive."""
        seen = self._get()
        return seen is not None and other.same_as(seen)


def identity_of(obj: object) -> Identity:
    """The :class:`Identity` of ``obj``."""
    return Identity(obj)


@dataclass(frozen=True)
class Line:
    """One line of a diff; ``identity_only`` when it says only that an equal object took another's place."""

    text: str
    identity_only: bool = False


@dataclass(frozen=True, eq=False)
class HookRecord:
    """One hook under its handle's key: the object, what it is, its flags and, for a pruning container, its methods."""

    key: object
    identity: Identity
    name: str
    flags: tuple[str, ...] = ()
    history: tuple[tuple[Identity, str], ...] = ()


def _hook_name(hook: object) -> str:
    if isinstance(hook, torch_prune.BasePruningMethod):
        return f"{type(hook).__name__} on {getattr(hook, '_tensor_name', '?')!r}"
    inner = getattr(hook, "hook", None)  # torch wraps some hooks (_WrappedHook) around the function given
    target = inner if callable(inner) else hook
    return str(getattr(target, "__name__", type(target).__name__))


def record_hook(key: object, hook: object, flags: tuple[str, ...] = ()) -> HookRecord:
    """Record the hook stored under ``key`` (``flags``: how it is called, e.g. ``"with kwargs"``)."""
    methods = list(hook) if isinstance(hook, torch_prune.PruningContainer) else []
    return HookRecord(
        key=key,
        identity=identity_of(hook),
        name=_hook_name(hook),
        flags=flags,
        history=tuple((identity_of(m), type(m).__name__) for m in methods),
    )


def keyed_changes(
    before: Mapping[K, V], after: Mapping[K, V], line: Callable[[K, V, str], str], order: str
) -> Iterator[Line]:
    """Entries removed and added (``line(key, value, "removed" or "added")``), then a change of order, if any."""
    for key, value in before.items():
        if key not in after:
            yield Line(line(key, value, "removed"))
    for key, value in after.items():
        if key not in before:
            yield Line(line(key, value, "added"))
    kept_before = [key for key in before if key in after]
    kept_after = [key for key in after if key in before]
    if kept_before != kept_after:
        yield Line(f"{order} reordered: {kept_before} -> {kept_after}")


def hook_differences(where: str, before: tuple[HookRecord, ...], after: tuple[HookRecord, ...]) -> Iterator[Line]:
    """Hooks added, removed, reordered or replaced, by their handle's key (``where`` names the kind)."""
    was = {hook.key: hook for hook in before}
    now = {hook.key: hook for hook in after}
    yield from keyed_changes(was, now, lambda key, hook, change: f"{where} {key} {change} ({hook.name})", where + "s")
    kept_before = [key for key in was if key in now]
    for key in kept_before:
        old, new = was[key], now[key]
        if old.name != new.name:
            yield Line(f"{where} {key} replaced: {old.name} -> {new.name}")
        elif not old.identity.same(new.identity):
            yield Line(f"{where} {key} object replaced ({old.name})", identity_only=True)
        if old.flags != new.flags:
            yield Line(f"{where} {key} is called {_flags(old.flags)} -> {_flags(new.flags)}")
        history = [name for _, name in old.history], [name for _, name in new.history]
        if history[0] != history[1]:
            yield Line(f"{where} {key} history {history[0]} -> {history[1]}")
        elif not all(a.same(b) for (a, _), (b, _) in zip(old.history, new.history)):
            yield Line(f"{where} {key} history: each method object replaced", identity_only=True)


def _flags(flags: tuple[str, ...]) -> str:
    return ", ".join(flags) if flags else "plainly"


@dataclass(frozen=True, eq=False)
class TensorRecord:
    """A tensor's identity, kind and (copied) values; ``grad`` and ``hooks`` are recorded for parameters only."""

    identity: Identity | None
    type: type
    dtype: torch.dtype
    shape: tuple[int, ...]
    device: torch.device
    requires_grad: bool
    values: Tensor | None  # None where there are no values to read (meta tensors)
    grad: TensorRecord | None = None
    hooks: tuple[tuple[str, tuple[HookRecord, ...]], ...] = ()


def _copy(t: Tensor) -> Tensor | None:
    """A private, plain copy of ``t``'s values (a bit-packed mask unpacked), or ``None`` for a meta tensor."""
    t = t.detach()
    if t.is_meta:
        return None
    if is_packed(t):
        return plain(t).clone()  # (a DTensor's shard unpacked into a copy of its own)
    return t.clone()


def _tensor_hooks(t: Tensor) -> tuple[tuple[str, tuple[HookRecord, ...]], ...]:
    kinds = []
    for attribute, kind in (("_backward_hooks", "grad hook"), ("_post_accumulate_grad_hooks", "post-accumulate hook")):
        hooks = getattr(t, attribute, None) or {}
        kinds.append((kind, tuple(record_hook(key, hook) for key, hook in hooks.items())))
    return tuple(kinds)


def record_tensor(t: Tensor, *, identity: bool = True, parameter: bool = False) -> TensorRecord:
    """Record ``t``: its object (if ``identity``), kind and values; with ``parameter``, its grad and hooks too."""
    grad = t.grad if parameter else None
    return TensorRecord(
        identity=identity_of(t) if identity else None,
        type=type(t),
        dtype=t.dtype,
        shape=tuple(t.shape),
        device=t.device,
        requires_grad=t.requires_grad,
        values=_copy(t),
        grad=record_tensor(grad) if grad is not None else None,
        hooks=_tensor_hooks(t) if parameter else (),
    )


def _bits(t: Tensor) -> Tensor:
    """``t`` as integers with the same bits per entry (complex: one row of two per entry)."""
    if t.dtype == torch.bool:
        return t.to(torch.uint8)  # (a conversion: any nonzero byte of a bool tensor is True)
    if t.is_complex():
        t = torch.view_as_real(t)
    if t.is_floating_point():
        return t.contiguous().view(_INTEGERS[t.element_size()])
    return t


def same_bits(a: Tensor, b: Tensor) -> bool:
    """Same dtype, shape, device and bits (NaN equals a NaN of the same bits, -0.0 differs from 0.0)."""
    a, b = a.detach(), b.detach()
    if a.dtype != b.dtype or a.shape != b.shape or a.device != b.device:
        return False
    return _value_differences(a, b) is None


def _show(value: Any, bits: Any) -> str:
    return f"{value!r} (bits {bits!r})"


def _value_differences(before: Tensor, after: Tensor) -> str | None:
    """``None`` if the values are equal bit for bit, else what differs (how many entries, and the first)."""
    try:
        a, b = _bits(before), _bits(after)
        unequal = a != b
        if before.is_complex():
            unequal = unequal.any(dim=-1)
    except (RuntimeError, TypeError, KeyError):  # a tensor subclass without bit views: its own equality
        return None if torch.equal(before, after) else "values differ"
    count = int(unequal.sum())
    if count == 0:
        return None
    index = tuple(int(i) for i in unequal.nonzero()[0].tolist()) if unequal.dim() else ()
    was, now = before[index].item(), after[index].item()
    shown = repr(was), repr(now)
    if shown[0] == shown[1]:  # (NaNs of other bits): show the bits
        shown = _show(was, a[index].tolist()), _show(now, b[index].tolist())
    entries = "entry" if count == 1 else "entries"
    return f"values differ at {count} {entries} (first at {index}: {shown[0]} -> {shown[1]})"


def tensor_differences(where: str, before: TensorRecord, after: TensorRecord, noun: str = "tensor") -> Iterator[Line]:
    """The lines that tell ``before`` from ``after`` (``where`` names the tensor, ``noun`` says what it is)."""
    if before.identity is not None and after.identity is not None and not before.identity.same(after.identity):
        yield Line(f"{where}: {noun} object replaced", identity_only=True)
    if before.type is not after.type:
        yield Line(f"{where}: type {before.type.__name__} -> {after.type.__name__}")
    if before.requires_grad != after.requires_grad:
        yield Line(f"{where}: requires_grad {before.requires_grad} -> {after.requires_grad}")
    if (before.dtype, before.shape, before.device) != (after.dtype, after.shape, after.device):
        for what, was, now in (
            ("dtype", before.dtype, after.dtype),
            ("shape", before.shape, after.shape),
            ("device", before.device, after.device),
        ):
            if was != now:
                yield Line(f"{where}: {what} {was} -> {now}")
    elif before.values is not None and after.values is not None:
        changed = _value_differences(before.values, after.values)
        if changed is not None:
            yield Line(f"{where}: {changed}")
    if (before.grad is None) != (after.grad is None):
        yield Line(f"{where}: .grad {_presence(before.grad)} -> {_presence(after.grad)}")
    elif before.grad is not None and after.grad is not None:
        yield from tensor_differences(f"{where}.grad", before.grad, after.grad)
    for (kind, was_hooks), (_, now_hooks) in zip(before.hooks, after.hooks):
        yield from hook_differences(f"{where}: {kind}", was_hooks, now_hooks)


def _presence(grad: TensorRecord | None) -> str:
    return "None" if grad is None else "a tensor"
