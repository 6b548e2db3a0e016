"""The attributes a layer's forward reads, rewritten to fit tensors of a new shape.

Compaction slices tensors, and :func:`pruneplug.load_compacted` allocates
them at a checkpoint's shapes; either way a layer must then agree with its
tensors: ``Conv2d.in_channels``/``out_channels``/``groups``,
``Linear.in_features``, ``BatchNorm2d.num_features``,
``LayerNorm.normalized_shape``, ``MultiheadAttention.embed_dim``/``head_dim``
and so on. :func:`layer_attributes` computes them from the new shapes and
the layer's current attributes (a depthwise convolution stays depthwise with
its channel multiplier: ``groups`` follows its channels).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from ..core.norms import is_rms_norm_like
from ..errors import CompactionError
from ..layers import is_transposed_linear

__all__ = ["layer_attributes", "resizable", "tensor_shape", "norm_width", "set_norm_width"]

Shape = tuple[int, ...]


def tensor_shape(module: nn.Module, name: str) -> Shape | None:
    """Shape of the module's tensor ``name`` (``<name>_orig`` when pruned), or ``None``."""
    for store in (module._parameters, module._buffers):
        for candidate in (name, name + "_orig"):
            tensor = store.get(candidate)
            if tensor is not None:
                return tuple(tensor.shape)
    return None


def norm_width(module: nn.Module) -> int:
    """The channels a LayerNorm or RMSNorm (its last normalized dim), a GroupNorm or an RMSNorm-like one normalizes."""
    if isinstance(module, nn.GroupNorm):
        return int(module.num_channels)
    if is_rms_norm_like(module):  # (its weight is its only record of the width)
        shape = tensor_shape(module, "weight")
        assert shape is not None
        return shape[0]
    return int(module.normalized_shape[-1])  # type: ignore[index]


def set_norm_width(module: nn.Module, width: int) -> None:
    """Make a LayerNorm, RMSNorm or GroupNorm normalize ``width`` channels (its tensors are resized apart)."""
    if isinstance(module, nn.GroupNorm):
        module.num_channels = width
    elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
        module.normalized_shape = (*tuple(module.normalized_shape)[:-1], width)


def resizable(module: nn.Module) -> bool:
    """Whether :func:`layer_attributes` knows the layer (others may only have free tensors resized)."""
    return is_transposed_linear(module) or isinstance(
        module,
        (
            nn.modules.conv._ConvNd,
            nn.Linear,
            nn.modules.batchnorm._NormBase,
            nn.GroupNorm,
            nn.LayerNorm,
            nn.RMSNorm,
            nn.Embedding,
            nn.PReLU,
            nn.MultiheadAttention,
        ),
    )


def _conv(module: nn.modules.conv._ConvNd, weight: Shape) -> dict[str, Any]:
    groups = module.groups
    depthwise = groups > 1 and module.in_channels == groups
    if module.transposed:
        return {"in_channels": weight[0], "out_channels": weight[1] * groups, "groups": groups}
    out = weight[0]
    if depthwise:
        multiplier = module.out_channels // groups
        groups = out // multiplier
        return {"in_channels": groups * weight[1], "out_channels": out, "groups": groups}
    return {"in_channels": weight[1] * groups, "out_channels": out, "groups": groups}


def layer_attributes(module: nn.Module, shapes: Mapping[str, Shape], where: str = "") -> dict[str, Any]:
    """New attribute values of ``module`` for tensors of ``shapes`` (name -> shape; others unchanged)."""

    def shape(name: str) -> Shape | None:
        return shapes.get(name) or tensor_shape(module, name)

    weight = shape("weight")
    if is_transposed_linear(module):
        assert weight is not None
        return {"nf": weight[1], **({"nx": weight[0]} if isinstance(getattr(module, "nx", None), int) else {})}
    if isinstance(module, nn.modules.conv._ConvNd):
        assert weight is not None
        return _conv(module, weight)
    if isinstance(module, nn.Linear):
        assert weight is not None
        return {"in_features": weight[1], "out_features": weight[0]}
    if isinstance(module, nn.modules.batchnorm._NormBase):
        width = weight or shape("running_mean")
        return {} if width is None else {"num_features": width[0]}
    if isinstance(module, nn.GroupNorm):
        return {} if weight is None else {"num_channels": weight[0]}
    if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
        if weight is None:
            return {}
        return {"normalized_shape": (*tuple(module.normalized_shape)[:-1], weight[0])}
    if isinstance(module, nn.Embedding):
        assert weight is not None
        return {"num_embeddings": weight[0], "embedding_dim": weight[1]}
    if isinstance(module, nn.PReLU):
        assert weight is not None
        return {"num_parameters": weight[0]}
    if isinstance(module, nn.MultiheadAttention):
        packed = shape("in_proj_weight")
        if packed is None:
            raise CompactionError(f"{where or 'MultiheadAttention'}: only packed q/k/v projections are resized")
        embed = packed[1]
        if embed % module.num_heads:
            raise CompactionError(
                f"{where or 'MultiheadAttention'}: embed_dim {embed} is not a multiple of num_heads {module.num_heads}"
            )
        return {"embed_dim": embed, "kdim": embed, "vdim": embed, "head_dim": embed // module.num_heads}
    return {}
