"""``load_pruned_state_dict`` makes every masked tensor current once, not twice."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import Tensor, nn

import pruneplug
import pruneplug.compat


@pytest.mark.parametrize("pruned_by", ["pruneplug.compat", "torch"])
def test_each_stored_masked_tensor_is_computed_once_by_the_load(
    pruned_by: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stored (eager) masked tensors -- compat's, torch's -- are recomputed once per load: by the module's
    refresh-after-load hook where pruneplug installed one, else by the loader; and they are current."""
    source = nn.Linear(4, 3)
    pruneplug.compat.l1_unstructured(source, "weight", amount=5)
    checkpoint = source.state_dict()
    model = nn.Linear(4, 3)
    (torch_prune if pruned_by == "torch" else pruneplug.compat).random_unstructured(model, "weight", amount=2)
    hook = next(iter(model._forward_pre_hooks.values()))
    calls: list[int] = []
    original = type(hook).apply_mask

    def counting(self: Any, module: nn.Module) -> Tensor:
        calls.append(1)
        return original(self, module)

    monkeypatch.setattr(type(hook), "apply_mask", counting)
    pruneplug.load_pruned_state_dict(model, checkpoint)
    assert len(calls) == 1
    assert torch.equal(model.weight, checkpoint["weight_orig"] * checkpoint["weight_mask"])
