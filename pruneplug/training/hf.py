"""Pruning while a Transformers ``Trainer`` trains: :class:`PruningCallback`, a ``transformers.TrainerCallback``.

It drives a :class:`~pruneplug.training.pruner.Pruner` over the trainer's
optimizer steps (``state.global_step``), and saves where the pruner stands
in the checkpoint's ``trainer_state.json``, as Transformers saves its own
stateful callbacks, so that ``trainer.train(resume_from_checkpoint=...)``
goes on bit for bit. With ``masking="in_place"`` the masks the pruner holds
go into a file of their own beside it, :data:`MASKS_FILE`, whose path the
JSON records. Needs the ``hf`` extra (``pip install 'pruneplug[hf]'``).
See ``docs/training.md``.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
    from transformers.trainer_callback import ExportableState
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("pruneplug.training.hf needs Transformers: pip install 'pruneplug[hf]'") from error

import torch
from torch import nn

from ..api.schedules import ScheduleLike
from ..plans import PlanError
from ..storage.formats import MaskStorage
from ._modules import submodule
from .deferred import DeferredMasks
from .pruner import Masking, Pruner, RulesLike, check_rules

__all__ = ["MASKS_FILE", "PruningCallback"]

MASKS_FILE = "pruneplug_masks.pt"
"""The file of a checkpoint's folder that holds an in-place pruner's masks (``torch.save``, bool tensors by name)."""


def _encode(state: dict[str, Any]) -> dict[str, Any]:
    """The pruner's state in JSON's terms: its random generators' states (byte tensors) as base64 text."""

    def text(tensor: torch.Tensor) -> str:
        return base64.b64encode(tensor.numpy().tobytes()).decode("ascii")

    rng = state["rng_state"]
    return {
        **state,
        "rng_state": None if rng is None else text(rng),
        "generators": [text(g) for g in state["generators"]],
    }


def _decode(state: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`_encode`."""

    def tensor(text: str) -> torch.Tensor:
        return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)

    rng = state.get("rng_state")
    generators = state.get("generators") or []
    return {**state, "rng_state": None if rng is None else tensor(rng), "generators": [tensor(g) for g in generators]}


class PruningCallback(TrainerCallback, ExportableState):  # type: ignore[misc]
    """Prunes the trainer's model as a schedule says, after each optimizer step.

    It takes the :class:`~pruneplug.Pruner`'s arguments and checks them when
    it is made; the pruner itself is made when training starts, with the
    trainer's model and optimizer (whose state is zeroed where a step prunes).
    Steps count ``state.global_step``, the optimizer steps taken, so with
    ``gradient_accumulation_steps`` a step is one optimizer step, not one
    batch: after each optimizer step it handles step ``global_step - 1``.

    Give it to the trainer when making it, ``Trainer(..., callbacks=[...])``:
    to resume, it sets aside the masks of the checkpoint's model until the
    optimizer is made (which then lists the parameters in their first order,
    as the optimizer's saved state does), and sets the pruning up with them
    when training starts. The pruner's state is saved as the state of a
    Transformers ``ExportableState`` callback, in ``trainer_state.json``; the
    callback reads it back itself, so leave
    ``restore_callback_states_from_checkpoint`` off (it would make a new
    callback from saved arguments, which rules holding a generator cannot be).

    Args:
        rules: as the Pruner's: a plan, a plan file's path, or a list of plan rules.
        schedule: as the Pruner's: the schedule of every rule without its own.
        mask_storage: as the Pruner's: ``"bool"`` or ``"packed"``.
        masking: as the Pruner's: ``"reparametrize"`` or ``"in_place"`` (plain
            weights; the masks go into :data:`MASKS_FILE` in each checkpoint's folder).
        module: the dotted name of the model's submodule that the rules select
            in; default: the model itself.
        zero_optimizer_state: zero the optimizer's state where a step prunes.

    Raises:
        PlanError: the rules, schedule or mask storage are invalid (named as
            the Pruner names them); when the trainer is made, it restores
            callback states itself; when training starts, a rule selects
            nothing, or a resumed run's callback was not given to the trainer
            when it was made.
    """

    def __init__(
        self,
        rules: RulesLike,
        *,
        schedule: ScheduleLike | None = None,
        mask_storage: MaskStorage | None = None,
        masking: Masking = "reparametrize",
        module: str | None = None,
        zero_optimizer_state: bool = True,
    ) -> None:
        check_rules(rules, schedule=schedule, mask_storage=mask_storage, masking=masking)
        self.rules = rules
        self.schedule = schedule
        self.mask_storage = mask_storage
        self.masking: Masking = masking
        self.module = module
        self.zero_optimizer_state = zero_optimizer_state
        self.pruner: Pruner | None = None
        """The pruner, made when training starts."""
        self._deferred: DeferredMasks | None = None
        self._output_dir = "."  # the trainer's output_dir, known when training begins

    def state(self) -> dict[str, Any]:
        """The callback's state for ``trainer_state.json``: the pruner's, JSON's way (``None`` before training).

        In place, the masks are left out and the path of the checkpoint's
        :data:`MASKS_FILE` is put in (:meth:`on_save` writes it).
        """
        if self.pruner is None:
            return {"args": {}, "attributes": {"pruner": None}}
        saved = self.pruner.state_dict()
        if self.pruner.masking == "in_place":
            saved.pop("masks")
            saved["masks_file"] = str(self._masks_file())
        return {"args": {}, "attributes": {"pruner": _encode(saved)}}

    def _masks_file(self) -> Path:
        """Where the checkpoint of the step just handled keeps the held masks (the trainer's own folder naming)."""
        step = self.pruner.current_step if self.pruner is not None else 0
        return Path(self._output_dir).resolve() / f"{PREFIX_CHECKPOINT_DIR}-{step}" / MASKS_FILE

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.pruner is not None and self.pruner.masking == "in_place" and state.is_world_process_zero:
            path = self._masks_file()
            if path.parent.is_dir():  # (hyperparameter searches save elsewhere: nothing to resume from there)
                torch.save(self.pruner.masks(), path)

    def on_init_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if args.restore_callback_states_from_checkpoint:
            raise PlanError(
                "the pruning callback restores the pruner's state itself: leave "
                "TrainingArguments.restore_callback_states_from_checkpoint off",
                field="restore_callback_states_from_checkpoint",
            )
        model = kwargs.get("model")
        if isinstance(model, nn.Module) and self._deferred is None:
            self._deferred = DeferredMasks(model)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._output_dir = args.output_dir or "."
        model, optimizer = kwargs.get("model"), kwargs.get("optimizer")
        if not isinstance(model, nn.Module):
            raise PlanError(f"the trainer gave the callback no model, got {type(model).__name__}")
        saved = self._saved(state) if state.global_step > 0 else None  # (a fresh run's state holds an old pruner's)
        if self._deferred is None and saved is not None:
            raise PlanError(
                "resuming, the pruning callback must see the checkpoint's model load: give it to the trainer when "
                "making it, Trainer(..., callbacks=[...]), not with add_callback"
            )
        if self._deferred is not None:
            self._deferred.apply(self.mask_storage)  # the optimizer is made: it holds the parameters already
        if self.pruner is not None and self.pruner.masking == "in_place":
            self.pruner.reparametrize()  # a second run: the masks the last pruner held, for the new one to take over
        target = submodule(model, self.module, "the model")
        self.pruner = Pruner(
            target,
            self.rules,
            schedule=self.schedule,
            optimizer=optimizer if self.zero_optimizer_state and isinstance(optimizer, torch.optim.Optimizer) else None,
            mask_storage=self.mask_storage,
            masking=self.masking,
        )
        if saved is not None:
            self.pruner.load_state_dict(saved)

    def _saved(self, state: TrainerState) -> dict[str, Any] | None:
        """The pruner's state that the resumed checkpoint holds, if any."""
        stored: Any = state.stateful_callbacks or {}  # (typed a list of callbacks; a dict of their states by then)
        data = stored.get(type(self).__name__)
        if isinstance(data, list):  # (Transformers keeps a list for callbacks of one class)
            data = data[0] if data else None
        pruner = data.get("attributes", {}).get("pruner") if isinstance(data, dict) else None
        if not isinstance(pruner, dict):
            return None
        saved = _decode(pruner)
        masks_file = saved.pop("masks_file", None)
        if masks_file is not None:
            if not os.path.isfile(masks_file):
                raise PlanError(
                    f"the checkpoint's pruner keeps its masks in {masks_file}, which is not there (was the checkpoint "
                    "moved? its trainer_state.json records that path)",
                    field="masks_file",
                )
            saved["masks"] = torch.load(masks_file, weights_only=True)
        return saved

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        pruner = self.pruner
        if pruner is not None and state.global_step > pruner.current_step:
            pruner.step(state.global_step - 1)
