"""Selection within small groups of a tensor: N:M groups, and every row on its own.

:func:`keep_n_of_m` keeps the ``keep_n`` highest-scoring entries of every
``of_m`` consecutive entries along a dim (N:M semi-structured sparsity, with
N counting *kept* entries -- pruneplug's one convention, the nm plugin's).
:func:`keep_highest_per_row` prunes ``amount`` of the still-unpruned entries
of every row (a 1-D slice along a dim) on its own: each row gets exactly the
count torch's ``amount`` rules give for that row.

Both select only among the *alive* entries: an entry already pruned is never
kept, whatever its score, so pruning again only takes entries away. Within
a group or row the highest scores are kept; among equal scores the earlier
position is kept (a stable descending sort), as the nm plugin does; NaN
ranks above ``+inf`` (kept). The rows and groups are ranked all at once with
one stable sort -- they are short, so a sort is exact and cheap.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import InvalidDimError, InvalidParametersError
from ..storage.packed import plain
from .amount import count_to_prune

__all__ = ["keep_n_of_m", "keep_highest_per_row", "check_n_of_m"]


def _rows(t: Tensor, dim: int) -> tuple[Tensor, int]:
    """``t`` as a 2-D tensor whose rows are its 1-D slices along ``dim``, and ``dim`` normalized."""
    if t.dim() == 0:
        raise InvalidDimError("a 0-dim tensor has no rows to select in")
    if not -t.dim() <= dim < t.dim():
        raise InvalidDimError(
            f"dim={dim} is out of range for a tensor with {t.dim()} dims (shape {tuple(t.shape)}; "
            f"valid: {-t.dim()}..{t.dim() - 1})"
        )
    dim %= t.dim()
    return t.movedim(dim, -1).reshape(-1, t.shape[dim]), dim


def _from_rows(rows: Tensor, shape: torch.Size, dim: int) -> Tensor:
    """Undo :func:`_rows`: a ``(-1, shape[dim])`` tensor back to ``shape``."""
    moved = list(shape)
    moved.append(moved.pop(dim))
    return rows.reshape(moved).movedim(-1, dim)


def _keep_first(scores: Tensor, alive: Tensor | None, keep: Tensor) -> Tensor:
    """Bool, shaped like the 2-D ``scores``: per row, the ``keep[row]`` highest-scoring alive entries.

    One stable descending sort per row orders the entries (equal scores: the
    earlier first; NaN first); walking that order, the first ``keep[row]``
    alive entries are kept. Dead entries may sit anywhere in the order -- they
    are skipped by counting alive entries only, so no sentinel score is
    needed and a dead entry never displaces an alive one.
    """
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    if alive is None:
        ranked = torch.arange(1, scores.shape[1] + 1, device=scores.device).expand_as(order)
        kept_sorted = ranked <= keep.unsqueeze(1)
    else:
        alive_sorted = alive.gather(1, order)
        kept_sorted = alive_sorted & (alive_sorted.cumsum(dim=1) <= keep.unsqueeze(1))
    return torch.zeros_like(kept_sorted).scatter_(1, order, kept_sorted)


def check_n_of_m(keep_n: int, of_m: int, size: int | None = None, *, dim: int | None = None) -> None:
    """Check an N:M pattern: ``1 <= keep_n < of_m``, and ``of_m`` divides ``size`` (the length of ``dim``).

    Raises:
        InvalidParametersError: naming ``keep_n``, ``of_m`` and, for the size, the dim and its length.
    """
    if not 1 <= keep_n < of_m:
        raise InvalidParametersError(
            f"keep_n={keep_n}, of_m={of_m}: N:M sparsity keeps keep_n of every of_m consecutive entries "
            "(1 <= keep_n < of_m; keep_n=2, of_m=4 is 2:4)"
        )
    if size is not None and size % of_m:
        raise InvalidParametersError(
            f"of_m={of_m} does not divide the {size} entries along dim {dim}: N:M groups are of_m consecutive "
            "entries along that dim, so it must split into whole groups"
        )


def keep_n_of_m(scores: Tensor, keep_n: int, of_m: int, alive: Tensor | None = None, *, dim: int = -1) -> Tensor:
    """Bool mask shaped like ``scores``: the ``keep_n`` highest-scoring alive entries of every ``of_m`` along ``dim``.

    Groups are ``of_m`` consecutive entries along ``dim``, starting at index 0
    (``of_m`` must divide that dim's length). A group with fewer than
    ``keep_n`` alive entries keeps all of them; dead entries (``alive`` False)
    are never kept. Equal scores: the earlier entry is kept.

    >>> keep_n_of_m(torch.tensor([[4.0, 1.0, 3.0, 2.0, 1.0, 1.0, 0.0, 5.0]]), 2, 4).tolist()
    [[True, False, True, False, True, False, False, True]]

    Raises:
        InvalidParametersError: not ``1 <= keep_n < of_m``, or ``of_m`` does not divide the dim.
        InvalidDimError: ``dim`` out of range.
    """
    rows, dim = _rows(scores.detach(), dim)
    check_n_of_m(keep_n, of_m, rows.shape[1], dim=dim)
    groups = rows.reshape(-1, of_m)
    alive_groups = None if alive is None else _rows(plain(alive), dim)[0].reshape(-1, of_m)
    keep = torch.full((groups.shape[0],), keep_n, dtype=torch.int64, device=scores.device)
    kept = _keep_first(groups, alive_groups, keep)
    return _from_rows(kept.reshape(rows.shape), scores.shape, dim)


def keep_highest_per_row(scores: Tensor, amount: int | float, alive: Tensor | None = None, *, dim: int = -1) -> Tensor:
    """Bool mask shaped like ``scores``: in every row along ``dim``, the alive entries left after pruning ``amount``.

    A row is a 1-D slice along ``dim`` (for a ``Linear`` weight and
    ``dim=1``: one output's weights). Each row prunes
    ``count_to_prune(amount, alive entries in the row)`` -- an int is a count
    per row, a float a fraction of the row's alive entries, rounded half to
    even as torch does -- of its lowest-scoring alive entries; equal scores:
    the earlier entry is kept.

    >>> keep_highest_per_row(torch.tensor([[1.0, 3.0, 2.0, 0.0], [2.0, 2.0, 9.0, 8.0]]), 0.5).tolist()
    [[False, True, True, False], [False, False, True, True]]

    Raises:
        InvalidAmountError: an int ``amount`` larger than a row's alive entries.
        InvalidDimError: ``dim`` out of range.
    """
    rows, dim = _rows(scores.detach(), dim)
    alive_rows = None if alive is None else _rows(plain(alive), dim)[0]
    if alive_rows is None:
        available = torch.full((rows.shape[0],), rows.shape[1], dtype=torch.int64, device=scores.device)
    else:
        available = alive_rows.sum(dim=1)
    # torch's amount rules per distinct count of alive entries (few: one for a fresh tensor).
    distinct, inverse = torch.unique(available, return_inverse=True)
    unit = f"entries of a row along dim {dim}"
    pruned = torch.tensor([count_to_prune(amount, int(n), unit=unit) for n in distinct.tolist()], dtype=torch.int64)
    keep = available - pruned.to(scores.device)[inverse]
    kept = _keep_first(rows, alive_rows, keep)
    return _from_rows(kept, scores.shape, dim)
