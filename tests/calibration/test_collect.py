"""The collector: layers fed the very same tensor share one accumulator, and only while they truly are."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import pruneplug
from pruneplug.calibration import driver
from pruneplug.calibration.collect import Collector
from pruneplug.calibration.targets import Target
from pruneplug.statistics.spec import INPUT_HESSIAN, INPUT_SQ_NORMS, Statistic

_spec = importlib.util.spec_from_file_location("calibration_helpers", Path(__file__).with_name("helpers.py"))
assert _spec is not None and _spec.loader is not None
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


class Drifting(helpers.AttentionBlock):
    """Feeds ``k`` the tensor ``q`` gets on sequences of 5 tokens (the first batch), and twice it on others."""

    def forward(self, hidden_states: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, None]:
        h = self.ln1(hidden_states)
        key_input = h if hidden_states.shape[-2] == 5 else h * 2.0
        scores = self.q(h) @ self.k(key_input).transpose(-1, -2)
        h = hidden_states + self.o(torch.softmax(scores, dim=-1) @ self.v(h))
        return self.mlp(self.ln2(h)), None


def collect(
    block: nn.Module, statistics: list[Statistic], *, share: bool, batches: int = 3
) -> tuple[Collector, dict[str, dict[str, Tensor]]]:
    targets = [Target(name, module, 0) for name, module in block.named_modules() if isinstance(module, nn.Linear)]
    collector = Collector(targets, statistics, share=share)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad(), collector.hooked():
        for index in range(batches):
            block(torch.randn(2, 5 + index, 8, generator=generator))
    found = collector.results()
    return collector, {target.name: found[target.module] for target in targets}


def test_query_key_and_value_share_one_hessian_equal_to_their_own() -> None:
    torch.manual_seed(0)
    block = helpers.AttentionBlock()
    shared, stats = collect(block, [INPUT_HESSIAN, INPUT_SQ_NORMS], share=True)
    _, alone = collect(block, [INPUT_HESSIAN, INPUT_SQ_NORMS], share=False)
    assert shared.shared == {"k": "q", "v": "q"} and not shared.sharing_broke
    assert stats["k"]["input_hessian"] is stats["q"]["input_hessian"] is stats["v"]["input_hessian"]
    for name in alone:
        for statistic, value in alone[name].items():
            assert torch.equal(stats[name][statistic], value), (name, statistic)
    assert shared.rows == {name: 2 * (5 + 6 + 7) for name in alone}


def test_a_layer_fed_another_tensor_later_breaks_the_sharing() -> None:
    torch.manual_seed(0)
    collector, _ = collect(Drifting(), [INPUT_HESSIAN], share=True)
    assert collector.sharing_broke


def test_statistics_that_read_more_than_the_inputs_are_never_shared() -> None:
    reads_weights = Statistic("weighted", INPUT_HESSIAN.create)  # inputs_only defaults to False
    torch.manual_seed(0)
    collector, stats = collect(helpers.AttentionBlock(), [reads_weights, INPUT_HESSIAN], share=True)
    assert collector.shared == {}
    assert stats["k"]["input_hessian"] is not stats["q"]["input_hessian"]


def test_inference_tensors_are_never_shared() -> None:
    torch.manual_seed(0)
    block = helpers.AttentionBlock()
    targets = [Target(name, module, 0) for name, module in block.named_modules() if isinstance(module, nn.Linear)]
    collector = Collector(targets, [INPUT_HESSIAN], share=True)
    with torch.inference_mode(), collector.hooked():
        block(torch.randn(2, 5, 8))
    assert collector.shared == {}


def _pruned(model_of: Callable[[], nn.Module], force_unshared: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    real = driver._collect

    def collect_unshared(*args: Any, share: bool) -> Any:
        return real(*args, share=False)

    if force_unshared:
        monkeypatch.setattr(driver, "_collect", collect_unshared)
    model = model_of()
    batches = [helpers.token_batches(count=1, length=length, vocab=11, seed=length)[0] for length in (5, 6, 7)]
    pruneplug.prune_calibrated(model, "sparsegpt", amount=0.5, calibration=batches)
    monkeypatch.setattr(driver, "_collect", real)
    return {
        name: (m.weight_mask.clone(), m.weight_orig.detach().clone())
        for name, m in model.named_modules()
        if hasattr(m, "weight_mask")
    }


def _model(block: type[nn.Module]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(4)
        model = helpers.TinyTransformer(depth=2)
        model.layers = nn.ModuleList(block() for _ in range(2))
        return model

    return build


@pytest.mark.parametrize("block", [helpers.AttentionBlock, Drifting], ids=["shared", "sharing broken"])
def test_the_pipeline_prunes_as_without_sharing(block: type[nn.Module], monkeypatch: pytest.MonkeyPatch) -> None:
    shared = _pruned(_model(block), False, monkeypatch)
    alone = _pruned(_model(block), True, monkeypatch)
    assert shared.keys() == alone.keys() and len(shared) == 12
    for name, (mask, weight) in shared.items():
        assert torch.equal(mask, alone[name][0]) and torch.equal(weight, alone[name][1]), name


def test_a_llama_block_shares_its_attention_and_mlp_inputs() -> None:
    pytest.importorskip("transformers")
    model = helpers.tiny_llama(1).eval()
    block = model.model.layers[0]
    targets = [Target(name, module, 0) for name, module in block.named_modules() if isinstance(module, nn.Linear)]
    collector = Collector(targets, [INPUT_HESSIAN], share=True)
    with torch.no_grad(), collector.hooked():
        for batch in helpers.token_batches(count=2):
            model(batch)
    assert collector.shared == {
        "self_attn.k_proj": "self_attn.q_proj",
        "self_attn.v_proj": "self_attn.q_proj",
        "mlp.up_proj": "mlp.gate_proj",
    }
    assert not collector.sharing_broke


class Reused(nn.Module):
    """``a`` and ``b`` are fed ``x``, then one of them a second tensor alone: the other sees half of what it does."""

    def __init__(self, twice: str) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)
        self.twice = twice

    def forward(self, x: Tensor) -> Tensor:
        return self.a(x) + self.b(x) + getattr(self, self.twice)(torch.tanh(x) * 3)


@pytest.mark.parametrize("batches", [1, 3])
@pytest.mark.parametrize("twice", ["a", "b"], ids=["leader fed again", "follower fed again"])
def test_a_layer_fed_more_or_less_than_its_leader_breaks_the_sharing(twice: str, batches: int) -> None:
    torch.manual_seed(0)
    collector, _ = collect(Reused(twice), [INPUT_HESSIAN], share=True, batches=batches)
    assert collector.shared == {"b": "a"} and collector.sharing_broke
