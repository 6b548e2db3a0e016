"""Hugging Face transformers, built from configs with random weights: heads, MLP neurons and the hidden size.

For each model: prune_channels finds the groups by itself, compact removes
them, the compacted logits equal the masked ones, the config states the new
sizes, and ``save_pretrained`` -> ``from_pretrained`` gives the same logits.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import pruneplug
from pruneplug.compaction.graph import ChannelGroup

transformers = pytest.importorskip("transformers")

VOCAB = 96
TOKENS = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(0))
IMAGES = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def llama(**changes: Any) -> nn.Module:
    config = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**config, **changes}))


def qwen2() -> nn.Module:
    config = transformers.Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    return transformers.Qwen2ForCausalLM(config)


def mistral() -> nn.Module:
    config = transformers.MistralConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
    )
    return transformers.MistralForCausalLM(config)


def gpt2() -> nn.Module:
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_inner=96, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(config)


def bert() -> nn.Module:
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=32,
        num_labels=3,
    )
    return transformers.BertForSequenceClassification(config)


def vit() -> nn.Module:
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        num_labels=5,
    )
    return transformers.ViTForImageClassification(config)


MODELS: dict[str, tuple[Callable[[], nn.Module], Tensor]] = {
    "llama": (llama, TOKENS),
    "llama-tied": (lambda: llama(tie_word_embeddings=True), TOKENS),
    "qwen2": (qwen2, TOKENS),
    "mistral": (mistral, TOKENS),
    "gpt2": (gpt2, TOKENS),
    "bert": (bert, TOKENS),
    "vit": (vit, IMAGES),
}
CAUSAL = {"llama", "llama-tied", "qwen2", "mistral", "gpt2"}


def build(name: str) -> tuple[nn.Module, Tensor]:
    make, inputs = MODELS[name]
    torch.manual_seed(0)
    return make().eval(), inputs


def logits(model: nn.Module, inputs: Tensor) -> Tensor:
    with torch.no_grad():
        return model(inputs).logits  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_heads_neurons_and_hidden_size_are_found(name: str) -> None:
    model, inputs = build(name)
    graph = pruneplug.trace_channels(model, (inputs,))
    parts = [g.part for g in graph.prunable]
    assert parts.count("heads") == 2 and parts.count("neurons") == 2 and parts.count("hidden") == 1, graph.summary()
    assert set(parts) <= {"heads", "neurons", "hidden", "channels"} and parts.count("channels") == (name == "bert")
    heads = next(g for g in graph.prunable if g.part == "heads")
    config = model.config
    per_group = config.num_attention_heads // getattr(config, "num_key_value_heads", config.num_attention_heads)
    head_size = config.hidden_size // config.num_attention_heads
    assert heads.size == getattr(config, "num_key_value_heads", config.num_attention_heads)
    if name == "gpt2":  # one head is rows of q, k and v in the fused c_attn (a Conv1D: out along dim 1)
        fused = heads.members[0]
        assert (fused.module, fused.dim, heads.unit, heads.block_count) == ("transformer.h.0.attn.c_attn", 1, 48, 1)
    else:  # a key/value head takes the query heads it serves along
        query = heads.members[0]
        assert query.module.endswith(("q_proj", "query")) and query.dim == 0
        assert heads.unit == per_group * head_size


@pytest.mark.parametrize("amount", [0.25, 0.5])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_compacted_logits_equal_the_masked_ones_and_reload_from_pretrained(
    name: str, amount: float, tmp_path: Path
) -> None:
    model, inputs = build(name)
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=amount, example_inputs=(inputs,))
    masked = logits(model, inputs)
    before = sum(p.numel() for p in model.parameters())
    report = pruneplug.compact(model)
    assert report.max_abs_diff <= 1e-5
    assert sum(p.numel() for p in model.parameters()) < before
    assert torch.allclose(logits(model, inputs), masked, rtol=1e-4, atol=1e-5)
    config = model.config
    assert config.hidden_size == round(64 * (1 - amount))
    if name != "vit":  # (ViT's input embeddings are a patch convolution)
        assert model.get_input_embeddings().weight.shape[1] == config.hidden_size
    assert report.config_sizes["hidden_size"] == config.hidden_size and not report.config_mismatches
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path).eval()
    assert torch.equal(logits(reloaded, inputs), logits(model, inputs))
    if name in CAUSAL:
        assert config.num_attention_heads % getattr(config, "num_key_value_heads", 1) == 0
        generated = model.generate(inputs[:1], max_new_tokens=4, do_sample=False)
        assert generated.shape == (1, inputs.shape[1] + 4)
    if name in ("llama-tied", "gpt2"):
        assert model.lm_head.weight is model.get_input_embeddings().weight


def test_heads_alone_leave_the_hidden_size_and_state_the_new_head_count(tmp_path: Path) -> None:
    model, inputs = build("llama")
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=(inputs,), group_filter=_heads)
    report = pruneplug.compact(model)
    assert report.config_sizes["num_attention_heads"] == 4 and report.config_sizes["num_key_value_heads"] == 2
    assert model.config.hidden_size == 64 and model.config.intermediate_size == 96
    assert model.model.layers[0].self_attn.num_key_value_groups == 2


def _heads(group: ChannelGroup) -> bool:
    return group.part == "heads"


def test_layers_of_different_sizes_are_stated_apart_and_the_report_says_so() -> None:
    model, inputs = build("llama")
    mlp = [g for g in pruneplug.trace_channels(model, (inputs,)).prunable if g.part == "neurons"]
    pruneplug.prune_channels(
        model,
        "ln_structured",
        n=2,
        amount=0.5,
        example_inputs=(inputs,),
        group_filter=lambda g: g.name == mlp[0].name,
    )
    report = pruneplug.compact(model)
    assert report.per_layer_sizes == {"intermediate_size": [48, 96]}
    assert model.config.pruneplug_per_layer_sizes["intermediate_size"] == [48, 96]
    assert "load_compacted" in str(report)


def test_bert_with_heads_and_hidden_size_pruned_apart_is_not_describable() -> None:
    model, inputs = build("bert")
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=(inputs,), group_filter=_heads)
    masked = logits(model, inputs)
    report = pruneplug.compact(model)
    assert torch.allclose(logits(model, inputs), masked, rtol=1e-4, atol=1e-5)
    # BERT's head size is hidden_size / num_attention_heads: 2 heads of 16 in a hidden size of 64 cannot be stated
    assert report.config_mismatches and "load_compacted" in str(report)


def test_torch_transformer_encoder_shrinks_its_width_and_feed_forward() -> None:
    """nn.MultiheadAttention has one embed_dim for the stream and q/k/v: its heads shrink (head size) with it."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(64, 4, 96, dropout=0.0, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(64), enable_nested_tensor=False)
    model = nn.Sequential(nn.Embedding(VOCAB, 64), encoder, nn.Linear(64, 7)).eval()
    graph = pruneplug.trace_channels(model, (TOKENS,))
    width = graph.group_of("0", "weight", 1)
    assert width is not None and width.prunable and width.block_count == 4  # the 4 heads keep equal sizes
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=(TOKENS,))
    with torch.no_grad():
        masked = model(TOKENS)
    report = pruneplug.compact(model)
    attention = encoder.layers[0].self_attn
    assert (attention.embed_dim, attention.num_heads, attention.head_dim) == (32, 4, 8)
    assert encoder.layers[1].linear1.out_features == 48 and report.config_sizes == {}
    with torch.no_grad():
        assert torch.allclose(model(TOKENS), masked, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("tied", [False, True])
def test_layers_of_different_sizes_load_with_load_compacted_and_not_from_pretrained(tied: bool, tmp_path: Path) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    model, inputs = build("llama-tied" if tied else "llama")
    first_mlp = next(g for g in pruneplug.trace_channels(model, (inputs,)).prunable if g.part == "neurons")
    chosen = {
        first_mlp.name,
        next(g.name for g in pruneplug.trace_channels(model, (inputs,)).prunable if g.part == "hidden"),
    }
    pruneplug.prune_channels(
        model, "ln_structured", n=2, amount=0.5, example_inputs=(inputs,), group_filter=lambda g: g.name in chosen
    )
    report = pruneplug.compact(model)
    assert report.per_layer_sizes == {"intermediate_size": [48, 96]} and report.config_mismatches
    model.save_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):  # transformers' own error, with its report
        type(model).from_pretrained(tmp_path)
    config = transformers.AutoConfig.from_pretrained(tmp_path)
    assert config.pruneplug_per_layer_sizes["intermediate_size"] == [48, 96]
    fresh = type(model)(config).eval()
    pruneplug.load_compacted(fresh, safetensors_torch.load_file(tmp_path / "model.safetensors"))
    assert torch.equal(logits(fresh, inputs), logits(model, inputs))
    assert fresh.model.layers[0].mlp.up_proj.out_features == 48 and fresh.config.hidden_size == 32
    if tied:
        assert fresh.lm_head.weight is fresh.model.embed_tokens.weight


def test_the_config_the_model_was_built_from_is_left_as_it_was() -> None:
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=1, num_attention_heads=4
    )
    model = transformers.LlamaForCausalLM(config).eval()
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=(TOKENS,))
    pruneplug.compact(model)
    assert (config.hidden_size, config.intermediate_size, config.num_attention_heads) == (64, 96, 4)
    assert model.config is not config and model.config.hidden_size == 32
    assert all(getattr(m, "config", model.config) is model.config for m in model.modules())


def test_a_failed_compaction_gives_back_the_config_and_the_attributes(monkeypatch: pytest.MonkeyPatch) -> None:
    model, inputs = build("bert")
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=(inputs,))
    config = model.config
    attention = model.bert.encoder.layer[0].attention.self
    state = {k: v.clone() for k, v in model.state_dict().items()}
    original = type(attention).forward

    def broken_once_compacted(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        output = original(self, *args, **kwargs)
        if self.query.out_features == 64:  # still the masked model
            return output
        return (output[0] * 2, *output[1:])  # the compacted attention computes something else

    monkeypatch.setattr(type(attention), "forward", broken_once_compacted)
    with pytest.raises(pruneplug.CompactionError):
        pruneplug.compact(model)
    assert model.config is config and config.hidden_size == 64 and attention.num_attention_heads == 4
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_sizes_the_config_class_refuses_are_kept_out_of_it(tmp_path: Path) -> None:
    """transformers' LlamaConfig wants hidden_size % num_attention_heads == 0: 6 heads in 64 are refused."""
    model, inputs = build("llama")
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.25, example_inputs=(inputs,), group_filter=_heads)
    report = pruneplug.compact(model)
    assert report.config_mismatches[0].startswith("the config refuses the new sizes")
    assert model.config.num_attention_heads == 8 and model.config.pruneplug_per_layer_sizes["num_attention_heads"] == 6
    model.save_pretrained(tmp_path)  # the config it writes is one transformers accepts
    fresh = type(model)(transformers.AutoConfig.from_pretrained(tmp_path)).eval()
    pruneplug.load_compacted(fresh, pytest.importorskip("safetensors.torch").load_file(tmp_path / "model.safetensors"))
    assert torch.equal(logits(fresh, inputs), logits(model, inputs))


def test_a_number_the_config_would_rebuild_otherwise_is_reported() -> None:
    """Gemma scales its embeddings by sqrt(hidden_size), fixed when built: a rebuilt model would differ."""
    config = transformers.GemmaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
    )
    model = transformers.GemmaForCausalLM(config).eval()
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=(TOKENS,))
    report = pruneplug.compact(model)
    assert any("embed_scale" in line for line in report.config_mismatches), report.config_mismatches
    assert "load_compacted" in str(report)


class DictConfigured(nn.Module):
    """A user's model with a plain dict as ``config`` and HF-like names: not a transformers model."""

    def __init__(self) -> None:
        super().__init__()
        self.config = {"dim": 16, "heads": 4}
        self.layers = nn.ModuleList([nn.Module()])
        self.layers[0].self_attn = nn.Module()
        self.layers[0].self_attn.head_dim = 4
        self.layers[0].self_attn.q_proj = nn.Linear(16, 16)
        self.layers[0].self_attn.k_proj = nn.Linear(16, 16)
        self.layers[0].mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16))

    def forward(self, x: Tensor) -> Tensor:
        layer = self.layers[0]
        return layer.mlp(x + layer.self_attn.q_proj(x) * layer.self_attn.k_proj(x))


def test_a_config_that_is_not_transformers_is_left_alone_and_compaction_works() -> None:
    model = DictConfigured().eval()
    x = torch.randn(2, 16)
    pruneplug.prune_channels(model, "ln_structured", n=2, amount=0.5, example_inputs=x)
    report = pruneplug.compact(model)
    assert model.config == {"dim": 16, "heads": 4} and report.config_sizes == {} and not report.config_mismatches
    assert model.layers[0].mlp[0].out_features == 16
