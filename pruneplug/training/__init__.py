"""Layer 8 (above :mod:`pruneplug.plans`, below :mod:`pruneplug.demo`): pruning while a model trains.

* :mod:`.pruner` -- :class:`~.pruner.Pruner`, which prunes a model's tensors, rule by rule (plan rules), up
  to the target sparsity a :class:`~pruneplug.Schedule` gives at each training step, keeps the optimizer's
  state from carrying pruned entries on, and saves where it stands (:meth:`~.pruner.Pruner.state_dict`).
* :mod:`.lightning`, :mod:`.hf` -- the pruner as a Lightning callback and as a Transformers ``TrainerCallback``;
  each imports its library (the ``lightning`` and ``hf`` extras), so neither is imported here: import
  ``pruneplug.training.lightning`` or ``pruneplug.training.hf`` yourself.
* :mod:`.deferred` -- how those two resume a pruned checkpoint: its masks set up once the optimizer is made.

Internal: the public name is exported by :mod:`pruneplug`. See ``docs/training.md``.
"""

from __future__ import annotations

from .pruner import STATE_VERSION as STATE_VERSION, Masking as Masking, Pruner as Pruner, RulesLike as RulesLike

__all__ = ["Masking", "Pruner", "RulesLike", "STATE_VERSION"]
