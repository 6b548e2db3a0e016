"""A drop-in for ``torch.nn.utils.prune``: the same names, signatures and observable behaviour.

The functions and method classes run on pruneplug's core, so they get its
fixes (the list, side by side with torch, is in docs/getting-started.md),
while what torch users can observe stays torch's: masks in the weight's
dtype, ``module.weight`` stored as an attribute and recomputed by the hook
before every forward, the hooks in ``module._forward_pre_hooks``, the
:class:`PruningContainer` and its order, torch's exception types. Each method
class here subclasses pruneplug's strategy (whose code runs) and torch's class
of the same name (so ``isinstance`` checks written for torch hold); a test
that ``mock.patch``-es torch's ``compute_mask`` reaches them too, which is how
torch's own test suite passes with only its import changed.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from . import strategies
from .api.global_masks import global_masks
from .core.commit import commit, remove_pruning
from .core.method import BasePruningMethod, PruningContainer, with_history
from .core.plan import plan_prune
from .core.state import check_untied, default_alive, is_pruned as _is_pruned, tensor_state
from .errors import (
    InvalidDimError,
    InvalidImportanceScoresError,
    InvalidMaskError,
    InvalidParametersError,
    InvalidTargetError,
)
from .selection.amount import check_amount_like_torch, count_to_prune
from .selection.slices import normalize_dim
from .storage.formats import TORCH_POLICY

__all__ = [
    "BasePruningMethod",
    "PruningContainer",
    "Identity",
    "RandomUnstructured",
    "L1Unstructured",
    "RandomStructured",
    "LnStructured",
    "CustomFromMask",
    "identity",
    "random_unstructured",
    "l1_unstructured",
    "random_structured",
    "ln_structured",
    "global_unstructured",
    "custom_from_mask",
    "remove",
    "is_pruned",
]


class _TorchTwin:
    """Mixin making a pruneplug method class stand in for torch's class of the same name.

    A compat class subclasses this mixin, pruneplug's strategy (whose code
    runs) and torch's class (so ``isinstance`` checks written for torch
    hold). While torch's ``compute_mask`` is replaced -- typically by
    ``mock.patch`` in a test written for torch -- the replacement is called
    instead, exactly as it would be under torch; otherwise torch's code is
    never used.
    """

    _torch_class: ClassVar[type[torch_prune.BasePruningMethod]]
    _torch_compute_mask: ClassVar[object]
    _pruneplug_class: ClassVar[type[BasePruningMethod]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_torch_class" not in vars(cls):
            return  # a user's subclass of a compat class: inherits its twin's settings
        cls._torch_compute_mask = cls._torch_class.__dict__["compute_mask"]
        cls._pruneplug_class = next(base for base in cls.__mro__[1:] if issubclass(base, BasePruningMethod))

    @classmethod
    def _torch_override(cls) -> Any:
        """torch's ``compute_mask`` if something replaced it since import, else ``None``."""
        current = cls._torch_class.__dict__.get("compute_mask")
        return None if current is cls._torch_compute_mask else current

    @classmethod
    def selects_itself(cls) -> bool:
        """The fast-path contract (:mod:`pruneplug.core.fast_path`): pruneplug's selection stands for
        ``compute_mask`` only while neither torch's nor pruneplug's ``compute_mask`` of this class, nor
        this class's own, is replaced."""
        ours = getattr(cls._pruneplug_class, "selects_itself", None)
        return (
            cls.compute_mask is _TWIN_COMPUTE_MASK
            and cls._torch_override() is None
            and ours is not None
            and bool(ours())
        )

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        """pruneplug's mask, or the replacement of torch's ``compute_mask`` if there is one."""
        override = self._torch_override()
        if override is None:
            mask: Tensor = super().compute_mask(t, default_mask)  # type: ignore[misc]
            return mask
        bind = getattr(type(override), "__get__", None)
        bound = bind(override, self, type(self)) if bind is not None else override
        replaced: Tensor = bound(t, default_mask=default_mask)
        return replaced


_TWIN_COMPUTE_MASK = _TorchTwin.compute_mask  # as defined: a replacement turns the shortcut off


class Identity(_TorchTwin, strategies.Identity, torch_prune.Identity):
    """Prune nothing: reparametrize with a mask of ones (torch's ``Identity``)."""

    _torch_class = torch_prune.Identity


class RandomUnstructured(_TorchTwin, strategies.RandomUnstructured, torch_prune.RandomUnstructured):
    """Prune ``amount`` random still-unpruned entries, drawing as torch's ``RandomUnstructured`` does."""

    _torch_class = torch_prune.RandomUnstructured


class L1Unstructured(_TorchTwin, strategies.L1Unstructured, torch_prune.L1Unstructured):
    """Prune the ``amount`` smallest-magnitude still-unpruned entries (torch's ``L1Unstructured``)."""

    _torch_class = torch_prune.L1Unstructured


class RandomStructured(_TorchTwin, strategies.RandomStructured, torch_prune.RandomStructured):
    """Prune ``amount`` random still-alive slices along ``dim`` (torch's ``RandomStructured``)."""

    _torch_class = torch_prune.RandomStructured


class LnStructured(_TorchTwin, strategies.LnStructured, torch_prune.LnStructured):
    """Prune the ``amount`` lowest-L``n``-norm still-alive slices along ``dim`` (torch's ``LnStructured``)."""

    _torch_class = torch_prune.LnStructured


class _MaskNotATensorError(InvalidMaskError, AttributeError):
    """A given mask that is not a tensor: torch fails reading its ``shape`` (``AttributeError``)."""


class CustomFromMask(_TorchTwin, strategies.CustomFromMask, torch_prune.CustomFromMask):
    """Prune with a given 0/1 mask (torch's ``CustomFromMask``)."""

    _torch_class = torch_prune.CustomFromMask

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        """``default_mask`` times the given mask, refusing a mask that is not a tensor as torch does."""
        if not isinstance(self.mask, Tensor) and self._torch_override() is None:
            raise _MaskNotATensorError(f"mask must be a tensor, got {type(self.mask).__name__}", strategy=self.name)
        return super().compute_mask(t, default_mask)


def identity(module: nn.Module, name: str) -> nn.Module:
    """Reparametrize ``module.<name>`` with a mask of ones (prunes nothing)."""
    Identity.apply(module, name)
    return module


def random_unstructured(module: nn.Module, name: str, amount: int | float) -> nn.Module:
    """Prune ``amount`` (count or fraction) random still-unpruned entries of ``module.<name>``."""
    RandomUnstructured.apply(module, name, amount)
    return module


def l1_unstructured(
    module: nn.Module, name: str, amount: int | float, importance_scores: Tensor | None = None
) -> nn.Module:
    """Prune the ``amount`` smallest-magnitude still-unpruned entries of ``module.<name>``."""
    L1Unstructured.apply(module, name, amount=amount, importance_scores=importance_scores)
    return module


def random_structured(module: nn.Module, name: str, amount: int | float, dim: int) -> nn.Module:
    """Prune ``amount`` random still-alive slices of ``module.<name>`` along ``dim``."""
    RandomStructured.apply(module, name, amount, dim)
    return module


def ln_structured(
    module: nn.Module,
    name: str,
    amount: int | float,
    n: int | float | str,
    dim: int,
    importance_scores: Tensor | None = None,
) -> nn.Module:
    """Prune the ``amount`` lowest-L``n``-norm still-alive slices of ``module.<name>`` along ``dim``."""
    LnStructured.apply(module, name, amount, n, dim, importance_scores=importance_scores)
    return module


def custom_from_mask(module: nn.Module, name: str, mask: Tensor) -> nn.Module:
    """Prune ``module.<name>`` with a given 0/1 ``mask``."""
    CustomFromMask.apply(module, name, mask)
    return module


def global_unstructured(
    parameters: Iterable[tuple[nn.Module, str]],
    pruning_method: type,
    importance_scores: dict[tuple[nn.Module, str], Tensor] | None = None,
    **kwargs: Any,
) -> None:
    """Prune the lowest-importance entries across all ``parameters`` together.

    As torch's: ``pruning_method`` is an unstructured method class,
    ``kwargs`` its arguments (``amount=...``), and each tensor gets a
    :class:`CustomFromMask` in its history. Unlike torch's, ``parameters``
    may be a generator, the mask is found without concatenating every
    tensor (for pruneplug's scored methods), and either every tensor is pruned
    or none is.
    """
    if not isinstance(parameters, Iterable):
        raise TypeError("global_unstructured(): parameters is not an Iterable")
    targets = list(parameters)
    importance_scores = importance_scores if importance_scores is not None else {}
    if not isinstance(importance_scores, dict):
        raise TypeError("global_unstructured(): importance_scores must be of type dict")
    method = pruning_method(**kwargs)
    if method.PRUNING_TYPE != "unstructured":
        raise TypeError(
            'Only "unstructured" PRUNING_TYPE supported for '
            f"the `pruning_method`. Found method {pruning_method} of type {method.PRUNING_TYPE}"
        )
    if not targets:
        raise InvalidParametersError("global_unstructured(): parameters is empty; nothing to prune")
    if len({(id(module), name) for module, name in targets}) != len(targets):
        raise InvalidTargetError("global_unstructured(): a (module, name) pair is listed more than once")
    states = [tensor_state(module, name, whole_tensors_only=False) for module, name in targets]
    check_untied(states, like_torch=True)
    importance = []
    for (module, name), state in zip(targets, states):
        scores = importance_scores.get((module, name))
        if scores is not None and (not isinstance(scores, Tensor) or scores.shape != state.orig.shape):
            shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise InvalidImportanceScoresError(
                "importance_scores should have the same shape as the parameter: "
                f"got {shape} vs {tuple(state.orig.shape)}",
                module_type=state.module_type,
                tensor=name,
            )
        importance.append(scores)
    alive = [default_alive(s) if s.pruned else None for s in states]
    masks = global_masks(states, method, importance, alive, policy=TORCH_POLICY)
    pendings = [
        plan_prune(module, name, CustomFromMask(mask), stack=with_history, policy=TORCH_POLICY)
        for (module, name), mask in zip(targets, masks)
    ]
    commit(pendings)
    for pending in pendings:
        last = pending.hook[-1] if isinstance(pending.hook, PruningContainer) else pending.hook
        last.mask = pending.mask  # type: ignore[attr-defined]  # same values; keep one copy, not two


def remove(module: nn.Module, name: str) -> nn.Module:
    """Make the pruning of ``module.<name>`` permanent and drop its hook."""
    remove_pruning(module, name)
    return module


def is_pruned(module: nn.Module) -> bool:
    """Whether ``module`` or any submodule has a pruning hook."""
    return _is_pruned(module)


# --- torch's private helpers, for code and tests that call them ------------------------------


def _validate_pruning_amount_init(amount: object) -> None:
    check_amount_like_torch(amount)


def _validate_pruning_amount(amount: object, tensor_size: int) -> None:
    if isinstance(amount, numbers.Integral):
        count_to_prune(int(amount), tensor_size)


def _compute_nparams_toprune(amount: int | float, tensor_size: int) -> int:
    if isinstance(amount, numbers.Integral):
        return int(amount)
    return round(amount * tensor_size)


def _validate_structured_pruning(t: Tensor) -> None:
    if t.dim() <= 1:
        normalize_dim(0, t.dim())


def _validate_pruning_dim(t: Tensor, dim: int) -> None:
    if dim >= t.dim():
        raise InvalidDimError(f"Invalid index {dim} for tensor of size {t.shape}")


def _compute_norm(t: Tensor, n: int | float | str, dim: int) -> Tensor:
    dims = list(range(t.dim()))
    dims.remove(dims[dim])
    norms: Tensor = torch.norm(t, p=n, dim=dims)  # type: ignore[arg-type]
    return norms
