"""The same recording as :mod:`.trace`, made with ``torch.fx`` where the model allows.

``torch.fx.symbolic_trace`` reads the forward's code into a graph without
running it; layers with a channel rule stay single nodes (the tracer treats
them as leaves). One interpreted run of that graph on the example inputs then
gives every node's real shape and the concrete values of the Python numbers
the forward computes (``x.size(0)``), and the nodes become the steps the
rules read, exactly as the eager recorder writes them.

Symbolic tracing refuses forwards whose Python control flow depends on the
inputs (``if x.sum() > 0``, ``for i in range(x.size(1))``), calls it cannot
see through, keyword-only inputs, and tensors a module computes when read
(a pruned parameter of a module without a rule): :func:`record_fx` raises
:class:`FxUnavailable` for those and :func:`pruneplug.trace_channels` falls
back to the eager recorder.
"""

from __future__ import annotations

import builtins
import operator
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor, fx, nn

from ..core.cache import uncached
from ..core.state import pruned_tensors
from .trace import (
    ExampleInputs,
    Recording,
    Step,
    TensorKey,
    Value,
    as_call_args,
    buffers_kept,
    function_apply_replaced,
    leaves,
    tensor_keys,
)

__all__ = ["record_fx", "FxUnavailable"]


class FxUnavailable(Exception):
    """``torch.fx`` cannot trace this model (the reason is the message); the eager recorder is used instead."""


_OPERATORS: dict[Callable[..., Any], str] = {
    operator.add: "add",
    operator.iadd: "__iadd__",
    operator.sub: "sub",
    operator.isub: "__isub__",
    operator.mul: "mul",
    operator.imul: "__imul__",
    operator.truediv: "div",
    operator.itruediv: "__itruediv__",
    operator.floordiv: "floor_divide",
    operator.matmul: "matmul",
    operator.neg: "neg",
    operator.pow: "pow",
    operator.getitem: "__getitem__",
    operator.and_: "__and__",
    operator.or_: "__or__",
    operator.xor: "__xor__",
    operator.eq: "eq",
    operator.ne: "ne",
    operator.lt: "lt",
    operator.le: "le",
    operator.gt: "gt",
    operator.ge: "ge",
}


class _Tracer(fx.Tracer):
    def __init__(self, is_leaf: Callable[[nn.Module], bool]) -> None:
        super().__init__()
        self._is_leaf = is_leaf

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return self._is_leaf(m)


class _Run(fx.Interpreter):
    """Runs the graph once, keeping each node's result: shapes of tensors, values of everything else."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.results: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        self.results[n] = result
        return result


def _name(node: fx.Node) -> str:
    if node.op == "call_method":
        return str(node.target)
    target = node.target
    if target in _OPERATORS:
        return _OPERATORS[target]  # type: ignore[index]
    if target is builtins.getattr:
        return str(node.args[1])
    return str(getattr(target, "__name__", target))


def _functions_refused() -> AbstractContextManager[None]:
    """While fx traces, a custom ``torch.autograd.Function`` stops it (fx would trace through its forward)."""

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def apply(cls: type, *args: Any, **kwargs: Any) -> Any:
            raise FxUnavailable(f"the forward calls the custom autograd function {cls.__name__}")

        return apply

    return function_apply_replaced(make)


def record_fx(model: nn.Module, example_inputs: ExampleInputs, is_leaf: Callable[[nn.Module], bool]) -> Recording:
    """Trace ``model`` with ``torch.fx`` and record it as steps; :class:`FxUnavailable` when fx cannot."""
    args, kwargs = as_call_args(example_inputs)
    if kwargs:
        raise FxUnavailable("the model is called with keyword arguments")
    for path, module, name in pruned_tensors(model):
        if not is_leaf(module):
            raise FxUnavailable(f"{path or 'the model'}.{name} is a pruned tensor of a module without a layer rule")
    try:
        with _functions_refused():
            graph = _Tracer(is_leaf).trace(model)
        module = fx.GraphModule(model, graph)
    except FxUnavailable:
        raise
    except Exception as error:
        raise FxUnavailable(f"{type(error).__name__}: {error}") from error
    run = _Run(module)
    try:
        with buffers_kept(model), uncached(), torch.no_grad():
            run.run(*args)
    except Exception as error:
        raise FxUnavailable(f"the traced graph does not run: {type(error).__name__}: {error}") from error
    return _steps(model, graph, run.results)


def _steps(model: nn.Module, graph: fx.Graph, results: dict[fx.Node, Any]) -> Recording:
    keys, tied = tensor_keys(model)
    by_path = {}
    for path, owner in model.named_modules():
        for store, is_parameter in ((owner._parameters, True), (owner._buffers, False)):
            for name, tensor in store.items():
                if tensor is not None:
                    by_path[f"{path}.{name}" if path else name] = keys.get(id(tensor), ((path, name), is_parameter))
    values: list[Value] = []
    tensors: dict[TensorKey, Value] = {}

    def new(result: Tensor, **info: Any) -> Value:
        value = Value(len(values), tuple(result.shape), **info)
        values.append(value)
        return value

    produced: dict[fx.Node, Any] = {}  # node -> Value, a tree of Values, or a plain Python value
    steps: list[Step] = []
    inputs: list[Value] = []
    outputs: list[Value] = []

    def lookup(item: Any) -> Any:
        if isinstance(item, fx.Node):
            return produced.get(item, results.get(item))
        return item

    for node in graph.nodes:
        result = results.get(node)
        where = _where(node)
        if node.op == "placeholder":
            produced[node] = _map(lambda t: new(t, origin="input") if isinstance(t, Tensor) else t, result)
            inputs.extend(v for v in leaves(produced[node]) if isinstance(v, Value))
            continue
        if node.op == "get_attr":
            found = by_path.get(str(node.target))
            if isinstance(result, Tensor) and found is not None:
                key, is_parameter = found
                if key not in tensors:
                    tensors[key] = new(result, tensor=key, parameter=is_parameter, origin="tensor")
                produced[node] = tensors[key]
            else:
                produced[node] = _map(lambda t: new(t, origin="constant") if isinstance(t, Tensor) else t, result)
            continue
        if node.op == "output":
            flat = leaves(_map(lookup, node.args[0]))
            outputs = [v for v in flat if isinstance(v, Value)]
            continue
        call_args = _map(lookup, node.args)
        call_kwargs = _map(lookup, dict(node.kwargs))
        name = _name(node)
        if node.target is operator.getitem and isinstance(call_args[0], (tuple, list)):
            produced[node] = call_args[0][call_args[1]]  # an element of a tuple output
            continue
        if not any(isinstance(t, Tensor) for t in leaves(result)):
            produced[node] = result  # a number, a size: the rules read it as a plain value
            continue
        out = _map(lambda t: new(t) if isinstance(t, Tensor) else t, result)
        produced[node] = out
        out_values = tuple(v for v in leaves(out) if isinstance(v, Value))
        if node.op == "call_module":
            sub = model.get_submodule(str(node.target))
            steps.append(
                Step(
                    type(sub).__name__,
                    None,
                    tuple(call_args),
                    call_kwargs,
                    out_values,
                    str(node.target),
                    sub,
                    str(node.target),
                )
            )
        else:
            if node.op == "call_method":
                call_args = tuple(call_args)
            steps.append(
                Step(
                    name,
                    node.target if callable(node.target) else None,
                    tuple(call_args),
                    call_kwargs,
                    out_values,
                    where,
                )
            )
    return Recording(steps, inputs, outputs, values, tensors, tied)


def _map(function: Callable[[Any], Any], tree: Any) -> Any:
    """``function`` applied to the items of nested tuples, lists and dicts (a call's arguments, a result)."""
    if isinstance(tree, tuple):
        return tuple(_map(function, item) for item in tree)
    if isinstance(tree, list):
        return [_map(function, item) for item in tree]
    if isinstance(tree, dict):
        return {key: _map(function, item) for key, item in tree.items()}
    return function(tree)


def _where(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack")
    if stack:
        return str(list(stack)[-1])
    return ""
