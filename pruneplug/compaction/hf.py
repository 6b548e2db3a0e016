"""Hugging Face models after compaction: the sizes their configs and attention modules state, rewritten.

A compacted transformer has fewer attention heads, MLP neurons or hidden
channels than its ``config`` says. ``save_pretrained`` writes that config
and ``from_pretrained`` builds the model from it, so the numbers must be the
new ones; some modules also keep sizes as plain attributes (GPT-2's
``split_size``, BERT's ``all_head_size``) that their forward reads.

Nothing here imports ``transformers``: a model is recognized by what it has
(a ``config`` with the fields of a known family, layers whose projections
have the family's names), so the package works without it. A family is
described by :class:`Family`; :func:`rewrite_sizes` finds the one that fits a
model and writes its sizes, :func:`describe` only reads them.

Supported: the LLaMA family (``LlamaForCausalLM``, ``Qwen2``, ``Mistral``
and every decoder with ``self_attn.{q,k,v,o}_proj`` and ``mlp.{gate,up,down}_proj``
under ``config.head_dim``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

__all__ = ["ConfigSizes", "Family", "describe", "family_of", "rewrite_sizes", "PER_LAYER", "Setter"]


@dataclass(frozen=True)
class ConfigSizes:
    """What the compacted model's config states: ``uniform`` values, and the fields that vary by layer."""

    family: str
    uniform: dict[str, int]
    per_layer: dict[str, list[int]]

    @property
    def describable(self) -> bool:
        """Whether the config can describe the model: no size differs between layers."""
        return not self.per_layer


@dataclass(frozen=True)
class Family:
    """One architecture family: how to find it and read its sizes from the modules."""

    name: str
    matches: Callable[[nn.Module], bool]
    sizes: Callable[[nn.Module], dict[str, list[int] | int]]
    attributes: Callable[[nn.Module], Iterator[tuple[Any, str, int]]]


def _config(model: nn.Module) -> Any:
    return getattr(model, "config", None)


def _layers(model: nn.Module) -> list[nn.Module]:
    for path in ("model.layers", "layers", "model.decoder.layers"):
        try:
            found = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(found, nn.ModuleList):
            return list(found)
    return []


def _linear_out(module: nn.Module, path: str) -> int | None:
    try:
        layer = module.get_submodule(path)
    except AttributeError:
        return None
    weight = getattr(layer, "weight", None)
    return None if weight is None else int(weight.shape[0])


def _int(module: nn.Module, name: str) -> int:
    value = getattr(module, name)
    assert isinstance(value, int), f"{type(module).__name__}.{name} is not an int"
    return value


def _hidden(model: nn.Module) -> int | None:
    """The width of the input embeddings: the hidden size (the residual stream)."""
    embeddings = getattr(model, "get_input_embeddings", None)
    module = embeddings() if callable(embeddings) else None
    weight = getattr(module, "weight", None)
    return int(weight.shape[1]) if isinstance(weight, Tensor) and weight.dim() == 2 else None


# -- the LLaMA family -------------------------------------------------------------------------------


def _llama_matches(model: nn.Module) -> bool:
    config = _config(model)
    layers = _layers(model)
    if config is None or not layers or not hasattr(config, "num_key_value_heads"):
        return False
    first = layers[0]
    return all(
        _linear_out(first, name) is not None
        for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
    ) and isinstance(getattr(first.get_submodule("self_attn"), "head_dim", None), int)


def _llama_mlp_width(layer: nn.Module) -> int | None:
    return _linear_out(layer, "mlp.up_proj") or _linear_out(layer, "mlp.gate_proj")


def _llama_sizes(model: nn.Module) -> dict[str, list[int] | int]:
    layers = _layers(model)
    head_dim = _int(layers[0].get_submodule("self_attn"), "head_dim")
    heads, kv_heads, inner = [], [], []
    for layer in layers:
        heads.append(int(_linear_out(layer, "self_attn.q_proj") or 0) // head_dim)
        kv_heads.append(int(_linear_out(layer, "self_attn.k_proj") or 0) // head_dim)
        width = _llama_mlp_width(layer)
        if width is not None:
            inner.append(width)
    hidden = _hidden(model) or int(_config(model).hidden_size)
    sizes: dict[str, list[int] | int] = {
        "hidden_size": hidden,
        "head_dim": head_dim,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
    }
    if inner:
        sizes["intermediate_size"] = inner
    return sizes


def _llama_attributes(model: nn.Module) -> Iterator[tuple[Any, str, int]]:
    """Sizes some versions keep on the modules (``num_heads``, ``hidden_size``, ...), where they exist."""
    hidden = _hidden(model)
    for layer in _layers(model):
        attention = layer.get_submodule("self_attn")
        head_dim = _int(attention, "head_dim")
        heads = int(_linear_out(layer, "self_attn.q_proj") or 0) // head_dim
        kv_heads = int(_linear_out(layer, "self_attn.k_proj") or 0) // head_dim
        for name, value in (
            ("num_heads", heads),
            ("num_attention_heads", heads),
            ("num_key_value_heads", kv_heads),
            ("num_key_value_groups", heads // kv_heads if kv_heads else 0),
            ("hidden_size", hidden),
        ):
            if value is not None and isinstance(getattr(attention, name, None), int):
                yield attention, name, value
        mlp = getattr(layer, "mlp", None)
        width = _llama_mlp_width(layer)
        if mlp is not None:
            for name, value in (("intermediate_size", width), ("hidden_size", hidden)):
                if value is not None and isinstance(getattr(mlp, name, None), int):
                    yield mlp, name, value
        if hidden is not None and isinstance(getattr(layer, "hidden_size", None), int):
            yield layer, "hidden_size", hidden


LLAMA = Family("llama", _llama_matches, _llama_sizes, _llama_attributes)

FAMILIES: tuple[Family, ...] = (LLAMA,)


def family_of(model: nn.Module) -> Family | None:
    """The family whose layout ``model`` has, or ``None`` (not a Hugging Face model pruneplug knows)."""
    if _config(model) is None:
        return None
    return next((family for family in FAMILIES if family.matches(model)), None)


def describe(model: nn.Module) -> ConfigSizes | None:
    """The sizes ``model``'s config should state, read from its modules; ``None`` for an unknown model."""
    family = family_of(model)
    if family is None:
        return None
    uniform: dict[str, int] = {}
    per_layer: dict[str, list[int]] = {}
    for name, value in family.sizes(model).items():
        if isinstance(value, int):
            uniform[name] = value
        elif len(set(value)) == 1:
            uniform[name] = value[0]
        else:
            per_layer[name] = list(value)
    return ConfigSizes(family.name, uniform, per_layer)


Setter = Callable[[Any, str, Any], None]
"""How an attribute is written: ``setattr``, or one that remembers the old value (compaction's rollback).
A value of ``None`` deletes the attribute."""


def _set(owner: Any, name: str, value: Any) -> None:
    if value is None:
        if hasattr(owner, name):
            delattr(owner, name)
    else:
        setattr(owner, name, value)


def rewrite_sizes(model: nn.Module, setter: Setter = _set) -> ConfigSizes | None:
    """Write the compacted sizes into ``model.config`` and the attributes its modules read.

    Fields that differ between layers keep their old value in the config
    (which then cannot describe the model: :func:`pruneplug.load_compacted`
    loads it) and are listed in ``config.pruneplug_per_layer_sizes``.
    Returns what was written; ``None`` for a model of no known family.
    """
    sizes = describe(model)
    family = family_of(model)
    if sizes is None or family is None:
        return None
    config = _config(model)
    for name, value in sizes.uniform.items():
        setter(config, name, value)
    setter(config, PER_LAYER, dict(sizes.per_layer) if sizes.per_layer else None)
    for owner, name, value in list(family.attributes(model)):
        setter(owner, name, value)
    return sizes


PER_LAYER = "pruneplug_per_layer_sizes"
"""The config field that lists, for a model whose layers differ in size, each layer's size of each field."""
