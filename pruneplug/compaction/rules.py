"""What each operation couples: the rules that turn a recorded run into channel constraints.

Every dimension of every tensor in the run is a *slot*; its entries are
indices along that dimension. A rule says, for one recorded step:

* which slots are the same channels (``tie``: entry *i* of one is entry *i*
  of the other: an element-wise op, a convolution's output channels and its
  weight's rows, a BatchNorm's channels and its four tensors);
* which entries are coupled across slots of different sizes (``link``:
  concatenation offsets, split pieces, one channel and its HxW features after
  a flatten, the q/k/v rows of an attention block);
* which slots are the channel dimensions of a module's weights
  (``declare``: only these start a group; batch, spatial and token dims never
  reach one);
* which slots may never shrink (``pin``: the model's inputs and outputs, a
  reduction or softmax over the dim, a divisor, a tensor made outside the
  run) and which the graph does not understand (``taint``: every dim of an
  unknown op's inputs and outputs, reported once by name);
* which slots must keep the same number of channels per block (``block``:
  grouped convolutions, GroupNorm groups, attention heads), and which are
  read by a normalization whose statistics span channels (``norm``).

An operation with no rule taints what it touches, so the groups around it
are left unpruned: the graph never guesses (Torch-Pruning treats unknown
operations as element-wise, which can build a wrong model).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..core.norms import is_rms_norm_like
from ..layers import is_transposed_linear
from .resize import tensor_shape
from .trace import Step, TensorKey, Value

__all__ = ["SlotSpace", "SlotInfo", "apply_rule", "is_rule_module", "Layout"]

Layout = tuple[str, int]
"""How a tensor slot's entries sit in the tensor: ``("plain", 0)``, or ``("grouped", groups)`` for the
input channels of a grouped convolution's weight (entry ``i`` is column ``i % (in/groups)`` of the rows of
block ``i // (in/groups)``)."""

PLAIN: Layout = ("plain", 0)


@dataclass(frozen=True)
class SlotInfo:
    """One dimension of one tensor of the run."""

    size: int
    value: int | None  # index of the run's value, for activations
    tensor: TensorKey | None  # for parameters and buffers
    dim: int
    parameter: bool = False
    layout: Layout = PLAIN


@dataclass
class Reshape:
    """A view/reshape whose dims do not map one to one: entries are linked once channels are known."""

    inputs: list[int]
    outputs: list[int]
    inferred: int | None = None  # the output slot whose size the forward left to torch (-1, or a flatten)


class SlotSpace:
    """The slots of a run and the constraints the rules put on them."""

    def __init__(self) -> None:
        self.infos: list[SlotInfo] = []
        self._index: dict[tuple[Any, ...], int] = {}
        self.ties: list[tuple[int, int]] = []
        self.links: list[tuple[int, Tensor, int, Tensor]] = []
        self.declared: set[int] = set()
        self.pins: dict[int, str] = {}
        self.taints: dict[int, tuple[str, str]] = {}  # slot -> (op name, module path)
        self.blocks: list[tuple[int, int, str]] = []  # (slot, number of blocks, what)
        self.norms: dict[int, str] = {}  # slot -> qualified name of a norm whose statistics span it
        self.reshapes: list[Reshape] = []
        self.leaves: dict[str, nn.Module] = {}
        self.aliases: dict[TensorKey, TensorKey] = {}  # another name of a tied tensor -> its first name
        # modules whose split sizes are attributes compaction rewrites (GPT-2's split_size): their equal
        # splits are chunks, whose pieces may shrink alike
        self.elastic_splits: set[str] = set()

    # -- slots ------------------------------------------------------------------------------------
    def _slot(self, key: tuple[Any, ...], info: SlotInfo) -> int:
        slot = self._index.get(key)
        if slot is None:
            slot = len(self.infos)
            self._index[key] = slot
            self.infos.append(info)
        return slot

    def of(self, value: Value, dim: int) -> int:
        """The slot of ``value``'s dim ``dim`` (a parameter's value shares the parameter's slots)."""
        dim = dim % len(value.shape)
        if value.tensor is not None:
            return self.tensor(value.tensor, dim, value.shape[dim], parameter=value.parameter)
        return self._slot(("v", value.index, dim), SlotInfo(value.shape[dim], value.index, None, dim))

    def tensor(self, key: TensorKey, dim: int, size: int, *, parameter: bool = True, layout: Layout = PLAIN) -> int:
        """The slot of dim ``dim`` of the model's tensor ``key`` (with ``layout``, a view of it).

        A tied tensor has one slot per dim whatever name it is reached by.
        """
        key = self.aliases.get(key, key)
        return self._slot(("t", key, dim, layout), SlotInfo(size, None, key, dim, parameter, layout))

    def all_of(self, value: Value) -> list[int]:
        return [self.of(value, d) for d in range(len(value.shape))]

    # -- constraints ------------------------------------------------------------------------------
    def tie(self, a: int, b: int) -> None:
        if a != b and self.infos[a].size == self.infos[b].size:
            self.ties.append((a, b))

    def link(self, a: int, index_a: Tensor, b: int, index_b: Tensor) -> None:
        self.links.append((a, index_a.reshape(-1).long(), b, index_b.reshape(-1).long()))

    def declare(self, *slots: int) -> None:
        self.declared.update(slots)

    def pin(self, slot: int, why: str) -> None:
        self.pins.setdefault(slot, why)

    def taint(self, slot: int, op: str, where: str) -> None:
        self.taints.setdefault(slot, (op, where))

    def block(self, slot: int, blocks: int, what: str) -> None:
        if blocks > 1:
            self.blocks.append((slot, blocks, what))

    def tie_values(self, a: Value, b: Value, dims: Sequence[int] | None = None) -> None:
        """Tie ``a`` and ``b`` dim for dim (all dims, or ``dims``), where the sizes agree."""
        if len(a.shape) != len(b.shape):
            return
        for d in range(len(a.shape)) if dims is None else dims:
            self.tie(self.of(a, d), self.of(b, d))


# -- helpers ---------------------------------------------------------------------------------------


def _arg(step: Step, position: int, name: str, default: Any = None) -> Any:
    if name in step.kwargs:
        return step.kwargs[name]
    if len(step.args) > position:
        return step.args[position]
    return default


def _taint_all(space: SlotSpace, step: Step, why: str | None = None) -> None:
    for value in [*step.inputs(), *step.outputs]:
        for slot in space.all_of(value):
            space.taint(slot, why or step.name, step.where)


def _pin_all(space: SlotSpace, values: Sequence[Value], why: str) -> None:
    for value in values:
        for slot in space.all_of(value):
            space.pin(slot, why)


def _broadcast(space: SlotSpace, inputs: Sequence[Value], output: Value) -> None:
    """Element-wise with broadcasting: dims aligned from the right; a size-1 dim couples nothing."""
    for value in inputs:
        for k in range(1, min(len(value.shape), len(output.shape)) + 1):
            if value.shape[-k] == output.shape[-k]:
                space.tie(space.of(value, -k), space.of(output, -k))


def _module_tensor(space: SlotSpace, path: str, module: nn.Module, name: str, dim: int, **kw: Any) -> int | None:
    shape = tensor_shape(module, name)
    if shape is None:
        return None
    parameter = name in module._parameters or name + "_orig" in module._parameters
    return space.tensor((path, name), dim, shape[dim], parameter=parameter, **kw)


def _dims(value: Any, ndim: int) -> list[int]:
    if value is None:
        return list(range(ndim))
    if isinstance(value, int):
        return [value % ndim]
    return [int(d) % ndim for d in value]


# -- element-wise ----------------------------------------------------------------------------------

_ELEMENTWISE = {
    *[
        "add",
        "sub",
        "mul",
        "where",
        "maximum",
        "minimum",
        "fmax",
        "fmin",
        "clamp",
        "clip",
        "relu",
        "relu6",
        "hardtanh",
        "leaky_relu",
        "gelu",
        "silu",
        "hardswish",
        "mish",
        "tanh",
        "sigmoid",
        "hardsigmoid",
        "elu",
        "selu",
        "celu",
        "softplus",
        "softsign",
        "exp",
        "expm1",
        "neg",
        "abs",
        "sin",
        "cos",
        "dropout",
        "dropout1d",
        "dropout2d",
        "dropout3d",
        "alpha_dropout",
        "feature_alpha_dropout",
        "threshold",
        "logsigmoid",
        "square",
        "erf",
        "sign",
        "floor",
        "ceil",
        "round",
        "trunc",
        "tanhshrink",
        "hardshrink",
        "softshrink",
        "silu_",
        "rrelu",
        "glu_",
        "masked_fill",
        "lerp",
        "contiguous",
        "clone",
        "detach",
        "to",
        "float",
        "half",
        "double",
        "bfloat16",
        "type_as",
        "cpu",
        "cuda",
        "requires_grad_",
        "data",
        "zeros_like",
        "ones_like",
        "empty_like",
        "full_like",
        "rand_like",
        "randn_like",
        "nan_to_num",
        "sigmoid_",
        "tanh_",
        "relu_",
        "add_",
        "mul_",
        "sub_",
        "clamp_",
        "clip_",
        "hardtanh_",
        "leaky_relu_",
        "elu_",
        "masked_fill_",
        "copy_",
        "fill_",
        "zero_",
        "addcmul",
    ],
    *[
        f"__{op}__"
        for op in [
            "add",
            "radd",
            "iadd",
            "sub",
            "rsub",
            "isub",
            "mul",
            "rmul",
            "imul",
            "neg",
            "pos",
            "abs",
            "and",
            "or",
            "xor",
        ]
    ],
    *[
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "__eq__",
        "__ne__",
        "__lt__",
        "__le__",
        "__gt__",
        "__ge__",
        "logical_and",
        "logical_or",
        "logical_not",
    ],
}
_DIVIDING = {"div", "div_", "true_divide", "__truediv__", "__itruediv__", "floor_divide", "__floordiv__", "remainder"}
_INFINITE_AT_ZERO = {"log", "log2", "log10", "log_", "rsqrt", "rsqrt_", "reciprocal", "reciprocal_", "__rtruediv__"}


def _elementwise(space: SlotSpace, step: Step) -> None:
    _broadcast(space, step.inputs(), step.outputs[0])
    if step.name in _DIVIDING:
        divisor = step.args[1] if len(step.args) > 1 else step.kwargs.get("other")
        if isinstance(divisor, Value):
            _pin_all(space, [divisor], f"divides by it ({step.name} at {step.where or 'the model'})")
    if step.name in _INFINITE_AT_ZERO:
        _pin_all(space, step.inputs(), f"{step.name} is infinite at 0 (at {step.where or 'the model'})")
    if step.name in {"pow", "__pow__", "pow_"}:
        exponent = step.args[1] if len(step.args) > 1 else step.kwargs.get("exponent")
        if isinstance(exponent, Value) or (isinstance(exponent, (int, float)) and exponent < 0):
            _pin_all(space, step.inputs(), f"{step.name} with a negative or tensor exponent")


# -- shape ops -------------------------------------------------------------------------------------


def _reshape(space: SlotSpace, source: Value, target: Value, inferred: int | None = None) -> None:
    """Pair dims by equal products; one-to-one pairs are ties, the rest are resolved later."""
    ins = [d for d, n in enumerate(source.shape) if n > 1]
    outs = [d for d, n in enumerate(target.shape) if n > 1]
    i = j = 0
    while i < len(ins) and j < len(outs):
        group_in, group_out = [ins[i]], [outs[j]]
        p, q = source.shape[ins[i]], target.shape[outs[j]]
        while p != q:
            if p < q:
                i += 1
                if i >= len(ins):
                    break
                group_in.append(ins[i])
                p *= source.shape[ins[i]]
            else:
                j += 1
                if j >= len(outs):
                    break
                group_out.append(outs[j])
                q *= target.shape[outs[j]]
        if p != q:
            break
        if len(group_in) == 1 and len(group_out) == 1:
            space.tie(space.of(source, group_in[0]), space.of(target, group_out[0]))
        else:
            space.reshapes.append(
                Reshape(
                    [space.of(source, d) for d in group_in],
                    [space.of(target, d) for d in group_out],
                    space.of(target, inferred) if inferred is not None and inferred in group_out else None,
                )
            )
        i += 1
        j += 1


def _shape_change(space: SlotSpace, step: Step) -> None:
    source = step.inputs()[0]
    _reshape(space, source, step.outputs[0], _inferred_dim(step, len(step.outputs[0].shape)))


def _inferred_dim(step: Step, ndim: int) -> int | None:
    """The output dim whose size the call leaves to torch: a ``-1`` in view/reshape/unflatten, a flatten's dim.

    Only such a size follows when channels go; a number written in the
    forward (``reshape(B, N, self.heads, -1)``'s heads) stays as it is.
    """
    if step.name == "flatten":
        return int(_arg(step, 1, "start_dim", 0)) % max(ndim, 1)
    if step.name in {"view", "reshape"}:
        sizes: Any = step.args[1:] if len(step.args) > 1 else step.kwargs.get("shape", ())
        if len(sizes) == 1 and isinstance(sizes[0], (list, tuple, torch.Size)):
            sizes = sizes[0]
        found = [i for i, size in enumerate(sizes) if isinstance(size, int) and size == -1]
        return found[0] if len(found) == 1 and len(sizes) == ndim else None
    if step.name == "unflatten":
        dim, sizes = _arg(step, 1, "dim"), _arg(step, 2, "sizes", ())
        found = [i for i, size in enumerate(sizes) if isinstance(size, int) and size == -1]
        return (int(dim) % max(ndim - len(sizes) + 1, 1)) + found[0] if len(found) == 1 else None
    return None


def _permutation(step: Step, ndim: int) -> list[int] | None:
    name = step.name
    if name == "permute":
        dims = step.args[1:] if len(step.args) > 1 else step.kwargs.get("dims", ())
        if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
            dims = dims[0]
        return [int(d) % ndim for d in dims]
    order = list(range(ndim))
    if name in {"transpose", "swapaxes", "swapdims", "transpose_"}:
        a, b = int(_arg(step, 1, "dim0")) % ndim, int(_arg(step, 2, "dim1")) % ndim
        order[a], order[b] = order[b], order[a]
        return order
    if name in {"t", "T"}:
        return order[::-1] if ndim == 2 else order
    if name == "mT" and ndim >= 2:
        order[-1], order[-2] = order[-2], order[-1]
        return order
    if name in {"movedim", "moveaxis"}:
        source, destination = _arg(step, 1, "source"), _arg(step, 2, "destination")
        src = _dims(source, ndim)
        dst = _dims(destination, ndim)
        rest = [d for d in range(ndim) if d not in src]
        result: list[int | None] = [None] * ndim
        for s, d in zip(src, dst, strict=True):
            result[d] = s
        fill = iter(rest)
        return [r if r is not None else next(fill) for r in result]
    return None


def _permute(space: SlotSpace, step: Step) -> None:
    source, target = step.inputs()[0], step.outputs[0]
    order = _permutation(step, len(source.shape))
    if order is None or len(order) != len(target.shape):
        _taint_all(space, step)
        return
    for out_dim, in_dim in enumerate(order):
        space.tie(space.of(source, in_dim), space.of(target, out_dim))


def _expand(space: SlotSpace, step: Step) -> None:
    _broadcast(space, step.inputs()[:1], step.outputs[0])


def _repeat(space: SlotSpace, step: Step) -> None:
    source, target = step.inputs()[0], step.outputs[0]
    for k in range(1, len(source.shape) + 1):
        if source.shape[-k] == target.shape[-k]:
            space.tie(space.of(source, -k), space.of(target, -k))
        else:
            space.pin(space.of(source, -k), f"repeated along this dim ({step.where or 'the model'})")
            space.pin(space.of(target, -k), f"repeated along this dim ({step.where or 'the model'})")


def _offsets(space: SlotSpace, pieces: Sequence[Value], whole: Value, dim: int) -> None:
    """``whole`` is ``pieces`` laid end to end along ``dim``: tie the other dims, link the offsets."""
    offset = 0
    for piece in pieces:
        if len(piece.shape) != len(whole.shape):
            return
        for d in range(len(whole.shape)):
            if d != dim:
                space.tie(space.of(piece, d), space.of(whole, d))
        n = piece.shape[dim]
        if n:
            local = torch.arange(n)
            space.link(space.of(piece, dim), local, space.of(whole, dim), local + offset)
        offset += n


def _cat(space: SlotSpace, step: Step) -> None:
    pieces = [v for v in _arg(step, 0, "tensors", ()) if isinstance(v, Value)]
    whole = step.outputs[0]
    dim = int(_arg(step, 1, "dim", 0)) % len(whole.shape)
    pieces = [p for p in pieces if p.shape != (0,)]  # torch.cat skips empty 1-d tensors
    _offsets(space, pieces, whole, dim)


def _split(space: SlotSpace, step: Step) -> None:
    whole = step.inputs()[0]
    dim = int(_arg(step, 1, "dim", 0) if step.name == "unbind" else _arg(step, 2, "dim", 0)) % len(whole.shape)
    if step.name == "unbind":  # each piece is one index of dim, which it drops
        for piece in step.outputs:
            for d in range(len(piece.shape)):
                space.tie(space.of(piece, d), space.of(whole, d if d < dim else d + 1))
        space.pin(space.of(whole, dim), f"unbound into single slices ({step.where or 'the model'})")
        return
    _offsets(space, step.outputs, whole, dim)
    elastic = step.name == "split" and step.where in space.elastic_splits
    if step.name != "chunk" and not elastic:  # split sizes are numbers in the forward's code: pieces cannot shrink
        space.pin(space.of(whole, dim), f"{step.name} into pieces of fixed sizes ({step.where or 'the model'})")
        return
    sizes = {piece.shape[dim] for piece in step.outputs}
    if len(sizes) == 1 and len(step.outputs) > 1:
        space.block(
            space.of(whole, dim), len(step.outputs), f"the {len(step.outputs)} chunks at {step.where or 'the model'}"
        )
    elif len(sizes) > 1:
        space.pin(space.of(whole, dim), f"chunked into unequal pieces ({step.where or 'the model'})")


def _narrow(space: SlotSpace, step: Step) -> None:
    whole, piece = step.inputs()[0], step.outputs[0]
    dim = int(_arg(step, 1, "dim")) % len(whole.shape)
    start = int(_arg(step, 2, "start")) % max(whole.shape[dim], 1)
    for d in range(len(whole.shape)):
        if d != dim:
            space.tie(space.of(whole, d), space.of(piece, d))
    local = torch.arange(piece.shape[dim])
    space.link(space.of(piece, dim), local, space.of(whole, dim), local + start)
    if piece.shape[dim] != whole.shape[dim]:
        space.pin(space.of(whole, dim), f"narrowed by fixed bounds ({step.where or 'the model'})")


def _stack(space: SlotSpace, step: Step) -> None:
    pieces = [v for v in _arg(step, 0, "tensors", ()) if isinstance(v, Value)]
    whole = step.outputs[0]
    dim = int(_arg(step, 1, "dim", 0)) % len(whole.shape)
    for piece in pieces:
        for d in range(len(piece.shape)):
            space.tie(space.of(piece, d), space.of(whole, d if d < dim else d + 1))


def _getitem(space: SlotSpace, step: Step) -> None:
    source, target = step.inputs()[0], step.outputs[0]
    index = step.args[1] if len(step.args) > 1 else ()
    if not isinstance(index, tuple):
        index = (index,)
    if any(
        isinstance(item, (Value, list))
        or (item is not None and not isinstance(item, (int, slice)) and item is not Ellipsis)
        for item in index
    ):
        _taint_all(space, step, "advanced indexing")
        return
    n_real = sum(1 for item in index if item is not None and item is not Ellipsis)
    expanded: list[Any] = []
    for item in index:
        if item is Ellipsis:
            expanded.extend([slice(None)] * (len(source.shape) - n_real))
        else:
            expanded.append(item)
    expanded.extend([slice(None)] * (len(source.shape) - sum(1 for i in expanded if i is not None)))
    d_in = d_out = 0
    for item in expanded:
        if item is None:
            d_out += 1
            continue
        slot_in = space.of(source, d_in)
        if isinstance(item, int):
            space.pin(slot_in, f"one index taken ({step.where or 'the model'})")
            d_in += 1
            continue
        start, stop, stride = item.indices(source.shape[d_in])
        picked = torch.arange(start, stop, stride)
        slot_out = space.of(target, d_out)
        if len(picked) == source.shape[d_in]:
            space.tie(slot_in, slot_out)
        else:  # the bounds are numbers in the forward's code: in fewer channels they would pick others
            if len(picked):
                space.link(slot_out, torch.arange(len(picked)), slot_in, picked)
            space.pin(slot_in, f"sliced by fixed bounds ({step.where or 'the model'})")
        d_in += 1
        d_out += 1


# -- reductions, contractions ----------------------------------------------------------------------

_REDUCTIONS = {
    *[
        "sum",
        "mean",
        "nansum",
        "nanmean",
        "amax",
        "amin",
        "std",
        "var",
        "std_mean",
        "var_mean",
        "prod",
        "logsumexp",
        "norm",
        "argmax",
        "argmin",
        "all",
        "any",
        "median",
        "nanmedian",
        "count_nonzero",
    ]
}
_ALONG = {"softmax", "log_softmax", "cumsum", "cumprod", "cummax", "cummin", "sort", "argsort", "topk", "flip"}


def _reduction(space: SlotSpace, step: Step) -> None:
    source, target = step.inputs()[0], step.outputs[0]
    ndim = len(source.shape)
    if step.name in {"max", "min"}:
        other = _arg(step, 1, "dim")
        if isinstance(other, Value):  # torch.max(a, b): element-wise
            _broadcast(space, step.inputs(), target)
            return
    dims = _dims(_arg(step, 1, "dim"), ndim) if ndim else []
    if step.name == "norm":
        dims = _dims(_arg(step, 2, "dim"), ndim)
    for d in dims:
        space.pin(space.of(source, d), f"{step.name} over this dim ({step.where or 'the model'})")
    rest = [d for d in range(ndim) if d not in dims]
    for target in step.outputs:  # (var_mean, std_mean, max with dim: several outputs of one shape)
        if len(target.shape) == ndim:
            for d in rest:
                space.tie(space.of(source, d), space.of(target, d))
        elif len(target.shape) == len(rest):
            for out_dim, in_dim in enumerate(rest):
                space.tie(space.of(source, in_dim), space.of(target, out_dim))


def _along(space: SlotSpace, step: Step) -> None:
    source = step.inputs()[0]
    ndim = len(source.shape)
    if step.name == "flip":
        dims = _dims(_arg(step, 1, "dims"), ndim)
    else:
        dims = _dims(_arg(step, 1, "dim", -1), ndim)
    for d in dims:
        space.pin(space.of(source, d), f"{step.name} along this dim ({step.where or 'the model'})")
    for target in step.outputs:
        if target.shape == source.shape:
            space.tie_values(source, target, [d for d in range(ndim) if d not in dims])


def _matmul(space: SlotSpace, step: Step) -> None:
    values = step.inputs()
    if len(values) != 2 or len(values[0].shape) < 2 or len(values[1].shape) < 2:
        _taint_all(space, step)
        return
    a, b = values
    out = step.outputs[0]
    space.tie(space.of(a, -2), space.of(out, -2))
    space.tie(space.of(b, -1), space.of(out, -1))
    space.tie(space.of(a, -1), space.of(b, -2))
    why = f"contracted by {step.name} with another activation ({step.where or 'the model'})"
    space.pin(space.of(a, -1), why)
    for value in (a, b):
        for k in range(3, min(len(value.shape), len(out.shape)) + 1):
            if value.shape[-k] == out.shape[-k]:
                space.tie(space.of(value, -k), space.of(out, -k))


def _sdpa(space: SlotSpace, step: Step) -> None:
    q, k, v = (_arg(step, i, n) for i, n in enumerate(("query", "key", "value")))
    out = step.outputs[0]
    if not all(isinstance(x, Value) for x in (q, k, v)):
        _taint_all(space, step)
        return
    why = f"the attention scale depends on the query size ({step.where or 'the model'})"
    space.tie(space.of(q, -1), space.of(k, -1))
    space.pin(space.of(q, -1), why)
    space.tie(space.of(v, -1), space.of(out, -1))
    space.tie(space.of(q, -2), space.of(out, -2))
    space.tie(space.of(k, -2), space.of(v, -2))
    space.pin(space.of(k, -2), f"attended over ({step.where or 'the model'})")
    for x in (q, k, v):
        for d in range(1, min(len(x.shape), len(out.shape)) - 1):
            space.tie(space.of(x, -d - 2), space.of(out, -d - 2))
    if len(q.shape) >= 3 and len(k.shape) == len(q.shape) and k.shape[-3] != q.shape[-3]:
        # enable_gqa: key/value head j serves query heads j*r .. j*r+r-1 (as repeat_interleave would)
        heads, kv_heads = q.shape[-3], k.shape[-3]
        if kv_heads and heads % kv_heads == 0:
            query_heads = torch.arange(heads)
            for x in (k, v):
                space.link(space.of(x, -3), query_heads // (heads // kv_heads), space.of(q, -3), query_heads)


# -- spatial ops -----------------------------------------------------------------------------------


def _spatial(space: SlotSpace, step: Step) -> None:
    """Pooling, interpolation, padding: batch and channel dims pass through, the spatial ones do not."""
    source, target = step.inputs()[0], step.outputs[0]
    if len(target.shape) != len(source.shape):
        _taint_all(space, step)
        return
    match = re.search(r"([123])d", step.name)
    if step.name == "pad":
        spatial = len(_arg(step, 1, "pad", ())) // 2
    else:
        spatial = int(match.group(1)) if match else len(source.shape) - 2
    keep = len(source.shape) - spatial
    for d in range(len(source.shape)):
        a, b = space.of(source, d), space.of(target, d)
        if d < keep or (step.name == "pad" and source.shape[d] == target.shape[d]):
            space.tie(a, b)
        else:
            why = f"{step.name} works along this dim ({step.where or 'the model'})"
            space.pin(a, why)
            space.pin(b, why)


# -- layers, functional and as modules -------------------------------------------------------------


@dataclass
class _Layer:
    """The tensors of one layer call, as slots: what the layer rules work on."""

    space: SlotSpace
    step: Step
    weight: Callable[[int], int | None]
    bias: Callable[[int], int | None]
    extra: Callable[[str, int], int | None]
    groups: int = 1
    weight_key: TensorKey | None = None


def _conv(layer: _Layer, x: Value, y: Value, spatial: int, transposed: bool, weight_shape: tuple[int, ...]) -> None:
    space, groups = layer.space, layer.groups
    c = len(x.shape) - spatial - 1
    if c not in (0, 1):
        _taint_all(space, layer.step)
        return
    if c == 1:
        space.tie(space.of(x, 0), space.of(y, 0))
    out_dim, in_dim = (1, 0) if transposed else (0, 1)
    w_out = layer.weight(out_dim)
    bias = layer.bias(0)
    if w_out is None:
        _taint_all(space, layer.step)
        return
    x_c, y_c = space.of(x, c), space.of(y, c)
    if transposed:
        if groups != 1:
            _taint_all(space, layer.step, "grouped ConvTranspose")
            return
        w_in = layer.weight(in_dim)
        assert w_in is not None
        space.tie(x_c, w_in)
        space.tie(y_c, w_out)
        space.declare(w_in, w_out)
    elif groups == 1:
        w_in = layer.weight(in_dim)
        assert w_in is not None
        space.tie(x_c, w_in)
        space.tie(y_c, w_out)
        space.declare(w_in, w_out)
    else:
        in_per_group = weight_shape[1]
        out_channels = weight_shape[0]
        space.tie(y_c, w_out)
        space.declare(w_out)
        if in_per_group == 1:  # depthwise (with a channel multiplier m: input c feeds rows c*m..c*m+m-1)
            m = out_channels // groups
            rows = torch.arange(out_channels)
            space.link(x_c, rows // m, w_out, rows)
        else:
            key = layer.weight_key
            if key is None:
                _taint_all(space, layer.step, "grouped convolution with a computed weight")
                return
            virtual = space.tensor(key, 1, in_per_group * groups, layout=("grouped", groups))
            space.tie(x_c, virtual)
            space.declare(virtual)
            space.block(virtual, groups, f"the {groups} groups of {layer.step.path}")
            space.block(w_out, groups, f"the {groups} groups of {layer.step.path}")
    if bias is not None:
        space.tie(w_out, bias)
        space.declare(bias)


def _linear(layer: _Layer, x: Value, y: Value) -> None:
    space = layer.space
    w_out, w_in, bias = layer.weight(0), layer.weight(1), layer.bias(0)
    if w_out is None or w_in is None:
        _taint_all(space, layer.step)
        return
    space.tie(space.of(x, -1), w_in)
    space.tie(space.of(y, -1), w_out)
    space.declare(w_in, w_out)
    if bias is not None:
        space.tie(w_out, bias)
        space.declare(bias)
    space.tie_values(x, y, range(len(x.shape) - 1))


def _per_channel_norm(layer: _Layer, x: Value, y: Value, names: Sequence[str]) -> None:
    space = layer.space
    c = 1 if len(x.shape) >= 2 else 0
    x_c = space.of(x, c)
    space.tie_values(x, y)
    for name in names:
        slot = layer.extra(name, 0)
        if slot is not None:
            space.tie(x_c, slot)
            space.declare(slot)


def _module_layer(space: SlotSpace, step: Step) -> _Layer:
    module, path = step.module, step.path or ""
    assert module is not None

    def weight(dim: int) -> int | None:
        return _module_tensor(space, path, module, "weight", dim)

    def bias(dim: int) -> int | None:
        return _module_tensor(space, path, module, "bias", dim)

    def extra(name: str, dim: int) -> int | None:
        return _module_tensor(space, path, module, name, dim)

    return _Layer(space, step, weight, bias, extra, int(getattr(module, "groups", 1)), (path, "weight"))


def _first_io(step: Step) -> tuple[Value, Value] | None:
    inputs = step.inputs()
    if not inputs or not step.outputs:
        return None
    return inputs[0], step.outputs[0]


def _module_rule(space: SlotSpace, step: Step) -> None:
    module = step.module
    assert module is not None
    path = step.path or ""
    space.leaves[path] = module
    io = _first_io(step)
    if io is None:
        return
    x, y = io
    layer = _module_layer(space, step)
    shape = tensor_shape(module, "weight")
    if isinstance(module, nn.modules.conv._ConvNd):
        spatial = len(module.kernel_size)
        assert shape is not None
        _conv(layer, x, y, spatial, bool(module.transposed), shape)
    elif isinstance(module, nn.Linear):
        _linear(layer, x, y)
    elif is_transposed_linear(module):  # GPT-2's Conv1D: weight (in, out)
        transposed = _Layer(space, step, lambda d: layer.weight(1 - d), layer.bias, layer.extra)
        _linear(transposed, x, y)
    elif isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
        _per_channel_norm(layer, x, y, ("weight", "bias", "running_mean", "running_var"))
    elif isinstance(module, nn.GroupNorm):
        _per_channel_norm(layer, x, y, ("weight", "bias"))
        channels = space.of(x, 1)
        space.norms[channels] = path
        space.block(channels, module.num_groups, f"the {module.num_groups} groups of {path}")
    elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)) or is_rms_norm_like(module):
        space.tie_values(x, y)
        normalized: tuple[int, ...] = tuple(getattr(module, "normalized_shape", (0,)))  # (RMSNorm-like: the last)
        if len(normalized) != 1:
            for k in range(1, len(normalized) + 1):
                space.pin(space.of(x, -k), f"normalized over several dims ({path})")
            return
        channels = space.of(x, -1)
        space.norms[channels] = path
        for name in ("weight", "bias"):
            slot = layer.extra(name, 0)
            if slot is not None:
                space.tie(channels, slot)
                space.declare(slot)
        space.declare(channels)
    elif isinstance(module, nn.Embedding):
        w_rows, w_cols = layer.weight(0), layer.weight(1)
        assert w_rows is not None and w_cols is not None
        space.pin(w_rows, f"the vocabulary of {path}")
        space.tie(space.of(y, -1), w_cols)
        space.declare(w_cols)
    elif isinstance(module, nn.PReLU):
        space.tie_values(x, y)
        if module.num_parameters > 1:
            slot = layer.weight(0)
            assert slot is not None
            space.tie(space.of(x, 1 if len(x.shape) >= 2 else 0), slot)
            space.declare(slot)
    elif isinstance(module, nn.MultiheadAttention):
        _attention(space, step, module, path)
    else:
        _taint_all(space, step, type(module).__name__)


def _attention(space: SlotSpace, step: Step, module: nn.MultiheadAttention, path: str) -> None:
    """``nn.MultiheadAttention``: one embed channel couples its q/k/v rows, out_proj row and column."""
    if not module._qkv_same_embed_dim:
        _taint_all(space, step, "MultiheadAttention with kdim/vdim")
        return
    inputs = [v for v in step.args[:3] if isinstance(v, Value)]
    for name in ("query", "key", "value"):
        value = step.kwargs.get(name)
        if isinstance(value, Value):
            inputs.append(value)
    embed = module.embed_dim
    in_cols = _module_tensor(space, path, module, "in_proj_weight", 1)
    in_rows = _module_tensor(space, path, module, "in_proj_weight", 0)
    out_rows = _module_tensor(space, path + ".out_proj" if path else "out_proj", module.out_proj, "weight", 0)
    out_cols = _module_tensor(space, path + ".out_proj" if path else "out_proj", module.out_proj, "weight", 1)
    assert in_cols is not None and in_rows is not None and out_rows is not None and out_cols is not None
    for value in inputs:
        space.tie(space.of(value, -1), in_cols)
    e = torch.arange(embed)
    space.link(in_rows, torch.cat([e, e + embed, e + 2 * embed]), in_cols, torch.cat([e, e, e]))
    space.tie(out_cols, in_cols)
    space.tie(out_rows, in_cols)
    space.declare(in_cols, in_rows, out_rows, out_cols)
    in_bias = _module_tensor(space, path, module, "in_proj_bias", 0)
    if in_bias is not None:
        space.tie(in_bias, in_rows)
        space.declare(in_bias)
    out_bias = _module_tensor(space, path + ".out_proj" if path else "out_proj", module.out_proj, "bias", 0)
    if out_bias is not None:
        space.tie(out_bias, out_rows)
        space.declare(out_bias)
    for name in ("bias_k", "bias_v"):
        slot = _module_tensor(space, path, module, name, 2)
        if slot is not None:
            space.tie(slot, in_cols)
            space.declare(slot)
    if step.outputs:
        space.tie(space.of(step.outputs[0], -1), out_rows)
    space.block(in_cols, module.num_heads, f"the {module.num_heads} heads of {path}")


def _functional_layer(space: SlotSpace, step: Step) -> None:
    """``F.conv2d``/``F.linear``/``F.batch_norm``/``F.embedding`` called outside a module with a rule."""
    name = step.name
    values = step.inputs()
    if name in {"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}:
        x = _arg(step, 0, "input")
        w = _arg(step, 1, "weight")
        b = _arg(step, 2, "bias")
        if not isinstance(w, Value) or w.tensor is None or not isinstance(x, Value):
            _taint_all(space, step, f"{name} with a computed weight")
            return
        layer = _Layer(
            space,
            step,
            lambda d: space.of(w, d),
            lambda d: space.of(b, d) if isinstance(b, Value) else None,
            lambda n, d: None,
            int(_arg(step, 6, "groups", 1) or 1),
            w.tensor,
        )
        if name == "linear":
            _linear(layer, x, step.outputs[0])
        else:
            spatial = int(name[-2])
            _conv(layer, x, step.outputs[0], spatial, "transpose" in name, w.shape)
        return
    if name in {"batch_norm", "instance_norm"}:
        x, y = values[0], step.outputs[0]
        space.tie_values(x, y)
        c = space.of(x, 1 if len(x.shape) >= 2 else 0)
        for other in values[1:]:
            space.tie(c, space.of(other, 0))
            if other.tensor is not None:
                space.declare(space.of(other, 0))
        return
    if name == "embedding":
        w = _arg(step, 1, "weight")
        if not isinstance(w, Value) or w.tensor is None:
            _taint_all(space, step)
            return
        space.pin(space.of(w, 0), "the vocabulary of an embedding")
        space.tie(space.of(step.outputs[0], -1), space.of(w, 1))
        space.declare(space.of(w, 1))
        return
    # layer_norm / group_norm / rms_norm outside a module: the statistics cannot be masked
    x, y = values[0], step.outputs[0]
    space.tie_values(x, y)
    for value in values:
        for slot in space.all_of(value):
            space.pin(slot, f"functional {name} outside a module (its statistics span the channels)")


# -- the table -------------------------------------------------------------------------------------

_RULES: dict[str, Callable[[SlotSpace, Step], None]] = {}
for _name in _ELEMENTWISE | _DIVIDING | _INFINITE_AT_ZERO | {"pow", "__pow__", "pow_", "__rpow__", "prelu"}:
    _RULES[_name] = _elementwise
for _name in [
    "view",
    "reshape",
    "flatten",
    "unflatten",
    "squeeze",
    "unsqueeze",
    "view_as",
    "reshape_as",
    "squeeze_",
    "unsqueeze_",
]:
    _RULES[_name] = _shape_change
for _name in ["permute", "transpose", "transpose_", "swapaxes", "swapdims", "t", "T", "mT", "movedim", "moveaxis"]:
    _RULES[_name] = _permute
for _name in ["expand", "expand_as", "broadcast_to"]:
    _RULES[_name] = _expand
_RULES.update({"repeat": _repeat, "cat": _cat, "concat": _cat, "concatenate": _cat})
for _name in ["split", "split_with_sizes", "chunk", "tensor_split", "unbind"]:
    _RULES[_name] = _split
_RULES.update({"narrow": _narrow, "stack": _stack, "__getitem__": _getitem})
for _name in _REDUCTIONS | {"max", "min"}:
    _RULES[_name] = _reduction
for _name in _ALONG:
    _RULES[_name] = _along
for _name in ["matmul", "__matmul__", "__rmatmul__", "bmm", "mm"]:
    _RULES[_name] = _matmul
_RULES["scaled_dot_product_attention"] = _sdpa
for _name in [
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "_max_pool1d",
    "_max_pool2d",
    "_max_pool3d",
    "max_pool1d_with_indices",
    "max_pool2d_with_indices",
    "max_pool3d_with_indices",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "_adaptive_max_pool1d",
    "_adaptive_max_pool2d",
    "_adaptive_max_pool3d",
    "adaptive_max_pool1d_with_indices",
    "adaptive_max_pool2d_with_indices",
    "adaptive_max_pool3d_with_indices",
    "interpolate",
    "upsample",
    "upsample_nearest",
    "upsample_bilinear",
    "lp_pool1d",
    "lp_pool2d",
    "pad",
]:
    _RULES[_name] = _spatial
for _name in [
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "batch_norm",
    "instance_norm",
    "embedding",
    "layer_norm",
    "group_norm",
    "rms_norm",
]:
    _RULES[_name] = _functional_layer

_RULE_MODULES: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.RMSNorm,
    nn.Embedding,
    nn.EmbeddingBag,
    nn.PReLU,
    nn.MultiheadAttention,
    nn.RNNBase,
)


def is_rule_module(module: nn.Module) -> bool:
    """Whether a module call is recorded as one step (it has a module rule, or is known to be opaque).

    Besides torch's layers: the RMSNorm classes of Hugging Face models and user code
    (:func:`pruneplug.core.norms.is_rms_norm_like`), whose ``mean`` over the channels
    would otherwise pin the hidden size.
    """
    return isinstance(module, _RULE_MODULES) or is_rms_norm_like(module) or is_transposed_linear(module)


_IGNORED = {"size", "dim", "numel", "__len__", "__bool__", "item", "tolist", "__format__", "__repr__"}


def apply_rule(space: SlotSpace, step: Step) -> None:
    """Add what ``step`` couples to ``space``; an operation without a rule taints what it touches."""
    if step.module is not None:
        _module_rule(space, step)
        return
    if step.name in _IGNORED:
        return
    if not step.inputs():  # a factory (zeros, arange): its sizes are numbers in the forward's code
        _pin_all(space, step.outputs, f"made by {step.name} with fixed sizes ({step.where or 'the model'})")
        return
    rule = _RULES.get(step.name)
    if rule is None:
        _taint_all(space, step)
        return
    rule(space, step)


def channel_digit_links(space: SlotSpace, reshape: Reshape, channel: Callable[[int], bool]) -> None:
    """Link the entries of a many-to-one (or one-to-many) reshape through the flat index, channel digits only.

    A side with one dim links every entry (it is the flat index itself); a
    side with several links only the dims that are channels (a channel ``c``
    of ``(C, H, W)`` is the ``H*W`` features ``c*H*W ...`` of the flattened
    dim); spatial digits are free. A channel side with nothing to link to on
    the other side is pinned: it could not shrink.
    """
    sides = []
    for slots in (reshape.inputs, reshape.outputs):
        sizes = [space.infos[s].size for s in slots]
        total = math.prod(sizes)
        flat = torch.arange(total)
        digits = []
        stride = total
        for slot, size in zip(slots, sizes, strict=True):
            stride //= size
            if len(slots) == 1 or channel(slot):
                digits.append((slot, (flat // stride) % size))
        sides.append((slots, digits))
    (_, in_digits), (_, out_digits) = sides
    slots = reshape.outputs
    if not out_digits and in_digits and len(slots) > 1 and reshape.inferred == slots[0]:
        # One channel dim split into several new dims, none of them a channel yet, the outermost's size
        # left to torch (q rows viewed as (-1, head_dim)): the outermost takes the channels, in blocks of
        # the inner ones, which stay free. A number written there (reshape(B, N, self.heads, -1)) would
        # not follow when channels go; linking every digit would make one atom of all. (Merging such
        # dims back needs no rule: by then the outer dim is a channel, through the ties in between.)
        total = math.prod(space.infos[s].size for s in slots)
        out_digits.append((slots[0], torch.arange(total) // (total // space.infos[slots[0]].size)))
    if not in_digits or not out_digits:
        for _, digits in sides:
            for slot, _ in digits:
                space.pin(slot, "reshaped together with dims that cannot shrink")
        return
    for a, index_a in in_digits:
        for b, index_b in out_digits:
            space.link(a, index_a, b, index_b)
