"""The base class of every pruning strategy, and the hook that keeps ``weight`` current.

:class:`BasePruningMethod` speaks ``torch.nn.utils.prune``'s protocol (it
subclasses torch's own base class): ``compute_mask(t, default_mask)``,
``apply``, ``prune``, ``remove``, ``PRUNING_TYPE`` and ``_tensor_name``. An
instance is also the forward pre-hook stored in ``module._forward_pre_hooks``,
so models pruned by pruneplug look exactly like models pruned by torch, and
torch's own ``is_pruned`` and ``remove`` understand them.

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

__all__ = ["BasePruningMethod", "describe_method", "method_name"]


class BasePruningMethod(torch_prune.BasePruningMethod):
    """Base class for pruning strategies (and drop-in for torch's of the same name).

    Subclass it the way the tutorial subclasses ``torch.nn.utils.prune.BasePruningMethod``:
    set ``PRUNING_TYPE`` and implement ``compute_mask(t, default_mask)``, which
    returns a new 0/1 mask shaped like ``t`` that only zeroes entries
    ``default_mask`` keeps. Add ``name`` (and ``Params``, a pydantic model of
    the constructor's keyword arguments) to make it registrable by name.

    Class attributes:
        PRUNING_TYPE: ``"unstructured"`` (entries), ``"structured"`` (whole
            slices along ``self.dim``) or ``"global"`` (the whole tensor).
        name: the registry name, e.g. ``"l1_unstructured"``; ``None`` if unregistered.
        Params: pydantic model of the constructor's keyword arguments.
        uses_importance_scores: whether ``importance_scores`` change the mask.

    >>> import torch
    >>> class EveryOther(BasePruningMethod):
    ...     PRUNING_TYPE = "unstructured"
    ...     def compute_mask(self, t, default_mask):
    ...         mask = default_mask.clone()
    ...         mask.view(-1)[::2] = 0
    ...         return mask
    >>> EveryOther().compute_mask(torch.ones(4), torch.ones(4))
    tensor([0., 1., 0., 1.])
    """

    PRUNING_TYPE: ClassVar[str]
    name: ClassVar[str | None] = None
    Params: ClassVar[type[StrategyParams]] = NoParams
    uses_importance_scores: ClassVar[bool] = True

    _tensor_name: str

    # --- torch protocol -------------------------------------------------------------

    def __call__(self, module: nn.Module, inputs: Any) -> None:
        """Forward pre-hook: make ``module.<name>`` equal ``<name>_orig * <name>_mask``."""
        from .reparam import refresh

        refresh(module, self)

    def apply_mask(self, module: nn.Module) -> Tensor:
        """Return ``<name>_orig`` multiplied by ``<name>_mask`` (in the parameter's dtype)."""
        from .reparam import masked_tensor

        return masked_tensor(module, self._tensor_name)

    @classmethod
    def apply(  # type: ignore[override]
        cls,
        module: nn.Module,
        name: str,
        *args: Any,
        importance_scores: Tensor | None = None,
        **kwargs: Any,
    ) -> torch_prune.BasePruningMethod:
        """Prune ``module.<name>`` with ``cls(*args, **kwargs)``, as torch's ``apply`` does.

        Masks keep torch's dtypes on this path (it is what
        :mod:`pruneplug.compat` uses). Returns the hook now in charge of the
        tensor: the new method, or a :class:`~pruneplug.PruningContainer`
        holding the whole history. On any error the module is left exactly as
        it was.
        """
        from .reparam import TORCH_POLICY, apply_method

        method = cls(*args, **kwargs)
        return apply_method(module, name, method, importance_scores=importance_scores, policy=TORCH_POLICY)

    def prune(self, t: Tensor, default_mask: Tensor | None = None, importance_scores: Tensor | None = None) -> Tensor:
        """Return ``t`` multiplied by the mask this method computes for it."""
        from .reparam import check_importance_scores

        if importance_scores is not None:
            check_importance_scores(importance_scores, t)
        scores = t if importance_scores is None else importance_scores
        default = default_mask if default_mask is not None else torch.ones_like(t)
        mask: Tensor = self.compute_mask(scores, default_mask=default)  # type: ignore[no-untyped-call]
        return t * mask

    def remove(self, module: nn.Module) -> None:
        """Make the pruning of ``module.<name>`` permanent (torch protocol).

        ``<name>`` becomes a plain parameter again -- the same parameter object
        that was ``<name>_orig``, now holding the masked values -- and
        ``<name>_orig`` / ``<name>_mask`` are deleted. Like torch's method, this
        leaves the hook entry itself to the caller; :func:`pruneplug.remove`
        does both.
        """
        from .reparam import unreparametrize

        unreparametrize(module, self)

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
    if isinstance(method, BasePruningMethod) and params_model is not NoParams:
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
