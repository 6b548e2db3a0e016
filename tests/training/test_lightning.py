"""PruningCallback in a real Lightning Trainer on CPU: the schedule's steps, accumulation, resuming bit for bit."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import pruneplug

pl = pytest.importorskip("lightning.pytorch")
from pruneplug.training.lightning import PruningCallback  # noqa: E402

BATCHES = 4  # per epoch


def rules() -> list[dict[str, Any]]:
    """A rule ranking by magnitude and one pruning at random with a generator of its own.

    Lightning's checkpoints do not hold torch's generator, which its data loaders draw from as an epoch starts;
    a random rule's own generator is saved with the pruner's state, so a resumed run draws as the whole run did.
    """
    return [
        {"modules": ["model.0"], "strategy": "l1_unstructured", "params": {"amount": 0.75}},
        {
            "modules": ["model.2"],
            "strategy": "random_unstructured",
            "params": {"amount": 0.5, "generator": torch.Generator().manual_seed(3)},
        },
    ]


# to 0, a quarter, half, three quarters of the final and the final at steps 1, 3, 5, 7, 9: a checkpoint at step 4
# holds masks
SCHEDULE = {"name": "linear", "start": 1, "end": 9, "every": 2}


class Tiny(pl.LightningModule):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, labels = batch
        return nn.functional.cross_entropy(self.model(inputs), labels)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=0.05, weight_decay=0.1)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.log("loss", self.training_step(batch, batch_idx))

    def test_dataloader(self) -> torch.utils.data.DataLoader:
        return self.train_dataloader()

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        generator = torch.Generator().manual_seed(1)
        data = torch.utils.data.TensorDataset(
            torch.randn(8 * BATCHES, 6, generator=generator), torch.randint(0, 3, (8 * BATCHES,), generator=generator)
        )
        return torch.utils.data.DataLoader(data, batch_size=8)


class Recorder(pl.Callback):  # type: ignore[misc]
    """Each optimizer step's sparsity of the first rule, as the callback reached it by the batch's end."""

    def __init__(self, pruning: PruningCallback) -> None:
        self.pruning = pruning
        self.seen: dict[int, list[float]] = {}

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        assert self.pruning.pruner is not None
        self.seen[trainer.global_step] = self.pruning.pruner.sparsity()


def trainer(tmp_path: Path, max_steps: int, callbacks: list[Any], **options: Any) -> Any:
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=callbacks,
        **options,
    )


def fit(tmp_path: Path, max_steps: int, callbacks: list[Any], ckpt_path: Path | None = None, **options: Any) -> Any:
    """The trainer, after fitting a new :class:`Tiny` for ``max_steps`` optimizer steps."""
    fitted = trainer(tmp_path, max_steps, callbacks, **options)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        fitted.fit(Tiny(), ckpt_path=ckpt_path)
    return fitted


def test_the_masks_reach_the_schedules_targets_at_its_steps(tmp_path: Path) -> None:
    pruning = PruningCallback(rules(), schedule=SCHEDULE)
    recorder = Recorder(pruning)
    fit(tmp_path, 10, [pruning, recorder])
    # by global_step, which is one more than the step just handled
    expected = {
        2: [0, 0],
        3: [0, 0],
        4: [9 / 48, 3 / 24],
        5: [9 / 48, 3 / 24],
        6: [18 / 48, 6 / 24],
        10: [36 / 48, 12 / 24],
    }
    for step, sparsity in expected.items():
        assert recorder.seen[step] == pytest.approx(sparsity), step


def test_accumulated_gradients_count_optimizer_steps_not_batches(tmp_path: Path) -> None:
    pruning = PruningCallback(rules()[:1], schedule={"name": "one_shot", "start": 3})
    recorder = Recorder(pruning)
    fit(tmp_path, 5, [pruning, recorder], accumulate_grad_batches=2)
    assert pruning.pruner is not None and pruning.pruner.current_step == 5
    assert recorder.seen[3] == [0.0] and recorder.seen[4] == [0.75]


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


@pytest.mark.parametrize("mask_storage", [None, "packed"])
def test_stopping_and_resuming_from_a_checkpoint_goes_on_bit_for_bit(tmp_path: Path, mask_storage: str | None) -> None:
    """The central test: a checkpoint at the end of an epoch, a fresh trainer and callback: the same weights, masks."""
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_train_steps=BATCHES)
    whole = fit(
        tmp_path, 12, [PruningCallback(rules(), schedule=SCHEDULE, mask_storage=mask_storage), checkpoint]
    ).lightning_module
    path = tmp_path / "ckpt" / "epoch=0-step=4.ckpt"
    assert path.is_file(), sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    pruning = PruningCallback(rules(), schedule=SCHEDULE, mask_storage=mask_storage)
    resumed = fit(tmp_path / "again", 12, [pruning], ckpt_path=path).lightning_module
    ours, theirs = weights(resumed), weights(whole)
    assert ours.keys() == theirs.keys()
    for name, value in theirs.items():
        assert torch.equal(ours[name], value), name
    assert pruning.pruner is not None and pruning.pruner.current_step == 12
    packed = isinstance(resumed.model[0]._buffers["weight_mask"], pruneplug.PackedMask)
    assert packed == (mask_storage == "packed")
    tested = trainer(tmp_path / "test", 1, [PruningCallback(rules(), schedule=SCHEDULE, mask_storage=mask_storage)])
    tested.test(Tiny(), ckpt_path=tmp_path / "ckpt" / "epoch=2-step=12.ckpt", verbose=False)
    assert all(torch.equal(value, tested.lightning_module.state_dict()[name]) for name, value in theirs.items())


def test_in_place_masking_resumes_bit_for_bit_from_the_checkpoints_pruner_state(tmp_path: Path) -> None:
    """Plain weights in the checkpoint, the masks in the callback's state (Lightning saves it with torch.save)."""
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_train_steps=BATCHES)
    first = PruningCallback(rules(), schedule=SCHEDULE, masking="in_place")
    whole = fit(tmp_path, 12, [first, checkpoint]).lightning_module
    pruning = PruningCallback(rules(), schedule=SCHEDULE, masking="in_place")
    resumed = fit(tmp_path / "again", 12, [pruning], ckpt_path=tmp_path / "ckpt" / "epoch=0-step=4.ckpt")
    assert not pruneplug.is_pruned(resumed.lightning_module)
    ours, theirs = weights(resumed.lightning_module), weights(whole)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[name], theirs[name]) for name in theirs)
    assert first.pruner is not None and pruning.pruner is not None
    masks, expected = pruning.pruner.masks(), first.pruner.masks()
    assert set(masks) == set(expected) == {"model.0.weight", "model.2.weight"}
    assert all(torch.equal(masks[name], expected[name]) for name in masks)
    assert not ours["model.0.weight"][~masks["model.0.weight"]].any()


def test_a_second_fit_goes_on_with_the_masks_an_in_place_pruner_held(tmp_path: Path) -> None:
    pruning = PruningCallback(rules()[:1], schedule={"name": "one_shot", "start": 1}, masking="in_place")
    module = Tiny()
    for root, steps in ((tmp_path / "first", 3), (tmp_path / "second", 1)):  # the second fit's step 0 prunes nothing
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            trainer(root, steps, [pruning]).fit(module)
        assert pruning.pruner is not None and pruning.pruner.sparsity() == [0.75]
        mask = pruning.pruner.masks()["model.0.weight"]
        assert not module.model[0].weight.detach()[~mask].any()


def test_any_registered_strategy_prunes_a_submodule_zeroes_the_optimizers_state_and_logs(tmp_path: Path) -> None:
    rule = {"modules": ["0"], "strategy": "ln_structured", "params": {"amount": 0.5, "n": 2, "dim": 0}}
    pruning = PruningCallback([rule], schedule={"name": "one_shot", "start": 0}, module="model")
    fitted = fit(tmp_path, 3, [pruning])
    assert pruning.pruner is not None and pruning.pruner.targets() == [("0.weight",)]
    layer = fitted.lightning_module.model[0]
    kept = layer.weight_mask.all(dim=1)
    assert int(kept.sum()) == 4 and not layer.weight_mask[~kept].any()  # whole rows pruned
    state = fitted.optimizers[0].state[layer.weight_orig]
    assert not state["exp_avg"][~kept].any() and state["exp_avg"][kept].any()
    assert float(fitted.callback_metrics["pruning/sparsity/0"]) == 0.5


def test_an_optimizer_that_is_no_index_is_refused_when_the_callback_is_made() -> None:
    with pytest.raises(pruneplug.PlanError) as caught:
        PruningCallback(rules(), schedule=SCHEDULE, optimizer=True)  # type: ignore[arg-type]
    assert caught.value.field == "optimizer"


def test_a_rule_that_selects_nothing_fails_when_training_starts(tmp_path: Path) -> None:
    rule = {"modules": ["model.9"], "strategy": "l1_unstructured", "params": {"amount": 0.5}}
    pruning = PruningCallback([rule], schedule=SCHEDULE)  # fine until it meets the model
    with pytest.raises(pruneplug.PlanError, match="model.9"):
        fit(tmp_path, 1, [pruning])
