"""Checkpoints: safetensors and weights-only .pt in, atomic writes out, masks and history kept."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import pruneplug
from pruneplug.io import checkpoints
from pruneplug.io.checkpoints import (
    CheckpointError,
    CheckpointExistsError,
    load_checkpoint,
    load_into,
    save_checkpoint,
)
from pruneplug.io.report import report, tensor_histories
from pruneplug.models import LeNet
from pruneplug.testing import assert_unchanged, snapshot


def pruned_lenet() -> LeNet:
    model = LeNet()
    pruneplug.prune(model.conv1, "weight", "ln_structured", amount=2, n=2, dim=0)
    pruneplug.prune_global([(model.fc1, "weight"), (model.fc2, "weight")], "l1_unstructured", amount=0.5)
    return model


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("name", ["model.safetensors", "model.pt", "model.pth"])
def test_a_pruned_model_round_trips(registry: pruneplug.Registry, tmp_path: Path, name: str) -> None:
    model = pruned_lenet()
    path = save_checkpoint(tmp_path / name, model.state_dict(), history=tensor_histories(model))
    loaded = load_checkpoint(path)
    assert loaded.format == ("safetensors" if name.endswith("safetensors") else "torch")
    assert loaded.state_dict["conv1.weight_mask"].dtype == torch.bool  # bool masks survive
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict[key], value), key
    assert sorted(loaded.masked) == ["conv1.weight", "fc1.weight", "fc2.weight"]
    fresh = LeNet()
    earlier = load_into(fresh, loaded)
    assert torch.equal(fresh.fc1.weight, model.fc1.weight)
    assert pruneplug.is_pruned(fresh.fc1)
    histories = tensor_histories(fresh, earlier)
    if loaded.format == "safetensors":  # history travels in the metadata
        assert histories == tensor_histories(model)
    else:
        assert histories == {}  # .pt files hold tensors only; the identity of loading is not history
    assert report(fresh, history=earlier).totals == report(model).totals
    assert leftovers(tmp_path) == []


def test_the_output_is_never_replaced_unasked(tmp_path: Path) -> None:
    target = tmp_path / "out.safetensors"
    save_checkpoint(target, {"w": torch.ones(2)})
    with pytest.raises(CheckpointExistsError, match="--force"):
        save_checkpoint(target, {"w": torch.zeros(2)})
    assert torch.equal(load_checkpoint(target).state_dict["w"], torch.ones(2))
    save_checkpoint(target, {"w": torch.zeros(2)}, overwrite=True)
    assert torch.equal(load_checkpoint(target).state_dict["w"], torch.zeros(2))
    assert isinstance(CheckpointExistsError("x"), FileExistsError)


def test_a_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        path = Path(str(args[-1]))
        path.write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints, "_write", fail)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_checkpoint(tmp_path / "out.safetensors", {"w": torch.ones(2)})
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(checkpoints, "_write", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "out.safetensors", {"w": torch.ones(2)})
    assert list(tmp_path.iterdir()) == []


def test_output_paths_are_checked(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="use .safetensors"):
        save_checkpoint(tmp_path / "out.bin", {"w": torch.ones(1)})
    with pytest.raises(CheckpointError, match="does not exist"):
        save_checkpoint(tmp_path / "missing" / "out.safetensors", {"w": torch.ones(1)})
    with pytest.raises(CheckpointError, match="not a tensor"):
        save_checkpoint(tmp_path / "out.safetensors", {"w": 3})  # type: ignore[dict-item]


def test_shared_and_strided_tensors_are_stored(tmp_path: Path) -> None:
    base = torch.arange(12.0).reshape(3, 4)
    state = {"a": base, "b": base, "t": base.t(), "row": base[1]}
    loaded = load_checkpoint(save_checkpoint(tmp_path / "s.safetensors", state)).state_dict
    for key, value in state.items():
        assert torch.equal(loaded[key], value)


def test_pickles_are_refused_unless_allowed(tmp_path: Path) -> None:
    path = tmp_path / "full.pt"
    torch.save(LeNet(), path)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: this file is a full pickle (it holds pruneplug.models.LeNet)")
    assert "--allow-pickle" in message and "arbitrary code" in message
    assert set(load_checkpoint(path, allow_pickle=True).state_dict) == set(LeNet().state_dict())


def test_wrapped_and_legacy_torch_files(tmp_path: Path) -> None:
    state = LeNet().state_dict()
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "wrapped.pt")
    assert set(load_checkpoint(tmp_path / "wrapped.pt").state_dict) == set(state)
    torch.save(dict(state), tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    assert set(load_checkpoint(tmp_path / "legacy.pth").state_dict) == set(state)
    torch.save({"weights": [1, 2]}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="not a state_dict: the entry 'weights' is a list"):
        load_checkpoint(tmp_path / "odd.pt")


@pytest.mark.parametrize("name", ["model.safetensors", "model.pt", "legacy.pt"])
def test_truncated_and_corrupt_files(tmp_path: Path, name: str) -> None:
    good = tmp_path / f"good-{name}"
    if name == "legacy.pt":
        torch.save(LeNet().state_dict(), good, _use_new_zipfile_serialization=False)
    else:
        save_checkpoint(good, LeNet().state_dict())
    data = good.read_bytes()
    for cut in (len(data) // 2, 40, 5, 0):
        broken = tmp_path / name
        broken.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as caught:
            load_checkpoint(broken)
        assert str(caught.value).startswith(str(broken))
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="neither safetensors nor a PyTorch file"):
        load_checkpoint(tmp_path / "text.pt")
    with pytest.raises(CheckpointError, match="cannot read the checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_a_checkpoint_for_another_model_leaves_the_model_alone(registry: pruneplug.Registry, tmp_path: Path) -> None:
    other = save_checkpoint(tmp_path / "mlp.safetensors", nn.Sequential(nn.Linear(3, 2)).state_dict())
    pruned = save_checkpoint(tmp_path / "pruned.safetensors", pruned_lenet().state_dict())
    model = LeNet()
    before = snapshot(model)
    with pytest.raises(CheckpointError, match=r"mlp\.safetensors: does not fit the model: .*missing keys"):
        load_into(model, load_checkpoint(other))
    mismatched = LeNet(num_classes=7)
    with pytest.raises(CheckpointError, match="size mismatch"):
        load_into(mismatched, load_checkpoint(pruned))
    assert not pruneplug.is_pruned(mismatched)
    assert_unchanged(before, model)
