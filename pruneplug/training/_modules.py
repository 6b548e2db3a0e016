"""The module a training callback's rules select in: the trainer's model, or a submodule of it by name."""

from __future__ import annotations

from torch import nn

from ..plans import PlanError

__all__ = ["submodule"]


def submodule(model: nn.Module, name: str | None, owner: str) -> nn.Module:
    """``model``'s submodule ``name`` (``None``: ``model``); :class:`PlanError` (field ``module``) if it has none.

    ``owner`` says what ``model`` is, for the message (``"the model"``, ``"the LightningModule"``).
    """
    if name is None:
        return model
    try:
        return model.get_submodule(name)
    except AttributeError as error:
        raise PlanError(f"{owner} has no submodule {name!r} (module=...)", field="module") from error
