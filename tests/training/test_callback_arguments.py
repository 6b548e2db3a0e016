"""Both training callbacks check the Pruner's arguments when they are made, before any training."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from torch import nn

import pruneplug
from pruneplug.training._modules import submodule

# library: (the library it needs, the callback's module)
CALLBACKS = {
    "lightning": ("lightning.pytorch", "pruneplug.training.lightning"),
    "hf": ("transformers", "pruneplug.training.hf"),
}
RULES = [{"types": ["Linear"], "strategy": "l1_unstructured", "params": {"amount": 0.5}}]


@pytest.mark.parametrize("library", list(CALLBACKS))
@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"rules": [{"types": ["Linear"], "strategy": "wanda", "params": {"amount": 0.5}}]}, "strategy"),
        ({"schedule": {"name": "no_such_schedule"}}, "schedule"),
        ({"mask_storage": "zip"}, "mask_storage"),
        ({"masking": "hooks"}, "masking"),
    ],
)
def test_bad_arguments_raise_the_pruners_plan_error_when_the_callback_is_made(
    library: str, options: dict[str, Any], field: str
) -> None:
    needed, module = CALLBACKS[library]
    pytest.importorskip(needed)
    callback = importlib.import_module(module).PruningCallback
    arguments: dict[str, Any] = {"rules": RULES, "schedule": {"name": "linear", "end": 4}, **options}
    with pytest.raises(pruneplug.PlanError) as caught:
        callback(arguments.pop("rules"), **arguments)
    assert caught.value.field == field


def test_a_module_name_the_model_lacks_is_named_with_the_field() -> None:
    model = nn.Sequential(nn.Linear(2, 2))
    assert submodule(model, None, "the model") is model and submodule(model, "0", "the model") is model[0]
    with pytest.raises(pruneplug.PlanError, match="the LightningModule has no submodule 'encoder'") as caught:
        submodule(model, "encoder", "the LightningModule")
    assert caught.value.field == "module"
