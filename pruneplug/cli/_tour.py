"""``python -m pruneplug``: list the strategies, then prune the tutorial's LeNet.

A short, dependency-free tour of what the library does: every registered
strategy (built-ins and installed plugins) with its parameters, then the
tutorial's steps on LeNet -- structured and unstructured local pruning,
iterative pruning, global L1 pruning -- with per-layer and global sparsity.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

import torch
from torch import nn

from ..api import is_pruned, list_strategies, prune, prune_global, pruning_history, remove
from ..core.hook import describe_method
from ..models import LeNet
from ..registry import get_registry

__all__ = ["main", "sparsity_rows", "format_table"]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table (no dependencies).

    >>> print(format_table(["a", "b"], [[1, "xy"]]))
    a  b
    -  --
    1  xy
    """
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def sparsity_rows(model: nn.Module, names: Sequence[str]) -> tuple[list[list[object]], float]:
    """Per-tensor ``[name, zeros, total, sparsity %]`` rows and the global sparsity in %."""
    rows: list[list[object]] = []
    zeros = total = 0
    for qualified in names:
        module_name, _, tensor_name = qualified.rpartition(".")
        tensor = getattr(model.get_submodule(module_name), tensor_name)
        z, n = int((tensor == 0).sum()), tensor.numel()
        zeros, total = zeros + z, total + n
        rows.append([qualified, z, n, f"{100.0 * z / n:.2f}"])
    return rows, 100.0 * zeros / max(total, 1)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the tour; returns the exit status."""
    out = out or sys.stdout
    del argv
    registry = get_registry()
    strategy_rows = []
    for spec in registry.specs():
        params = ", ".join(
            p.name + ("" if p.required else f"={p.default!r}") for p in spec.parameters() if p.name != "generator"
        )
        strategy_rows.append([spec.name, spec.kind, params or "-", spec.provider_label])
    print("Registered strategies:", file=out)
    print(format_table(["name", "kind", "parameters", "provider"], strategy_rows), file=out)

    torch.manual_seed(0)
    model = LeNet()
    prune(model.conv1, "weight", "random_structured", amount=2, dim=0)
    prune(model.conv1, "weight", "ln_structured", amount=0.5, n=2, dim=0)
    prune(model.conv1, "bias", "random_unstructured", amount=1)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            prune(module, "bias", "l1_unstructured", amount=0.2)
    print("\nLocal pruning of LeNet (the tutorial's section 1):", file=out)
    for name in ("weight", "bias"):
        history = " -> ".join(describe_method(m) for m in pruning_history(model.conv1, name))
        print(f"  conv1.{name}: {history}", file=out)
    rows, _ = sparsity_rows(model, ["conv1.weight", "conv1.bias", "conv2.bias"])
    print(format_table(["tensor", "zeros", "entries", "sparsity %"], rows), file=out)
    remove(model)
    print(f"  after remove(model): pruned={is_pruned(model)}", file=out)

    model = LeNet()
    targets = [(model.conv1, "weight"), (model.conv2, "weight"), (model.fc1, "weight"), (model.fc2, "weight")]
    prune_global(targets, "l1_unstructured", amount=0.2)
    print("\nGlobal L1 pruning of 20% (the tutorial's section 2):", file=out)
    rows, overall = sparsity_rows(model, ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"])
    print(format_table(["tensor", "zeros", "entries", "sparsity %"], rows), file=out)
    print(f"  global sparsity: {overall:.2f}%", file=out)
    print(f"\n{len(list_strategies())} strategies available.", file=out)
    return 0
