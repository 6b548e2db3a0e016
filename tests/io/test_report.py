"""Sparsity reports: counts, masked vs zeroed, history, totals, and their three renderings."""

from __future__ import annotations

import io

import torch
from rich.console import Console
from torch import nn

import pruneplug
from pruneplug.io.report import Report, report, report_state_dict
from pruneplug.models import LeNet


def small() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.arange(1.0, 13.0).reshape(3, 4))
        model[0].bias.zero_()
        model[1].weight.fill_(2.0)
    return model


def test_counts_status_and_history(registry: pruneplug.Registry) -> None:
    model = small()
    pruneplug.prune(model[0], "weight", "l1_unstructured", amount=5)
    pruneplug.prune(model[0], "weight", "l1_unstructured", amount=0.5)
    result = report(model)
    assert [t.name for t in result.tensors] == ["0.bias", "0.weight", "1.weight"]  # by module, then name
    weight = result.tensor("0.weight")
    assert (weight.shape, weight.entries, weight.zeros, weight.masked_entries) == ((3, 4), 12, 9, 9)
    assert (weight.status, weight.pruned, weight.sparsity) == ("masked", True, 0.75)
    assert weight.history == ("l1_unstructured(amount=5)", "l1_unstructured(amount=0.5)")
    assert (weight.dtype, weight.bytes, weight.nonzero_bytes) == ("float32", 48, 12)
    bias = result.tensor("0.bias")
    assert (bias.status, bias.pruned, bias.zeros, bias.history) == ("zeroed", False, 3, ())
    assert result.tensor("1.weight").status == "dense"
    totals = result.totals
    assert (totals.tensors, totals.masked_tensors, totals.parameters, totals.zeros) == (3, 1, 21, 12)
    assert (totals.nonzero_parameters, totals.sparsity) == (9, 12 / 21)
    assert (totals.dense_bytes, totals.nonzero_bytes, totals.mask_bytes) == (84, 36, 12)
    pruneplug.remove(model)
    after = report(model).tensor("0.weight")
    assert (after.status, after.zeros, after.history) == ("zeroed", 9, ())


def test_earlier_history_comes_first_and_survives_remove(registry: pruneplug.Registry) -> None:
    model = small()
    pruneplug.prune(model[0], "weight", "identity")  # what loading a pruned checkpoint does
    pruneplug.prune(model[0], "weight", "l1_unstructured", amount=2)
    earlier = {"0.weight": ("ln_structured(amount=1, n=2, dim=0)",), "1.weight": ("l1_unstructured(amount=1)",)}
    result = report(model, history=earlier)
    assert result.tensor("0.weight").history == ("ln_structured(amount=1, n=2, dim=0)", "l1_unstructured(amount=2)")
    assert result.tensor("1.weight").history == ("l1_unstructured(amount=1)",)
    assert report(model).tensor("0.weight").history == ("identity()", "l1_unstructured(amount=2)")


def test_a_state_dict_alone_gives_the_same_numbers(registry: pruneplug.Registry) -> None:
    model = LeNet()
    pruneplug.prune_global([(model.fc1, "weight"), (model.conv2, "weight")], "l1_unstructured", amount=0.6)
    from_model = report(model)
    from_file = report_state_dict(model.state_dict())
    assert from_file.totals == from_model.totals
    by_name = {t.name: t for t in from_file.tensors}
    for item in from_model.tensors:
        assert by_name[item.name].model_dump(exclude={"module_type", "history"}) == item.model_dump(
            exclude={"module_type", "history"}
        )
    assert report_state_dict({"n": torch.tensor(3), "w": torch.zeros(2)}).totals.parameters == 2  # ints are not weights


def test_shared_parameters_count_once() -> None:
    shared = nn.Linear(2, 2)
    model = nn.Sequential(shared, shared)
    assert report(model).totals.parameters == 6


def test_renderings(registry: pruneplug.Registry) -> None:
    model = small()
    pruneplug.prune(model[0], "weight", "l1_unstructured", amount=5)
    result = report(model, source="ckpt.safetensors")
    assert Report.model_validate_json(result.to_json()) == result
    markdown = result.to_markdown()
    assert "| 0.weight | Linear | 3x4 | 5/12 | 41.67% | masked | l1_unstructured(amount=5) |" in markdown
    assert "Global sparsity" in markdown.splitlines()[-1]
    buffer = io.StringIO()
    Console(file=buffer, width=200).print(result.to_rich())
    text = buffer.getvalue()
    assert "ckpt.safetensors" in text and "41.67%" in text and "l1_unstructured(amount=5)" in text
