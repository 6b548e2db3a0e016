"""Hugging Face transformers in the channel graph and after compaction: their parts, and the sizes they state.

A compacted transformer has fewer attention heads, MLP neurons or hidden
channels than its ``config`` says. ``save_pretrained`` writes that config
and ``from_pretrained`` builds the model from it, so the numbers must be the
new ones; some modules also keep sizes as plain attributes (BERT's
``all_head_size``, GPT-2's ``split_size``) that their forward reads.

Nothing here imports ``transformers``: a model is recognized by what it has
-- a ``config``, a list of layers, in each an attention block with query and
key projections (or GPT-2's fused ``c_attn``) and a head size, and an MLP --
under the names the LLaMA family (LLaMA, Qwen2, Mistral: ``self_attn.q_proj``,
``mlp.up_proj``), GPT-2 (``attn.c_attn``, ``mlp.c_fc``), BERT
(``attention.self.query``, ``intermediate.dense``) and ViT
(``attention.q_proj``, ``mlp.fc1``) use. What that gives:

* :func:`part_dims`: which channel groups are a layer's heads, its MLP
  neurons, or the hidden size (``ChannelGroup.part``);
* :func:`elastic_splits`: the modules whose ``.split(self.split_size)`` may
  shrink, since the attribute is rewritten (GPT-2);
* :func:`rewrite_sizes`: the new sizes, written into a copy of the config
  (the object the user built the model from stays as it was) and into the
  attributes of the modules.

Whether the new config describes the model is not assumed but checked: the
config class's own validation runs on it (transformers' ``LlamaConfig``
refuses a hidden size that is not a multiple of the head count), then the
model's class is built from it on the meta device (no memory, no init cost)
and every parameter's and buffer's shape compared with the compacted model's.
Where that fails -- layers of different sizes after a global prune, BERT
with heads x head size no longer equal to the hidden size -- the config keeps
its old numbers for what it cannot state and lists, in
``pruneplug_per_layer_sizes``, the real ones; such a model loads with
:func:`pruneplug.load_compacted`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from ..layers import is_transposed_linear
from .resize import tensor_shape

__all__ = [
    "AttributeLog",
    "ConfigSizes",
    "describe",
    "elastic_splits",
    "part_dims",
    "rewrite_sizes",
    "rewrite_sizes_safely",
    "PER_LAYER",
    "Setter",
]

Part = Literal["channels", "heads", "neurons", "hidden"]
"""What a channel group is in a transformer this module knows (``"channels"``: anything else)."""

PER_LAYER = "pruneplug_per_layer_sizes"
"""The config field that lists, for a model its config cannot describe, the sizes it cannot state."""

Setter = Callable[[Any, str, Any], None]
"""How an attribute is written: ``setattr``, or one that remembers the old value (compaction's rollback).
A value of ``None`` deletes the attribute."""

_LAYER_LISTS = ("model.layers", "layers", "encoder.layer", "encoder.layers", "model.decoder.layers", "h")
_ATTENTION = ("self_attn", "attention.self", "attention", "attn")
_QUERY = ("q_proj", "query")
_KEY = ("k_proj", "key")
_HEAD_SIZE = ("head_dim", "attention_head_size")
_MLP_IN = ("mlp.up_proj", "mlp.gate_proj", "mlp.fc1", "intermediate.dense", "mlp.c_fc")


@dataclass(frozen=True)
class ConfigSizes:
    """What the compacted model's config states: ``uniform`` values, and what it cannot state."""

    uniform: dict[str, int]
    per_layer: dict[str, list[int]]
    mismatched: list[str] = field(default_factory=list)  # tensors a model built from the config would size otherwise


@dataclass(frozen=True)
class _Layer:
    """Where one layer keeps its attention and MLP, under the names its family uses."""

    attention: nn.Module
    query: nn.Module  # the query projection, or the fused q/k/v one (GPT-2's c_attn)
    key: nn.Module
    head_size: int
    mlp_in: nn.Module | None
    module: nn.Module
    mlp: nn.Module | None
    fused: int = 1  # projections packed in ``query`` (3 for GPT-2's c_attn)

    @property
    def query_width(self) -> int:
        return _out_width(self.query) // self.fused

    @property
    def key_width(self) -> int:
        return _out_width(self.key) // self.fused


def _projection(module: nn.Module) -> bool:
    """A layer with a 2-D weight of its own (not, for instance, a LoRA wrapper around one)."""
    shape = tensor_shape(module, "weight")
    return shape is not None and len(shape) == 2


def _out_width(module: nn.Module) -> int:
    shape = tensor_shape(module, "weight") or (0, 0)
    return shape[1] if is_transposed_linear(module) else shape[0]


def _in_width(module: nn.Module) -> int:
    shape = tensor_shape(module, "weight") or (0, 0)
    return shape[0] if is_transposed_linear(module) else shape[1]


def _config(model: nn.Module) -> Any:
    """A Hugging Face config (a ``PretrainedConfig``: ``model_type`` and ``to_dict``), or ``None``.

    A ``config`` attribute of another kind (a dict, a dataclass of the
    user's) does not make a model one of transformers'.
    """
    config = getattr(model, "config", None)
    return (
        config
        if isinstance(getattr(config, "model_type", None), str) and callable(getattr(config, "to_dict", None))
        else None
    )


def _find(module: nn.Module, names: tuple[str, ...]) -> tuple[str, nn.Module] | None:
    for name in names:
        try:
            return name, module.get_submodule(name)
        except AttributeError:
            continue
    return None


def _layer(module: nn.Module) -> _Layer | None:
    found = _find(module, _ATTENTION)
    if found is None:
        return None
    attention = found[1]
    query, key = _find(attention, _QUERY), _find(attention, _KEY)
    fused = 1
    if query is None and key is None and isinstance(getattr(attention, "split_size", None), int):
        query = key = _find(attention, ("c_attn",))  # GPT-2: q, k and v from one projection, split in three
        fused = 3
    head_size = next((getattr(attention, n) for n in _HEAD_SIZE if isinstance(getattr(attention, n, None), int)), None)
    if query is None or key is None or head_size is None or not _projection(query[1]):
        return None
    mlp_in = _find(module, _MLP_IN)
    if mlp_in is not None and not _projection(mlp_in[1]):
        return None
    mlp = None if mlp_in is None else _find(module, (mlp_in[0].rsplit(".", 1)[0],))
    return _Layer(
        attention,
        query[1],
        key[1],
        head_size,
        None if mlp_in is None else mlp_in[1],
        module,
        None if mlp is None else mlp[1],
        fused,
    )


def _layers(model: nn.Module) -> list[_Layer] | None:
    """The model's layers, if every one has the parts this module knows; else ``None``."""
    base = getattr(model, "base_model", None)
    for root in (model, base) if isinstance(base, nn.Module) and base is not model else (model,):
        for path in _LAYER_LISTS:
            try:
                found = root.get_submodule(path)
            except AttributeError:
                continue
            if isinstance(found, nn.ModuleList) and len(found):
                layers = [_layer(layer) for layer in found]
                return None if any(layer is None for layer in layers) else layers  # type: ignore[return-value]
    return None


def _hidden(layers: list[_Layer]) -> int:
    """The hidden size (the residual stream): what the first layer's query projection reads."""
    return _in_width(layers[0].query)


def _sizes(model: nn.Module, layers: list[_Layer]) -> dict[str, int | list[int]]:
    config = _config(model)
    sizes: dict[str, int | list[int]] = {
        "num_attention_heads": [layer.query_width // layer.head_size for layer in layers],
        "head_dim": [layer.head_size for layer in layers],
    }
    if hasattr(config, "hidden_size"):
        sizes["hidden_size"] = _hidden(layers)
    if hasattr(config, "num_key_value_heads"):
        sizes["num_key_value_heads"] = [layer.key_width // layer.head_size for layer in layers]
    inner = [_out_width(layer.mlp_in) for layer in layers if layer.mlp_in is not None]
    if len(inner) == len(layers):
        for name in ("intermediate_size", "n_inner"):  # (GPT-2 names it n_inner)
            if hasattr(config, name):
                sizes[name] = inner
                break
    return sizes


def _attributes(model: nn.Module, layers: list[_Layer]) -> Iterator[tuple[Any, str, int]]:
    """Sizes the modules keep as plain attributes (``num_heads``, ``all_head_size``, ...), where they exist."""
    hidden = _hidden(layers)
    base = getattr(model, "base_model", None)
    for top in {id(m): m for m in (model, base) if isinstance(m, nn.Module)}.values():
        for name in ("embed_dim", "hidden_size"):  # (GPT2Model.embed_dim)
            if isinstance(vars(top).get(name), int):
                yield top, name, hidden
    for layer in layers:
        width = layer.query_width
        heads = width // layer.head_size
        kv_heads = layer.key_width // layer.head_size
        values: dict[str, int | None] = {
            "num_heads": heads,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "num_key_value_groups": heads // kv_heads if kv_heads else None,
            "all_head_size": width,
            "split_size": width,
            "embed_dim": hidden,
            "hidden_size": hidden,
        }
        for name, value in values.items():
            if value is not None and isinstance(getattr(layer.attention, name, None), int):
                yield layer.attention, name, value
        inner = None if layer.mlp_in is None else _out_width(layer.mlp_in)
        for owner in (layer.mlp, layer.module):
            for name, value in (("intermediate_size", inner), ("hidden_size", hidden)):
                if owner is not None and value is not None and isinstance(getattr(owner, name, None), int):
                    yield owner, name, value


def part_dims(model: nn.Module) -> dict[tuple[str, str, int], Part]:
    """``(module, tensor, dim) -> part`` for the dims that tell a known transformer's parts apart.

    A channel group holding the query projection's output dim is a layer's
    attention ``"heads"``; the first MLP projection's output dim, its
    ``"neurons"``; the query projection's input dim, the ``"hidden"`` size.
    Empty for a model this module does not know.
    """
    layers = _layers(model) if _config(model) is not None else None
    if not layers:
        return {}
    paths = {id(module): path for path, module in model.named_modules()}
    parts: dict[tuple[str, str, int], Part] = {}
    for layer in layers:
        out_dim = 1 if is_transposed_linear(layer.query) else 0
        parts[(paths[id(layer.query)], "weight", out_dim)] = "heads"
        parts[(paths[id(layer.query)], "weight", 1 - out_dim)] = "hidden"
        if layer.mlp_in is not None:
            parts[(paths[id(layer.mlp_in)], "weight", 1 if is_transposed_linear(layer.mlp_in) else 0)] = "neurons"
    return parts


def elastic_splits(model: nn.Module) -> set[str]:
    """Qualified names of the attention modules whose split size is an attribute :func:`rewrite_sizes` rewrites.

    GPT-2 splits its fused q/k/v projection with ``.split(self.split_size)``:
    the pieces may shrink (alike), since the attribute will say their new size.
    """
    layers = _layers(model) if _config(model) is not None else None
    paths = {id(module): path for path, module in model.named_modules()}
    return {paths[id(layer.attention)] for layer in layers or [] if layer.fused > 1}


def describe(model: nn.Module) -> ConfigSizes | None:
    """The sizes ``model``'s config should state, read from its modules; ``None`` for a model this does not know."""
    layers = _layers(model) if _config(model) is not None else None
    return _described(model, layers) if layers else None


def _described(model: nn.Module, layers: list[_Layer]) -> ConfigSizes:
    uniform: dict[str, int] = {}
    per_layer: dict[str, list[int]] = {}
    for name, value in _sizes(model, layers).items():
        if isinstance(value, int):
            uniform[name] = value
        elif len(set(value)) == 1:
            uniform[name] = value[0]
        else:
            per_layer[name] = list(value)
    return ConfigSizes(uniform, per_layer)


def _set(owner: Any, name: str, value: Any) -> None:
    if value is None:
        if hasattr(owner, name):
            delattr(owner, name)
    else:
        setattr(owner, name, value)


class AttributeLog:
    """A :data:`Setter` that remembers what it overwrote, for :meth:`restore` (a failed compaction or load)."""

    def __init__(self) -> None:
        self.entries: list[tuple[Any, str, bool, Any]] = []  # (owner, name, had it, old value)

    def set(self, owner: Any, name: str, value: Any) -> None:
        """``setattr`` (``None``: delete), remembering what was there."""
        had = name in vars(owner)
        self.entries.append((owner, name, had, vars(owner).get(name)))
        _set(owner, name, value)

    def restore(self) -> None:
        """Put back every attribute as it was, newest first."""
        for owner, name, had, old in reversed(self.entries):
            if had:
                setattr(owner, name, old)
            elif name in vars(owner):
                delattr(owner, name)
        self.entries.clear()


def _mismatched(model: nn.Module, config: Any) -> list[str]:
    """The tensors whose shape a model built from ``config`` would not have (empty: the config describes it)."""
    try:
        with torch.device("meta"):
            rebuilt = type(model)(copy.deepcopy(config))
    except Exception as error:  # the config itself is refused (a size check in the model's constructor)
        return [f"the model cannot be built from the config ({type(error).__name__}: {error})"]
    wrong = []
    for path, module in rebuilt.named_modules():
        try:
            ours = model.get_submodule(path)
        except AttributeError:
            wrong.append(f"{path} (missing)")
            continue
        for name, tensor in [*module._parameters.items(), *module._buffers.items()]:
            if tensor is None or name in module._non_persistent_buffers_set:
                continue
            shape = tensor_shape(ours, name)
            if shape != tuple(tensor.shape):
                qualified = f"{path}.{name}" if path else name
                wrong.append(f"{qualified}: {shape} here, {tuple(tensor.shape)} from the config")
        for name, value in vars(module).items():  # numbers computed from the config when built
            mine = vars(ours).get(name)
            if type(value) in (int, float) and type(mine) in (int, float) and value != mine:
                qualified = f"{path}.{name}" if path else name
                wrong.append(f"{qualified}: {mine} here, {value} from the config")
    return wrong


def _own_config(model: nn.Module, setter: Setter) -> Any:
    """A copy of ``model.config`` put in its place everywhere in the model, to write the new sizes into.

    A Hugging Face model shares its config object with its modules, and with
    whoever built it: writing into that object would change the config the
    user builds the next (dense) model from.
    """
    shared = _config(model)
    config = copy.deepcopy(shared)
    for module in model.modules():
        if vars(module).get("config") is shared:
            setter(module, "config", config)
    return config


def rewrite_sizes_safely(model: nn.Module, log: AttributeLog) -> ConfigSizes | None:
    """:func:`rewrite_sizes` through ``log``; if it fails, nothing it wrote stays and the sizes say why.

    The config is a description of the model, written after the model
    itself was changed and checked: a config this module cannot write (a
    class of its own, a read-only field) must not undo that.
    """
    before = len(log.entries)
    try:
        return rewrite_sizes(model, log.set)
    except Exception as error:  # whatever a foreign config class raises
        undone = AttributeLog()
        undone.entries = log.entries[before:]
        undone.restore()
        del log.entries[before:]
        return ConfigSizes({}, {}, [f"the config was not rewritten ({type(error).__name__}: {error})"])


def rewrite_sizes(model: nn.Module, setter: Setter = _set) -> ConfigSizes | None:
    """Write the compacted sizes into ``model.config`` (a copy: see below) and the attributes its modules read.

    Fields that differ between layers keep their old value in the config,
    and ``config.pruneplug_per_layer_sizes`` lists them (and any tensor a
    model built from the config would size otherwise). The config object the
    model was built with is left as it was: the model and its modules get a
    copy. Returns what was written; ``None`` for a model this module does not
    know.
    """
    if _config(model) is None:
        return None
    layers = _layers(model)
    if not layers:  # an architecture this module cannot read: say whether its config still fits
        mismatched = _mismatched(model, _config(model))
        return ConfigSizes({}, {}, mismatched) if mismatched else None
    sizes = _described(model, layers)
    config = _own_config(model, setter)
    refused = _refusal(config, sizes.uniform)
    uniform = {} if refused else sizes.uniform
    for name, value in uniform.items():
        setter(config, name, value)
    for owner, name, value in list(_attributes(model, layers)):
        setter(owner, name, value)
    mismatched = ([refused] if refused else []) + _mismatched(model, config)
    result = ConfigSizes(uniform, sizes.per_layer, mismatched)
    unstated: dict[str, Any] = dict(sizes.per_layer)
    if refused:
        unstated.update({name: value for name, value in sizes.uniform.items() if getattr(config, name, None) != value})
    if mismatched:
        unstated["tensors"] = mismatched
    setter(config, PER_LAYER, unstated or None)
    return result


def _refusal(config: Any, sizes: dict[str, int]) -> str | None:
    """Why the config class refuses ``sizes`` (its own checks, which ``save_pretrained`` runs), or ``None``.

    transformers 5 checks, for instance, that a LLaMA's ``hidden_size`` is a
    multiple of ``num_attention_heads`` even when ``head_dim`` is stated: 6
    heads in a hidden size of 64 cannot be saved, let alone loaded. Such a
    config keeps its old numbers, which it accepts.
    """
    trial = copy.deepcopy(config)
    for name, value in sizes.items():
        setattr(trial, name, value)
    validate = getattr(trial, "validate", None)
    if not callable(validate):
        return None
    try:
        validate()
    except Exception as error:  # (the config classes raise ValueError or their validation error types)
        return f"the config refuses the new sizes ({' '.join(str(error).split())})"
    return None
