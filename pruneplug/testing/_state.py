"""A snapshot of everything a model holds, to check that something left it exactly as it was.

"Nothing changed" is easy to check too weakly: comparing ``state_dict()``
misses a parameter replaced by an equal copy, a class swapped back, a hook
left behind or a stale ``module.weight``. :class:`ModuleState` records, for
every submodule, all of that (see its docstring) and tells two snapshots
apart line by line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from ._records import (
    HookRecord,
    Identity,
    Line,
    TensorRecord,
    hook_differences,
    identity_of,
    keyed_changes,
    record_hook,
    record_tensor,
    tensor_differences,
)

__all__ = ["ModuleState", "assert_unchanged", "snapshot"]

# (attribute of nn.Module, what a diff calls one of its hooks)
_MODULE_HOOKS = (
    ("_forward_pre_hooks", "forward pre-hook"),
    ("_forward_hooks", "forward hook"),
    ("_backward_pre_hooks", "backward pre-hook"),
    ("_backward_hooks", "backward hook"),
    ("_state_dict_pre_hooks", "state_dict pre-hook"),
    ("_state_dict_hooks", "state_dict hook"),
    ("_load_state_dict_pre_hooks", "load_state_dict pre-hook"),
    ("_load_state_dict_post_hooks", "load_state_dict post-hook"),
)
# how a hook is called, where torch keeps that apart from the hook: {hooks: ((flag, attribute), ...)}
_HOOK_FLAGS = {
    "_forward_pre_hooks": (("with kwargs", "_forward_pre_hooks_with_kwargs"),),
    "_forward_hooks": (
        ("with kwargs", "_forward_hooks_with_kwargs"),
        ("always called", "_forward_hooks_always_called"),
    ),
}
_ROOT = "<root>"

_Read = TensorRecord | str  # a tensor as read, or why reading it failed


@dataclass(frozen=True, eq=False)
class _ModuleRecord:
    """One submodule, by its qualified name."""

    name: str
    identity: Identity
    cls: type
    training: bool
    parameters: tuple[tuple[str, TensorRecord | None], ...]
    buffers: tuple[tuple[str, TensorRecord | None, bool], ...]  # (name, tensor, persistent)
    hooks: tuple[tuple[str, tuple[HookRecord, ...]], ...]
    effective: tuple[tuple[str, _Read], ...]
    tensors: tuple[tuple[str, TensorRecord], ...]  # plain tensors in __dict__
    attributes: frozenset[str]  # every other name in __dict__


def _read(module: nn.Module, name: str) -> _Read:
    """``module.<name>`` as code reads it (for a pruned tensor, ``<name>_orig * <name>_mask``)."""
    try:
        with torch.enable_grad():  # (a lazy module keeps no masked tensor computed under autograd)
            value = getattr(module, name)
    except Exception as error:
        return f"reading it raises {type(error).__name__}: {error}"
    if not isinstance(value, Tensor):
        return f"it is a {type(value).__name__}, not a tensor"
    return record_tensor(value, identity=False)


def _pruned_names(module: nn.Module, state: dict[str, Any]) -> list[str]:
    """The names pruning hooks act on, and those with an ``_orig`` parameter, in that order."""
    names = [
        str(hook._tensor_name)
        for hook in state.get("_forward_pre_hooks", {}).values()
        if isinstance(hook, torch_prune.BasePruningMethod) and isinstance(getattr(hook, "_tensor_name", None), str)
    ]
    names += [n[: -len("_orig")] for n in state.get("_parameters", {}) if n.endswith("_orig")]
    return list(dict.fromkeys(names))


def _record_module(name: str, module: nn.Module) -> _ModuleRecord:
    state = module.__dict__
    parameters = state.get("_parameters", {})
    buffers = state.get("_buffers", {})
    transient = state.get("_non_persistent_buffers_set", set())
    hooks = []
    for attribute, kind in _MODULE_HOOKS:
        flags = _HOOK_FLAGS.get(attribute, ())
        hooks.append(
            (
                kind,
                tuple(
                    record_hook(key, hook, tuple(flag for flag, where in flags if key in state.get(where, ())))
                    for key, hook in (state.get(attribute) or {}).items()
                ),
            )
        )
    return _ModuleRecord(
        name=name,
        identity=identity_of(module),
        cls=type(module),
        training=bool(state.get("training", True)),
        parameters=tuple((n, None if p is None else record_tensor(p, parameter=True)) for n, p in parameters.items()),
        buffers=tuple((n, None if b is None else record_tensor(b), n not in transient) for n, b in buffers.items()),
        hooks=tuple(hooks),
        effective=tuple((n, _read(module, n)) for n in _pruned_names(module, state)),
        tensors=tuple((n, record_tensor(v)) for n, v in state.items() if isinstance(v, Tensor)),
        attributes=frozenset(n for n, v in state.items() if not isinstance(v, Tensor)),
    )


class ModuleState:
    """An immutable snapshot of a model, to compare with a later one: ``ModuleState(model)``.

    It records, for every submodule by qualified name: the module object and
    its class, ``training``; each parameter (the object, type, dtype, shape,
    device, ``requires_grad``, values, ``.grad`` and its tensor hooks); each
    buffer (object, values, whether it is persistent); the hooks of every kind
    (forward pre/post, backward pre/post, ``state_dict`` and
    ``load_state_dict`` pre/post), by key, object and order, and the methods of
    a pruning container; each pruned tensor as code reads it (``module.weight``,
    that is ``weight_orig * weight_mask``); the tensors stored in the module's
    ``__dict__`` and the names of its other attributes; and, for the whole
    model, ``state_dict()``'s keys and values.

    Values are copied and compared bit for bit (a NaN equals a NaN of the same
    bits, ``-0.0`` differs from ``0.0``); a bit-packed mask is compared as the
    bool mask it stands for. Objects are held weakly where they can be, so a
    snapshot keeps nothing alive. Reading a pruned tensor computes it, as any
    read does.

    >>> import torch, pruneplug
    >>> from pruneplug.testing import ModuleState
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    >>> before = ModuleState(model)
    >>> _ = pruneplug.prune(model[0], "weight", "l1_unstructured", amount=2)
    >>> for line in before.diff(ModuleState(model))[:4]:
    ...     print(line)
    0: class Linear(Module) -> Linear(LazyMaskedModule, Linear)
    0.weight: parameter removed
    0.weight_orig: parameter added
    0.weight_mask: buffer added
    >>> _ = pruneplug.remove(model)  # the original Parameter is back, holding the pruned values
    >>> before.diff(ModuleState(model))[1]  # doctest: +ELLIPSIS
    '0.weight: values differ at 2 entries (first at ...'
    >>> import copy
    >>> twin = copy.deepcopy(model)  # equal values, other objects
    >>> ModuleState(model).diff(ModuleState(twin))[:2]
    ['<root>: module object replaced', '0: module object replaced']
    >>> ModuleState(model).diff(ModuleState(twin), identity=False)
    []
    """

    __slots__ = ("_model", "_modules", "_state_dict")

    _modules: tuple[_ModuleRecord, ...]
    _state_dict: tuple[tuple[str, TensorRecord], ...] | str
    _model: str

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"ModuleState records a torch.nn.Module, got {type(model).__name__}")
        modules = tuple(_record_module(name, module) for name, module in model.named_modules())
        state_dict: tuple[tuple[str, TensorRecord], ...] | str
        try:
            state_dict = tuple((k, record_tensor(v, identity=False)) for k, v in model.state_dict().items())
        except Exception as error:
            state_dict = f"state_dict() raises {type(error).__name__}: {error}"
        object.__setattr__(self, "_modules", modules)
        object.__setattr__(self, "_state_dict", state_dict)
        object.__setattr__(self, "_model", type(model).__name__)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a ModuleState is immutable (setting {name!r}); take a new one instead")

    def __repr__(self) -> str:
        entries = "?" if isinstance(self._state_dict, str) else len(self._state_dict)
        return f"<ModuleState of a {self._model}: {len(self._modules)} modules, {entries} state_dict entries>"

    def diff(self, later: ModuleState, *, identity: bool = True) -> list[str]:
        """What differs from ``later``, one line each (empty if nothing does).

        With ``identity=False`` an object replaced by an equal one (a
        parameter, buffer, hook or module that ``copy.deepcopy`` made, say) is
        not a difference; only values, kinds, names and order are compared.
        """
        return [line.text for line in self._lines(later) if identity or not line.identity_only]

    def _lines(self, later: ModuleState) -> Iterator[Line]:
        was = {m.name: m for m in self._modules}
        now = {m.name: m for m in later._modules}
        yield from keyed_changes(
            was, now, lambda name, m, change: f"{name or _ROOT}: submodule {change} ({m.cls.__name__})", "submodules"
        )
        for name, module in was.items():
            if name in now:
                yield from _module_lines(module, now[name])
        yield from _state_dict_lines(self._state_dict, later._state_dict)


def _path(module: str, name: str) -> str:
    return f"{module}.{name}" if module else name


def _class_name(cls: type, other: type) -> str:
    """``cls`` by name; with its bases when ``other`` has the same name (a class swapped for a same-named subclass)."""
    if cls.__name__ != other.__name__:
        return cls.__name__
    return f"{cls.__name__}({', '.join(base.__name__ for base in cls.__bases__)})"


def _module_lines(before: _ModuleRecord, after: _ModuleRecord) -> Iterator[Line]:
    where = before.name or _ROOT
    if not before.identity.same(after.identity):
        yield Line(f"{where}: module object replaced", identity_only=True)
    if before.cls is not after.cls:
        yield Line(f"{where}: class {_class_name(before.cls, after.cls)} -> {_class_name(after.cls, before.cls)}")
    if before.training != after.training:
        yield Line(f"{where}: training {before.training} -> {after.training}")
    yield from _named_tensors(before.name, "parameter", before.parameters, after.parameters)
    yield from _named_tensors(
        before.name, "buffer", [(n, b) for n, b, _ in before.buffers], [(n, b) for n, b, _ in after.buffers]
    )
    persistent = {n: p for n, _, p in after.buffers}
    for name, _, was in before.buffers:
        if name in persistent and persistent[name] != was:
            yield Line(f"{_path(before.name, name)}: {_persistence(was)} -> {_persistence(persistent[name])}")
    for (kind, was_hooks), (_, now_hooks) in zip(before.hooks, after.hooks):
        yield from hook_differences(f"{where}: {kind}", was_hooks, now_hooks)
    read = dict(after.effective)
    for name, value in before.effective:
        if name not in read:
            continue  # (the parameter's own record says what became of it)
        now = read[name]
        where_read = f"{_path(before.name, name)} (as read)"
        if isinstance(value, str) or isinstance(now, str):
            if not (isinstance(value, str) and isinstance(now, str)) or value != now:
                yield Line(f"{where_read}: {_reading(value)} -> {_reading(now)}")
        else:
            yield from tensor_differences(where_read, value, now)
    # a stored masked tensor (torch's layout) must stay the same object; its values are compared as read
    read_in_both = {n for n, _ in before.effective} & set(read)
    yield from _named_tensors(
        before.name, "attribute", before.tensors, after.tensors, values=lambda n: n not in read_in_both
    )
    for name in sorted(before.attributes - after.attributes):
        yield Line(f"{where}: attribute {name!r} removed")
    for name in sorted(after.attributes - before.attributes):
        yield Line(f"{where}: attribute {name!r} added")


def _persistence(persistent: bool) -> str:
    return "persistent" if persistent else "not persistent"


def _reading(value: _Read) -> str:
    return value if isinstance(value, str) else "a tensor"


def _named_tensors(
    module: str,
    kind: str,
    before: Iterable[tuple[str, TensorRecord | None]],
    after: Iterable[tuple[str, TensorRecord | None]],
    values: Callable[[str], bool] = lambda name: True,
) -> Iterator[Line]:
    """Tensors of one kind (parameters, buffers, tensor attributes) added, removed, reordered or changed.

    ``values(name)`` says whether the values of ``name`` are compared (else only which object it is).
    """
    was, now = dict(before), dict(after)
    yield from keyed_changes(
        was, now, lambda name, _, change: f"{_path(module, name)}: {kind} {change}", f"{module or _ROOT}: {kind}s"
    )
    for name, old in was.items():
        if name not in now:
            continue
        new, where = now[name], _path(module, name)
        if old is None or new is None:
            if old is not new:
                yield Line(
                    f"{where}: {'None' if old is None else 'a tensor'} -> {'None' if new is None else 'a tensor'}"
                )
            continue
        lines = tensor_differences(where, old, new, kind)
        if not values(name):
            lines = (line for line in lines if line.identity_only)
        yield from lines


def _state_dict_lines(
    before: tuple[tuple[str, TensorRecord], ...] | str, after: tuple[tuple[str, TensorRecord], ...] | str
) -> Iterator[Line]:
    if isinstance(before, str) or isinstance(after, str):
        if before != after:
            yield Line(f"state_dict(): {_entries(before)} -> {_entries(after)}")
        return
    was, now = dict(before), dict(after)
    yield from keyed_changes(was, now, lambda key, _, change: f"state_dict key {key!r} {change}", "state_dict keys")
    for key, value in was.items():
        if key in now:
            yield from tensor_differences(f"state_dict[{key!r}]", value, now[key])


def _entries(state_dict: tuple[tuple[str, TensorRecord], ...] | str) -> str:
    return state_dict if isinstance(state_dict, str) else f"{len(state_dict)} entries"


def snapshot(model: nn.Module) -> ModuleState:
    """A :class:`ModuleState` of ``model`` now (the same as ``ModuleState(model)``)."""
    return ModuleState(model)


def assert_unchanged(before: ModuleState, after: nn.Module | ModuleState, *, identity: bool = True) -> None:
    """Raise ``AssertionError`` listing every difference if ``after`` (a model, or a later snapshot) is not ``before``.

    ``identity=False`` accepts equal objects in place of the ones seen (see :meth:`ModuleState.diff`).

    >>> import torch
    >>> layer = torch.nn.Linear(2, 2)
    >>> with torch.no_grad():
    ...     _ = layer.bias.zero_()
    >>> before = snapshot(layer)
    >>> assert_unchanged(before, layer)
    >>> with torch.no_grad():
    ...     layer.bias[1] = -0.0
    >>> assert_unchanged(before, layer)
    Traceback (most recent call last):
    ...
    AssertionError: the model changed:
      bias: values differ at 1 entry (first at (1,): 0.0 -> -0.0)
      state_dict['bias']: values differ at 1 entry (first at (1,): 0.0 -> -0.0)
    """
    if not isinstance(before, ModuleState):
        raise TypeError(f"before must be a ModuleState (snapshot(model)), got {type(before).__name__}")
    later = after if isinstance(after, ModuleState) else ModuleState(after)
    lines = before.diff(later, identity=identity)
    if lines:
        raise AssertionError("the model changed:\n" + "\n".join(f"  {line}" for line in lines))
