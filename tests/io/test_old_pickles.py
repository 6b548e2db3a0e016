"""Whole models pickled by pruneplug 0.1.0 (before the modules moved into folders) still load and work."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import pruneplug
from pruneplug._moved import MOVED

DATA = Path(__file__).parent / "data" / "pruned-models-0.1.0.pt"


@pytest.fixture(scope="module")
def saved() -> dict[str, Any]:
    loaded: dict[str, Any] = torch.load(DATA, weights_only=False)
    return loaded


@pytest.mark.parametrize("name", ["lazy", "packed", "compat", "rnn"])
def test_a_model_saved_whole_by_0_1_0_computes_what_it_computed(saved: dict[str, Any], name: str) -> None:
    model = saved["models"][name]
    with torch.no_grad():
        out = model(saved["seq"])[0] if name == "rnn" else model(saved["x"])
    assert torch.equal(out, saved["expected"][name])


def test_the_loaded_models_stay_pruneplug_models(saved: dict[str, Any]) -> None:
    """Histories, packed masks and removal work on them as on models pruned now."""
    models = saved["models"]
    assert [h.name for h in pruneplug.pruning_history(models["lazy"], "weight")] == [
        "l1_unstructured",
        "random_structured",
    ]
    assert isinstance(models["packed"].weight_mask, pruneplug.PackedMask)
    (hook,) = models["compat"]._forward_pre_hooks.values()
    assert isinstance(hook, pruneplug.PruningContainer) and len(hook) == 2
    pruned_before = int((~models["lazy"].weight_mask).sum())
    pruneplug.prune(models["lazy"], "weight", "l1_unstructured", amount=1)
    pruneplug.remove(models["lazy"])
    assert not pruneplug.is_pruned(models["lazy"])
    assert int((models["lazy"].weight == 0).sum()) == pruned_before + 1


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_each_old_module_path_is_its_new_module(old: str, new: str) -> None:
    assert importlib.import_module(old) is importlib.import_module(new)


def test_loading_needs_no_import_of_pruneplug_first() -> None:
    """A fresh interpreter that only imports torch loads the file: unpickling imports the old paths itself."""
    code = (
        "import sys, torch\n"
        f"saved = torch.load({str(DATA)!r}, weights_only=False)\n"
        "print(sorted(m for m in sys.modules if m.startswith('pruneplug._')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "pruneplug._lazy" in done.stdout
