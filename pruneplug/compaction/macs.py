"""Counting a model's multiply-accumulates and parameters, without running it for real.

:func:`count_macs` runs one forward counting FLOPs with the formulas of
:mod:`torch.utils.flop_counter` and halves the FLOPs it counts (one multiply-accumulate is two FLOPs). The
forward runs under :class:`~torch._subclasses.fake_tensor.FakeTensorMode` on
fake copies of the inputs: shapes flow through the model, nothing is
computed and no activation memory is taken, so the cost does not grow with
the batch (about a second for a ResNet-50 on a small CPU, the Python
overhead of some 600 operators).

What is counted is what ``flop_counter`` knows: matrix products (``mm``,
``addmm``, ``bmm``, ``baddbmm``), convolutions (transposed too) and attention
kernels. Biases, normalization (BatchNorm, LayerNorm), activations, pooling,
softmax and other elementwise work count nothing -- the usual convention of
published MACs figures (a ResNet-50 is 4.09 GMACs at 224x224 this way).
``flop_counter`` counts ``scaled_dot_product_attention`` only through its GPU
kernels; the CPU kernel (and the one other backends override) is counted here
with the same formula. Causal attention counts as full attention, as in
``flop_counter``.

The forward runs with autograd enabled (free on fake tensors): in eval mode
without autograd, :class:`torch.nn.MultiheadAttention` and
:class:`torch.nn.TransformerEncoderLayer` take fused fast paths, single
operators ``flop_counter`` does not know, which would count as zero.

If the forward cannot run on fake tensors -- data-dependent control flow
(``.item()``, ``nonzero``), an operator without a fake implementation, a C++
extension -- it runs once for real under :func:`torch.no_grad` instead. There
the fused fast paths above are taken in eval mode and count zero; put such a
model in train mode to count them.

The model is left as it was: its mode is kept (a model in train mode is
counted in train mode), and buffers a forward updates (BatchNorm's running
statistics and ``num_batches_tracked``, which a train-mode forward bumps even
on fake inputs since it adds to a real tensor) get their values back, as do
tensors the forward set as plain attributes (such as the masked weights that
pruneplug's hooks compute).

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 10))
>>> count_macs(net, (torch.randn(1, 3, 8, 8),))  # 8*6*6 outputs x 3*3*3 each, then 288 x 10
10656
>>> count_params(net)
3114
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.nn.parameter import is_lazy
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, shape_wrapper

from ..core.cache import forget
from ..core.state import pruning_hooks
from ..errors import InvalidTargetError

__all__ = ["count_macs", "count_params", "counting_macs", "MacCounter"]


def count_params(model: nn.Module) -> int:
    """The entries of ``model``'s parameters, each parameter counted once (tied ones too).

    A tensor pruned by pruneplug (or ``torch.nn.utils.prune``) counts through
    its ``<name>_orig`` parameter -- the masked ``<name>`` is a plain
    attribute computed from it -- so masking changes nothing here; only
    compaction, which makes the tensors smaller, does.

    Raises:
        InvalidTargetError: ``model`` is not a module, or holds an
            uninitialized parameter of a lazy module (run one forward first).
    """
    _check_module(model)
    return sum(parameter.numel() for parameter in model.parameters())


def count_macs(model: nn.Module, example_inputs: tuple[Any, ...] | Tensor, *, fake: bool = True) -> int:
    """The multiply-accumulates of one forward of ``model`` on ``example_inputs``.

    Args:
        model: any module; left as it was (see the module's docstring).
        example_inputs: the positional arguments of the forward (a lone
            tensor is taken as one argument); their values do not matter
            unless the forward branches on them.
        fake: count on fake tensors (nothing computed). ``False`` runs the
            forward for real under :func:`torch.no_grad`, as is done anyway
            when the fake forward fails.

    Raises:
        InvalidTargetError: ``model`` is not a module, or holds an
            uninitialized parameter of a lazy module (run one forward first).
    """
    _check_module(model)
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    if fake:
        try:
            with _left_as_it_was(model, fake=True):
                return _count_on_fakes(model, inputs)
        except Exception:  # any failure of the fake forward: a real one decides (and raises its own errors)
            pass
    with _left_as_it_was(model, fake=False), torch.no_grad():
        return _count(model, inputs)


def _check_module(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise InvalidTargetError(f"expected a torch.nn.Module, got {type(model).__name__}")
    for name, parameter in model.named_parameters():
        if is_lazy(parameter):
            raise InvalidTargetError(
                f"parameter {name!r} is not initialized yet (a lazy module): run one forward before counting"
            )


def _count_on_fakes(model: nn.Module, inputs: tuple[Any, ...]) -> int:
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fakes = tuple(mode.from_tensor(item) if isinstance(item, Tensor) else item for item in inputs)
        with torch.enable_grad():
            return _count(model, fakes)


def _count(model: nn.Module, inputs: tuple[Any, ...]) -> int:
    with counting_macs() as counter:
        model(*inputs)
    return counter.macs()


class MacCounter(TorchDispatchMode):
    """What :func:`counting_macs` yields: the count so far, read with :meth:`macs`.

    It counts as :class:`~torch.utils.flop_counter.FlopCounterMode` does --
    the same formulas, the same look through composite operators -- less the
    per-module breakdown, whose hook on every module call made a checked
    forward of a ResNet-50 a third slower.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # (torch leaves it untyped)
        self.flops = 0

    def macs(self) -> int:
        """The multiply-accumulates counted so far (two FLOPs each)."""
        return self.flops // 2

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func in _LAYOUT_QUERIES:
            return NotImplemented
        if func not in _FORMULAS and func is not torch.ops.prim.device.default:
            with self:
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        out = func(*args, **kwargs)
        formula = _FORMULAS.get(func._overloadpacket)
        if formula is not None:
            self.flops += int(formula(*args, **kwargs, out_val=out))
        return out


@contextmanager
def counting_macs() -> Iterator[MacCounter]:
    """Count the multiply-accumulates of whatever runs inside (``with counting_macs() as c: ...; c.macs()``).

    For a real forward that is run anyway (compaction's output checks): the
    count comes with it at no extra forward. Keep ``nn.MultiheadAttention``
    off its fused fast path meanwhile (``torch.backends.mha.set_fastpath_enabled``),
    which counts as zero.
    """
    with MacCounter() as counter:
        yield counter


def _attention_flops(
    query: Sequence[int], key: Sequence[int], value: Sequence[int], *args: object, **kwargs: object
) -> int:
    """``softmax(q kᵀ) v``: two batched products over (batch, query heads); key/value heads broadcast."""
    *batch, queries, width = query
    keys, value_width = key[-2], value[-1]
    return 2 * _product(batch) * queries * keys * (width + value_width)


def _product(sizes: Sequence[int]) -> int:
    out = 1
    for size in sizes:
        out *= size
    return out


# The scaled_dot_product_attention kernels flop_counter has no formula for (it knows the CUDA ones).
_ATTENTION = {
    getattr(torch.ops.aten, name): _attention_flops
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable")
    if hasattr(torch.ops.aten, name)
}
_FORMULAS: dict[Any, Any] = {**flop_registry, **{op: shape_wrapper(f) for op, f in _ATTENTION.items()}}

# Questions about a tensor's layout, which flop_counter leaves to the tensor itself.
_LAYOUT_QUERIES = {
    getattr(torch.ops.aten, name).default
    for name in (
        "sym_is_contiguous",
        "is_contiguous",
        "is_strides_like_format",
        "is_non_overlapping_and_dense",
        "size",
        "sym_size",
        "stride",
        "sym_stride",
        "storage_offset",
        "sym_storage_offset",
        "numel",
        "sym_numel",
        "dim",
    )
    if hasattr(torch.ops.aten, name)
} | {torch.ops.aten.is_contiguous.memory_format, torch.ops.prim.layout.default}


@contextmanager
def _left_as_it_was(model: nn.Module, *, fake: bool) -> Iterator[None]:
    """Give back, on leaving, the buffers and plain tensor attributes a forward may change.

    Buffers are copied before (pruning masks aside: no forward writes them)
    and written back where they differ -- not where their version counter
    moved: BatchNorm's kernel updates the running statistics without bumping
    it. With ``fake``,
    pruneplug's cache of masked tensors is emptied too: it may hold a fake
    tensor computed from the real parameters.
    """
    modules = list(model.modules())
    hooks = [(module, hook) for module in modules for _, hook in pruning_hooks(module)]
    masks = {id(module._buffers.get(f"{hook._tensor_name}_mask")) for module, hook in hooks}
    registered = [(module, dict(module._buffers)) for module in modules]
    attributes = [(module, {k: v for k, v in vars(module).items() if isinstance(v, Tensor)}) for module in modules]
    saved = [
        (buffer, buffer.detach().clone())
        for _, buffers in registered
        for buffer in buffers.values()
        if buffer is not None and id(buffer) not in masks and not buffer.is_inference()
    ]
    try:
        yield
    finally:
        for module, buffers in registered:
            module._buffers.clear()
            module._buffers.update(buffers)
        with torch.no_grad():
            for buffer, copy in saved:
                if not torch.equal(buffer, copy):
                    buffer.copy_(copy)
        for module, tensors in attributes:
            state = vars(module)
            for name in [k for k, v in state.items() if isinstance(v, Tensor) and k not in tensors]:
                del state[name]
            state.update(tensors)
        if fake:
            for _, hook in hooks:
                forget(hook)
