"""prune_calibrated with the registered data-aware strategies: wanda, sparsegpt, magnitude."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import pruneplug
from pruneplug.statistics.spec import INPUT_HESSIAN, INPUT_SQ_NORMS

_spec = importlib.util.spec_from_file_location("calibration_helpers", Path(__file__).with_name("helpers.py"))
assert _spec is not None and _spec.loader is not None
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


@pytest.mark.parametrize(
    ("strategy", "params"),
    [
        ("sparsegpt", {"amount": 0.5, "block_size": 4}),
        ("wanda", {"amount": 0.5}),
        ("sparsegpt", {"keep_n": 2, "of_m": 4}),
    ],
)
def test_the_sequence_by_hand_gives_the_same_masks_and_weights(strategy: str, params: dict[str, Any]) -> None:
    torch.manual_seed(9)
    model = helpers.Stack(depth=2)
    twin = helpers.Stack(depth=2)
    twin.load_state_dict(model.state_dict())
    batches = helpers.feature_batches(count=3, rows=12)
    amount = params.pop("amount", None)
    report = pruneplug.prune_calibrated(model, strategy, amount=amount, calibration=batches, progress=False, **params)

    with torch.no_grad():
        h = [twin.inp(b) for b in batches]
    for block in twin.blocks:  # statistics from the pruned blocks before, sparsegpt's updates included
        stats = helpers.collect_statistics(
            [block.fc1, block.fc2],
            lambda: [block(x) for x in h],  # noqa: B023
            (INPUT_SQ_NORMS, INPUT_HESSIAN),
        )
        with pruneplug.using_statistics(stats):
            for layer in (block.fc1, block.fc2):
                pruneplug.prune(layer, "weight", strategy, **({} if amount is None else {"amount": amount}), **params)
        with torch.no_grad():
            h = [block(x) for x in h]
    for name in ("blocks.0.fc1", "blocks.0.fc2", "blocks.1.fc1", "blocks.1.fc2"):
        mine, theirs = model.get_submodule(name), twin.get_submodule(name)
        assert torch.equal(mine.weight_mask, theirs.weight_mask), name
        assert torch.equal(mine.weight_orig, theirs.weight_orig), name
        assert report.layers[name].sparsity == 0.5


def test_sparsegpt_updates_survive_and_a_later_failure_restores_them() -> None:
    torch.manual_seed(10)
    model = helpers.Stack(depth=3)
    helpers.make_fragile(model, 2)
    pruneplug.prune(model.blocks[0].fc2, "weight", "magnitude", amount=0.25)
    before = helpers.state_of(model)
    batches = helpers.feature_batches(count=2, rows=12) + helpers.feature_batches(count=1, rows=3)
    with pytest.raises(pruneplug.CalibrationError, match=r"block 'blocks.2' raised ValueError"):
        pruneplug.prune_calibrated(model, "sparsegpt", amount=0.5, calibration=batches, blocks=list(model.blocks))
    assert helpers.same(before, helpers.state_of(model))
    weight = model.blocks[0].fc1.weight.detach().clone()
    pruneplug.prune_calibrated(model, "sparsegpt", amount=0.5, calibration=batches[:2], blocks=list(model.blocks))
    kept = model.blocks[0].fc1.weight_mask
    assert not torch.equal(model.blocks[0].fc1.weight_orig[kept], weight[kept])  # the OBS update landed
    pruneplug.remove(model)
    assert float((model.blocks[0].fc1.weight == 0).float().mean()) == 0.5


def test_old_values_of_updated_weights_are_kept_on_disk_not_in_memory_and_deleted_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rollback must not hold a second copy of every weight SparseGPT updates in the model's memory (the
    sequential pipeline's memory bound): the old values go to a temporary folder, gone when the call ends."""
    import tempfile

    from pruneplug.calibration import state

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    kept: list[object] = []
    real_keep = state.Rollback.keep_values

    def spy(self: state.Rollback, module: nn.Module) -> None:
        real_keep(self, module)
        kept.append(self._values[-1][1])
        if len(kept) == 3:  # (the third layer's update fails)
            raise RuntimeError("full disk")

    torch.manual_seed(3)
    model = helpers.Stack(depth=2)
    before = helpers.state_of(model)
    batches = helpers.feature_batches(count=2, rows=12)
    monkeypatch.setattr(state.Rollback, "keep_values", spy)
    with pytest.raises(RuntimeError, match="full disk"):
        pruneplug.prune_calibrated(model, "sparsegpt", amount=0.5, calibration=batches)
    assert helpers.same(before, helpers.state_of(model))
    assert len(kept) == 3 and all(isinstance(path, Path) for path in kept)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(state.Rollback, "keep_values", real_keep)
    pruneplug.prune_calibrated(model, "sparsegpt", amount=0.5, calibration=batches)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("build", [helpers.tiny_llama, helpers.tiny_gpt2], ids=["llama", "gpt2"])
@pytest.mark.parametrize("strategy", ["wanda", "sparsegpt", "magnitude"])
def test_transformers_from_configs(build: Any, strategy: str) -> None:
    model = build(layers=2)
    batches = [{"input_ids": ids} for ids in helpers.token_batches(count=2, length=16)]
    with torch.no_grad():
        dense = [model(**b, use_cache=False).logits for b in batches]
    report = pruneplug.prune_calibrated(model, strategy, amount=0.5, calibration=batches, progress=False)
    assert all(layer.sparsity == 0.5 for layer in report.layers.values())
    assert all(0 < block.relative_error < 1 for block in report.blocks)
    with torch.no_grad():
        pruned = [model(**b, use_cache=False).logits for b in batches]
    assert all(torch.isfinite(p).all() and not torch.equal(p, d) for p, d in zip(pruned, dense))


def test_two_four_on_llama() -> None:
    model = helpers.tiny_llama(layers=2)
    batches = [{"input_ids": ids} for ids in helpers.token_batches(count=2, length=16)]
    pruneplug.prune_calibrated(model, "wanda", amount=None, keep_n=2, of_m=4, calibration=batches, progress=False)
    mask = model.model.layers[1].mlp.down_proj.weight_mask
    assert bool((mask.reshape(mask.shape[0], -1, 4).sum(-1) == 2).all())


def test_global_wanda_ranks_across_layers_and_row_wanda_is_refused() -> None:
    torch.manual_seed(12)
    model = helpers.Stack(depth=2)
    batches = helpers.feature_batches(count=3)
    targets = ["blocks.0.fc1", "blocks.0.fc2", "blocks.1.fc1", "blocks.1.fc2"]
    with pytest.raises(pruneplug.IncompatibleStrategyError, match="compare"):
        pruneplug.prune_calibrated(
            model, "wanda", amount=0.5, calibration=batches, sequential=False, scope="global", targets=targets
        )
    assert not pruneplug.is_pruned(model)
    report = pruneplug.prune_calibrated(
        model,
        "wanda",
        amount=0.5,
        compare="tensor",
        calibration=batches,
        sequential=False,
        scope="global",
        targets=targets,
    )
    pruned = sum(int((~model.get_submodule(n).weight_mask).sum()) for n in targets)
    assert pruned == 256 and len({report.layers[n].sparsity for n in targets}) > 1


def test_sparsegpt_is_refused_for_global_scope() -> None:
    with pytest.raises(pruneplug.IncompatibleStrategyError, match="'sparsegpt' is of kind 'global'"):
        pruneplug.prune_calibrated(
            helpers.Stack(),
            "sparsegpt",
            amount=0.5,
            calibration=helpers.feature_batches(),
            sequential=False,
            scope="global",
        )
