"""Channel rules on Hugging Face transformers (built from configs, random weights): heads, MLP neurons and
the hidden size addressed by module pattern, each with its own amount, compacted, loadable by
``from_pretrained``."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import pruneplug
from pruneplug.plans import PlanError, apply_plan

transformers = pytest.importorskip("transformers")

VOCAB = 96
TOKENS = {"shape": [1, 16], "dtype": "int64", "high": VOCAB}
IDS = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(1))
HEADS = "model.layers.*.self_attn.q_proj"
NEURONS = "model.layers.*.mlp.up_proj"
HIDDEN = "model.embed_tokens"


def llama(layers: int = 2) -> nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def gpt2() -> nn.Module:
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_inner=96, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).eval()


def rule(module: str, amount: float, **fields: Any) -> dict[str, Any]:
    return {
        "strategy": "ln_structured",
        "channels": True,
        "modules": [module],
        "params": {"amount": amount, "n": 2},
        **fields,
    }


def plan(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"example_input": TOKENS, "compact": True, "rules": list(rules)}


def logits(model: nn.Module) -> Tensor:
    with torch.no_grad():
        return model(IDS).logits  # type: ignore[no-any-return]


def masked_and_compacted(model: nn.Module, data: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """The logits of a twin the plan leaves masked, and of ``model``, which the plan compacts."""
    twin = copy.deepcopy(model)
    apply_plan(twin, data, compact=False)
    result = apply_plan(model, data)
    assert result.compaction is not None
    return logits(twin), logits(model)


def test_heads_neurons_and_hidden_size_by_module_pattern_each_with_its_amount(
    registry: pruneplug.Registry, tmp_path: Path
) -> None:
    model = llama()
    data = plan(rule(HEADS, 0.5), rule(NEURONS, 0.25), rule(HIDDEN, 0.25))
    masked, compacted = masked_and_compacted(model, data)
    torch.testing.assert_close(compacted, masked, rtol=1e-4, atol=1e-5)
    config = model.config
    sizes = (config.num_attention_heads, config.num_key_value_heads, config.intermediate_size, config.hidden_size)
    assert sizes == (4, 2, 72, 48)
    assert config.head_dim == 8 and not hasattr(config, "pruneplug_per_layer_sizes")
    assert model.model.layers[1].self_attn.q_proj.weight.shape == (32, 48)
    assert model.lm_head.weight.shape == (VOCAB, 48)
    model.save_pretrained(tmp_path)
    reloaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.equal(logits(reloaded), compacted)


def test_a_rule_prunes_only_the_part_its_modules_write(registry: pruneplug.Registry) -> None:
    """Selecting q_proj prunes heads, not the hidden size q_proj reads; up_proj neurons, not heads."""
    for selected, expected in ((HEADS, (4, 2, 96, 64)), (NEURONS, (8, 4, 48, 64)), (HIDDEN, (8, 4, 96, 32))):
        model = llama()
        apply_plan(model, plan(rule(selected, 0.5)))
        config = model.config
        sizes = (config.num_attention_heads, config.num_key_value_heads, config.intermediate_size, config.hidden_size)
        assert sizes == expected, selected


def test_exclude_leaves_one_layer_alone(registry: pruneplug.Registry) -> None:
    model = llama(layers=3)
    first = {name: p.shape for name, p in model.model.layers[0].named_parameters()}
    data = plan(
        rule(HEADS, 0.5, exclude=["model.layers.0.*"]),
        rule(NEURONS, 0.5, exclude=["model.layers.0.*"]),
    )
    masked, compacted = masked_and_compacted(model, data)
    torch.testing.assert_close(compacted, masked, rtol=1e-4, atol=1e-5)
    assert {name: p.shape for name, p in model.model.layers[0].named_parameters()} == first
    per_layer = model.config.pruneplug_per_layer_sizes
    assert per_layer["num_attention_heads"] == [8, 4, 4] and per_layer["num_key_value_heads"] == [4, 2, 2]
    assert per_layer["intermediate_size"] == [96, 48, 48]
    assert model.config.hidden_size == 64


def test_excluding_a_layer_keeps_the_hidden_size_every_layer_shares(registry: pruneplug.Registry) -> None:
    with pytest.raises(PlanError) as caught:
        apply_plan(llama(), plan(rule(HIDDEN, 0.5, exclude=["model.layers.0.*"])))
    assert caught.value.rule == 0 and caught.value.field == "modules"
    assert "model.layers.0.input_layernorm is excluded" in str(caught.value)


def test_gpt2_conv1d_outputs_are_its_weight_s_columns(registry: pruneplug.Registry) -> None:
    """GPT-2's Conv1D stores its weight as (in, out): selecting c_fc prunes the MLP's neurons, not the hidden
    size it reads; selecting c_attn prunes heads."""
    model = gpt2()
    data = plan(rule("transformer.h.*.mlp.c_fc", 0.5), rule("transformer.h.*.attn.c_attn", 0.5))
    masked, compacted = masked_and_compacted(model, data)
    torch.testing.assert_close(compacted, masked, rtol=1e-4, atol=1e-5)
    assert (model.config.n_embd, model.config.n_inner, model.config.n_head) == (64, 48, 2)
    assert model.transformer.h[0].mlp.c_fc.weight.shape == (64, 48)


def test_a_data_aware_plan_prunes_the_layers_inside_the_decoder_layers() -> None:
    """No module filter: every projection of every decoder layer, never the LM head (outside the blocks);
    the default blocks are ``model.layers``, and the batches are token ids."""
    model, reference = llama(), llama()
    batches = [IDS, IDS.flip(0)]
    plan = {
        "calibration": {"batches": "unused.module:given_below"},
        "rules": [{"strategy": "wanda", "params": {"amount": 0.5}}],
    }
    report = apply_plan(model, plan, calibration=batches)
    assert len(report.rules[0].tensors) == 2 * 7 and all(t.startswith("model.layers.") for t in report.rules[0].tensors)
    assert not pruneplug.is_pruned(model.lm_head)
    pruneplug.prune_calibrated(reference, "wanda", amount=0.5, calibration=batches, progress=False)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
