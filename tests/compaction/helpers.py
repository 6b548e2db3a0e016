"""What the compaction tests share: the zoo, norms with random statistics, and the masked-vs-compacted comparison.

The test folders are not packages, so the test modules load this file (and
``zoo.py``) by path with :func:`load`.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten

__all__ = [
    "ATOL",
    "RTOL",
    "assert_matches",
    "load",
    "masked_and_compacted_agree",
    "pruning_leftovers",
    "randomize_norms",
    "run",
]

RTOL = 1e-4  # relative to the largest |output|: compact's own fp32 tolerance
ATOL = 1e-5


def load(name: str) -> ModuleType:
    """The module ``tests/compaction/<name>.py``."""
    spec = importlib.util.spec_from_file_location(f"compaction_{name}", Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def randomize_norms(model: nn.Module, seed: int = 1) -> nn.Module:
    """Give every norm random running statistics and affine parameters (in place); returns ``model``.

    Freshly built, a BatchNorm in eval mode is close to the identity (mean 0,
    variance 1, weight 1, bias 0), which would hide a running statistic or a
    bias sliced at the wrong index.
    """
    generator = torch.Generator().manual_seed(seed)

    def draw(like: Tensor, low: float, high: float) -> Tensor:
        return torch.rand(like.shape, generator=generator) * (high - low) + low

    with torch.no_grad():
        for module in model.modules():
            norm_types = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm)
            if not isinstance(module, norm_types):
                continue
            running_mean = getattr(module, "running_mean", None)
            running_var = getattr(module, "running_var", None)
            if isinstance(running_mean, Tensor) and isinstance(running_var, Tensor):
                running_mean.copy_(draw(running_mean, -1.0, 1.0))
                running_var.copy_(draw(running_var, 0.5, 2.0))
            weight = getattr(module, "weight", None)
            bias = getattr(module, "bias", None)
            if isinstance(weight, Tensor):
                weight.copy_(draw(weight, 0.5, 1.5))
            if isinstance(bias, Tensor):
                bias.copy_(draw(bias, -0.5, 0.5))
    return model


def _outputs(result: Any) -> list[Tensor]:
    return [t.detach() for t in tree_flatten(result)[0] if isinstance(t, Tensor)]


def run(model: nn.Module, inputs: tuple[Any, ...], *, train: bool = False) -> list[Tensor]:
    """The model's outputs (flattened) in eval or train mode, run on a deep copy so ``model`` stays as it was.

    In train mode dropout stays off (its random mask depends on the tensor's
    size, so a compacted model draws another one); BatchNorm uses batch
    statistics and updates the copy's running statistics.
    """
    twin = copy.deepcopy(model)
    twin.train(train)
    for module in twin.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.eval()
    with torch.no_grad():
        return _outputs(twin(*inputs))


def assert_matches(reference: list[Tensor], actual: list[Tensor], *, what: str = "outputs") -> None:
    """Same shapes, and values within ``ATOL + RTOL * max|reference|`` (compact's fp32 tolerance)."""
    assert len(actual) == len(reference), f"{what}: {len(actual)} tensors instead of {len(reference)}"
    for i, (a, b) in enumerate(zip(reference, actual)):
        assert b.shape == a.shape, f"{what}[{i}]: shape {tuple(b.shape)} instead of {tuple(a.shape)}"
        bound = ATOL + RTOL * float(a.abs().max())
        diff = float((a - b).abs().max())
        assert diff <= bound, f"{what}[{i}]: differ by {diff:.3g} (allowed {bound:.3g})"


def masked_and_compacted_agree(masked: nn.Module, compacted: nn.Module, inputs: tuple[Any, ...]) -> None:
    """The masked model and its compacted twin compute the same outputs in eval mode and in train mode."""
    for train in (False, True):
        mode = "train" if train else "eval"
        assert_matches(run(masked, inputs, train=train), run(compacted, inputs, train=train), what=f"{mode} outputs")


def pruning_leftovers(model: nn.Module) -> list[str]:
    """state_dict keys and buffers that belong to pruning (``_orig``, ``_mask``, ``channels_mask``)."""
    names = [*model.state_dict(), *(name for name, _ in model.named_buffers())]
    return sorted({n for n in names if n.endswith(("_orig", "_mask", "channels_mask"))})
