"""Pruning while a Lightning model trains: :class:`PruningCallback`, a ``lightning.pytorch.Callback``.

Lightning's own ``ModelPruning`` prunes with ``torch.nn.utils.prune``'s
methods at the ends of epochs; this callback drives a
:class:`~pruneplug.training.pruner.Pruner` instead: any registered strategy
that prunes an amount, a schedule over optimizer steps, the optimizer's state
zeroed where it prunes, and a run resumed from a Lightning checkpoint goes on
bit for bit. Needs the ``lightning`` extra (``pip install 'pruneplug[lightning]'``).
See ``docs/training.md``.
"""

from __future__ import annotations

from typing import Any

try:
    import lightning.pytorch as pl
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("pruneplug.training.lightning needs Lightning: pip install 'pruneplug[lightning]'") from error

import torch

from ..api.schedules import ScheduleLike
from ..plans import PlanError
from ..storage.formats import MaskStorage
from ._modules import submodule
from .deferred import DeferredMasks
from .pruner import Masking, Pruner, RulesLike, check_rules

__all__ = ["PruningCallback"]


class PruningCallback(pl.Callback):
    """Prunes the LightningModule (or one of its modules) as a schedule says, after each optimizer step.

    It takes the :class:`~pruneplug.Pruner`'s arguments, and checks them when
    it is made (a rule that selects nothing in the model is found when
    training starts). Steps count ``trainer.global_step``, the optimizer steps
    taken, so with ``accumulate_grad_batches`` a step is one optimizer step,
    not one batch: at the end of a batch after which an optimizer step was
    taken, it handles step ``global_step - 1`` (the pruning of step 0 follows
    the first ``optimizer.step()``, as with the Pruner in a loop of your own).

    The pruner's state (:meth:`Pruner.state_dict`) is the callback's, saved in
    Lightning's checkpoints; the masks are the model's (with ``masking="in_place"``,
    the pruner's, in its state). ``trainer.fit(model,
    ckpt_path=...)`` resumes: the checkpoint's masks are set up once the
    optimizer is made (so that it lists the parameters in their first order,
    which the optimizer's saved state follows), and the pruner's state,
    torch's random generator included when a rule prunes at random, is
    loaded when training starts, so the run goes on as if it had not stopped.
    ``trainer.validate``, ``test`` and ``predict`` with ``ckpt_path=`` set the
    checkpoint's masks up too.

    Args:
        rules: as the Pruner's: a plan, a plan file's path, or a list of plan rules.
        schedule: as the Pruner's: the schedule of every rule without its own.
        mask_storage: as the Pruner's: ``"bool"`` or ``"packed"``.
        masking: as the Pruner's: ``"reparametrize"`` or ``"in_place"`` (plain
            weights, the masks in the pruner's state: a step as fast as a dense one).
        module: the dotted name of the LightningModule's submodule that the
            rules select in (``"model"``); default: the LightningModule itself.
        optimizer: the index in ``trainer.optimizers`` of the optimizer whose
            state is zeroed where a step prunes; ``None``: none.
        log_sparsity: log each rule's reached sparsity at every optimizer step,
            as ``pruning/sparsity/<rule>`` (``<rule>`` counts the rules driven, from 0).

    Raises:
        PlanError: the rules, schedule or mask storage are invalid (named as
            the Pruner names them); when training starts, a rule selects
            nothing, or ``optimizer`` indexes no optimizer.
    """

    def __init__(
        self,
        rules: RulesLike,
        *,
        schedule: ScheduleLike | None = None,
        mask_storage: MaskStorage | None = None,
        masking: Masking = "reparametrize",
        module: str | None = None,
        optimizer: int | None = 0,
        log_sparsity: bool = True,
    ) -> None:
        check_rules(rules, schedule=schedule, mask_storage=mask_storage, masking=masking)
        if optimizer is not None and (isinstance(optimizer, bool) or not isinstance(optimizer, int)):
            raise PlanError(
                f"optimizer is an index in trainer.optimizers or None, got {optimizer!r}", field="optimizer"
            )
        self.rules = rules
        self.schedule = schedule
        self.mask_storage = mask_storage
        self.masking: Masking = masking
        self.module = module
        self.optimizer = optimizer
        self.log_sparsity = log_sparsity
        self.pruner: Pruner | None = None
        """The pruner, made when training starts."""
        self._deferred: DeferredMasks | None = None
        self._saved: dict[str, Any] | None = None  # a checkpoint's pruner state, until training starts
        self._sparsity: list[float] = []

    @property
    def state_key(self) -> str:
        return self._generate_state_key(module=self.module)

    # --- the checkpoint being resumed -----------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._deferred is None:
            self._deferred = DeferredMasks(pl_module)

    def _set_up_masks(self) -> None:
        """Set up the masks of the checkpoint that loaded (if one did): the optimizer, if any, is made by now."""
        if self._deferred is not None:
            self._deferred.apply(self.mask_storage)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The optimizers are made, and the checkpoint's model state is loaded (unless the strategy restores
        # after setting up): the masks set aside get set up now, the optimizer holding the parameters already.
        self._set_up_masks()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._set_up_masks()  # trainer.validate(model, ckpt_path=...) of a pruned checkpoint

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._set_up_masks()

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._set_up_masks()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._deferred is not None:
            self._deferred.remove()
            self._deferred = None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._saved = dict(state_dict) if state_dict else None

    def state_dict(self) -> dict[str, Any]:
        if self._saved is not None or self.pruner is None:
            return dict(self._saved or {})
        return self.pruner.state_dict()

    # --- training -------------------------------------------------------------------------------

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._set_up_masks()  # (strategies that restore the checkpoint after setting up)
        if self.pruner is not None and self.pruner.masking == "in_place":
            self.pruner.reparametrize()  # a second run: the masks the last pruner held, for the new one to take over
        target = submodule(pl_module, self.module, "the LightningModule")
        self.pruner = Pruner(
            target,
            self.rules,
            schedule=self.schedule,
            optimizer=self._optimizer(trainer),
            mask_storage=self.mask_storage,
            masking=self.masking,
        )
        if self._saved is not None:
            self.pruner.load_state_dict(self._saved)
            self._saved = None
        self._sparsity = self.pruner.sparsity()

    def _optimizer(self, trainer: pl.Trainer) -> torch.optim.Optimizer | None:
        if self.optimizer is None:
            return None
        optimizers = trainer.optimizers
        if not -len(optimizers) <= self.optimizer < len(optimizers):
            raise PlanError(
                f"optimizer={self.optimizer} indexes no optimizer: the trainer has {len(optimizers)} "
                "(give optimizer=None to zero no optimizer's state)",
                field="optimizer",
            )
        return optimizers[self.optimizer]

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        pruner = self.pruner
        if pruner is None or trainer.global_step <= pruner.current_step:
            return  # no optimizer step since the last one handled (gradients accumulating)
        step = trainer.global_step - 1
        pruner.step(step)
        if not self.log_sparsity:
            return
        if any(schedule.prunes_at(step) for schedule in pruner.schedules):
            self._sparsity = pruner.sparsity()
        for index, value in enumerate(self._sparsity):
            pl_module.log(f"pruning/sparsity/{index}", value, on_step=True, on_epoch=False)
