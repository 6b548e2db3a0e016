"""Loading a compacted checkpoint into a freshly built, unpruned model.

A compacted model is the original architecture at smaller widths, so it
ships as a plain state_dict (safetensors, through
:func:`pruneplug.save_checkpoint`), never as a pickled module:
:func:`load_compacted` builds the architecture as usual, resizes every layer
whose tensors have other shapes in the checkpoint (the layer's attributes
follow, as in compaction: :mod:`.resize`), and loads the values.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..core.commit import ModuleSnapshot
from ..errors import CompactionError, PruneplugError
from ..io.state_dict import load_pruned_state_dict
from .graph import trace_channels
from .hf import AttributeLog, rewrite_sizes_safely
from .resize import layer_attributes, resizable, set_norm_width, tensor_shape
from .trace import ExampleInputs

__all__ = ["load_compacted"]

_PRUNING_SUFFIXES = ("_orig", "_mask", "channels_mask")


def _new_shapes(module: nn.Module, prefix: str, state_dict: Mapping[str, object]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for store in (module._parameters, module._buffers):
        for name, tensor in store.items():
            if tensor is None:
                continue
            for key in (prefix + name, prefix + name + "_orig"):
                saved = state_dict.get(key)
                if isinstance(saved, Tensor) and tuple(saved.shape) != tuple(tensor.shape):
                    shapes[name] = tuple(saved.shape)
                    break
    return shapes


def _resize(module: nn.Module, path: str, shapes: dict[str, tuple[int, ...]], made: dict[int, nn.Parameter]) -> None:
    """Give ``module`` tensors of ``shapes``; ``made`` maps each replaced parameter to its new one, so that
    a tied parameter (input and output embeddings) stays one parameter."""
    if resizable(module):
        for attribute, value in layer_attributes(module, shapes, path or type(module).__name__).items():
            setattr(module, attribute, value)
    for name, shape in shapes.items():
        if name in module._parameters:
            old = module._parameters[name]
            assert old is not None
            if id(old) not in made:
                fresh = torch.empty(shape, dtype=old.dtype, device=old.device)
                made[id(old)] = nn.Parameter(fresh, requires_grad=old.requires_grad)
            module._parameters[name] = made[id(old)]
        else:
            buffer = module._buffers[name]
            assert buffer is not None
            module._buffers[name] = torch.empty(shape, dtype=buffer.dtype, device=buffer.device)


def _with_tied_names(model: nn.Module, state_dict: Mapping[str, object]) -> Mapping[str, object]:
    """``state_dict`` with the other names of a tied tensor filled in from the one it has.

    ``save_pretrained`` (and safetensors) write a tied tensor once, under one
    of its names; the model still has it under every name.
    """
    names: dict[int, list[str]] = {}
    for path, module in model.named_modules(remove_duplicate=False):
        for name, tensor in module._parameters.items():
            if tensor is not None:
                names.setdefault(id(tensor), []).append(f"{path}.{name}" if path else name)
    filled = dict(state_dict)
    for keys in names.values():
        present = [k for k in keys if k in filled]
        if present and len(present) < len(keys):
            for key in keys:
                filled.setdefault(key, filled[present[0]])
    return filled


def _shapeless_norms(model: nn.Module) -> list[str]:
    """Norms whose statistics span channels and that hold no parameter: a checkpoint does not say their width."""
    return [
        path
        for path, module in model.named_modules()
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)) and tensor_shape(module, "weight") is None
    ]


def _norm_widths(
    model: nn.Module, state_dict: Mapping[str, object], example_inputs: ExampleInputs, norms: list[str]
) -> dict[str, int]:
    """The widths of parameterless norms, from the channel groups they share with parameters."""
    graph = trace_channels(model, example_inputs)
    widths: dict[str, int] = {}
    for group in graph.groups:
        for norm in group.norms:
            if norm.module not in norms:
                continue
            for member in group.members:
                if member.layout[0] != "plain":
                    continue
                prefix = f"{member.module}." if member.module else ""
                saved = state_dict.get(prefix + member.tensor, state_dict.get(prefix + member.tensor + "_orig"))
                if isinstance(saved, Tensor):
                    kept = saved.shape[member.dim] // member.index.shape[1]
                    widths[norm.module] = kept * int(norm.index.shape[1])
                    break
    return widths


def load_compacted(
    model: nn.Module,
    state_dict: Mapping[str, object],
    *,
    strict: bool = True,
    example_inputs: ExampleInputs | None = None,
) -> nn.Module:
    """Resize ``model`` (freshly built, unpruned) to a compacted ``state_dict``'s shapes and load it.

    Every layer whose tensors have other shapes in ``state_dict`` gets
    tensors of those shapes, and the attributes its forward reads
    (``in_channels``, ``num_features``, ``embed_dim`` ...) to match; then the
    values are loaded (masks a checkpoint still holds set up pruning again,
    as :func:`pruneplug.load_pruned_state_dict` does). Returns ``model``.

    A parameter of a module without a layer rule (a ViT's ``pos_embed``) is
    resized alone. A LayerNorm, GroupNorm or RMSNorm without parameters
    (``elementwise_affine=False``) has no tensor in the checkpoint to say its
    width: pass ``example_inputs`` and it is read from the channel group the
    norm shares with parameters (the fresh model is traced).

    Raises:
        CompactionError: the checkpoint does not fit the architecture, or a
            parameterless norm's width is unknown without ``example_inputs``
            (the model is then as it was).
    """
    if not isinstance(state_dict, Mapping):
        raise CompactionError(f"state_dict must be a mapping of names to tensors, not {type(state_dict).__name__}")
    state_dict = _with_tied_names(model, state_dict)
    resized: list[tuple[str, nn.Module, dict[str, tuple[int, ...]]]] = []
    for path, module in model.named_modules():
        prefix = f"{path}." if path else ""
        shapes = _new_shapes(module, prefix, state_dict)
        if shapes:
            resized.append((path, module, shapes))
    widths: dict[str, int] = {}
    shapeless = _shapeless_norms(model)
    if resized and shapeless:
        if example_inputs is None:
            raise CompactionError(
                f"the norms {', '.join(shapeless)} hold no parameter, so the checkpoint does not say their widths:"
                " pass example_inputs to read them from the channel graph"
            )
        widths = _norm_widths(model, state_dict, example_inputs, shapeless)
    touched = {id(module): module for _, module, _ in resized}
    touched.update({id(m): m for m in (model.get_submodule(p) for p in widths)})
    snapshots = [ModuleSnapshot(module) for module in touched.values()]
    written = AttributeLog()
    try:
        made: dict[int, nn.Parameter] = {}
        for path, module, shapes in resized:
            _resize(module, path, shapes, made)
        for path, width in widths.items():
            set_norm_width(model.get_submodule(path), width)
        if any(str(key).endswith(_PRUNING_SUFFIXES) for key in state_dict):
            load_pruned_state_dict(model, state_dict, strict=strict)
        else:
            if strict:  # torch copies what fits before it complains about keys: check them first
                expected = set(model.state_dict())
                missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
                if missing or unexpected:
                    raise CompactionError(
                        f"the checkpoint's keys do not fit the model: missing {missing or 'none'},"
                        f" unexpected {unexpected or 'none'}"
                    )
            model.load_state_dict(dict(state_dict), strict=strict)  # type: ignore[arg-type]
        rewrite_sizes_safely(model, written)
    except PruneplugError as error:
        written.restore()
        for snapshot in snapshots:
            snapshot.restore()
        if isinstance(error, CompactionError):
            raise
        raise CompactionError(f"the checkpoint does not load into the resized model: {error}") from error
    except Exception as error:
        written.restore()
        for snapshot in snapshots:
            snapshot.restore()
        names = ", ".join(path or type(module).__name__ for path, module, _ in resized) or "none"
        raise CompactionError(
            f"the checkpoint does not fit the model ({type(error).__name__}: {error}); layers resized: {names}"
        ) from error
    return model
