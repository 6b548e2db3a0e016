"""Running calibration batches, capturing the first block's inputs, replaying a block on them."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import pruneplug
from pruneplug.calibration.running import (
    capture_inputs,
    check_calibration,
    reusable,
    run_block,
    run_calibration,
    with_hidden,
)

_spec = importlib.util.spec_from_file_location("calibration_helpers", Path(__file__).with_name("helpers.py"))
assert _spec is not None and _spec.loader is not None
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


class Recorder(nn.Module):
    """Returns its input; records how it was called."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        self.calls.append((args, kwargs))
        return args[0] if args else kwargs["x"]


def test_batches_run_as_tensors_tuples_and_mappings() -> None:
    model = Recorder()
    count = run_calibration(model, [torch.ones(1), (torch.ones(2), 3), {"x": torch.ones(3)}])
    assert count == 3
    assert [len(a) for a, _ in model.calls] == [1, 2, 0] and model.calls[2][1].keys() == {"x"}


def test_a_callable_runs_the_model_itself() -> None:
    model = Recorder()
    assert run_calibration(model, lambda m: [m(torch.ones(1)) for _ in range(4)]) == -1
    assert len(model.calls) == 4


@pytest.mark.parametrize(
    ("calibration", "message"),
    [
        (torch.ones(3, 2), r"calibration is a single tensor.*\[tensor\]"),
        ("batches", r"calibration must be an iterable of batches .* or a callable run\(model\); got str"),
        (3, r"got int"),
    ],
)
def test_calibration_neither_iterable_nor_callable_is_refused(calibration: object, message: str) -> None:
    with pytest.raises(pruneplug.InvalidParametersError, match=message):
        check_calibration(calibration)


def test_an_empty_calibration_is_an_error() -> None:
    with pytest.raises(pruneplug.CalibrationBatchError, match="gave no batches"):
        run_calibration(Recorder(), [])


def test_a_batch_that_raises_is_named_and_chained() -> None:
    def model(x: Tensor) -> Tensor:
        if float(x.sum()) > 1:
            raise ValueError("too large")
        return x

    wrapper = nn.Module()
    wrapper.forward = model  # type: ignore[method-assign]
    with pytest.raises(
        pruneplug.CalibrationBatchError, match=r"calibration batch #2 raised ValueError: too large"
    ) as info:
        run_calibration(wrapper, [torch.zeros(1), torch.zeros(1), torch.ones(2)])
    assert isinstance(info.value.__cause__, ValueError)


def test_a_batch_of_another_type_and_a_failing_iterator_are_named() -> None:
    with pytest.raises(pruneplug.CalibrationBatchError, match=r"batch #1 is a int; a batch is a Tensor"):
        run_calibration(Recorder(), [torch.ones(1), 5])

    def failing() -> Iterator[Tensor]:
        yield torch.ones(1)
        raise OSError("disk gone")

    with pytest.raises(pruneplug.CalibrationBatchError, match=r"reading calibration batch #1 raised OSError") as info:
        run_calibration(Recorder(), failing())
    assert isinstance(info.value.__cause__, OSError)


def test_a_callable_that_raises_is_chained() -> None:
    def run(model: nn.Module) -> None:
        raise KeyError("where")

    with pytest.raises(pruneplug.CalibrationBatchError, match=r"the calibration run raised KeyError") as info:
        run_calibration(Recorder(), run)
    assert isinstance(info.value.__cause__, KeyError)


def test_a_one_shot_iterator_needed_twice_is_read_into_a_list() -> None:
    batches = [torch.ones(1), torch.ones(1)]
    assert reusable(iter(batches), 1) is not batches
    assert reusable(iter(batches), 2) == batches
    assert reusable(batches, 2) is batches


def test_a_one_shot_iterator_that_fails_while_read_into_a_list_names_the_batch() -> None:
    def failing() -> Iterator[Tensor]:
        yield torch.ones(1)
        raise OSError("disk gone")

    with pytest.raises(pruneplug.CalibrationBatchError, match=r"reading calibration batch #1 raised OSError") as info:
        reusable(failing(), 2)
    assert isinstance(info.value.__cause__, OSError)


# --------------------------------------------------------------------------------------------- capture and replay


def test_capture_stops_each_batch_at_the_first_block() -> None:
    model = helpers.Stack(depth=3)
    later = []
    model.blocks[1].register_forward_pre_hook(lambda m, a: later.append(1))
    batches = helpers.feature_batches(count=4)
    inputs = capture_inputs(model, model.blocks[0], "blocks.0", batches)
    assert later == [] and len(inputs) == 4
    for (args, kwargs), batch in zip(inputs, batches):
        assert kwargs == {} and torch.equal(args[0], model.inp(batch))


def test_capture_lets_a_callable_run_the_whole_model() -> None:
    model = helpers.Stack(depth=2)
    later = []
    model.blocks[1].register_forward_pre_hook(lambda m, a: later.append(1))
    batches = helpers.feature_batches(count=3)
    inputs = capture_inputs(model, model.blocks[0], "blocks.0", lambda m: [m(b) for b in batches])
    assert len(inputs) == 3 and later == [1, 1, 1]


def test_capture_names_a_block_never_reached() -> None:
    model = helpers.Stack(depth=2)
    unused = nn.Linear(2, 2)
    model.unused = unused
    with pytest.raises(
        pruneplug.CalibrationBlockError, match=r"batch #0 ran through the model without calling block 'unused'"
    ):
        capture_inputs(model, unused, "unused", helpers.feature_batches(count=2))
    with pytest.raises(pruneplug.CalibrationBlockError, match=r"never called block 'unused'"):
        capture_inputs(model, unused, "unused", lambda m: m(helpers.feature_batches(count=1)[0]))


def test_keyword_inputs_and_tuple_outputs_are_replayed() -> None:
    model = helpers.TinyTransformer(depth=2)
    ids = helpers.token_batches(count=2, vocab=11)
    inputs = capture_inputs(model, model.layers[0], "layers.0", ids)
    args, kwargs = inputs[0]
    assert set(kwargs) == {"attention_mask"} and torch.equal(args[0], model.embed(ids[0]))
    hidden = run_block(model.layers[0], inputs[0], "layers.0")
    assert torch.equal(hidden, model.layers[0](args[0], attention_mask=kwargs["attention_mask"])[0])
    mask = kwargs["attention_mask"]
    args, kwargs = with_hidden(((), {"hidden_states": args[0], "attention_mask": mask}), hidden)
    assert args == () and kwargs["hidden_states"] is hidden and kwargs["attention_mask"] is mask
    args, kwargs = with_hidden(inputs[1], hidden)
    assert args[0] is hidden and kwargs["attention_mask"] is inputs[1][1]["attention_mask"]


def test_a_block_returning_no_tensor_is_named() -> None:
    class Odd(nn.Module):
        def forward(self, x: Tensor) -> dict[str, Tensor]:
            return {"x": x}

    with pytest.raises(pruneplug.CalibrationBlockError, match=r"block 'odd' returned a dict"):
        run_block(Odd(), ((torch.ones(1),), {}), "odd")


def test_a_block_called_without_a_hidden_state_is_named() -> None:
    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = Recorder()

        def forward(self, x: Tensor) -> Tensor:
            return self.block(x=x)  # neither positional nor hidden_states=

    model = Outer()
    with pytest.raises(pruneplug.CalibrationBlockError, match=r"^block 'block' was called without a tensor"):
        capture_inputs(model, model.block, "block", [torch.ones(1)])
    with pytest.raises(pruneplug.CalibrationBlockError, match=r"^block 'block' was called without a tensor"):
        capture_inputs(model, model.block, "block", lambda m: m(torch.ones(1)))  # a run(model) too


@pytest.mark.parametrize("build", [helpers.tiny_llama, helpers.tiny_gpt2], ids=["llama", "gpt2"])
def test_hugging_face_blocks_replay_exactly_and_no_cache_grows(build: Any) -> None:
    model = build(layers=2)
    assert model.config.use_cache
    layers = model.model.layers if hasattr(model, "model") else model.transformer.h
    batches = [{"input_ids": ids} for ids in helpers.token_batches(count=2)]
    with torch.no_grad():
        inputs = capture_inputs(model, layers[0], "layer 0", batches)
        for args, kwargs in inputs:
            stored = [*args, *kwargs.values()]
            assert not any(type(v).__name__.endswith("Cache") for v in stored)
        # what block 1 sees in a plain forward of the dense model
        seen: list[Tensor] = []
        handle = layers[1].register_forward_pre_hook(
            lambda m, a, k: seen.append(a[0] if a else k["hidden_states"]), with_kwargs=True
        )
        for batch in batches:
            model(**batch, use_cache=False)
        handle.remove()
        for item, expected in zip(inputs, seen):
            first = run_block(layers[0], item, "layer 0")
            again = run_block(layers[0], item, "layer 0")  # a cache passed along would change the second run
            assert torch.equal(first, again)
            torch.testing.assert_close(first, expected)
