"""prune_calibrated: block by block on what the pruned blocks before give, or in one pass; all or nothing."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import pruneplug
from pruneplug.calibration.report import CalibrationReport
from pruneplug.statistics.spec import INPUT_SQ_NORMS

_spec = importlib.util.spec_from_file_location("calibration_helpers", Path(__file__).with_name("helpers.py"))
assert _spec is not None and _spec.loader is not None
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


@pytest.fixture(autouse=True)
def _strategies(registry: pruneplug.Registry) -> Iterator[None]:
    """The test strategies, registered in a fresh registry for each test."""
    registry.register(helpers.NormScaled)
    registry.register(helpers.HalvesKept)
    registry.register(helpers.NeedsUnknown)
    helpers.HalvesKept.FAILING.clear()
    yield
    helpers.HalvesKept.FAILING.clear()


def masks(model: nn.Module) -> dict[str, Tensor]:
    return {
        name: module.weight_mask.clone() for name, module in model.named_modules() if hasattr(module, "weight_mask")
    }


# --------------------------------------------------------------------------------------------- the sequence


def test_the_sequence_by_hand_gives_the_same_masks() -> None:
    torch.manual_seed(3)
    model = helpers.Stack(depth=2)
    twin = helpers.Stack(depth=2)
    twin.load_state_dict(model.state_dict())
    batches = helpers.feature_batches(count=3)

    # by hand: block 0's statistics from the dense model, prune it, run it pruned, block 1's statistics, prune
    block0, block1 = twin.blocks
    with torch.no_grad():
        inputs0 = [twin.inp(b) for b in batches]
    stats = helpers.collect_statistics([block0.fc1, block0.fc2], lambda: [block0(x) for x in inputs0])
    with pruneplug.using_statistics(stats):
        for layer in (block0.fc1, block0.fc2):
            pruneplug.prune(layer, "weight", "calib_norm_scaled", amount=0.5)
    with torch.no_grad():
        inputs1 = [block0(x) for x in inputs0]
    stats = helpers.collect_statistics([block1.fc1, block1.fc2], lambda: [block1(x) for x in inputs1])
    with pruneplug.using_statistics(stats):
        for layer in (block1.fc1, block1.fc2):
            pruneplug.prune(layer, "weight", "calib_norm_scaled", amount=0.5)

    report = pruneplug.prune_calibrated(model, "calib_norm_scaled", amount=0.5, calibration=batches, progress=False)
    expected = masks(twin)
    assert expected.keys() == {"blocks.0.fc1", "blocks.0.fc2", "blocks.1.fc1", "blocks.1.fc2"}
    got = masks(model)
    assert all(torch.equal(got[name], expected[name]) for name in expected)
    assert report.skipped == ("inp", "head")


def test_block_1_is_calibrated_on_the_pruned_block_0_not_the_dense_one() -> None:
    torch.manual_seed(4)
    model = helpers.Stack(depth=2)
    twin = helpers.Stack(depth=2)
    twin.load_state_dict(model.state_dict())
    batches = helpers.feature_batches(count=2)
    pruneplug.prune_calibrated(model, "calib_norm_scaled", amount=0.7, calibration=batches, progress=False)
    one_pass = pruneplug.prune_calibrated(
        twin, "calib_norm_scaled", amount=0.7, calibration=batches, sequential=False, targets=lambda n, m: ".fc" in n
    )
    assert one_pass.blocks == ()
    first, second = masks(model), masks(twin)
    assert torch.equal(first["blocks.0.fc1"], second["blocks.0.fc1"])  # the same inputs reach block 0
    assert not all(torch.equal(first[n], second[n]) for n in ("blocks.1.fc1", "blocks.1.fc2"))


def test_one_block_sequential_equals_one_pass() -> None:
    model = helpers.Stack(depth=1)
    twin = helpers.Stack(depth=1)
    twin.load_state_dict(model.state_dict())
    batches = helpers.feature_batches(count=3)
    pruneplug.prune_calibrated(model, "calib_norm_scaled", amount=0.4, calibration=batches, progress=False)
    pruneplug.prune_calibrated(
        twin,
        "calib_norm_scaled",
        amount=0.4,
        calibration=batches,
        sequential=False,
        targets=["blocks.0.fc1", "blocks.0.fc2"],
    )
    first, second = masks(model), masks(twin)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_only_the_current_blocks_statistics_exist() -> None:
    """Each accumulator is gone (collected) before the next block's are created."""
    import weakref

    live: weakref.WeakSet[Any] = weakref.WeakSet()
    blocks_seen: list[set[int]] = []

    class Tracked:
        def __init__(self, module: nn.Module) -> None:
            blocks_seen.append({id(a.module) for a in live})
            self.module = module
            self.inner = INPUT_SQ_NORMS.create(module)
            self.rows = 0
            live.add(self)

        def add(self, inputs: Tensor) -> None:
            self.inner.add(inputs)

        def result(self) -> Tensor:
            return self.inner.result()

    class UsesTracked(helpers.NormScaled):
        name = "calib_uses_tracked"

        def required_statistics(self) -> tuple[str, ...]:
            return ("tracked",)

        def scores(self, t: Tensor, alive: Tensor | None) -> Tensor:
            return t.abs()

    class Plugin:
        @pruneplug.hookimpl
        def pruneplug_add_statistics(self) -> list[pruneplug.Statistic]:
            return [pruneplug.Statistic("tracked", Tracked)]

    registry = pruneplug.Registry(load_entry_points=False)
    registry.plugin_manager.register(Plugin(), name="tracked-statistic")
    registry.register(UsesTracked)
    model = helpers.Stack(depth=3)
    with pruneplug.use_registry(registry):
        pruneplug.prune_calibrated(model, "calib_uses_tracked", amount=0.5, calibration=helpers.feature_batches())
    per_block = {id(b.fc1): i for i, b in enumerate(model.blocks)} | {id(b.fc2): i for i, b in enumerate(model.blocks)}
    assert len(blocks_seen) == 6
    for index, alive in enumerate(blocks_seen):
        assert {per_block[m] for m in alive} <= {index // 2}, f"accumulator {index} saw others alive"


def test_the_report_measures_each_blocks_relative_output_error() -> None:
    torch.manual_seed(5)
    model = helpers.Stack(depth=2)
    dense = helpers.Stack(depth=2)
    dense.load_state_dict(model.state_dict())
    batches = helpers.feature_batches(count=2)
    report = pruneplug.prune_calibrated(model, "calib_norm_scaled", amount=0.5, calibration=batches, progress=False)
    assert [b.name for b in report.blocks] == ["blocks.0", "blocks.1"]
    with torch.no_grad():
        x = [model.inp(b) for b in batches]
        error = sum(float((dense.blocks[0](v) - model.blocks[0](v)).pow(2).sum()) for v in x)
        norm = sum(float(dense.blocks[0](v).pow(2).sum()) for v in x)
        assert report.blocks[0].relative_error == pytest.approx(math.sqrt(error / norm), rel=1e-5)
        h = [model.blocks[0](v) for v in x]  # block 1's error is measured on the pruned block 0's outputs
        error = sum(float((dense.blocks[1](v) - model.blocks[1](v)).pow(2).sum()) for v in h)
        norm = sum(float(dense.blocks[1](v).pow(2).sum()) for v in h)
        assert report.blocks[1].relative_error == pytest.approx(math.sqrt(error / norm), rel=1e-5)
    assert report.rows == 10 and report.batches == 2
    assert all(layer.rows == 10 and layer.amount == 0.5 for layer in report.layers.values())
    assert report.layers["blocks.1.fc2"].sparsity == 0.5 and report.layers["blocks.1.fc2"].block == "blocks.1"
    untouched = pruneplug.prune_calibrated(helpers.Stack(depth=2), "calib_norm_scaled", amount=0, calibration=batches)
    assert [b.relative_error for b in untouched.blocks] == [0.0, 0.0]


def test_the_report_is_frozen_and_reads_as_a_table() -> None:
    report = pruneplug.prune_calibrated(
        helpers.Stack(depth=2), "calib_norm_scaled", amount=0.25, calibration=helpers.feature_batches(), progress=False
    )
    assert isinstance(report, CalibrationReport)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.rows = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        report.layers["x"] = report.layers["blocks.0.fc1"]  # type: ignore[index]
    text = str(report)
    assert text.splitlines()[0].startswith("calib_norm_scaled: 4 layers, 15 rows")
    assert "blocks.1.fc2" in text and "25.00%" in text and "rel. error" in text and "skipped" in text
    assert report.sparsity == 0.25


def test_strategies_needing_no_statistics_run_block_by_block_as_baselines() -> None:
    model = helpers.Stack(depth=2)
    report = pruneplug.prune_calibrated(model, "l1_unstructured", amount=3, calibration=helpers.feature_batches())
    assert [int((~m.weight_mask).sum()) for m in (model.blocks[0].fc1, model.blocks[1].fc2)] == [3, 3]
    assert len(report.blocks) == 2 and report.layers["blocks.0.fc1"].rows == 15


def test_blocks_after_the_last_target_are_not_run_and_blocks_without_targets_just_feed_the_next() -> None:
    model = helpers.Stack(depth=3)
    calls: list[int] = []
    for index, block in enumerate(model.blocks):
        block.register_forward_pre_hook(lambda m, a, index=index: calls.append(index))
    report = pruneplug.prune_calibrated(
        model, "calib_norm_scaled", amount=0.5, calibration=helpers.feature_batches(count=2), targets=["blocks.1.fc1"]
    )
    assert [b.name for b in report.blocks] == ["blocks.1"]
    assert calls == [0, 0, 0, 0, 1, 1, 1, 1]  # block 0: captured, replayed; block 1: dense, pruned; block 2 never


# --------------------------------------------------------------------------------------------- transformers


@pytest.mark.parametrize("build", [helpers.tiny_llama, helpers.tiny_gpt2], ids=["llama", "gpt2"])
def test_hugging_face_models_block_by_block(build: Any) -> None:
    model = build(layers=2)
    model.train()
    batches = [{"input_ids": ids} for ids in helpers.token_batches(count=2)]
    report = pruneplug.prune_calibrated(model, "calib_norm_scaled", amount=0.5, calibration=batches, progress=False)
    assert len(report.layers) == (14 if hasattr(model, "model") else 8)
    assert all(layer.sparsity == 0.5 and layer.rows == 28 for layer in report.layers.values())
    assert report.skipped == ("lm_head",)
    assert model.config.use_cache and model.training
    assert all(0 < b.relative_error < 1 for b in report.blocks)
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(**batches[0]).logits).all()


def test_llama_block_by_block_equals_the_sequence_by_hand() -> None:
    model = helpers.tiny_llama(layers=2)
    twin = helpers.tiny_llama(layers=2)
    twin.load_state_dict(model.state_dict())
    batches = [{"input_ids": ids} for ids in helpers.token_batches(count=2)]
    pruneplug.prune_calibrated(model, "calib_norm_scaled", amount=0.5, calibration=batches, progress=False)
    for layer in twin.model.layers:
        linears = {n: m for n, m in layer.named_modules() if isinstance(m, nn.Linear)}
        stats = helpers.collect_statistics(linears.values(), lambda: [twin(**b, use_cache=False) for b in batches])
        with pruneplug.using_statistics(stats):
            for linear in linears.values():
                pruneplug.prune(linear, "weight", "calib_norm_scaled", amount=0.5)
    first, second = masks(model), masks(twin)
    assert len(first) == 14 and first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


# --------------------------------------------------------------------------------------------- amounts and scope


def test_amount_per_layer_by_qualified_name() -> None:
    model = helpers.Stack(depth=2)
    amounts = {"blocks.0.fc1": 0.25, "blocks.0.fc2": 0.5, "blocks.1.fc1": 0.75, "blocks.1.fc2": 4}
    report = pruneplug.prune_calibrated(
        model, "calib_norm_scaled", amount=amounts, calibration=helpers.feature_batches()
    )
    assert {n: layer.amount for n, layer in report.layers.items()} == amounts
    assert [report.layers[n].sparsity for n in amounts] == [0.25, 0.5, 0.75, 4 / 128]


def test_amount_names_that_are_not_targets_or_missing_targets_are_errors() -> None:
    model = helpers.Stack(depth=2)
    before = helpers.state_of(model)
    amounts = {"blocks.0.fc1": 0.25, "blocks.0.fc2": 0.5, "blocks.1.fc1": 0.75, "blocks.1.fc3": 0.5}
    with pytest.raises(
        pruneplug.InvalidTargetError, match=r"amount names 'blocks.1.fc3', not among the targets.*'blocks.1.fc1'"
    ):
        pruneplug.prune_calibrated(model, "calib_norm_scaled", amount=amounts, calibration=helpers.feature_batches())
    with pytest.raises(pruneplug.InvalidAmountError, match=r"no entry for the target\(s\) 'blocks.1.fc2'"):
        pruneplug.prune_calibrated(
            model,
            "calib_norm_scaled",
            amount={k: 0.5 for k in list(amounts)[:3]},
            calibration=helpers.feature_batches(),
        )
    assert helpers.same(before, helpers.state_of(model))


def test_global_scope_ranks_all_targets_together_in_one_pass() -> None:
    torch.manual_seed(6)
    model = helpers.Stack(depth=2)
    twin = helpers.Stack(depth=2)
    twin.load_state_dict(model.state_dict())
    batches = helpers.feature_batches()
    names = ["blocks.0.fc1", "blocks.0.fc2", "blocks.1.fc1", "blocks.1.fc2"]
    report = pruneplug.prune_calibrated(
        model, "calib_norm_scaled", amount=0.5, calibration=batches, sequential=False, scope="global", targets=names
    )
    layers = {n: m for n, m in twin.named_modules() if n in names}
    stats = helpers.collect_statistics(layers.values(), lambda: [twin(b) for b in batches])
    with pruneplug.using_statistics(stats):
        pruneplug.prune_global([(m, "weight") for m in layers.values()], "calib_norm_scaled", amount=0.5)
    first, second = masks(model), masks(twin)
    assert all(torch.equal(first[k], second[k]) for k in names)
    total = sum(int((~m).sum()) for m in first.values())
    assert total == 256 and len({report.layers[n].sparsity for n in names}) > 1


def test_global_scope_needs_one_pass_one_amount_and_an_unstructured_strategy() -> None:
    model = helpers.Stack(depth=2)
    batches = helpers.feature_batches()
    with pytest.raises(pruneplug.InvalidParametersError, match=r"scope='global'.*pass sequential=False"):
        pruneplug.prune_calibrated(model, "calib_norm_scaled", amount=0.5, calibration=batches, scope="global")
    with pytest.raises(pruneplug.IncompatibleStrategyError, match=r"'ln_structured' is of kind 'structured'"):
        pruneplug.prune_calibrated(
            model, "ln_structured", amount=0.5, calibration=batches, sequential=False, scope="global", n=1
        )
    with pytest.raises(pruneplug.InvalidAmountError, match=r"one amount for all targets"):
        pruneplug.prune_calibrated(
            model, "calib_norm_scaled", amount={"head": 0.5}, calibration=batches, sequential=False, scope="global"
        )
    with pytest.raises(pruneplug.InvalidParametersError, match=r"scope must be 'layer' or 'global'"):
        pruneplug.prune_calibrated(model, "calib_norm_scaled", amount=0.5, calibration=batches, scope="model")  # type: ignore[arg-type]
    assert not pruneplug.is_pruned(model)


# --------------------------------------------------------------------------------------------- taylor


def test_taylor_gradients_come_from_the_calibration_batches_and_the_users_grads_come_back() -> None:
    torch.manual_seed(7)
    model = helpers.Stack(depth=2)
    twin = helpers.Stack(depth=2)
    twin.load_state_dict(model.state_dict())
    batches = [(x, torch.randn(x.shape[0], 4)) for x in helpers.feature_batches(count=3)]

    def loss(output: Tensor, batch: tuple[Tensor, Tensor]) -> Tensor:
        return torch.nn.functional.mse_loss(output, batch[1])

    class TakesPair(nn.Module):  # the model runs as model(*batch): take (x, y), use x
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: Tensor, y: Tensor) -> Tensor:
            return self.inner(x)

    wrapped = TakesPair(model)
    user_grad = torch.full_like(model.blocks[0].fc1.weight, 3.0)
    model.blocks[0].fc1.weight.grad = user_grad
    model.inp.weight.requires_grad_(False)
    before = helpers.state_of(wrapped)

    report = pruneplug.prune_calibrated(
        wrapped,
        "scored_unstructured",
        amount=0.5,
        calibration=batches,
        loss=loss,
        score="taylor",
        blocks="inner.blocks",
    )

    # by hand: gradients summed over the batches, then prune with them
    for x, y in batches:
        loss(twin(x), (x, y)).backward()
    for name in ["blocks.0.fc1", "blocks.0.fc2", "blocks.1.fc1", "blocks.1.fc2"]:
        pruneplug.prune(twin.get_submodule(name), "weight", "scored_unstructured", amount=0.5, score="taylor")
    for name in ["blocks.0.fc1", "blocks.0.fc2", "blocks.1.fc1", "blocks.1.fc2"]:
        assert torch.equal(model.get_submodule(name).weight_mask, twin.get_submodule(name).weight_mask)
    assert report.layers["inner.blocks.1.fc2"].sparsity == 0.5
    # the user's gradients and requires_grad, exactly
    assert model.blocks[0].fc1.weight_orig.grad is user_grad and bool((user_grad == 3.0).all())
    assert all(p.grad is None for n, p in model.named_parameters() if n != "blocks.0.fc1.weight_orig")
    assert not model.inp.weight.requires_grad and all(
        p.requires_grad for n, p in model.named_parameters() if n != "inp.weight"
    )
    after = helpers.state_of(wrapped)
    assert before["training"] == after["training"]


def test_taylor_on_already_pruned_layers_reads_the_gradient_of_weight_orig() -> None:
    torch.manual_seed(8)
    model = helpers.Stack(depth=1)
    twin = helpers.Stack(depth=1)
    twin.load_state_dict(model.state_dict())
    for net in (model, twin):
        pruneplug.prune(net.blocks[0].fc1, "weight", "l1_unstructured", amount=0.25)
    batches = helpers.feature_batches(count=2)

    def loss(output: Tensor, batch: Tensor) -> Tensor:
        return output.pow(2).mean()

    pruneplug.prune_calibrated(
        model, "scored_unstructured", amount=0.5, calibration=batches, loss=loss, score="taylor", progress=False
    )
    for x in batches:
        loss(twin(x), x).backward()
    for layer in (twin.blocks[0].fc1, twin.blocks[0].fc2):
        pruneplug.prune(layer, "weight", "scored_unstructured", amount=0.5, score="taylor")
    assert torch.equal(model.blocks[0].fc1.weight_mask, twin.blocks[0].fc1.weight_mask)
    assert torch.equal(model.blocks[0].fc2.weight_mask, twin.blocks[0].fc2.weight_mask)
    assert int((~model.blocks[0].fc1.weight_mask).sum()) == 32 + 48  # a quarter, then half of the rest
    assert model.blocks[0].fc1.weight_orig.grad is None


def test_taylor_without_a_loss_or_a_loss_without_taylor_is_an_error() -> None:
    model = helpers.Stack(depth=2)
    batches = helpers.feature_batches()
    with pytest.raises(pruneplug.InvalidParametersError, match=r"score='taylor' reads gradients: pass loss="):
        pruneplug.prune_calibrated(model, "scored_unstructured", amount=0.5, calibration=batches, score="taylor")
    with pytest.raises(pruneplug.InvalidParametersError, match=r"loss is used only by strategies that read gradients"):
        pruneplug.prune_calibrated(
            model, "calib_norm_scaled", amount=0.5, calibration=batches, loss=lambda o, b: o.sum()
        )
    with pytest.raises(pruneplug.InvalidParametersError, match=r"need calibration as an iterable of batches"):
        pruneplug.prune_calibrated(
            model,
            "scored_unstructured",
            amount=0.5,
            calibration=lambda m: m(batches[0]),
            score="taylor",
            loss=lambda o, b: o.sum(),
        )
    with pytest.raises(
        pruneplug.CalibrationLossError, match=r"loss\(output, batch\) must return a scalar tensor.*batch #0"
    ):
        pruneplug.prune_calibrated(
            model, "scored_unstructured", amount=0.5, calibration=batches, score="taylor", loss=lambda o, b: o
        )
    assert not pruneplug.is_pruned(model)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def _fails(output: Tensor, batch: Tensor) -> Tensor:
    raise KeyError("no labels")


@pytest.mark.parametrize(
    ("loss", "words"),
    [
        (_fails, r"loss\(output, batch\) raised KeyError on calibration batch #0: 'no labels'"),
        (lambda o, b: o.sum().detach(), r"batch #0 gave a tensor of shape \(\) without a gradient"),
        (
            lambda o, b: torch.zeros((), requires_grad=True),
            r"no gradient reached 'blocks.0.fc1', 'blocks.0.fc2': the loss does not depend on them",
        ),
    ],
)
def test_a_loss_that_fails_is_a_loss_error(loss: Any, words: str) -> None:
    """What the loss does wrong is a CalibrationLossError, not a batch's (a batch that fails is one)."""
    model = helpers.Stack(depth=1)
    before = helpers.state_of(model)
    with pytest.raises(pruneplug.CalibrationLossError, match=words) as caught:
        pruneplug.prune_calibrated(
            model,
            "scored_unstructured",
            amount=0.5,
            score="taylor",
            loss=loss,
            calibration=helpers.feature_batches(count=2),
            progress=False,
        )
    assert not isinstance(caught.value, pruneplug.CalibrationBatchError)
    assert helpers.same(before, helpers.state_of(model))
    with pytest.raises(pruneplug.CalibrationBatchError, match=r"calibration batch #1 is a str"):
        pruneplug.prune_calibrated(
            model,
            "scored_unstructured",
            amount=0.5,
            score="taylor",
            loss=lambda o, b: o.sum(),
            calibration=[helpers.feature_batches(count=1)[0], "text"],
            progress=False,
        )


# --------------------------------------------------------------------------------------------- all or nothing


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_strategy_failing_in_a_later_block_leaves_the_model_exactly_as_it_was(dtype: torch.dtype) -> None:
    model = helpers.Stack(depth=4).to(dtype)
    batches = [x.to(dtype) for x in helpers.feature_batches()]
    pruneplug.prune(model.blocks[0].fc1, "weight", "l1_unstructured", amount=0.25)  # an existing mask, stacked on
    model.blocks[1].fc2.weight.grad = torch.ones_like(model.blocks[1].fc2.weight)
    model.blocks[2].eval()
    before = helpers.state_of(model)
    helpers.HalvesKept.FAILING.add(id(model.blocks[3].fc2))
    with pytest.raises(pruneplug.StrategyFailedError, match=r"was told to fail here.*layer 'blocks.3.fc2'"):
        pruneplug.prune_calibrated(model, "calib_halves_kept", amount=0.5, calibration=batches)
    assert helpers.same(before, helpers.state_of(model))
    # and the strategy did update earlier blocks' values before failing
    helpers.HalvesKept.FAILING.clear()
    weight = model.blocks[1].fc1.weight.detach().clone()
    pruneplug.prune_calibrated(model, "calib_halves_kept", amount=0.5, calibration=batches)
    assert torch.equal(model.blocks[1].fc1.weight_orig, weight * 0.5)


def test_a_batch_failing_mid_run_leaves_the_model_exactly_as_it_was() -> None:
    model = helpers.Stack(depth=3)
    helpers.make_fragile(model, 2)
    model.blocks.__class__ = nn.ModuleList
    batches = helpers.feature_batches(count=3, rows=5) + helpers.feature_batches(count=1, rows=3)
    before = helpers.state_of(model)
    with pytest.raises(
        pruneplug.CalibrationBlockError,
        match=r"block 'blocks.2' raised ValueError on the inputs of calibration batch #3",
    ) as info:
        pruneplug.prune_calibrated(
            model, "calib_halves_kept", amount=0.5, calibration=batches, blocks=list(model.blocks)
        )
    assert isinstance(info.value.__cause__, ValueError)
    assert helpers.same(before, helpers.state_of(model))


def test_a_failing_batch_in_one_pass_leaves_the_model_as_it_was() -> None:
    model = helpers.Stack(depth=2)
    before = helpers.state_of(model)
    batches = [*helpers.feature_batches(count=2), torch.ones(2, 5)]  # wrong width
    with pytest.raises(pruneplug.CalibrationError, match=r"calibration batch #2 raised RuntimeError") as info:
        pruneplug.prune_calibrated(model, "calib_norm_scaled", amount=0.5, calibration=batches, sequential=False)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert helpers.same(before, helpers.state_of(model))


def test_eval_mode_and_no_grad_while_calibrating_then_the_users_modes() -> None:
    model = helpers.Stack(depth=2)
    model.train()
    model.blocks[1].fc2.eval()
    seen: list[tuple[bool, bool]] = []
    model.blocks[0].fc1.register_forward_pre_hook(lambda m, a: seen.append((m.training, torch.is_grad_enabled())))
    before = {n: m.training for n, m in model.named_modules()}
    pruneplug.prune_calibrated(model, "calib_norm_scaled", amount=0.5, calibration=helpers.feature_batches())
    assert seen and all(state == (False, False) for state in seen)
    assert {n: m.training for n, m in model.named_modules()} == before


# --------------------------------------------------------------------------------------------- bad input


def test_a_statistic_no_plugin_registers_is_named_with_the_strategy() -> None:
    model = helpers.Stack(depth=2)
    with pytest.raises(pruneplug.StatisticNotFoundError, match=r"strategy 'calib_needs_unknown'.*'no_such_statistic'"):
        pruneplug.prune_calibrated(model, "calib_needs_unknown", amount=0.5, calibration=helpers.feature_batches())
    assert not pruneplug.is_pruned(model)


def test_a_target_never_called_during_calibration_is_named() -> None:
    model = helpers.Stack(depth=2)
    model.blocks[1].spare = nn.Linear(8, 8)  # in the block, never called
    before = helpers.state_of(model)
    with pytest.raises(pruneplug.CalibrationError, match=r"no calibration rows reached 'blocks.1.spare'"):
        pruneplug.prune_calibrated(model, "calib_norm_scaled", amount=0.5, calibration=helpers.feature_batches())
    assert helpers.same(before, helpers.state_of(model))


@pytest.mark.parametrize(
    ("calibration", "error", "message"),
    [
        (torch.ones(3, 6), pruneplug.InvalidParametersError, "single tensor"),
        (object(), pruneplug.InvalidParametersError, "calibration must be an iterable"),
        ([], pruneplug.CalibrationError, "gave no batches"),
    ],
)
def test_bad_calibration_is_refused_and_nothing_changes(calibration: object, error: type, message: str) -> None:
    model = helpers.Stack(depth=2)
    before = helpers.state_of(model)
    with pytest.raises(error, match=message):
        pruneplug.prune_calibrated(model, "calib_norm_scaled", amount=0.5, calibration=calibration)  # type: ignore[arg-type]
    assert helpers.same(before, helpers.state_of(model))


def test_a_callable_calibration_runs_the_whole_model() -> None:
    model = helpers.Stack(depth=2)
    batches = helpers.feature_batches()
    twin = helpers.Stack(depth=2)
    twin.load_state_dict(model.state_dict())
    report = pruneplug.prune_calibrated(
        model, "calib_norm_scaled", amount=0.5, calibration=lambda m: [m(b) for b in batches]
    )
    pruneplug.prune_calibrated(twin, "calib_norm_scaled", amount=0.5, calibration=batches)
    first, second = masks(model), masks(twin)
    assert all(torch.equal(first[k], second[k]) for k in first) and report.batches == 3
