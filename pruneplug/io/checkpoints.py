"""Checkpoints in and out, safely: safetensors by default, never an unasked-for pickle.

* **Reading** tells the format from the file's first bytes, not its name:
  safetensors, or a PyTorch ``.pt``/``.pth`` file read with
  ``torch.load(weights_only=True)``, which only rebuilds tensors and plain
  containers. A file that holds anything else (a whole pickled model, say)
  is refused with an explanation -- unpickling it could run any code --
  unless ``allow_pickle=True`` (the CLI's ``--allow-pickle``) says it is trusted.
* **Writing** goes to a temporary file in the target's directory, which is
  renamed over the target only once complete, so a failed or interrupted
  run never leaves a partial file; an existing file is replaced only with
  ``overwrite=True`` (``--force``). The format follows the suffix:
  ``.safetensors`` (masks stay ``torch.bool``) or ``.pt``/``.pth``.
* **History**: safetensors files carry, in their metadata, which strategies
  pruned each tensor, so reports of a checkpoint -- and of models loaded and
  pruned further from it -- show the whole story.

A pruned checkpoint (``<name>_orig`` + ``<name>_mask``) goes into a fresh
model through :func:`pruneplug.load_pruned_state_dict`; :func:`load_into`
does that and turns a misfit into a :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import os
import pickle
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import Tensor, nn

from ..errors import PruneplugError
from ..storage.formats import MaskStorage
from .state_dict import load_pruned_state_dict

__all__ = [
    "CheckpointError",
    "CheckpointExistsError",
    "Checkpoint",
    "CheckpointFormat",
    "METADATA_KEY",
    "detect_format",
    "output_format",
    "check_output",
    "load_checkpoint",
    "save_checkpoint",
    "load_into",
]

CheckpointFormat = Literal["safetensors", "torch"]
METADATA_KEY = "pruneplug"
_OUTPUT_SUFFIXES: dict[str, CheckpointFormat] = {".safetensors": "safetensors", ".pt": "torch", ".pth": "torch"}
_WRAPPER_KEYS = ("state_dict", "model_state_dict")


class CheckpointError(PruneplugError, ValueError):
    """A checkpoint cannot be read, does not fit the model, or cannot be written.

    Attributes:
        path: the file concerned.
    """

    def __init__(self, reason: str, *, path: str | os.PathLike[str] | None = None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(reason)

    def _render(self) -> str:
        text = super()._render()
        path = getattr(self, "path", None)
        return f"{path}: {text}" if path else text


class CheckpointExistsError(CheckpointError, FileExistsError):
    """The output exists and replacing it was not asked for."""


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read from disk.

    Attributes:
        path: where it was read from.
        format: ``"safetensors"`` or ``"torch"``.
        state_dict: its tensors, on the CPU.
        history: per tensor, descriptions of the strategies that pruned it
            (from safetensors metadata written by :func:`save_checkpoint`; else empty).
    """

    path: Path
    format: CheckpointFormat
    state_dict: dict[str, Tensor] = field(repr=False)
    history: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def masked(self) -> list[str]:
        """Names of the tensors it holds pruned (``<name>_orig`` with ``<name>_mask``)."""
        return [
            key[: -len("_mask")]
            for key in self.state_dict
            if key.endswith("_mask") and key[: -len("_mask")] + "_orig" in self.state_dict
        ]


class _Metadata(BaseModel):
    """What pruneplug keeps in a safetensors file's metadata under ``"pruneplug"``."""

    model_config = ConfigDict(extra="ignore")

    version: int = 1
    history: dict[str, tuple[str, ...]] = {}


# --- formats -------------------------------------------------------------------------------------


def detect_format(path: str | os.PathLike[str]) -> CheckpointFormat:
    """Tell a checkpoint's format from its first bytes (raises :class:`CheckpointError`)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
            size = os.fstat(handle.fileno()).st_size
    except OSError as error:
        raise CheckpointError(f"cannot read the checkpoint: {error.strerror or error}", path=path) from None
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "torch"  # a zip archive (torch.save) or a pickle (torch's legacy format)
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= size - 8:
        return "safetensors"
    if size == 0:
        raise CheckpointError("the file is empty", path=path)
    raise CheckpointError(
        "not a checkpoint pruneplug can read: neither safetensors nor a PyTorch file (torch.save); "
        "it may be truncated or corrupt",
        path=path,
    )


def output_format(path: str | os.PathLike[str]) -> CheckpointFormat:
    """The format to write, from the suffix: ``.safetensors``, or ``.pt``/``.pth`` for torch."""
    suffix = Path(path).suffix.lower()
    try:
        return _OUTPUT_SUFFIXES[suffix]
    except KeyError:
        raise CheckpointError(
            f"cannot tell the output format from the suffix {suffix or '(none)'!r}; "
            "use .safetensors (recommended), .pt or .pth",
            path=path,
        ) from None


def check_output(path: str | os.PathLike[str], *, overwrite: bool = False) -> CheckpointFormat:
    """Check, before any work, that ``path`` can be written; returns its format."""
    fmt = output_format(path)
    target = Path(path)
    if target.is_dir():
        raise CheckpointError("is a directory", path=path)
    if target.exists() and not overwrite:
        raise CheckpointExistsError("the output exists; pass --force (overwrite=True) to replace it", path=path)
    if not target.parent.is_dir():
        raise CheckpointError(f"the directory {str(target.parent)!r} does not exist", path=path)
    return fmt


# --- reading -------------------------------------------------------------------------------------


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, tuple[str, ...]]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:  # type: ignore[no-untyped-call]
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"cannot read this safetensors file (truncated or corrupt?): {error}", path=path
        ) from None
    history: dict[str, tuple[str, ...]] = {}
    raw = metadata.get(METADATA_KEY)
    if raw is not None:
        try:
            history = _Metadata.model_validate_json(raw).history
        except ValidationError:
            history = {}  # someone else's metadata under our key: the tensors are still good
    return tensors, history


def _refused(error: pickle.UnpicklingError, path: Path) -> CheckpointError:
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
    holds = f" (it holds {found.group(1)})" if found else ""
    return CheckpointError(
        f"this file is a full pickle{holds}, not a plain state_dict of tensors. Unpickling it can run "
        "arbitrary code, so pruneplug reads .pt/.pth files with torch.load(weights_only=True) only. "
        "If you trust its source, pass --allow-pickle (allow_pickle=True); better, re-save it as "
        "a state_dict or in safetensors",
        path=path,
    )


def _read_torch(path: Path, allow_pickle: bool) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" not in str(error).lower():
            raise CheckpointError(
                f"cannot read this PyTorch file (truncated or corrupt?): {error}", path=path
            ) from None
        if not allow_pickle:
            raise _refused(error, path) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"cannot read this PyTorch file (truncated or corrupt?): {error}", path=path) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # unpickling trusted code can raise anything
        raise CheckpointError(f"unpickling failed: {type(error).__name__}: {error}", path=path) from error


def _as_state_dict(obj: object, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, nn.Module):
        return dict(obj.state_dict())
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and not all(isinstance(v, Tensor) for v in obj.values()):
                obj = inner
                break
        out: dict[str, Tensor] = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise CheckpointError(
                    f"not a state_dict: the key {key!r} is a {type(key).__name__}, not a tensor name", path=path
                )
            if not isinstance(value, Tensor):
                raise CheckpointError(
                    f"not a state_dict: the entry {key!r} is a {type(value).__name__}, not a tensor", path=path
                )
            out[key] = value
        return out
    raise CheckpointError(f"not a state_dict: the file holds a {type(obj).__name__}", path=path)


def load_checkpoint(path: str | os.PathLike[str], *, allow_pickle: bool = False) -> Checkpoint:
    """Read a checkpoint (safetensors or PyTorch) onto the CPU.

    Raises:
        CheckpointError: the file is missing, truncated, corrupt, not a
            state_dict, or a full pickle and ``allow_pickle`` is false.
    """
    source = Path(path)
    fmt = detect_format(source)
    if fmt == "safetensors":
        state_dict, history = _read_safetensors(source)
        return Checkpoint(source, fmt, state_dict, history)
    return Checkpoint(source, fmt, _as_state_dict(_read_torch(source, allow_pickle), source))


def load_into(
    model: nn.Module, checkpoint: Checkpoint, *, mask_storage: MaskStorage | None = None
) -> dict[str, tuple[str, ...]]:
    """Load ``checkpoint`` into ``model``, re-creating its masks; return the history it carries.

    ``mask_storage`` is passed on to :func:`pruneplug.load_pruned_state_dict`.

    The result is the ``history`` argument of :func:`pruneplug.report`
    and :func:`pruneplug.tensor_histories`: every tensor the checkpoint
    holds masked or has history for (for a masked tensor without recorded
    history, an empty one, so the ``identity`` loading adds is not shown).

    Raises:
        CheckpointError: the checkpoint does not fit the model (naming the
            file and the keys or shapes); the model is unchanged.
    """
    _check_dtypes(model, checkpoint)
    try:
        load_pruned_state_dict(model, checkpoint.state_dict, mask_storage=mask_storage)
    except (PruneplugError, RuntimeError) as error:  # RuntimeError: load_state_dict's own checks
        detail = str(error).removeprefix("the state_dict does not fit the model: ")
        raise CheckpointError(f"does not fit the model: {detail}", path=checkpoint.path) from error
    earlier: dict[str, tuple[str, ...]] = {name: () for name in checkpoint.masked}
    earlier.update(checkpoint.history)
    return earlier


def _check_dtypes(model: nn.Module, checkpoint: Checkpoint) -> None:
    """Refuse a checkpoint whose tensors have other dtypes than the model's (loading would cast them).

    ``load_state_dict`` copies into the model's tensors, so a bf16 checkpoint
    loaded into an fp32 model would be written back twice as large, and an
    fp32 one into an fp16 model would silently lose precision. Masks are
    exempt: torch stores them in the weight's dtype, pruneplug as bool.
    """
    own = model.state_dict(keep_vars=True)
    differing = []
    for key, value in checkpoint.state_dict.items():
        if key.endswith("_mask"):
            continue
        target = own.get(key)
        if target is None and key.endswith("_orig"):
            target = own.get(key[: -len("_orig")])
        if isinstance(target, Tensor) and target.dtype != value.dtype:
            differing.append(f"{key}: checkpoint {value.dtype} vs model {target.dtype}")
    if differing:
        more = f" (and {len(differing) - 5} more)" if len(differing) > 5 else ""
        raise CheckpointError(
            "its dtypes differ from the model's, and loading would convert them: "
            + "; ".join(differing[:5])
            + more
            + ". Build the model in the checkpoint's dtype (a factory returning, e.g., model.to(torch.bfloat16))",
            path=checkpoint.path,
        )


# --- writing -------------------------------------------------------------------------------------


def _storable(state_dict: Mapping[str, object]) -> dict[str, Tensor]:
    """Detached, contiguous CPU tensors, none sharing memory with another (safetensors refuses that)."""
    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    for key, value in state_dict.items():
        if not isinstance(value, Tensor):
            raise CheckpointError(f"the state_dict entry {key!r} is a {type(value).__name__}, not a tensor")
        tensor = value.detach().to("cpu").contiguous()
        storage = tensor.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() != tensor.nbytes:
            tensor = tensor.clone()
            storage = tensor.untyped_storage()
        if tensor.numel():
            seen.add(storage.data_ptr())
        out[key] = tensor
    return out


def _publish(temporary: Path, target: Path, overwrite: bool) -> None:
    """Move the finished temporary file to ``target`` (never over an existing file unless ``overwrite``)."""
    if overwrite:
        os.replace(temporary, target)
        return
    try:
        os.link(temporary, target)  # atomic, and fails if target appeared meanwhile
    except FileExistsError:
        raise CheckpointExistsError(
            "the output exists; pass --force (overwrite=True) to replace it", path=target
        ) from None
    except OSError:  # a filesystem without hard links
        if target.exists():
            raise CheckpointExistsError(
                "the output exists; pass --force (overwrite=True) to replace it", path=target
            ) from None
        os.replace(temporary, target)
        return
    temporary.unlink()


def _write(fmt: CheckpointFormat, tensors: dict[str, Tensor], metadata: dict[str, str], temporary: Path) -> None:
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(temporary), metadata=metadata)
    else:
        torch.save(tensors, temporary)
    with open(temporary, "rb+") as handle:
        os.fsync(handle.fileno())


def save_checkpoint(
    path: str | os.PathLike[str],
    state_dict: Mapping[str, Tensor],
    *,
    history: Mapping[str, Sequence[str]] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``state_dict`` to ``path`` atomically, in the format its suffix names; returns the path.

    Masks are written as they are (``torch.bool`` stays bool). ``history``
    (per tensor, as :func:`pruneplug.tensor_histories` gives) goes into
    safetensors metadata; ``.pt`` files hold the tensors only.

    Raises:
        CheckpointExistsError: ``path`` exists and ``overwrite`` is false.
        CheckpointError: unknown suffix, missing directory, or the write failed
            (no partial file is left behind).
    """
    target = Path(path)
    fmt = check_output(target, overwrite=overwrite)
    tensors = _storable(state_dict)
    payload = _Metadata(history={k: tuple(v) for k, v in (history or {}).items()})
    metadata = {"format": "pt", METADATA_KEY: payload.model_dump_json()}
    temporary = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        mode = os.fstat(descriptor).st_mode & 0o777
        os.close(descriptor)
        try:
            _write(fmt, tensors, metadata, temporary)
        except (OSError, CheckpointError):
            raise
        except Exception as error:  # the writers' own errors: SafetensorError, torch's RuntimeError (disk full, ...)
            raise CheckpointError(f"cannot write the checkpoint: {error}", path=target) from error
        os.chmod(temporary, mode)  # safetensors replaces the file with one of its own, made 0600
        _publish(temporary, target, overwrite)
    except CheckpointError:
        temporary.unlink(missing_ok=True)
        raise
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write the checkpoint: {error.strerror or error}", path=target) from error
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return target
