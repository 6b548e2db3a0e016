"""Data-aware strategies: ``wanda`` and ``sparsegpt``, and ``magnitude``, their baseline.

They prune the weights of linear layers (``nn.Linear``, GPT-2's transposed
``Conv1D``) either unstructured, by ``amount``, or N:M: ``keep_n`` of every
``of_m`` consecutive entries along the weight's *input* dim (``keep_n=2,
of_m=4`` is 2:4, the pattern of NVIDIA's sparse tensor cores). N counts the
entries *kept*, as everywhere in pruneplug (the papers' code counts the
pruned ones).

``wanda`` (Sun et al., 2023) scores ``|W_ij| * ||X_j||``, the weight times
the norm of the input feature it multiplies, from the ``input_sq_norms``
statistic; ``sparsegpt`` (Frantar & Alistarh, 2023) prunes by optimal brain
surgeon with the ``input_hessian`` statistic and updates the weights it
keeps (see :mod:`pruneplug.strategies._obs`). Both read the statistics of the
module being pruned from :func:`pruneplug.using_statistics`, which
:func:`pruneplug.prune_calibrated` sets up; ``magnitude`` needs none.

Pruning again acts on what is still unpruned: the masks only lose entries,
and ``amount`` is a fraction (or count) of the unpruned entries -- of each row
with ``compare="row"``.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError
from torch import Tensor

from ..core.method import BasePruningMethod
from ..errors import InvalidDimError, InvalidParametersError
from ..params import AmountField, StrategyParams
from ..selection.amount import check_amount_like_torch
from ..selection.groups import check_n_of_m, keep_highest_per_row, keep_n_of_m
from ..selection.scores import ScoreTarget, current_target
from ..statistics.context import statistics_for
from ..statistics.spec import input_dim
from ..storage.packed import plain
from ._base import UnstructuredStrategy
from ._obs import obs_prune
from .unstructured import abs_into

__all__ = [
    "SparsityParams",
    "MagnitudeParams",
    "WandaParams",
    "SparseGPTParams",
    "Magnitude",
    "Wanda",
    "SparseGPT",
]

_KeepN = Annotated[int | None, Field(ge=1, description="N:M: entries kept in every group of of_m")]
_OfM = Annotated[int | None, Field(ge=2, description="N:M: group size, consecutive entries along the input dim")]
_Compare = Literal["row", "tensor"]


def _sparsity_problem(amount: object, keep_n: int | None, of_m: int | None) -> str | None:
    """What is wrong with the choice between ``amount`` and N:M, if anything."""
    nm = keep_n is not None or of_m is not None
    if nm and amount is not None:
        return (
            f"pass either amount (unstructured) or keep_n and of_m (N:M), not both: got amount={amount!r}, "
            f"keep_n={keep_n}, of_m={of_m}"
        )
    if not nm and amount is None:
        return "pass amount (unstructured: a fraction or count to prune) or keep_n and of_m (N:M, e.g. 2 and 4)"
    if nm and (keep_n is None or of_m is None):
        return f"N:M needs both keep_n and of_m (keep_n=2, of_m=4 is 2:4), got keep_n={keep_n}, of_m={of_m}"
    if nm and not keep_n < of_m:  # type: ignore[operator]
        return f"keep_n={keep_n} must be smaller than of_m={of_m}: N:M keeps keep_n of every of_m entries"
    return None


class SparsityParams(StrategyParams):
    """How much to prune: ``amount`` (unstructured) or ``keep_n`` of every ``of_m`` (N:M), exactly one of them."""

    amount: AmountField | None = None
    keep_n: _KeepN = None
    of_m: _OfM = None

    @model_validator(mode="after")
    def _amount_or_n_of_m(self) -> SparsityParams:
        problem = _sparsity_problem(self.amount, self.keep_n, self.of_m)
        if problem is not None:
            raise PydanticCustomError("sparsity_choice", "{problem}", {"problem": problem})
        return self


class MagnitudeParams(SparsityParams):
    """Parameters of ``magnitude``."""

    compare: _Compare = Field(
        "tensor", description="rank entries across the whole tensor (the papers' baseline) or within each output row"
    )


class WandaParams(SparsityParams):
    """Parameters of ``wanda``."""

    compare: _Compare = Field(
        "row", description="rank entries within each output row (the paper's default) or across the whole tensor"
    )


class SparseGPTParams(SparsityParams):
    """Parameters of ``sparsegpt``."""

    block_size: Annotated[int, Field(ge=1, description="columns per block: mask selection and lazy updates")] = 128
    damp: Annotated[
        float, Field(ge=0.0, allow_inf_nan=False, description="dampening: fraction of the mean Hessian diagonal")
    ] = 0.01


class _AmountOrNofM:
    """What ``wanda``, ``magnitude`` and ``sparsegpt`` share: how much they prune, ``amount`` or N:M.

    Exactly one of ``amount`` (unstructured: a count or fraction of the
    unpruned entries) and ``keep_n`` of every ``of_m`` (N:M), checked by
    :meth:`_choose_sparsity` as :class:`SparsityParams` validates it (for a
    class built directly). Each is stored under its parameter's name, which
    pruneplug reads back (``amount`` by the class: an unstructured strategy's
    is typed as always given).
    """

    name: ClassVar[str | None]
    keep_n: int | None
    of_m: int | None

    def _choose_sparsity(self, amount: int | float | None, keep_n: int | None, of_m: int | None) -> None:
        """Check the choice and store ``keep_n`` and ``of_m``."""
        problem = _sparsity_problem(amount, keep_n, of_m)
        if problem is not None:
            raise InvalidParametersError(problem, strategy=self.name)
        if amount is not None:
            check_amount_like_torch(amount)
        else:
            check_n_of_m(keep_n, of_m)  # type: ignore[arg-type]
        self.keep_n = keep_n
        self.of_m = of_m


def _weight_dim(t: Tensor, target: ScoreTarget | None, why: str) -> int:
    """The input dim of the 2-D weight ``t`` (of the module being pruned; a bare tensor: ``nn.Linear``'s, 1)."""
    if t.dim() != 2:
        raise InvalidDimError(
            f"{why} needs the 2-D weight of a linear layer (rows along the outputs, columns along the inputs); "
            f"this tensor has shape {tuple(t.shape)}"
        )
    return 1 if target is None else input_dim(target.module)


def _about(target: ScoreTarget | None) -> dict[str, str | None]:
    """The module type and tensor name of ``target``, for errors."""
    if target is None:
        return {"module_type": None, "tensor": None}
    return {"module_type": type(target.module).__name__, "tensor": target.name}


class _RowsOrGroups(_AmountOrNofM, UnstructuredStrategy):
    """An unstructured strategy whose scores may also be compared within rows or N:M groups.

    ``compare="tensor"`` ranks all entries of the tensor (and, through
    :func:`pruneplug.prune_global`, of many tensors) with the base class's
    exact selection: equal scores prune the earlier entry first. ``"row"``
    prunes ``amount`` of the unpruned entries of each output row, and N:M
    keeps ``keep_n`` of each group of ``of_m`` along the input dim (see
    :mod:`pruneplug.selection.groups`: equal scores keep the earlier entry).
    A subclass gives its default ``compare`` in ``COMPARE``.
    """

    PRUNING_TYPE: ClassVar[str] = "unstructured"
    COMPARE: ClassVar[_Compare] = "tensor"

    def __init__(
        self,
        amount: int | float | None = None,
        compare: str | None = None,
        keep_n: int | None = None,
        of_m: int | None = None,
    ) -> None:
        """``compare=None``: the class's default, ``COMPARE``."""
        self._choose_sparsity(amount, keep_n, of_m)
        self.amount = amount  # type: ignore[assignment]  # (None in N:M mode)
        compare = self.COMPARE if compare is None else compare
        if compare not in ("row", "tensor"):
            raise InvalidParametersError(f"compare must be 'row' or 'tensor', got {compare!r}", strategy=self.name)
        self.compare = compare

    def _selection(self) -> Literal["tensor", "row", "n_of_m"]:
        """How entries are ranked, decided here only: per N:M group if ``keep_n`` is given, else by ``compare``."""
        if self.keep_n is not None:
            return "n_of_m"
        return "row" if self.compare == "row" else "tensor"

    def required_statistics(self) -> tuple[str, ...]:
        """The calibration statistics the scores read (none by default)."""
        return ()

    def global_refusal(self) -> str | None:
        """Why :func:`pruneplug.prune_global` cannot use this configuration (N:M and ``compare="row"``)."""
        selection = self._selection()
        if selection == "n_of_m":
            return (
                f"N:M ({self.keep_n} of every {self.of_m}) is a rule within each group of one tensor, not a ranking "
                f"across tensors: prune each tensor with pruneplug.prune(module, name, {self.name!r}, "
                f"keep_n={self.keep_n}, of_m={self.of_m}), or pass amount= with compare='tensor' to prune_global"
            )
        if selection == "row":
            return (
                "compare='row' ranks the entries of each output row on its own; pass compare='tensor' to rank "
                "the entries of all targets together"
            )
        return None

    def row_dim(self, t: Tensor) -> int | None:
        """The input dim of the weight ``t`` with ``compare="row"`` (each output row counts ``amount``), else ``None``.

        The :class:`~pruneplug.strategies.CountsPerRow` contract: ``"tensor"``
        counts over the whole weight, and N:M has no ``amount`` to count.
        """
        if self._selection() != "row":
            return None
        return _weight_dim(t, current_target(), "compare='row'")

    def keep_entries(self, t: Tensor, alive: Tensor | None) -> Tensor:
        """The alive entries left: ranked per N:M group, per row or over the tensor (see the class docstring)."""
        selection = self._selection()
        if selection == "tensor":
            return super().keep_entries(t, alive)
        why = "compare='row'" if selection == "row" else f"N:M ({self.keep_n}:{self.of_m})"
        dim = _weight_dim(t, current_target(), why)
        live = None if alive is None else plain(alive)
        scores = self.scores(t.detach(), live)
        if selection == "row":
            return keep_highest_per_row(scores, self.amount, live, dim=dim)
        return keep_n_of_m(scores, self.keep_n, self.of_m, live, dim=dim)  # type: ignore[arg-type]


class Magnitude(_RowsOrGroups):
    """Prune the entries of smallest absolute value: the baseline the data-aware criteria are measured against.

    ``compare="tensor"`` (default, the papers' baseline) is ``l1_unstructured``;
    ``"row"`` prunes ``amount`` of each output row, N:M keeps the ``keep_n``
    largest of every ``of_m`` along the input dim.
    """

    name: ClassVar[str | None] = "magnitude"
    Params: ClassVar[type[StrategyParams]] = MagnitudeParams
    COMPARE: ClassVar[_Compare] = "tensor"
    elementwise_scores: ClassVar[bool] = True

    def scores(self, t: Tensor, alive: Tensor | None) -> Tensor:
        """The absolute value of every entry."""
        return t.abs()

    def scores_into(self, values: Tensor, out: Tensor) -> Tensor:
        """``|values|``, written into the reusable buffer ``out``."""
        return abs_into(values, out)


class Wanda(_RowsOrGroups):
    """Prune by ``|W_ij| * ||X_j||``: the weight times the norm of the input feature it multiplies.

    The norms come from the ``input_sq_norms`` statistic of the module being
    pruned (a mean over calibration rows, so ``sqrt`` of it is ``||X_j||`` up
    to a factor per layer, which no comparison within a layer sees).
    ``compare="row"`` (default, the paper's) prunes ``amount`` of each output
    row; ``"tensor"`` ranks the whole weight, and with
    :func:`pruneplug.prune_global` the weights of many layers together (the
    factor is the same for layers that see the same calibration rows).
    """

    name: ClassVar[str | None] = "wanda"
    Params: ClassVar[type[StrategyParams]] = WandaParams
    COMPARE: ClassVar[_Compare] = "row"
    STATISTIC: ClassVar[str] = "input_sq_norms"

    def required_statistics(self) -> tuple[str, ...]:
        """``("input_sq_norms",)``."""
        return (self.STATISTIC,)

    def scores(self, t: Tensor, alive: Tensor | None) -> Tensor:
        """``|t| * sqrt(input_sq_norms)`` along the input dim, in float32 (float64 for a float64 ``t``).

        Raises:
            CalibrationRequiredError: no statistics for the module being pruned.
            CalibrationError: the statistic does not have one entry per input feature.
        """
        target = current_target()
        about = _about(target)
        dim = _weight_dim(t, target, "wanda")
        norms = statistics_for(
            None if target is None else target.module,
            (self.STATISTIC,),
            strategy=self.name or "wanda",
            tensor=about["tensor"],
            shapes={self.STATISTIC: (t.shape[dim],)},
        )[self.STATISTIC]
        dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
        shape = [1, 1]
        shape[dim] = -1
        scale = norms.detach().to(device=t.device, dtype=dtype).sqrt().reshape(shape)
        return t.detach().abs().to(dtype).mul_(scale)


class SparseGPT(_AmountOrNofM, BasePruningMethod):
    """Prune by optimal brain surgeon with the calibration Hessian, and update the weights kept (SparseGPT).

    Reads the ``input_hessian`` statistic of the module being pruned. The new
    values land in ``<name>_orig`` (the same ``Parameter``), so
    :func:`pruneplug.remove` keeps them, and a failed prune leaves the old
    ones. Unstructured (``amount``: exactly that many of the unpruned
    entries, spread evenly over the blocks of ``block_size`` columns) or N:M.
    ``compute_mask`` gives the same mask without the update (what the
    ``torch.nn.utils.prune``-style paths use). See :func:`~pruneplug.strategies._obs.obs_prune`.
    """

    PRUNING_TYPE: ClassVar[str] = "global"  # the whole tensor at once: every column's update reaches the next
    name: ClassVar[str | None] = "sparsegpt"
    Params: ClassVar[type[StrategyParams]] = SparseGPTParams
    uses_importance_scores: ClassVar[bool] = False
    STATISTIC: ClassVar[str] = "input_hessian"

    def __init__(
        self,
        amount: int | float | None = None,
        keep_n: int | None = None,
        of_m: int | None = None,
        block_size: int = 128,
        damp: float = 0.01,
    ) -> None:
        self._choose_sparsity(amount, keep_n, of_m)
        self.amount = amount
        self.block_size = block_size
        self.damp = damp

    def required_statistics(self) -> tuple[str, ...]:
        """``("input_hessian",)``."""
        return (self.STATISTIC,)

    def prune_and_update(self, t: Tensor, alive: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(keep, new values)`` of the weight ``t`` of the module being pruned; ``t`` is left as it is.

        Raises:
            CalibrationRequiredError: no statistics for the module being pruned.
            CalibrationError: the Hessian has the wrong shape, is not finite,
                or cannot be factorized with this ``damp``.
        """
        target = current_target()
        about = _about(target)
        dim = _weight_dim(t, target, "sparsegpt")
        width = t.shape[dim]
        hessian = statistics_for(
            None if target is None else target.module,
            (self.STATISTIC,),
            strategy=self.name or "sparsegpt",
            tensor=about["tensor"],
            shapes={self.STATISTIC: (width, width)},
        )[self.STATISTIC]
        weight = t.detach() if dim == 1 else t.detach().t()
        live = None if alive is None else plain(alive)
        if live is not None and dim == 0:
            live = live.t()
        keep, values = obs_prune(
            weight,
            hessian,
            amount=self.amount,
            keep_n=self.keep_n,
            of_m=self.of_m,
            alive=live,
            block_size=self.block_size,
            damp=self.damp,
        )
        return (keep, values) if dim == 1 else (keep.t(), values.t())

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        """The mask :meth:`prune_and_update` gives, intersected with ``default_mask`` (no values change)."""
        alive = default_mask if default_mask.dtype == torch.bool else default_mask != 0
        keep, _ = self.prune_and_update(t, alive)
        if default_mask.dtype == torch.bool:
            return keep
        return default_mask * keep.to(default_mask.dtype)
