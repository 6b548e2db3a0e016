"""The zoo matrix: every zoo model pruned by prune_channels, compacted, checked, saved and loaded again.

For each model and amount: parameters and MACs fall, the output keeps its
shape, the compacted model computes what the masked one did (eval and train
mode, norms with random statistics), no pruning state is left, and the
compacted state_dict loads through safetensors into a freshly built model of
the same architecture, which then computes the same.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch

import pruneplug

_spec = importlib.util.spec_from_file_location("compaction_helpers", Path(__file__).with_name("helpers.py"))
assert _spec is not None and _spec.loader is not None
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)
zoo = helpers.load("zoo")

MODELS = {**zoo.ZOO, **zoo.EXTRA}
CASES = [(name, amount) for name in MODELS for amount in (0.3, 0.6)]


@pytest.mark.parametrize(("name", "amount"), CASES)
def test_a_zoo_model_compacts_to_what_its_masked_twin_computes(name: str, amount: float, tmp_path: Path) -> None:
    builder = MODELS[name]
    model, inputs = builder()
    helpers.randomize_norms(model)
    model.eval()
    dense = helpers.run(model, inputs)
    dense_params = pruneplug.count_params(model)

    pruneplug.prune_channels(model, "ln_structured", amount=amount, example_inputs=inputs, n=2)
    masked = copy.deepcopy(model)
    report = pruneplug.compact(model)

    assert report.params_before == dense_params
    assert report.params_after == pruneplug.count_params(model) < report.params_before
    assert report.macs_after < report.macs_before
    assert report.verified_modes == ("eval",)
    compacted = helpers.run(model, inputs)
    assert [t.shape for t in compacted] == [t.shape for t in dense]
    helpers.masked_and_compacted_agree(masked, model, inputs)
    assert helpers.pruning_leftovers(model) == []

    path = pruneplug.save_checkpoint(tmp_path / f"{name}.safetensors", model.state_dict())
    fresh, _ = builder()
    pruneplug.load_compacted(fresh, pruneplug.load_checkpoint(path).state_dict)
    fresh.eval()
    assert str(fresh) == str(model)  # the layers' attributes (in_channels, num_features ...) follow
    assert pruneplug.count_params(fresh) == report.params_after
    for a, b in zip(compacted, helpers.run(fresh, inputs)):
        assert torch.equal(a, b)


def _layout(graph: pruneplug.ChannelGraph) -> list[tuple[int, bool, tuple[tuple[str, int, tuple[int, ...]], ...]]]:
    return sorted(
        (
            group.size,
            group.prunable,
            tuple(sorted((m.name, m.dim, tuple(m.index.flatten().tolist())) for m in group.members)),
        )
        for group in graph.groups
    )


@pytest.mark.parametrize("name", list(MODELS))
def test_fx_and_the_eager_recorder_find_the_same_groups(name: str) -> None:
    model, inputs = MODELS[name]()
    by_fx = pruneplug.trace_channels(model, inputs, tracer="fx")
    by_eager = pruneplug.trace_channels(model, inputs, tracer="eager")
    assert (by_fx.tracer, by_eager.tracer) == ("fx", "eager")
    assert _layout(by_fx) == _layout(by_eager)
