"""Resuming a pruned model in a trainer that makes the optimizer after loading: :class:`DeferredMasks`.

A trainer that resumes (Lightning's ``fit(ckpt_path=...)``, Transformers'
``train(resume_from_checkpoint=...)``) loads the model's state_dict before it
makes the optimizer, and the optimizer lists the model's parameters in the
order they have then. Pruning reorders a module's parameters (``<name>_orig``
is appended, as torch does it), so a model set up for the pruned checkpoint
before the optimizer is made would list them in another order than the run
that saved it did, and the optimizer's saved state would land on the wrong
parameters. :class:`DeferredMasks` hooks the model's ``load_state_dict``: the
checkpoint's ``<name>_orig`` of a tensor the model holds unpruned loads into
``<name>``, and its ``<name>_mask`` is kept aside until :meth:`~DeferredMasks.apply`
sets the pruning up with it (:func:`pruneplug.load_pruned_state_dict`), once the
optimizer is made. The parameter stays the same object, so the optimizer
keeps it.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..io.state_dict import load_pruned_state_dict
from ..storage.formats import MaskStorage

__all__ = ["DeferredMasks"]


class DeferredMasks:
    """Keeps the masks of a pruned checkpoint aside while ``model`` loads it, until :meth:`apply`.

    Args:
        model: the module the trainer calls ``load_state_dict`` on.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.masks: dict[str, Tensor] = {}
        """The masks kept aside, by the qualified name of their tensor in ``model`` (``"0.weight"``)."""
        # The private registration: the public one (torch >= 2.5) calls the hook the same way.
        self._handle = model._register_load_state_dict_pre_hook(self._defer, with_module=True)

    def _defer(self, module: nn.Module, state_dict: dict[str, Any], prefix: str, *others: object) -> None:
        for key in [key for key in state_dict if key.startswith(prefix) and key.endswith("_orig")]:
            name = key[len(prefix) : -len("_orig")]
            mask = f"{prefix}{name}_mask"
            path, _, tensor = name.rpartition(".")
            try:
                owner = module.get_submodule(path)
            except AttributeError:  # a key of no submodule: load_state_dict reports it
                continue
            if mask not in state_dict or not isinstance(owner._parameters.get(tensor), nn.Parameter):
                continue  # not a pruned tensor, or one the model holds pruned already: it loads as it is
            state_dict[prefix + name] = state_dict.pop(key)
            self.masks[name] = state_dict.pop(mask)

    def apply(self, mask_storage: MaskStorage | None = None) -> None:
        """Set up the pruning of every tensor whose mask was kept aside, with that mask; then forget them.

        Each tensor keeps its values (its ``_orig``, as loaded) and its
        parameter object, which becomes ``<name>_orig``.
        """
        state: dict[str, Tensor] = {}
        for name, mask in self.masks.items():
            path, _, tensor = name.rpartition(".")
            parameter = self.model.get_submodule(path)._parameters[tensor]
            assert parameter is not None  # (_defer kept only tensors held as parameters)
            state[f"{name}_orig"], state[f"{name}_mask"] = parameter.detach(), mask
        self.masks = {}
        if state:
            load_pruned_state_dict(self.model, state, strict=False, mask_storage=mask_storage)

    def remove(self) -> None:
        """Stop hooking the model's ``load_state_dict``."""
        self._handle.remove()
