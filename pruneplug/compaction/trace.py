"""A recorded run of a model: every torch call on the way from its inputs to its outputs.

The channel graph needs to know which tensor flows into which operation,
with real shapes. This module runs the model once on the example inputs, under
``torch.no_grad``, and records:

* each call of a module that has a channel rule (convolutions, linear layers,
  norms, embeddings, ``nn.MultiheadAttention``, recurrent layers: see
  :data:`pruneplug.compaction.rules.MODULE_RULES`) as one step, whatever
  happens inside it, through global module hooks;
* every other torch function and tensor method (``torch.cat``, ``x.view``,
  ``F.relu``, ``+``) as one step, through a
  :class:`torch.overrides.TorchFunctionMode`.
* each call of a custom ``torch.autograd.Function`` as one step, whatever
  its forward does (no rule knows it: the channels it touches stay).

It is an eager run, so Python control flow, data-dependent branches
included, simply runs: what is recorded is the path the example inputs took
(another branch is not seen; :func:`pruneplug.compact` checks outputs on the
same inputs). The model is left as it was: its training flag is not touched,
and its buffers (BatchNorm running statistics) are put back after the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from ..core.cache import uncached
from ..core.lazy import is_lazy
from ..core.state import pruned_tensors
from ..errors import ChannelTraceError

__all__ = [
    "Value",
    "Step",
    "Recording",
    "record",
    "ExampleInputs",
    "as_call_args",
    "buffers_kept",
    "tensor_keys",
    "leaves",
    "function_apply_replaced",
]

TensorKey = tuple[str, str]
"""``(qualified module name, tensor name)`` of a parameter or buffer of the model."""

ExampleInputs = Tensor | tuple[Any, ...] | list[Any] | Mapping[str, Any]
"""What a model is called with: one tensor, positional arguments, or keyword arguments."""


@dataclass(eq=False)
class Value:
    """One tensor seen in the run (a new one for each in-place change)."""

    index: int
    shape: tuple[int, ...]
    tensor: TensorKey | None = None  # set when the value is a parameter or buffer of the model
    parameter: bool = False
    origin: str = "op"  # "op", "input", "tensor" (parameter/buffer) or "constant" (made outside the run)

    def __repr__(self) -> str:
        where = f" {self.tensor[0]}.{self.tensor[1]}" if self.tensor else ""
        return f"Value#{self.index}{list(self.shape)}{where}"


@dataclass(eq=False)
class Step:
    """One recorded call: a torch function (``module`` is None) or a whole module with a rule."""

    name: str
    func: Callable[..., Any] | None
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    outputs: tuple[Value, ...]
    where: str  # qualified name of the innermost module that was running
    module: nn.Module | None = None
    path: str | None = None  # the module's qualified name, for module steps

    _inputs: list[Value] | None = field(default=None, repr=False)

    def inputs(self) -> list[Value]:
        """The values among the arguments, in order (found once: the rules ask often)."""
        if self._inputs is None:
            self._inputs = [item for item in leaves((self.args, self.kwargs)) if isinstance(item, Value)]
        return list(self._inputs)


def leaves(tree: Any) -> list[Any]:
    """The items of nested tuples, lists and dicts (what a call's arguments hold), in order."""
    if isinstance(tree, (tuple, list)):
        return [leaf for item in tree for leaf in leaves(item)]
    if isinstance(tree, dict):
        return [leaf for item in tree.values() for leaf in leaves(item)]
    return [tree]


@dataclass
class Recording:
    """The result of :func:`record`: steps in call order, and the model's inputs and outputs."""

    steps: list[Step]
    inputs: list[Value]
    outputs: list[Value]
    values: list[Value]
    tensors: dict[TensorKey, Value] = field(default_factory=dict)
    tied: dict[TensorKey, TensorKey] = field(default_factory=dict)  # another name of a tensor -> its first name


def as_call_args(example_inputs: ExampleInputs) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)`` to call a model with, from a tensor, a tuple/list, or a mapping."""
    if isinstance(example_inputs, Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, Mapping):
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    raise ChannelTraceError(
        f"example_inputs must be a tensor, a tuple of the model's positional arguments or a dict of its"
        f" keyword arguments, not {type(example_inputs).__name__}"
    )


def tensor_keys(model: nn.Module) -> tuple[dict[int, tuple[TensorKey, bool]], dict[TensorKey, TensorKey]]:
    """``id(tensor) -> (key, is a parameter)`` for the model's parameters and buffers, and the tied names.

    A pruned tensor is keyed by its own name (``weight``, not ``weight_orig``);
    a tensor the model holds under several names (tied input and output
    embeddings) is keyed by the first, and ``tied`` maps each other name to it.
    """
    keys: dict[int, tuple[TensorKey, bool]] = {}
    tied: dict[TensorKey, TensorKey] = {}
    for owner_name, owner in model.named_modules(remove_duplicate=False):
        for is_parameter, store in ((True, owner._parameters), (False, owner._buffers)):
            for name, tensor in store.items():
                if tensor is None:
                    continue
                key = (owner_name, name[: -len("_orig")] if name.endswith("_orig") else name)
                if id(tensor) in keys and keys[id(tensor)][0] != key:
                    tied[key] = keys[id(tensor)][0]
                    continue
                keys[id(tensor)] = (key, is_parameter)
    return keys, tied


class _Recorder(TorchFunctionMode):
    def __init__(self, model: nn.Module, is_leaf: Callable[[nn.Module], bool]) -> None:
        super().__init__()
        self.is_leaf = is_leaf
        self.paths = {id(m): name for name, m in model.named_modules(remove_duplicate=False)}
        self.keys, self.tied = tensor_keys(model)
        self.values: dict[int, Value] = {}
        self.all_values: list[Value] = []
        self.tensor_values: dict[TensorKey, Value] = {}
        self.alive: list[Any] = []  # every tensor seen stays alive, so no id() is reused during the run
        self.steps: list[Step] = []
        self.stack: list[str] = [""]
        self.depth = 0  # > 0 inside a module recorded as one step
        self.paused = False

    # -- values -----------------------------------------------------------------------------------
    def _new(self, item: Tensor, **info: Any) -> Value:
        value = Value(len(self.all_values), tuple(item.shape), **info)
        self.all_values.append(value)
        self.values[id(item)] = value
        self.alive.append(item)
        return value

    def lookup(self, tensor: Tensor) -> Value:
        """The value ``tensor`` holds now; parameters and unseen tensors get one on first sight."""
        value = self.values.get(id(tensor))
        if value is not None:
            return value
        known = self.keys.get(id(tensor))
        if known is not None:
            key, is_parameter = known
            value = self._new(tensor, tensor=key, parameter=is_parameter, origin="tensor")
            self.tensor_values[key] = value
            return value
        return self._new(tensor, origin="constant")

    def tensor_value(self, key: TensorKey, tensor: Tensor, is_parameter: bool) -> Value:
        value = self.tensor_values.get(key)
        if value is None:
            value = self._new(tensor, tensor=key, parameter=is_parameter, origin="tensor")
            self.tensor_values[key] = value
        else:
            self.values[id(tensor)] = value
            self.alive.append(tensor)
        return value

    def _outputs(self, result: Any) -> tuple[Value, ...]:
        flat, _ = tree_flatten(result)
        return tuple(self._new(item) for item in flat if isinstance(item, Tensor))

    def _as_values(self, tree: Any) -> Any:
        return tree_map(lambda item: self.lookup(item) if isinstance(item, Tensor) else item, tree)

    # -- torch functions --------------------------------------------------------------------------
    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if self.depth or self.paused:
            return func(*args, **kwargs)
        name = getattr(func, "__name__", None) or type(func).__name__
        if name == "__get__":  # a tensor property (``x.T``, ``x.shape``): name it after the property
            name = getattr(getattr(func, "__self__", None), "__name__", name)
        arg_values, kwarg_values = self._as_values((args, kwargs))
        result = func(*args, **kwargs)
        outputs = self._outputs(result)
        if name == "__setitem__" and isinstance(args[0], Tensor):  # changes args[0] in place
            outputs = (self._new(args[0]),)
        if outputs:
            self.steps.append(Step(name, func, arg_values, kwarg_values, outputs, self.stack[-1]))
        return result

    # -- modules ----------------------------------------------------------------------------------
    def pre_hook(self, module: nn.Module, args: Any) -> None:
        self.stack.append(self.paths.get(id(module), "?"))
        if self.depth or self.is_leaf(module):
            self.depth += 1

    def post_hook(self, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        path = self.stack.pop()
        if not self.depth:
            return
        self.depth -= 1
        if self.depth or not self.is_leaf(module):
            return
        self.paused = True  # reading shapes here goes through the mode too
        try:
            arg_values, kwarg_values = self._as_values((tuple(args), dict(kwargs)))
            outputs = self._outputs(output)
        finally:
            self.paused = False
        step = Step(type(module).__name__, None, arg_values, kwarg_values, outputs, path, module, path)
        self.steps.append(step)

    # -- custom autograd functions ----------------------------------------------------------------
    def function_step(self, function: type, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> None:
        """Record a call of a custom ``torch.autograd.Function`` as one step, named after its class."""
        self.paused = True
        try:
            arg_values, kwarg_values = self._as_values((args, kwargs))
            outputs = self._outputs(result)
        finally:
            self.paused = False
        if outputs:
            step = Step(f"{function.__name__}.apply", None, arg_values, kwarg_values, outputs, self.stack[-1])
            self.steps.append(step)


FunctionApply = Callable[..., Any]
"""``torch.autograd.Function.apply``'s implementation: ``(cls, *args, **kwargs) -> result``."""


@contextmanager
def function_apply_replaced(make: Callable[[FunctionApply], FunctionApply]) -> Iterator[None]:
    """Every custom ``torch.autograd.Function`` called through ``make(original apply)`` meanwhile.

    A function's forward may do what the torch calls seen inside do not
    show (a kernel writing into ``torch.empty_like(x)``, say), so neither
    recorder looks inside: the eager one keeps the call as one opaque step,
    fx gives up. The patch is process-wide while it lasts, as the recorder's
    global module hooks are.
    """
    original = torch.autograd.Function.__dict__["apply"]
    torch.autograd.Function.apply = classmethod(make(original.__func__))  # type: ignore[assignment,method-assign]
    try:
        yield
    finally:
        torch.autograd.Function.apply = original  # type: ignore[method-assign]


def _opaque_functions(recorder: _Recorder) -> AbstractContextManager[None]:
    """Record every custom ``torch.autograd.Function`` as one step, without looking inside (it has no rule)."""

    def make(original: FunctionApply) -> FunctionApply:
        def apply(cls: type, *args: Any, **kwargs: Any) -> Any:
            if recorder.depth or recorder.paused:
                return original(cls, *args, **kwargs)
            recorder.depth += 1  # nothing inside is recorded
            try:
                result = original(cls, *args, **kwargs)
            finally:
                recorder.depth -= 1
            recorder.function_step(cls, args, kwargs, result)
            return result

        return apply

    return function_apply_replaced(make)


def _masked_attribute_hooks(recorder: _Recorder, model: nn.Module) -> list[Any]:
    """Make masked tensors of modules traced through (not recorded whole) known values.

    A module without a rule that reads a pruned tensor of its own (a pruned
    ``pos_embed``) gets it computed by pruneplug's reparametrization; the
    hooks below compute it once per call, before the module's forward, and
    name it after the tensor, so the run sees the tensor and not the product.
    """
    handles: list[Any] = []
    for path, module, name in list(pruned_tensors(model)):
        if recorder.is_leaf(module):
            continue

        def before(mod: nn.Module, args: Any, *, _path: str = path, _name: str = name) -> None:
            recorder.paused = True
            try:
                tensor = getattr(mod, _name)
            finally:
                recorder.paused = False
            if is_lazy(mod):
                mod.__dict__[_name] = tensor  # the same object for every read during this call
            recorder.tensor_value((_path, _name), tensor, True)

        def after(mod: nn.Module, args: Any, output: Any, *, _name: str = name) -> None:
            if is_lazy(mod):
                mod.__dict__.pop(_name, None)

        handles.append(module.register_forward_pre_hook(before))
        handles.append(module.register_forward_hook(after, always_call=True))
    return handles


@contextmanager
def buffers_kept(model: nn.Module) -> Iterator[None]:
    """Put every buffer of ``model`` back as it was afterwards (train-mode BatchNorm updates its statistics)."""
    saved = [
        (buffer, buffer.detach().clone())
        for module in model.modules()
        for name, buffer in module._buffers.items()
        if buffer is not None and not name.endswith("_mask")  # masks: no forward writes them, and they are big
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, copy in saved:
                if buffer.shape == copy.shape:
                    buffer.copy_(copy)


def record(model: nn.Module, example_inputs: ExampleInputs, is_leaf: Callable[[nn.Module], bool]) -> Recording:
    """Run ``model`` on ``example_inputs`` once and record every step; the model is not changed."""
    args, kwargs = as_call_args(example_inputs)
    recorder = _Recorder(model, is_leaf)
    flat_inputs = [item for item in tree_flatten((args, kwargs))[0] if isinstance(item, Tensor)]
    if not flat_inputs:
        raise ChannelTraceError("example_inputs hold no tensor: the channel graph needs the model's real inputs")
    recorder.paused = True
    inputs = [recorder._new(item, origin="input") for item in flat_inputs]
    recorder.paused = False
    pre = nn.modules.module.register_module_forward_pre_hook(recorder.pre_hook)
    post = nn.modules.module.register_module_forward_hook(recorder.post_hook, with_kwargs=True)
    handles = _masked_attribute_hooks(recorder, model)
    try:
        with buffers_kept(model), uncached(), torch.no_grad(), _opaque_functions(recorder), recorder:
            output = model(*args, **kwargs)
    except ChannelTraceError:
        raise
    except Exception as error:
        raise ChannelTraceError(
            f"the model failed on example_inputs ({type(error).__name__}: {error}); pass inputs it runs on"
        ) from error
    finally:
        pre.remove()
        post.remove()
        # torch's handle forgets the with_kwargs flag, which alone makes torch.compile warn of global hooks
        nn.modules.module._global_forward_hooks_with_kwargs.pop(post.id, None)
        for handle in handles:
            handle.remove()
    recorder.paused = True
    outputs = [recorder.lookup(item) for item in tree_flatten(output)[0] if isinstance(item, Tensor)]
    if not outputs:
        raise ChannelTraceError(f"the model returned no tensor (got {type(output).__name__})")
    return Recording(recorder.steps, inputs, outputs, recorder.all_values, recorder.tensor_values, recorder.tied)
