"""Exception types raised by pruneplug.

Every error a user can cause is one of these classes. Each subclasses
:class:`PruneplugError` *and* the builtin exception a user (or code written
for ``torch.nn.utils.prune``) would catch, so ``except ValueError`` keeps
working while ``except pruneplug.PruneplugError`` catches them all.

Errors carry structured context -- the module type, the tensor name and the
strategy -- which the core fills in as an error travels up from a strategy to
the call the user made. The message always names them, so a user can tell
*what* was wrong without a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from difflib import get_close_matches

__all__ = [
    "blamed",
    "PruneplugError",
    "InvalidAmountError",
    "InvalidParametersError",
    "InvalidDimError",
    "InvalidImportanceScoresError",
    "InvalidMaskError",
    "InvalidTargetError",
    "TensorNotFoundError",
    "NotPrunedError",
    "StrategyNotFoundError",
    "ScoreNotFoundError",
    "StatisticNotFoundError",
    "ScheduleNotFoundError",
    "InvalidScheduleError",
    "StrategyConflictError",
    "IncompatibleStrategyError",
    "UnsupportedNormError",
    "StrategyFailedError",
    "PruningStateError",
    "PackedMaskError",
    "DistributedSelectionError",
    "ChannelTraceError",
    "CompactionError",
    "CalibrationError",
    "CalibrationRequiredError",
    "CalibrationBatchError",
    "CalibrationLossError",
    "CalibrationBlockError",
    "ChannelGraphWarning",
    "close_matches_hint",
    "cross_tensor_hint",
]


def close_matches_hint(word: str, candidates: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest candidates, or ``""``.

    >>> close_matches_hint("l1_unstructurd", ["l1_unstructured", "identity"])
    " Did you mean 'l1_unstructured'?"
    """
    matches = get_close_matches(word, list(candidates), n=3, cutoff=0.6)
    if not matches:
        return ""
    return " Did you mean " + " or ".join(repr(m) for m in matches) + "?"


def cross_tensor_hint(name: str, kind: str) -> str:
    """Why strategy ``name`` of ``kind`` cannot rank entries across tensors (``prune_global``, plan scope ``global``).

    The kind ``"global"`` means a mask made from the whole of *one* tensor,
    not pruning across tensors; the message says so, since the same word
    names both.

    >>> print(cross_tensor_hint("nm", "global"))  # doctest: +NORMALIZE_WHITESPACE
    'nm' is of kind 'global': it computes each tensor's mask from that whole tensor at once
    (per tensor), so it cannot rank entries across tensors
    """
    how = {
        "structured": "prunes whole slices of each tensor on its own",
        "global": "computes each tensor's mask from that whole tensor at once (per tensor)",
    }.get(kind, "does not rank single entries")
    return f"{name!r} is of kind {kind!r}: it {how}, so it cannot rank entries across tensors"


class PruneplugError(Exception):
    """Base class of every error pruneplug raises on purpose.

    Attributes:
        module_type: class name of the module being pruned, when known.
        tensor: name of the tensor being pruned, when known.
        strategy: name of the strategy involved, when known.
        reason: the bare message, without the context prefix.
    """

    def __init__(
        self,
        reason: str,
        *,
        module_type: str | None = None,
        tensor: str | None = None,
        strategy: str | None = None,
    ) -> None:
        self.reason = reason
        self.module_type = module_type
        self.tensor = tensor
        self.strategy = strategy
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.module_type is not None and self.tensor is not None:
            where.append(f"{self.module_type}.{self.tensor}")
        elif self.module_type is not None:
            where.append(self.module_type)
        elif self.tensor is not None:
            where.append(f"tensor {self.tensor!r}")
        if self.strategy is not None:
            where.append(f"strategy {self.strategy!r}")
        if not where:
            return self.reason
        return f"{', '.join(where)}: {self.reason}"

    def add_context(
        self,
        *,
        module_type: str | None = None,
        tensor: str | None = None,
        strategy: str | None = None,
    ) -> PruneplugError:
        """Fill in context fields that are still unknown; returns ``self``.

        The core calls this as an error leaves a strategy, so a message raised
        deep inside mask computation still names the module and tensor.
        """
        if self.module_type is None:
            self.module_type = module_type
        if self.tensor is None:
            self.tensor = tensor
        if self.strategy is None:
            self.strategy = strategy
        self.args = (self._render(),)
        return self

    def __str__(self) -> str:
        return self._render()

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Keep the structured fields through pickling (multiprocessing, pytest-xdist).
        return (
            _rebuild_error,
            (type(self), self.reason, self.module_type, self.tensor, self.strategy, self.__dict__),
        )


def _rebuild_error(cls, reason, module_type, tensor, strategy, state):  # type: ignore[no-untyped-def]
    error = cls.__new__(cls)
    error.__dict__.update(state)
    PruneplugError.__init__(error, reason, module_type=module_type, tensor=tensor, strategy=strategy)
    return error


class InvalidAmountError(PruneplugError, ValueError):
    """``amount`` is out of range, not finite, or larger than what remains.

    A wrong *type* of amount (a string, a bool for the native API) is reported
    as :class:`InvalidParametersError` by the native API and as ``TypeError``
    by :mod:`pruneplug.compat`, as torch does.
    """


class InvalidParametersError(PruneplugError, ValueError):
    """A strategy's parameters failed validation by its pydantic model.

    Attributes:
        errors: pydantic's list of error dicts (``loc``, ``msg``, ``type``).
    """

    def __init__(self, reason: str, *, errors: list[dict[str, object]] | None = None, **context: str | None) -> None:
        self.errors = errors or []
        super().__init__(reason, **context)


class InvalidDimError(PruneplugError, ValueError, IndexError):
    """``dim`` does not index the tensor, or the tensor has no dims to prune along.

    Also an ``IndexError`` because torch raises one for an out-of-range dim.
    """


class InvalidImportanceScoresError(PruneplugError, ValueError, AssertionError):
    """Importance scores have the wrong type, shape or device.

    Also an ``AssertionError`` because that is what torch.nn.utils.prune
    raises for a shape mismatch, and code written for it may catch that.
    """


class InvalidMaskError(PruneplugError, ValueError, AssertionError):
    """A mask has the wrong shape, values other than 0/1, or would un-prune entries.

    Also an ``AssertionError`` because that is what torch.nn.utils.prune
    raises for a mask of the wrong shape (``custom_from_mask``), and code
    written for it may catch that.
    """


class InvalidTargetError(PruneplugError, TypeError):
    """What was given to prune is not a module, a tensor name, or a (module, name) pair."""


class TensorNotFoundError(PruneplugError, AttributeError, LookupError):
    """The module has no parameter of that name (torch raises ``AttributeError``)."""


class NotPrunedError(PruneplugError, ValueError):
    """``remove`` was asked for a tensor that is not pruned (torch raises ``ValueError``)."""


class StrategyNotFoundError(PruneplugError, LookupError):
    """No registered strategy has this name; the message lists close matches.

    Attributes:
        name: the name that was looked up.
        available: the names that are registered.
    """

    def __init__(
        self, name: str, available: Iterable[str], *, extra: str = "", listed_as: str = "Registered strategies"
    ) -> None:
        self.name = name
        self.available = sorted(available)
        self.extra = extra
        self.listed_as = listed_as
        hint = close_matches_hint(name, self.available)
        listing = ", ".join(self.available) if self.available else "none"
        super().__init__(f"no strategy named {name!r}.{hint} {listed_as}: {listing}.{extra}")


class ScoreNotFoundError(PruneplugError, LookupError):
    """No importance score of this name where it was looked up; the message lists close matches (then ``extra``).

    ``where`` names what was searched: the registered scores, or only the
    built-in ones (a scored strategy built without a registry).
    """

    def __init__(self, name: str, available: Iterable[str], *, extra: str = "", where: str = "Registered") -> None:
        self.name = name
        self.available = sorted(available)
        self.extra = extra
        hint = close_matches_hint(name, self.available)
        super().__init__(
            f"no importance score named {name!r}.{hint} {where} scores: {', '.join(self.available) or 'none'}." + extra
        )


class StatisticNotFoundError(PruneplugError, LookupError):
    """No calibration statistic of this name is registered; the message lists close matches."""

    def __init__(self, name: str, available: Iterable[str]) -> None:
        self.name = name
        self.available = sorted(available)
        hint = close_matches_hint(name, self.available)
        super().__init__(
            f"no calibration statistic named {name!r}.{hint} Registered statistics: "
            f"{', '.join(self.available) or 'none'}."
        )


class ScheduleNotFoundError(PruneplugError, LookupError):
    """No pruning schedule of this name is registered; the message lists close matches (then ``extra``).

    Attributes:
        name: the name that was looked up.
        available: the names that are registered.
    """

    def __init__(self, name: str, available: Iterable[str], *, extra: str = "") -> None:
        self.name = name
        self.available = sorted(available)
        self.extra = extra
        hint = close_matches_hint(name, self.available)
        super().__init__(
            f"no schedule named {name!r}.{hint} Registered schedules: {', '.join(self.available) or 'none'}.{extra}"
        )


class InvalidScheduleError(InvalidParametersError):
    """A pruning schedule's parameters are invalid, or it was asked for what it cannot give.

    Raised when a schedule is made with parameters its pydantic model rejects
    (``end`` before ``start``, ``every`` below 1, a sparsity outside [0, 1),
    ``initial`` above ``final``), and when :meth:`pruneplug.Schedule.at` is
    given a negative step or, for a schedule without a ``final`` of its own,
    no ``final``. The message starts with ``schedule 'name':``.

    Attributes:
        schedule: the schedule's registered name, when known.
        errors: pydantic's list of error dicts (``loc``, ``msg``, ``type``); empty for a call-time problem.
    """

    def __init__(
        self, reason: str, *, schedule: str | None = None, errors: list[dict[str, object]] | None = None
    ) -> None:
        self.schedule = schedule
        super().__init__(reason, errors=errors)

    def _render(self) -> str:
        schedule = getattr(self, "schedule", None)
        return self.reason if schedule is None else f"schedule {schedule!r}: {self.reason}"


class StrategyConflictError(PruneplugError, LookupError):
    """Two providers registered the same strategy name; neither silently wins.

    Attributes:
        name: the contested name.
        providers: descriptions of every provider that claims it.
    """

    def __init__(self, name: str, providers: list[str], *, kind: str = "strategy", registering: bool = False) -> None:
        self.name = name
        self.providers = list(providers)
        self.kind = kind
        self.registering = registering
        listing = "; ".join(self.providers)
        if registering:
            message = (
                f"{kind} name {name!r} is already provided by {listing}; register yours under another name "
                "(pruneplug.register(cls, name=...)), or pruneplug.unregister the other first if register() added it"
            )
        else:
            message = (
                f"{kind} name {name!r} is provided by more than one plugin ({listing}), so neither is used. "
                "Uninstall one of them, or block it by its entry-point or distribution name: "
                "PRUNEPLUG_BLOCK_PLUGINS=<name> or pruneplug.Registry(blocked=[...])"
            )
        super().__init__(message)


class UnsupportedNormError(InvalidParametersError, RuntimeError):
    """The norm order cannot be computed over this tensor's shape (``'nuc'`` needs two dims).

    Also a ``RuntimeError`` because that is what ``torch.norm`` raises for it.
    """


class IncompatibleStrategyError(PruneplugError, TypeError):
    """The strategy cannot be used this way, or at all.

    For example a strategy not of kind ``"unstructured"`` given to
    :func:`~pruneplug.prune_global`, or a class passed directly to
    :func:`~pruneplug.prune` that is abstract or has no valid ``PRUNING_TYPE``.
    """


class StrategyFailedError(PruneplugError, RuntimeError):
    """A strategy raised an exception of its own while computing a mask.

    The original exception is chained as ``__cause__``; the model is unchanged.
    """


class PruningStateError(PruneplugError, RuntimeError, AssertionError):
    """The module's pruning state is inconsistent (for example two hooks on one tensor).

    Also a ``RuntimeError``, and an ``AssertionError`` because torch raises
    one in the same situation.
    """


class PackedMaskError(PruneplugError, RuntimeError):
    """An operation a bit-packed mask (:class:`~pruneplug.PackedMask`) cannot do.

    In-place operations that change its shape, tracing with
    ``torch.jit.trace`` (which would freeze the mask into the trace), and
    the like. :func:`pruneplug.unpack_masks` gives the model plain bool masks.
    """


class DistributedSelectionError(PruneplugError, RuntimeError):
    """A selection across ranks (``torch.distributed``) that cannot go on.

    The process group is not initialized, the ranks disagree on what to
    select (``k``, the sources' shapes), another rank's input is invalid, or
    an all-reduce did not finish within the timeout. Raised on every rank
    that gets that far, before any mask is returned.
    """


class ChannelTraceError(PruneplugError, RuntimeError):
    """The channel graph of a model could not be traced.

    The example inputs do not run through the model (the model's own
    exception is chained), or they are not tensors.
    """


class CompactionError(PruneplugError, RuntimeError):
    """A compaction or a compacted checkpoint that cannot be done exactly.

    :func:`pruneplug.compact` raises it (after putting the model back as it
    was) when the compacted model's outputs differ from the masked model's;
    :func:`pruneplug.load_compacted` when a checkpoint's shapes do not fit.
    """


class CalibrationError(PruneplugError, RuntimeError):
    """Data-aware pruning cannot go on with the calibration data or statistics it has.

    Calibration batches that do not run through the model (the model's own
    exception is chained), statistics of the wrong shape, a Hessian whose
    Cholesky factorization fails even with the dampening asked for. Whatever
    was being pruned is left exactly as it was.
    """


class CalibrationRequiredError(CalibrationError):
    """A strategy needs statistics of calibration data and none were collected for this tensor.

    Run it through :func:`pruneplug.prune_calibrated`, which collects them,
    or inside :func:`pruneplug.using_statistics` with statistics of your own.
    """


class CalibrationBatchError(CalibrationError):
    """The calibration batches do not run through the model.

    A batch raised (its index named, the model's exception chained), a batch
    is of a type the model cannot be called with, reading the iterable
    raised or gave no batch at all, or a callable ``run(model)`` raised.
    """


class CalibrationLossError(CalibrationError):
    """The loss of a gradient calibration (the ``taylor`` score) cannot give gradients.

    ``loss(output, batch)`` raised, returned something other than a scalar
    tensor that depends on the model's weights, or no gradient reached one
    of the layers to prune.
    """


class CalibrationBlockError(CalibrationError):
    """The blocks of a block by block calibration cannot be run one after another.

    A batch (or the whole ``run(model)``) never called the first block, a
    block was called without the hidden state as a tensor (first positional
    argument or ``hidden_states=``), it returned no tensor, or it raised on
    the inputs the blocks before it gave (the original error chained).
    """


class ChannelGraphWarning(UserWarning):
    """Channels the channel graph leaves alone: an operation or module it does not know touches them."""


@contextmanager
def blamed(
    *,
    module_type: str | None = None,
    tensor: str | None = None,
    strategy: str | None = None,
    wrap_foreign: bool = False,
) -> Iterator[None]:
    """Name what was being worked on in an error raised inside the block.

    A :class:`PruneplugError` gets the names it lacks and propagates. With
    ``wrap_foreign``, any other exception -- a strategy's own bug -- becomes a
    :class:`StrategyFailedError` naming them too; without it (the
    ``torch.nn.utils.prune`` drop-in, whose callers catch torch's exception
    types) it propagates as it is.
    """
    try:
        yield
    except PruneplugError as error:
        error.add_context(module_type=module_type, tensor=tensor, strategy=strategy)
        raise
    except Exception as error:
        if not wrap_foreign:
            raise
        raise StrategyFailedError(
            f"the strategy raised {type(error).__name__}: {error}",
            module_type=module_type,
            tensor=tensor,
            strategy=strategy,
        ) from error
