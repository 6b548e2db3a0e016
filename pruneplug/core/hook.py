"""The hook half of every pruning method: it keeps ``module.<name>`` equal to ``orig * mask``.

:class:`MaskingHook` subclasses ``torch.nn.utils.prune.BasePruningMethod`` and
implements the part of torch's protocol that acts on an installed tensor:
the forward pre-hook call, ``apply_mask``, ``prune``, ``PRUNING_TYPE`` and
``_tensor_name``. An instance is the pre-hook stored in
``module._forward_pre_hooks``, so models pruned by pruneplug look exactly like
models pruned by torch, and torch's own ``is_pruned`` and ``remove``
understand them. The public class, :class:`pruneplug.BasePruningMethod`
(:mod:`pruneplug.core.method`), adds torch's ``apply`` and ``remove``, which
install and undo prunes; they are kept apart so that the core's planning and
committing, which sit below that class, can still recognise pruneplug's hooks.

On top of torch's protocol a strategy declares a registry ``name`` and a
pydantic ``Params`` model, and the hook caches: outside autograd (``no_grad``,
``inference_mode``, or a frozen parameter) the masked tensor is recomputed
only when ``<name>_orig`` or ``<name>_mask`` changed (tracked with tensor
version counters and storage pointers), so a pruned model in eval runs as fast
as an unpruned one. With autograd on, every forward recomputes it, as torch
does, so gradients flow to ``<name>_orig`` through the mask.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from ..params import NoParams, StrategyParams
from .lazy import masked_tensor
from .refresh import refresh
from .state import check_importance_scores

__all__ = ["MaskingHook", "describe_method", "method_name"]


class MaskingHook(torch_prune.BasePruningMethod):
    """A pruning method as the forward pre-hook of its tensor (see the module docstring).

    Every pruneplug method is one; subclass :class:`pruneplug.BasePruningMethod`, not this.
    """

    PRUNING_TYPE: ClassVar[str]
    name: ClassVar[str | None] = None
    Params: ClassVar[type[StrategyParams]] = NoParams
    uses_importance_scores: ClassVar[bool] = True

    _tensor_name: str

    # --- torch protocol -------------------------------------------------------------

    def __call__(self, module: nn.Module, inputs: Any) -> None:
        """Forward pre-hook: make ``module.<name>`` equal ``<name>_orig * <name>_mask``."""
        refresh(module, self)

    def apply_mask(self, module: nn.Module) -> Tensor:
        """Return ``<name>_orig`` multiplied by ``<name>_mask`` (in the parameter's dtype)."""
        return masked_tensor(module, self._tensor_name)

    def prune(self, t: Tensor, default_mask: Tensor | None = None, importance_scores: Tensor | None = None) -> Tensor:
        """Return ``t`` multiplied by the mask this method computes for it."""
        if importance_scores is not None:
            check_importance_scores(importance_scores, t)
        scores = t if importance_scores is None else importance_scores
        default = default_mask if default_mask is not None else torch.ones_like(t)
        mask: Tensor = self.compute_mask(scores, default_mask=default)  # type: ignore[no-untyped-call]
        return t * mask

    # --- pruneplug additions ------------------------------------------------------

    @property
    def params(self) -> StrategyParams:
        """This method's parameters as its ``Params`` model (read from its attributes)."""
        values = {field: getattr(self, field) for field in type(self).Params.model_fields if hasattr(self, field)}
        return type(self).Params.model_construct(**values)

    def describe(self) -> str:
        """A one-line description for reports, e.g. ``l1_unstructured(amount=0.3)``."""
        return describe_method(self)

    def __repr__(self) -> str:
        tensor = getattr(self, "_tensor_name", None)
        where = f" on {tensor!r}" if tensor else ""
        return f"<{type(self).__module__}.{type(self).__qualname__} {describe_method(self)}{where}>"


def method_name(method: torch_prune.BasePruningMethod) -> str:
    """The registry name of a method, or its class name for foreign ones."""
    name = getattr(type(method), "name", None)
    if isinstance(name, str) and name:
        return name
    return type(method).__name__


def _format_value(value: object) -> str:
    if isinstance(value, Tensor):
        return f"<tensor {tuple(value.shape)}>"
    if isinstance(value, torch.Generator):
        return "<generator>"
    return repr(value)


def describe_method(method: torch_prune.BasePruningMethod) -> str:
    """Describe any pruning method (pruneplug's or torch's) in one line."""
    custom = getattr(method, "description", None)
    if isinstance(custom, str):
        return custom
    if isinstance(method, torch_prune.PruningContainer):
        return " -> ".join(describe_method(m) for m in method)
    params_model = getattr(type(method), "Params", NoParams)
    if isinstance(method, MaskingHook) and params_model is not NoParams:
        fields = {name: info.default for name, info in params_model.model_fields.items()}
    else:  # torch's classes and foreign ones: the attributes torch's built-ins use
        fields = {"amount": None, "n": None, "dim": None}
    shown = [
        f"{field}={_format_value(getattr(method, field))}"
        for field, default in fields.items()
        # optional knobs left at their default (a generator, prune_bias=False) are noise
        if hasattr(method, field)
        and getattr(method, field) is not None
        and not (field in ("generator", "prune_bias") and getattr(method, field) == default)
    ]
    return f"{method_name(method)}({', '.join(shown)})"
