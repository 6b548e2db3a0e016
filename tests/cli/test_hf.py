"""``pruneplug apply --hf DIR``: a Hugging Face model directory in, ``save_pretrained``'s directory out (in-process,
through ``pruneplug.cli.main``, on a tiny config-built LLaMA)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from pruneplug.cli import main
from pruneplug.cli._app import console
from pruneplug.cli._hf import token_input
from pruneplug.plans import ExampleInput, apply_plan, example_tensor, load_plan

transformers = pytest.importorskip("transformers")

VOCAB = 96
IDS = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(1))


def rule(module: str, amount: float) -> str:
    return (
        f'[[rules]]\nstrategy = "ln_structured"\nchannels = true\nmodules = ["{module}"]\n'
        f"params = {{ amount = {amount}, n = 2 }}\n"
    )


PLAN = (
    rule("model.layers.*.self_attn.q_proj", 0.5)
    + rule("model.layers.*.mlp.up_proj", 0.25)
    + rule("model.embed_tokens", 0.25)
)
UNSTRUCTURED = '[[rules]]\nstrategy = "l1_unstructured"\ntypes = ["Linear"]\nparams = { amount = 0.5 }\n'


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LLaMA (GQA, untied head) written by save_pretrained."""
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("hf") / "tiny"
    transformers.LlamaForCausalLM(config).save_pretrained(directory)
    return directory


@pytest.fixture
def folder(tmp_path: Path, saved: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "plan.toml").write_text(PLAN)
    (tmp_path / "unstructured.toml").write_text(UNSTRUCTURED)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(console, "_width", 200)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["-q", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def logits(model: nn.Module) -> Tensor:
    with torch.no_grad():
        return model(IDS).logits  # type: ignore[no-any-return]


def loaded(directory: Path) -> nn.Module:
    return transformers.AutoModelForCausalLM.from_pretrained(directory).eval()  # type: ignore[no-any-return]


def leftovers(folder: Path) -> list[str]:
    """Temporary directories a write left behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_heads_neurons_and_hidden_size_compacted_and_loadable_by_from_pretrained(
    folder: Path, saved: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "apply", "plan.toml", "--hf", str(saved), "-o", "small", "--compact")
    assert status == 0, err
    assert "Wrote small; compacted, plain weights: from_pretrained loads it." in out
    assert "hidden_size=48" in out and "Compaction" in out
    config = json.loads((folder / "small" / "config.json").read_text())
    assert (config["hidden_size"], config["intermediate_size"]) == (48, 72)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, 2)
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert not any(key.endswith(("_mask", "_orig")) for key in load_file(folder / "small" / "model.safetensors"))
    # the same in Python, on the default example input: one sequence of 16 token ids from the whole vocabulary
    in_python = loaded(saved)
    tokens = ExampleInput(shape=(1, 16), dtype="int64", high=VOCAB)
    apply_plan(in_python, load_plan(folder / "plan.toml"), example_inputs=example_tensor(tokens), compact=True)
    assert torch.equal(logits(loaded(folder / "small")), logits(in_python))
    assert leftovers(folder) == []


def test_the_input_flags_and_the_plan_s_compact(folder: Path, saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "own.toml").write_text("compact = true\n" + rule("model.layers.*.mlp.up_proj", 0.5))
    shape = ("--input-shape", "2,8", "--input-dtype", "int64")
    status, _, err = run(capsys, "apply", "own.toml", "--hf", str(saved), "-o", "small", *shape)
    assert status == 0, err
    assert json.loads((folder / "small" / "config.json").read_text())["intermediate_size"] == 48


def test_without_compaction_the_pruning_is_made_permanent(
    folder: Path, saved: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "apply", "unstructured.toml", "--hf", str(saved), "-o", "sparse")
    assert status == 0, err
    assert "Wrote sparse; pruned entries are zeros, plain weights: from_pretrained loads it." in out
    state = load_file(folder / "sparse" / "model.safetensors")
    assert not any(key.endswith(("_mask", "_orig")) for key in state)
    assert float((state["model.layers.0.mlp.up_proj.weight"] == 0).float().mean()) == 0.5
    in_python = loaded(saved)
    apply_plan(in_python, load_plan(folder / "unstructured.toml"))
    assert torch.equal(logits(loaded(folder / "sparse")), logits(in_python))


def test_a_pruned_hidden_size_must_be_compacted(folder: Path, saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Masked norms normalize over the kept channels; from_pretrained's plain ones would not: refused."""
    status, _, err = run(capsys, "apply", "plan.toml", "--hf", str(saved), "-o", "small")
    assert status == 2 and "model.layers.0.input_layernorm" in err and "add --compact" in err, err
    assert not (folder / "small").exists() and leftovers(folder) == []


def test_a_dry_run_writes_nothing(folder: Path, saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "apply", "plan.toml", "--hf", str(saved), "--dry-run", "--compact")
    assert status == 0, err
    assert "and its compaction; nothing was changed or written" in out
    assert sorted(p.name for p in folder.iterdir()) == ["plan.toml", "unstructured.toml"]


def test_force_replaces_the_directory_and_a_failed_write_keeps_the_old_one(
    folder: Path, saved: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (folder / "small").mkdir()
    (folder / "small" / "old.txt").write_text("old")
    status, _, err = run(capsys, "apply", "unstructured.toml", "--hf", str(saved), "-o", "small")
    assert status == 2 and "small: the output exists; pass --force to replace it" in err

    def broken(self: nn.Module, directory: str, **kwargs: object) -> None:
        (Path(directory) / "half.safetensors").write_text("")
        raise RuntimeError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(transformers.PreTrainedModel, "save_pretrained", broken)
        status, _, err = run(capsys, "apply", "unstructured.toml", "--hf", str(saved), "-o", "small", "--force")
    assert status == 2 and "small: save_pretrained failed: RuntimeError: disk full" in err, err
    assert [p.name for p in (folder / "small").iterdir()] == ["old.txt"] and leftovers(folder) == []
    status, _, err = run(capsys, "apply", "unstructured.toml", "--hf", str(saved), "-o", "small", "--force")
    assert status == 0, err
    assert not (folder / "small" / "old.txt").exists() and (folder / "small" / "config.json").exists()
    assert leftovers(folder) == []


def _config(folder: Path, saved: Path, **changes: object) -> Path:
    directory = folder / "edited"
    directory.mkdir()
    config = json.loads((saved / "config.json").read_text())
    config.update(changes)
    config = {k: v for k, v in config.items() if v is not None}
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["-m", "pruneplug.models:LeNet", "--hf", "SAVED", "-o", "out"], ["MODULE:FACTORY or --hf DIR (not both)"]),
        (["-o", "out"], ["apply needs the model: --model MODULE:FACTORY or --hf DIR"]),
        (["--hf", "SAVED", "-w", "w.safetensors", "-o", "out"], ["--weights cannot be used with --hf"]),
        (["--hf", "missing", "-o", "out"], ["--hf missing: does not exist"]),
        (["--hf", "plan.toml", "-o", "out"], ["--hf plan.toml: is not a directory"]),
        (["--hf", ".", "-o", "out"], ["--hf .: has no config.json"]),
        (["--hf", "SAVED", "-o", "plan.toml"], ["plan.toml: is a file; with --hf, -o names the directory"]),
        (["--hf", "ARCH", "-o", "out"], ["names the architecture 'LlamaForCausalLN'", "Did you mean"]),
        (["--hf", "NO_ARCH", "-o", "out"], ["config.json names no architecture"]),
        (["--hf", "BAD_JSON", "-o", "out"], ["cannot read config.json"]),
        (["--hf", "NO_WEIGHTS", "-o", "out"], ["LlamaForCausalLM.from_pretrained failed"]),
    ],
)
def test_bad_input_is_named(
    folder: Path, saved: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: list[str]
) -> None:
    replace = {"SAVED": str(saved)}
    if "ARCH" in args:
        replace["ARCH"] = str(_config(folder, saved, architectures=["LlamaForCausalLN"]))
    if "NO_ARCH" in args:
        replace["NO_ARCH"] = str(_config(folder, saved, architectures=None))
    if "NO_WEIGHTS" in args:
        replace["NO_WEIGHTS"] = str(_config(folder, saved))
    if "BAD_JSON" in args:
        replace["BAD_JSON"] = str(_config(folder, saved))
        (folder / "edited" / "config.json").write_text("{not json")
    status, _, err = run(capsys, "apply", "plan.toml", *[replace.get(a, a) for a in args])
    assert status == 2, err
    for word in words:
        assert word in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (folder / "out").exists()


def test_without_transformers(
    folder: Path, saved: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers raises ImportError
    status, _, err = run(capsys, "apply", "plan.toml", "--hf", str(saved), "-o", "out")
    assert status == 2 and "needs the transformers package (pip install transformers)" in err, err
    assert not (folder / "out").exists()


def test_the_default_example_input_is_token_ids_from_the_whole_vocabulary() -> None:
    def model(**config: object) -> nn.Module:
        net = nn.Linear(1, 1)
        net.config = SimpleNamespace(**config)  # type: ignore[assignment]
        return net

    llama = model(vocab_size=VOCAB, max_position_embeddings=64)
    assert token_input(llama, None) == ExampleInput(shape=(1, 16), dtype="int64", high=VOCAB)
    assert token_input(model(vocab_size=VOCAB, max_position_embeddings=8), None) == ExampleInput(
        shape=(1, 8), dtype="int64", high=VOCAB
    )
    ids = ExampleInput(shape=(2, 5), dtype="int64")
    assert token_input(llama, ids) == ExampleInput(shape=(2, 5), dtype="int64", high=VOCAB)
    own = ExampleInput(shape=(2, 5), dtype="int32", high=10)
    images = ExampleInput(shape=(1, 3, 32, 32))
    assert token_input(llama, own) is own and token_input(llama, images) is images
    vit = model(image_size=32)
    assert token_input(vit, None) is None and token_input(vit, images) is images


def test_layers_of_different_sizes_are_written_and_the_user_told_how_to_load_them(
    folder: Path, saved: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "uneven.toml").write_text(
        rule("model.layers.*.mlp.up_proj", 0.5) + 'exclude = ["model.layers.0.*"]\n'  # (the rule's own table)
    )
    status, out, err = run(capsys, "apply", "uneven.toml", "--hf", str(saved), "-o", "small", "--compact")
    assert status == 0, err
    assert "from_pretrained cannot rebuild it; build the model from its config and load the weights with" in out
    config = json.loads((folder / "small" / "config.json").read_text())
    assert config["pruneplug_per_layer_sizes"]["intermediate_size"] == [96, 48]
