"""PruningCallback in a real Transformers Trainer on CPU: the schedule's steps, accumulation, resuming bit for bit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import pruneplug

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from pruneplug.training.hf import MASKS_FILE, PruningCallback  # noqa: E402

SCHEDULE = {"name": "linear", "start": 1, "end": 5, "every": 2}  # to 0, half the final, the final at steps 1, 3, 5


def rules() -> list[dict[str, Any]]:
    return [
        {"module_regex": r".*\.mlp\.(gate|up)_proj", "strategy": "l1_unstructured", "params": {"amount": 0.5}},
        {"module_regex": r".*\.mlp\.down_proj", "strategy": "random_unstructured", "params": {"amount": 0.75}},
    ]


def tiny() -> Any:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return transformers.LlamaForCausalLM(config)


class Tokens(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __init__(self, count: int) -> None:
        self.ids = torch.randint(3, 32, (count, 8), generator=torch.Generator().manual_seed(1))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "labels": self.ids[index]}


class Recorder(transformers.TrainerCallback):  # type: ignore[misc]
    """Each rule's sparsity after each optimizer step, by ``global_step``."""

    def __init__(self, pruning: PruningCallback) -> None:
        self.pruning = pruning
        self.seen: dict[int, list[float]] = {}

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        assert self.pruning.pruner is not None
        self.seen[state.global_step] = self.pruning.pruner.sparsity()


def train(tmp_path: Path, max_steps: int, callbacks: list[Any], resume: str | None = None, **options: Any) -> Any:
    """The trainer, after training a new tiny Llama for ``max_steps`` optimizer steps."""
    model = tiny()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=max_steps,
        per_device_train_batch_size=4,
        learning_rate=0.05,
        weight_decay=0.1,
        lr_scheduler_type="constant",
        use_cpu=True,
        report_to="none",
        logging_strategy="no",
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
        **options,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Tokens(16), callbacks=callbacks)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def test_the_masks_reach_the_schedules_targets_at_its_steps(tmp_path: Path) -> None:
    pruning = PruningCallback(rules(), schedule=SCHEDULE)
    recorder = Recorder(pruning)
    train(tmp_path, 6, [pruning, recorder], save_strategy="no")
    assert recorder.seen[3] == [0.0, 0.0]
    assert recorder.seen[4] == [pytest.approx(256 / 1024), pytest.approx(192 / 512)]
    assert recorder.seen[6] == [pytest.approx(0.5), pytest.approx(0.75)]


def test_accumulated_gradients_count_optimizer_steps_not_batches(tmp_path: Path) -> None:
    pruning = PruningCallback(rules()[:1], schedule={"name": "one_shot", "start": 2})
    recorder = Recorder(pruning)
    train(tmp_path, 3, [pruning, recorder], save_strategy="no", gradient_accumulation_steps=2)
    assert sorted(recorder.seen) == [1, 2, 3]
    assert recorder.seen[2] == [0.0] and recorder.seen[3] == [pytest.approx(0.5)]


@pytest.mark.parametrize("masking", ["reparametrize", "in_place"])
def test_stopping_and_resuming_from_a_checkpoint_goes_on_bit_for_bit(tmp_path: Path, masking: str) -> None:
    """The central test: a checkpoint mid-training, a fresh trainer and callback, the same masks and weights."""
    options: dict[str, Any] = {"schedule": SCHEDULE, "masking": masking}
    whole = train(tmp_path / "whole", 8, [PruningCallback(rules(), **options)], save_strategy="no").model
    train(tmp_path / "part", 4, [PruningCallback(rules(), **options)], save_strategy="steps", save_steps=4)
    checkpoint = tmp_path / "part" / "checkpoint-4"
    saved = json.loads((checkpoint / "trainer_state.json").read_text())["stateful_callbacks"]["PruningCallback"]
    assert saved["attributes"]["pruner"]["step"] == 4
    held = {}
    if masking == "in_place":  # plain weights in the checkpoint, the masks in a file of their own beside them
        assert saved["attributes"]["pruner"]["masks_file"] == str((checkpoint / MASKS_FILE).resolve())
        assert "masks" not in saved["attributes"]["pruner"]
        held = torch.load(checkpoint / MASKS_FILE, weights_only=True)
    pruning = PruningCallback(rules(), **options)
    resumed = train(tmp_path / "part", 8, [pruning], resume=str(checkpoint), save_strategy="steps", save_steps=4).model
    assert pruning.pruner is not None
    if masking == "in_place":
        assert set(held) == {name for names in pruning.pruner.targets() for name in names}
        assert all(mask.dtype == torch.bool and not mask.all() for mask in held.values())  # pruned at step 3
        assert not any(name.endswith("_orig") for name in resumed.state_dict())
    ours, theirs = resumed.state_dict(), whole.state_dict()
    assert ours.keys() == theirs.keys()
    for name, value in theirs.items():
        assert torch.equal(ours[name], value), name
    assert pruning.pruner is not None and pruning.pruner.current_step == 8
    assert pruning.pruner.sparsity() == [pytest.approx(0.5), pytest.approx(0.75)]


def test_any_registered_strategy_prunes_a_submodule_and_zeroes_the_optimizers_state(tmp_path: Path) -> None:
    rule = {"modules": ["down_proj"], "strategy": "ln_structured", "params": {"amount": 0.5, "n": 2, "dim": 1}}
    pruning = PruningCallback([rule], schedule={"name": "one_shot", "start": 0}, module="model.layers.0.mlp")
    trained = train(tmp_path, 2, [pruning], save_strategy="no")
    assert pruning.pruner is not None and pruning.pruner.targets() == [("down_proj.weight",)]
    layer = trained.model.model.layers[0].mlp.down_proj
    kept = layer.weight_mask.all(dim=0)
    assert int(kept.sum()) == 16 and not layer.weight_mask[:, ~kept].any()  # whole columns pruned
    moments = trained.optimizer.state[layer.weight_orig]["exp_avg"]
    assert not moments[:, ~kept].any() and moments[:, kept].any()


def test_a_trainer_that_would_remake_the_callback_from_saved_arguments_is_refused(tmp_path: Path) -> None:
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", restore_callback_states_from_checkpoint=True
    )
    with pytest.raises(pruneplug.PlanError, match="restore_callback_states_from_checkpoint"):
        transformers.Trainer(model=tiny(), args=args, callbacks=[PruningCallback(rules(), schedule=SCHEDULE)])
