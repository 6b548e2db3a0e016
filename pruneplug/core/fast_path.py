"""The contract a strategy implements to select among still-unpruned entries itself.

torch's pruning computes a new mask on a copy: ``t[alive]`` (or the alive
slices) is gathered, the method ranks that copy, and the result is scattered
back. A strategy that can rank ``t`` in place while skipping what is already
pruned saves both copies -- on a large tensor most of the time and memory of
a prune. Such a strategy declares it by implementing one of the protocols
below; the core (local and iterative pruning) and :func:`pruneplug.prune_global`
then call it directly. :class:`pruneplug.UnstructuredStrategy` and
:class:`pruneplug.StructuredStrategy` implement them, so their subclasses
take part without writing anything.

The shortcut stands in for ``compute_mask``, so it must give exactly the mask
``compute_mask`` would. ``selects_itself()`` is how a strategy says whether it
still does: a subclass, or a test's ``mock.patch``, that replaces
``compute_mask`` makes it ``False``, and the general path calls the
replacement.
"""

from __future__ import annotations

from typing import Protocol, TypeGuard, runtime_checkable

from torch import Tensor

__all__ = [
    "SelectsEntries",
    "SelectsSlices",
    "UpdatesValues",
    "fast_path",
    "selecting_entries",
    "selecting_slices",
    "updating_values",
]


@runtime_checkable
class SelectsEntries(Protocol):
    """An unstructured strategy that picks among the still-unpruned entries of a tensor itself."""

    @classmethod
    def selects_itself(cls) -> bool:
        """Whether :meth:`keep_entries` gives what ``compute_mask`` gives (``False`` once that is replaced)."""
        ...

    def keep_entries(self, t: Tensor, alive: Tensor | None) -> Tensor:
        """Bool mask shaped like ``t``: the ``alive`` entries left after pruning (``alive=None``: all entries).

        Must equal ``compute_mask(t[alive], ...)`` scattered back into
        ``alive``; entries outside ``alive`` are ``False``.
        """
        ...


@runtime_checkable
class SelectsSlices(Protocol):
    """A structured strategy that picks among the still-unpruned slices along its ``dim`` itself."""

    @classmethod
    def selects_itself(cls) -> bool:
        """Whether :meth:`pruned_slices` gives what ``compute_mask`` gives (``False`` once that is replaced)."""
        ...

    def pruned_slices(self, t: Tensor, alive: Tensor | None) -> Tensor:
        """Bool vector over ``dim``: the slices to prune now, among the ``alive`` ones (``None``: all)."""
        ...


@runtime_checkable
class UpdatesValues(Protocol):
    """A strategy that also changes the entries it keeps, to make up for those it prunes (SparseGPT's OBS update).

    The core calls :meth:`prune_and_update` instead of ``compute_mask`` when
    the tensor is pruned through :func:`pruneplug.prune` (or
    :func:`pruneplug.prune_calibrated`) without importance scores. It writes
    the new values into ``<name>_orig`` in place -- the same ``Parameter``
    object, so an optimizer holding it keeps working -- together with the
    mask; :func:`pruneplug.remove` keeps them, and a prune that fails leaves
    the old values.
    """

    def prune_and_update(self, t: Tensor, alive: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(keep, values)``: the bool mask of ``t``'s shape after pruning, and the new values of ``t``.

        ``t`` is the tensor's current ``<name>_orig`` (do not change it);
        ``alive`` the still-unpruned entries (``None``: all). ``keep`` holds
        only alive entries; ``values`` has ``t``'s shape, dtype and device.
        """
        ...


def updating_values(method: object) -> TypeGuard[UpdatesValues]:
    """Whether ``method`` updates the values it keeps (implements :class:`UpdatesValues`)."""
    return isinstance(method, UpdatesValues)


def selecting_entries(method: object) -> TypeGuard[SelectsEntries]:
    """Whether ``method`` picks among alive entries itself now (implements :class:`SelectsEntries`, not replaced)."""
    return isinstance(method, SelectsEntries) and method.selects_itself()


def selecting_slices(method: object) -> TypeGuard[SelectsSlices]:
    """Whether ``method`` picks among alive slices itself now (implements :class:`SelectsSlices`, not replaced)."""
    return isinstance(method, SelectsSlices) and method.selects_itself()


def fast_path(method: object) -> bool:
    """Whether ``method`` takes either shortcut."""
    return selecting_entries(method) or selecting_slices(method)
