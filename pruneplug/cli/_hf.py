"""``--hf DIR``: a Hugging Face transformers model directory, read with ``from_pretrained`` and written with
``save_pretrained``.

The model's class is the one its ``config.json`` names first in
``architectures`` (``LlamaForCausalLM``), taken from the ``transformers``
package -- never code from the directory (no ``trust_remote_code``) -- and
nothing is downloaded (``local_files_only``). The output directory is
written beside its final place under a temporary name and renamed when
complete, so a failed run leaves none. ``transformers`` is imported only
when ``--hf`` is used: the rest of the command line does not need it.
Anything wrong with the directory is the user's input, reported as
:class:`~pruneplug.cli._app.BadInput` naming ``--hf``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from ..core.norms import norm_channels_mask
from ..errors import close_matches_hint
from ..io.checkpoints import CheckpointError, CheckpointExistsError
from ..plans import ExampleInput
from ._app import BadInput

__all__ = ["DEFAULT_TOKENS", "check_norms", "check_output_dir", "load_hf", "token_input", "save_hf"]

DEFAULT_TOKENS = 16
"""The default example input of a model with a vocabulary: one sequence of this many token ids."""


def _transformers(directory: Path) -> ModuleType:
    try:
        return importlib.import_module("transformers")
    except ImportError as error:
        raise BadInput(
            f"--hf {directory}: reading a Hugging Face model needs the transformers package "
            f"(pip install transformers): {error}"
        ) from None


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """transformers' own progress bars off (loading and writing weights): the command shows its steps."""
    logging: Any = importlib.import_module("transformers.utils.logging")
    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()


def load_hf(directory: Path) -> nn.Module:
    """The model saved in ``directory`` (by ``save_pretrained``), loaded by the class its config names, in eval mode."""
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        raise BadInput(f"--hf {directory}: {what}; give the directory save_pretrained wrote (with its config.json)")
    if not (directory / "config.json").is_file():
        raise BadInput(f"--hf {directory}: has no config.json; give the directory save_pretrained wrote")
    transformers = _transformers(directory)
    try:
        config = transformers.AutoConfig.from_pretrained(str(directory), local_files_only=True)
    except Exception as error:  # transformers' ValueError (unknown model_type), OSError, JSON errors
        raise BadInput(f"--hf {directory}: cannot read config.json: {error}") from None
    architectures = getattr(config, "architectures", None) or []
    if not architectures:
        raise BadInput(
            f"--hf {directory}: config.json names no architecture ('architectures' is empty or missing), "
            "so the model's class is unknown; save the model with save_pretrained, which records it"
        )
    name = str(architectures[0])
    cls: Any = getattr(transformers, name, None)
    if not _subclass(cls, transformers.PreTrainedModel):
        known = [n for n in dir(transformers) if n[:1].isupper()]
        raise BadInput(
            f"--hf {directory}: config.json names the architecture {name!r}, which transformers "
            f"{transformers.__version__} does not have.{close_matches_hint(name, known)} "
            "(models whose code lives in their directory, trust_remote_code, are not loaded)"
        )
    try:
        with _no_progress_bars():
            model: nn.Module = cls.from_pretrained(str(directory), local_files_only=True)
    except Exception as error:  # missing or corrupt weights, shapes that do not fit the config, ...
        raise BadInput(f"--hf {directory}: {name}.from_pretrained failed: {type(error).__name__}: {error}") from None
    return model.eval()


def _subclass(found: object, base: type) -> bool:
    """Whether ``found`` is a class derived from ``base`` (without narrowing ``found``'s type: its methods are
    transformers', untyped here)."""
    return isinstance(found, type) and issubclass(found, base)


def _int_field(config: Any, name: str) -> int | None:
    value = getattr(config, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def token_input(model: nn.Module, given: ExampleInput | None) -> ExampleInput | None:
    """The example input for ``model`` (a transformers model): ``given``, with token ids drawn from the whole
    vocabulary when it holds integers and says no ``high``; without one, for a model whose config has a
    ``vocab_size``, one sequence of :data:`DEFAULT_TOKENS` token ids (fewer if ``max_position_embeddings``
    is smaller)."""
    config = getattr(model, "config", None)
    vocabulary = _int_field(config, "vocab_size")
    if vocabulary is None:
        return given
    if given is None:
        positions = _int_field(config, "max_position_embeddings") or DEFAULT_TOKENS
        return ExampleInput(shape=(1, min(DEFAULT_TOKENS, positions)), dtype="int64", high=vocabulary)
    if given.integral and given.high is None and (given.low or 0) < vocabulary:
        return given.model_copy(update={"high": vocabulary})
    return given


def check_norms(model: nn.Module) -> None:
    """Refuse to write a model whose norms normalize over the kept channels only (the hidden size pruned,
    not compacted): the model ``from_pretrained`` builds has plain norms, which would count the zeroed
    channels, and compute something else than the pruned model."""
    masked = [
        name
        for name, module in model.named_modules()
        if (keep := norm_channels_mask(module)) is not None and not keep.all()
    ]
    if masked:
        shown = ", ".join(masked[:4]) + (f" ... ({len(masked)} in all)" if len(masked) > 4 else "")
        raise BadInput(
            f"the plan pruned channels the norms {shown} normalize over, which only a compacted model can "
            "compute without pruneplug (from_pretrained's norms would count the zeroed channels): "
            "add --compact (or compact = true to the plan)"
        )


def check_output_dir(directory: Path, *, overwrite: bool) -> None:
    """Check, before any work, that the directory ``directory`` can be written (replaced with ``overwrite``)."""
    if directory.exists() and not directory.is_dir():
        raise CheckpointError("is a file; with --hf, -o names the directory to write the model into", path=directory)
    if directory.exists() and not overwrite:
        raise CheckpointExistsError("the output exists; pass --force (overwrite=True) to replace it", path=directory)
    if not directory.parent.is_dir():
        raise CheckpointError(f"the directory {str(directory.parent)!r} does not exist", path=directory)


def save_hf(model: nn.Module, directory: Path, *, overwrite: bool) -> None:
    """``model.save_pretrained`` into ``directory``, atomically: into a new directory beside it, then renamed.

    An existing ``directory`` (with ``overwrite``) is moved aside first and
    deleted once the new one is in its place. On any failure the new
    directory is deleted and ``directory`` is as it was.
    """
    check_output_dir(directory, overwrite=overwrite)
    save = getattr(model, "save_pretrained", None)
    if not callable(save):
        raise CheckpointError(f"a {type(model).__name__} has no save_pretrained", path=directory)
    token = secrets.token_hex(6)
    temporary = directory.parent / f".{directory.name}.{token}.tmp"
    aside = directory.parent / f".{directory.name}.{token}.old"
    try:
        os.mkdir(temporary)  # the umask applies, as to any directory the user makes
        try:
            with _no_progress_bars():
                save(str(temporary))
        except OSError:
            raise
        except Exception as error:  # transformers' own refusals (shared tensors, ...)
            raise CheckpointError(f"save_pretrained failed: {type(error).__name__}: {error}", path=directory) from error
        _publish(temporary, directory, aside, overwrite)
    except CheckpointError:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        raise CheckpointError(f"cannot write the model: {error.strerror or error}", path=directory) from error
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _publish(temporary: Path, directory: Path, aside: Path, overwrite: bool) -> None:
    """Rename the finished ``temporary`` to ``directory``; an existing one (``overwrite``) is moved ``aside``
    first, put back if the rename fails, and deleted once the new one is in place."""
    if not directory.exists():
        os.rename(temporary, directory)  # (an empty directory made meanwhile would be replaced; a full one fails)
        return
    if not overwrite:  # made while we worked
        raise CheckpointExistsError("the output exists; pass --force (overwrite=True) to replace it", path=directory)
    os.rename(directory, aside)
    try:
        os.rename(temporary, directory)
    except OSError:
        os.rename(aside, directory)
        raise
    shutil.rmtree(aside, ignore_errors=True)
