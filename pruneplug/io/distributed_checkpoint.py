"""Sharded checkpoints of pruned models with ``torch.distributed.checkpoint`` (DCP).

:func:`save_sharded` writes a model's state dict as DCP does: every rank
writes its own shards (DTensor ``<name>_orig`` and ``<name>_mask`` included)
into one folder, with a ``pruneplug.json`` that names the tensors saved
pruned. :func:`load_sharded` loads such a folder into a model on any number
of ranks and any sharding (DCP reshards), or into one process without
``torch.distributed`` (the whole tensors): it reads into new tensors placed
like the model's first, then sets up pruning where the checkpoint has masks
(as :func:`pruneplug.load_pruned_state_dict` does), so a failed load leaves
the model as it was.

Every rank of the group calls both with the same path, on a file system
they share; a problem one rank sees (the output exists, the folder is not a
checkpoint) is raised on every rank, so none is left waiting.
"""

from __future__ import annotations

import os
import secrets
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import Tensor, nn
from torch.distributed.checkpoint.api import CheckpointException

from ..core.state import pruned_tensors
from ..storage.formats import MaskStorage
from .checkpoints import CheckpointError, CheckpointExistsError
from .state_dict import load_pruned_state_dict

__all__ = ["SHARDED_METADATA", "load_sharded", "save_sharded"]

#: The file of a sharded checkpoint's folder that names the tensors saved pruned.
SHARDED_METADATA = "pruneplug.json"


class _ShardedMetadata(BaseModel):
    """What ``pruneplug.json`` holds."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    pruned: list[str]  # qualified names of the tensors saved as <name>_orig + <name>_mask


def _distributed(group: dist.ProcessGroup | None) -> bool:
    if group is not None and not (dist.is_available() and dist.is_initialized()):
        raise CheckpointError("a process_group was given but torch.distributed is not initialized")
    return dist.is_available() and dist.is_initialized()


def _agree(error: CheckpointError | None, group: dist.ProcessGroup | None, path: Path, distributed: bool) -> None:
    """Raise on every rank if any rank has an ``error`` (that rank its own, the others a :class:`CheckpointError`)."""
    failed = torch.tensor([error is not None], dtype=torch.int64)
    if distributed:
        dist.all_reduce(failed, op=dist.ReduceOp.MAX, group=group)
    if error is not None:
        raise error
    if int(failed):
        raise CheckpointError("another rank could not go on (its error is raised there)", path=path)


@contextmanager
def _one_process_quietly() -> Iterator[None]:
    """Silence DCP's warning that, without a process group, it saves or loads in one process: that is meant."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def save_sharded(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    process_group: dist.ProcessGroup | None = None,
) -> Path:
    """Write ``model``'s state dict as a DCP checkpoint folder at ``path``, each rank its own shards.

    The folder is written under a temporary name beside ``path`` and renamed
    once every rank has written, so a failed save leaves no partial output;
    an existing ``path`` is replaced only with ``overwrite=True``. Without an
    initialized process group, one process writes everything.

    Raises:
        CheckpointExistsError: ``path`` exists and ``overwrite`` is false.
        CheckpointError: the parent folder is missing, the ranks' models
            differ in which tensors are pruned, or writing failed.
    """
    from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

    target = Path(path)
    distributed = _distributed(process_group)
    leader = not distributed or dist.get_rank(process_group) == 0
    problem: CheckpointError | None = None
    if target.exists() and not overwrite:
        problem = CheckpointExistsError("the output exists; pass overwrite=True to replace it", path=target)
    elif not target.parent.is_dir():
        problem = CheckpointError(f"the folder {target.parent} does not exist", path=target)
    pruned = sorted(f"{qualname}.{name}" if qualname else name for qualname, _, name in pruned_tensors(model))
    shared: list[Any] = [secrets.token_hex(6), pruned]
    if distributed:  # one temporary name for all ranks, and the pruned tensors the metadata will name: rank 0's
        dist.broadcast_object_list(shared, src=dist.get_global_rank(process_group, 0) if process_group else 0)
    if problem is None and shared[1] != pruned:
        differing = ", ".join(sorted(set(pruned) ^ set(shared[1])))
        problem = CheckpointError(
            f"this rank's model and rank 0's differ in which tensors are pruned ({differing})", path=target
        )
    _agree(problem, process_group, target, distributed)
    temporary = target.parent / f".{target.name}.{shared[0]}.tmp"
    try:
        with _one_process_quietly():
            dcp_save(model.state_dict(), checkpoint_id=temporary, process_group=process_group, no_dist=not distributed)
    except (Exception, CheckpointException) as error:  # DCP raises on every rank when one fails to write
        problem = CheckpointError(f"cannot write the checkpoint: {_failures(error)}", path=target)
    if problem is None and leader:
        try:
            metadata = _ShardedMetadata(pruned=pruned).model_dump_json(indent=2)
            (temporary / SHARDED_METADATA).write_text(metadata + "\n", encoding="utf-8")
            _publish(temporary, target, overwrite)
        except CheckpointError as error:
            problem = error
        except OSError as error:
            problem = CheckpointError(f"cannot write the checkpoint: {error.strerror or error}", path=target)
    if problem is not None and leader:
        shutil.rmtree(temporary, ignore_errors=True)
    _agree(problem, process_group, target, distributed)
    return target


def _publish(temporary: Path, target: Path, overwrite: bool) -> None:
    """Rename the finished folder to ``target`` (an existing one is replaced only with ``overwrite``)."""
    if target.exists():
        if not overwrite:
            raise CheckpointExistsError("the output exists; pass overwrite=True to replace it", path=target)
        old = target.parent / f".{target.name}.{secrets.token_hex(6)}.old"
        os.replace(target, old)
        os.replace(temporary, target)
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()
        return
    os.replace(temporary, target)


def _read_metadata(folder: Path) -> _ShardedMetadata:
    file = folder / SHARDED_METADATA
    if not folder.is_dir():
        raise CheckpointError("no such checkpoint folder", path=folder)
    try:
        return _ShardedMetadata.model_validate_json(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        missing = f"not a sharded pruneplug checkpoint: {SHARDED_METADATA} is missing"
        raise CheckpointError(missing, path=folder) from None
    except (ValidationError, OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{SHARDED_METADATA} cannot be read: {error}", path=file) from error


def _template(model: nn.Module, pruned: set[str]) -> dict[str, Tensor]:
    """Empty tensors placed like the model's, under the checkpoint's keys (``<name>_orig``, ``_mask`` if pruned)."""
    current = model.state_dict(keep_vars=True)  # (the buffers themselves: packed masks are not unpacked whole)
    template: dict[str, Tensor] = {}
    for key, value in current.items():
        if not isinstance(value, Tensor):
            continue
        base = key.removesuffix("_orig").removesuffix("_mask")
        model_pruned = base != key and f"{base}_orig" in current and f"{base}_mask" in current
        if model_pruned and base not in pruned:
            raise CheckpointError(
                f"the model has {base} pruned, the checkpoint holds it unpruned; remove its pruning before loading"
            )
        if not model_pruned and key in pruned:
            template[f"{key}_orig"] = torch.empty_like(value.detach())
            template[f"{key}_mask"] = torch.empty_like(value.detach(), dtype=torch.bool)
        else:
            template[key] = torch.empty_like(value.detach())
    missing = sorted(name for name in pruned if f"{name}_orig" not in template)
    if missing:
        raise CheckpointError(f"the checkpoint holds pruned tensors the model does not have: {', '.join(missing)}")
    return template


def _check_fit(template: dict[str, Any], folder: Path) -> None:
    """Compare the tensors to load with DCP's index of the checkpoint, so a misfit names the tensor on every rank."""
    from torch.distributed.checkpoint.filesystem import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    try:
        saved = FileSystemReader(folder).read_metadata().state_dict_metadata
    except Exception as error:  # a missing or unreadable .metadata: not a finished DCP checkpoint
        raise CheckpointError(f"DCP's index of the checkpoint (.metadata) cannot be read: {error}") from error
    problems = []
    for key, value in template.items():
        entry = saved.get(key)
        if not isinstance(entry, TensorStorageMetadata):
            problems.append(f"{key}: not in the checkpoint")
        elif entry.size != value.shape:
            problems.append(f"{key}: shape {tuple(entry.size)} in the checkpoint, {tuple(value.shape)} in the model")
    problems += [
        f"{key}: in the checkpoint, not in the model"
        for key, entry in sorted(saved.items())
        if isinstance(entry, TensorStorageMetadata) and key not in template
    ]
    if problems:
        shown = "; ".join(problems[:10]) + (" ..." if len(problems) > 10 else "")
        raise CheckpointError(f"the checkpoint does not fit the model: {shown}")


def _failures(error: BaseException) -> str:
    """DCP's failure, one line per failing rank (its ``CheckpointException`` prints every traceback)."""
    if not isinstance(error, CheckpointException):
        return str(error)
    return "; ".join(
        f"rank {rank}: {type(failure[0]).__name__}: {failure[0]}" for rank, failure in sorted(error.failures.items())
    )


def load_sharded(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    mask_storage: MaskStorage | None = None,
    process_group: dist.ProcessGroup | None = None,
) -> nn.Module:
    """Load a folder :func:`save_sharded` wrote into ``model``, pruned or not, on any number of ranks.

    Each rank reads the parts of the checkpoint its own shards cover (placed
    like ``model``'s tensors, whatever the sharding at save time), then every
    tensor saved pruned is set up pruned (an ``identity`` prune first where
    the model holds it unpruned) with the saved mask. ``mask_storage`` as in
    :func:`pruneplug.load_pruned_state_dict`. Returns ``model``.

    Raises:
        CheckpointError: the folder is not such a checkpoint, or it does not
            fit the model (missing or extra tensors, other shapes, a tensor
            pruned in the model but not in the checkpoint), each named; on
            every rank, and the model is unchanged.
    """
    from torch.distributed.checkpoint.state_dict_loader import load as dcp_load

    folder = Path(path)
    distributed = _distributed(process_group)
    problem: CheckpointError | None = None
    template: dict[str, Any] = {}
    try:
        template = _template(model, set(_read_metadata(folder).pruned))
        _check_fit(template, folder)
    except CheckpointError as error:
        problem = error if error.path is not None else CheckpointError(error.reason, path=folder)
    _agree(problem, process_group, folder, distributed)
    try:
        with _one_process_quietly():
            dcp_load(template, checkpoint_id=folder, process_group=process_group, no_dist=not distributed)
    except (Exception, CheckpointException) as error:  # on every rank (unreadable shard files, say)
        raise CheckpointError(f"cannot load the checkpoint into the model: {_failures(error)}", path=folder) from error
    return load_pruned_state_dict(model, template, mask_storage=mask_storage)
