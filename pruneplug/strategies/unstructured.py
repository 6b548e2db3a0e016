"""Built-in unstructured strategies: prune individual entries."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor
from torch.nn.utils import prune as torch_prune

from ..core.method import BasePruningMethod
from ..errors import InvalidParametersError
from ..params import GeneratorField, NoParams, StrategyParams
from ..selection.amount import count_to_prune
from ..selection.exact import ScoreSource
from ._base import AmountParams, UnstructuredStrategy

__all__ = ["Identity", "L1Unstructured", "RandomUnstructured", "RandomUnstructuredParams", "abs_into"]


class Identity(BasePruningMethod):
    """Prune nothing: set up the reparametrization with a mask of ones.

    Useful to make a model's state_dict keys match a pruned checkpoint.
    """

    PRUNING_TYPE: ClassVar[str] = "unstructured"
    name: ClassVar[str | None] = "identity"
    Params: ClassVar[type[StrategyParams]] = NoParams
    uses_importance_scores: ClassVar[bool] = False

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        """Return ``default_mask`` unchanged."""
        return default_mask

    @classmethod
    def apply(cls, module: torch.nn.Module, name: str) -> torch_prune.BasePruningMethod:  # type: ignore[override]
        """Reparametrize ``module.<name>`` without pruning any entry."""
        return super().apply(module, name)


class L1Unstructured(UnstructuredStrategy):
    """Prune the entries with the smallest absolute value (L1 magnitude).

    Ties at the threshold are broken by position, so exactly ``amount``
    entries are pruned even when magnitudes repeat.
    """

    name: ClassVar[str | None] = "l1_unstructured"
    elementwise_scores: ClassVar[bool] = True

    def scores(self, t: Tensor, alive: Tensor | None) -> Tensor:
        """The absolute value of every entry."""
        return t.abs()

    def scores_into(self, values: Tensor, out: Tensor) -> Tensor:
        """``|values|`` written into the reusable buffer ``out`` (exact: fp16/bf16 widen to fp32)."""
        return abs_into(values, out)

    @classmethod
    def apply(  # type: ignore[override]
        cls, module: torch.nn.Module, name: str, amount: int | float, importance_scores: Tensor | None = None
    ) -> torch_prune.BasePruningMethod:
        """Prune ``module.<name>`` by L1 magnitude (of ``importance_scores`` if given)."""
        return super().apply(module, name, amount=amount, importance_scores=importance_scores)


class RandomUnstructuredParams(AmountParams):
    """Parameters of ``random_unstructured``."""

    generator: GeneratorField = None


class RandomUnstructured(UnstructuredStrategy):
    """Prune still-unpruned entries chosen uniformly at random.

    Draws from the same random stream as torch.nn.utils.prune (one
    ``torch.rand`` value per unpruned entry, the largest pruned), so under the
    same seed it prunes the same entries; pass ``generator`` to use your own
    :class:`torch.Generator` instead of torch's global one.
    """

    name: ClassVar[str | None] = "random_unstructured"
    Params: ClassVar[type[StrategyParams]] = RandomUnstructuredParams
    uses_importance_scores: ClassVar[bool] = False

    def __init__(self, amount: int | float, generator: torch.Generator | None = None) -> None:
        super().__init__(amount)
        self.generator = generator
        self._draw_dtype: torch.dtype | None = None

    def prepare_global(self, dtypes: list[torch.dtype]) -> None:
        """Draw in the dtype torch's concatenation of the targets would have (fp32 + fp64 -> fp64)."""
        joint = dtypes[0]
        for dtype in dtypes[1:]:
            joint = torch.promote_types(joint, dtype)
        self._draw_dtype = joint

    @property
    def draw_dtype(self) -> torch.dtype | None:
        """The dtype :meth:`prepare_global` chose for the draws (``None``: each tensor's own)."""
        return getattr(self, "_draw_dtype", None)  # (instances unpickled from older versions lack it)

    def _draws(self, t: Tensor, alive: Tensor | None) -> Tensor:
        """One uniform draw per alive entry, in torch's order, laid out like ``t`` (0 where dead)."""
        count = t.numel() if alive is None else int(alive.count_nonzero())
        if self.generator is not None and self.generator.device.type != t.device.type:
            raise InvalidParametersError(
                f"the generator is on {self.generator.device} but the tensor is on {t.device}", strategy=self.name
            )
        dtype = self.draw_dtype or t.dtype
        draws = torch.rand(count, dtype=dtype, device=t.device, generator=self.generator)
        if alive is None:
            return draws.reshape(t.shape)
        laid_out = torch.zeros(t.shape, dtype=draws.dtype, device=t.device)
        laid_out[alive] = draws
        return laid_out

    def scores(self, t: Tensor, alive: Tensor | None) -> Tensor:
        """Minus a uniform random number per alive entry (so the largest draws go first, as in torch)."""
        return self._draws(t, alive).neg_()

    def score_source(self, t: Tensor, alive: Tensor | None) -> ScoreSource:
        """The draws, negated chunk by chunk as they are read (no separate pass over all of them)."""
        t = t.detach()
        return ScoreSource(
            lambda: self._draws(t, alive).reshape(-1),
            lambda part, out: torch.neg(part, out=out) if part.dtype == out.dtype else out.copy_(part).neg_(),
            None if alive is None else alive.reshape(-1),
            t.numel(),
            t.device,
        )

    def keep_entries(self, t: Tensor, alive: Tensor | None) -> Tensor:
        """As the base class's, drawing even when everything goes (torch does: the stream stays in step)."""
        available = t.numel() if alive is None else int(alive.count_nonzero())
        if available and count_to_prune(self.amount, available) == available:
            self.scores(t, alive)  # torch draws even when everything goes; keep the stream in step
        return super().keep_entries(t, alive)

    def score_window(self, k: int, total: int) -> tuple[float, float] | None:
        """Where the k-th largest of ``total`` uniform draws lies (scores are minus the draws).

        Its fraction p = k / total has standard deviation sqrt(p (1 - p) / total);
        twelve of those (and a few float steps) make a miss practically impossible.
        """
        p = k / total
        margin = 12.0 * math.sqrt(p * (1.0 - p) / total) + 4.0 / (1 << 23)
        center = 1.0 - p
        return -(center + margin), -(center - margin)

    def score_rewinder(self, device: torch.device) -> Callable[[], None] | None:
        """A function that restarts the random stream where it stands now.

        Global selection reads scores more than once; each read must see the
        same draws, and afterwards the stream must stand where one read leaves it.
        """
        generator = self.generator if self.generator is not None else _default_generator(device)
        if generator is None:
            return None
        start = generator.get_state()

        def rewind() -> None:
            generator.set_state(start)

        return rewind

    @classmethod
    def apply(cls, module: torch.nn.Module, name: str, amount: int | float) -> torch_prune.BasePruningMethod:  # type: ignore[override]
        """Prune ``amount`` random entries of ``module.<name>``."""
        return super().apply(module, name, amount=amount)


def abs_into(values: Tensor, out: Tensor) -> Tensor:
    """``|values|`` written into the float buffer ``out`` (exact: fp16/bf16 widen to fp32; complex: the modulus)."""
    if values.dtype == out.dtype:
        return torch.abs(values, out=out)
    if values.is_complex():
        return out.copy_(values.abs())  # the modulus, as torch ranks complex entries
    return torch.abs(out.copy_(values), out=out)


def _default_generator(device: torch.device) -> torch.Generator | None:
    if device.type == "cpu":
        return torch.default_generator
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    return None
