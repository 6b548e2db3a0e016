"""PruningCallback in a real Transformers Trainer on CPU: the schedule's steps, accumulation, resuming bit for bit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import pruneplug

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from pruneplug.training.hf import PruningCallback  # noqa: E402

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


def train(tmp_path: Path, max_steps: int, callbacks: list[Any], resume: str | None = None, **options: Any) -> nn.Module:
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
    return model


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


def test_stopping_and_resuming_from_a_checkpoint_goes_on_bit_for_bit(tmp_path: Path) -> None:
    """The central test: a checkpoint mid-training, a fresh trainer and callback, the same masks and weights."""
    whole = train(tmp_path / "whole", 8, [PruningCallback(rules(), schedule=SCHEDULE)], save_strategy="no")
    train(tmp_path / "part", 4, [PruningCallback(rules(), schedule=SCHEDULE)], save_strategy="steps", save_steps=4)
    checkpoint = tmp_path / "part" / "checkpoint-4"
    saved = json.loads((checkpoint / "trainer_state.json").read_text())["stateful_callbacks"]["PruningCallback"]
    assert saved["attributes"]["pruner"]["step"] == 4
    pruning = PruningCallback(rules(), schedule=SCHEDULE)
    resumed = train(tmp_path / "part", 8, [pruning], resume=str(checkpoint), save_strategy="no")
    ours, theirs = resumed.state_dict(), whole.state_dict()
    assert ours.keys() == theirs.keys()
    for name, value in theirs.items():
        assert torch.equal(ours[name], value), name
    assert pruning.pruner is not None and pruning.pruner.current_step == 8
    assert pruning.pruner.sparsity() == [pytest.approx(0.5), pytest.approx(0.75)]
