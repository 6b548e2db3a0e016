"""SparseGPT's pruning with optimal-brain-surgeon updates, as a pure function of a weight and a Hessian.

:func:`obs_prune` prunes a ``(rows, columns)`` weight whose columns meet the
layer's input features, given the Hessian ``H`` of the layer's reconstruction
error over those features (``mean xxᵀ`` of the calibration inputs; the
scale does not matter, the dampening is relative). Each pruned weight's error
is spread over the not yet processed weights of its row through the
Cholesky factor of the damped inverse Hessian -- the update that keeps the
layer's outputs on the calibration data as close as possible -- so the kept
weights change too.

The structure is the one of SparseGPT's reference code (Frantar & Alistarh,
2023): columns are processed left to right in blocks of ``block_size``; within
a block each column's error updates the rest of the block at once (a rank-1
update), and the rest of the matrix gets the block's errors in one matrix
product when the block is done ("lazy batch updates"). The mask is chosen
per block from the weights as they stand when the block starts (unstructured:
the lowest ``w² / [H⁻¹]_jj²`` of the block; N:M: per group of ``of_m``
columns when the group starts).

Work happens in the weight's transpose, one input feature per row, so that
the per-column reads and rank-1 updates run over contiguous memory.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import CalibrationError, InvalidParametersError
from ..selection.amount import count_to_prune
from ..selection.exact import keep_highest
from ..selection.groups import check_n_of_m, keep_n_of_m
from ..storage.packed import plain

__all__ = ["obs_prune"]


_PANEL = 128
"""Rows or columns handled at once by the in-place steps below: big enough for BLAS, small next to the matrix."""


def _all_finite(matrix: Tensor) -> bool:
    """Whether every entry is finite, looked at ``_PANEL`` rows at a time (no full-size mask)."""
    return all(bool(torch.isfinite(rows).all()) for rows in torch.split(matrix, _PANEL))


def _invert_lower_(factor: Tensor) -> None:
    """Replace the lower-triangular ``factor`` (zeros above the diagonal) by its inverse, in place.

    Blocked as LAPACK's ``trtri``, from the last diagonal block to the first:
    with ``L = [[A, 0], [B, C]]`` and ``C`` already inverted in place,
    ``L⁻¹ = [[A⁻¹, 0], [-C⁻¹ B A⁻¹, C⁻¹]]``. Each step needs one panel of
    scratch, so the inverse takes no second ``d x d`` matrix.
    """
    size = factor.shape[0]
    eye = torch.eye(min(_PANEL, size), dtype=factor.dtype, device=factor.device)
    for start in reversed(range(0, size, _PANEL)):
        stop = min(start + _PANEL, size)
        diagonal = factor[start:stop, start:stop]
        if stop < size:
            below = factor[stop:, start:stop]
            product = factor[stop:, stop:] @ below  # C⁻¹ B (C⁻¹ is lower: its zeros above the diagonal stay)
            below.copy_(torch.linalg.solve_triangular(diagonal, product.neg_(), upper=False, left=False))
        diagonal.copy_(torch.linalg.solve_triangular(diagonal, eye[: stop - start, : stop - start], upper=False))


def _half_turn_(matrix: Tensor) -> None:
    """Turn the square ``matrix`` by half a turn in place (``matrix.flip(0, 1)`` without a copy)."""
    size = matrix.shape[0]
    half = size // 2
    for start in range(0, half, _PANEL):
        stop = min(start + _PANEL, half)
        top, bottom = matrix[start:stop], matrix[size - stop : size - start]
        kept = top.clone()
        top.copy_(bottom.flip(0, 1))
        bottom.copy_(kept.flip(0, 1))
    if size % 2:
        middle = matrix[half]
        middle.copy_(middle.flip(0))


def _inverse_factor(hessian: Tensor, damp: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(U, dead)``: the upper Cholesky factor of the damped inverse Hessian, and the inputs that never fired.

    As SparseGPT's code: a zero diagonal entry (an input that was always 0)
    becomes 1, then ``damp x mean diag`` is added to the diagonal, and ``U``
    is the upper factor of ``(H + damp x mean diag H)⁻¹ = UᵀU``. The code gets
    it as ``cholesky(cholesky_inverse(cholesky(H)), upper=True)``; this takes
    one factorization and one triangular inverse: with ``J`` the exchange
    matrix and ``JHJ = L̃L̃ᵀ``, ``H = (JL̃J)(JL̃J)ᵀ`` with ``JL̃J`` upper
    triangular, so ``U = (JL̃J)⁻¹ = J L̃⁻¹ J`` (the Cholesky factor is unique).

    All of it happens in one ``d x d`` matrix, the reversed copy ``JHJ``:
    factored in place (through its column-major view, the layout LAPACK
    works in, which a symmetric matrix has already), inverted in place
    (:func:`_invert_lower_`), and turned half a turn in place
    (:func:`_half_turn_`). ``U`` is returned as that column-major view. Only
    panels of ``_PANEL`` rows come on top: on a 1.1 B LLaMA's widest layer
    (5632 inputs) that is 121 MiB where three such matrices were held at
    once before. ``hessian`` is not modified.

    Raises:
        CalibrationError: ``hessian`` is not finite, or the factorization fails
            or overflows, naming the dampening tried.
    """
    if not _all_finite(hessian):
        raise CalibrationError("the Hessian has NaN or infinite entries: the calibration inputs held non-finite values")
    reversed_h = hessian.detach().to(device=device, dtype=torch.float32).flip(0, 1)  # flip copies: ours to change
    diagonal = reversed_h.diagonal()
    dead = diagonal == 0
    diagonal.masked_fill_(dead, 1.0)
    diagonal.add_(damp * diagonal.mean())
    factor = reversed_h.mT  # the same symmetric matrix, column-major: LAPACK factors it where it lies
    info = torch.empty((), dtype=torch.int32, device=factor.device)
    torch.linalg.cholesky_ex(factor, out=(factor, info))
    failed = int(info)
    if not failed:
        _invert_lower_(factor)
        if _all_finite(factor):
            _half_turn_(factor)
            return factor, dead.flip(0)
    reason = (
        f"(leading minor of order {failed} of the reversed matrix is not positive definite)"
        if failed
        else "(its inverse overflows)"
    )
    raise CalibrationError(
        f"the Cholesky factorization of the damped Hessian failed with damp={damp} {reason}: the calibration "
        f"inputs leave it too ill-conditioned; pass a larger damp (e.g. damp={max(damp * 10, 0.01):g}) or more "
        "calibration data"
    )


def _pattern(
    amount: int | float | None, keep_n: int | None, of_m: int | None, block_size: int
) -> tuple[int, int] | None:
    """``(keep_n, of_m)`` for N:M, ``None`` for ``amount``, after checking that exactly one was given.

    Raises:
        InvalidParametersError: neither or both, half an N:M pattern, or a ``block_size`` an N:M group would straddle.
    """
    if (keep_n is None and of_m is None) == (amount is None):
        raise InvalidParametersError("pass either amount or both keep_n and of_m (N:M), not both and not neither")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise InvalidParametersError(f"block_size must be an int >= 1, got {block_size!r}")
    if amount is not None:
        return None
    if keep_n is None or of_m is None:
        raise InvalidParametersError(f"N:M needs both keep_n and of_m, got keep_n={keep_n}, of_m={of_m}")
    check_n_of_m(keep_n, of_m)
    if block_size % of_m:
        raise InvalidParametersError(
            f"block_size={block_size} is not a multiple of of_m={of_m}: an N:M group must not straddle two blocks"
        )
    return keep_n, of_m


def _block_counts(amount: int | float, alive_per_column: Tensor, block_size: int) -> list[int]:
    """How many entries each block of columns prunes: ``amount`` of the alive ones in all, spread in proportion.

    The total is ``count_to_prune(amount, alive entries)`` (torch's rules);
    block ``b`` prunes the difference of the rounded cumulative shares, so
    the counts add up to exactly that total and none exceeds its block's
    alive entries.
    """
    per_block = [int(part.sum()) for part in torch.split(alive_per_column, block_size)]
    total = sum(per_block)
    pruned = count_to_prune(amount, total)
    counts = []
    done = seen = 0
    for alive in per_block:
        seen += alive
        target = (2 * pruned * seen + total) // (2 * total) if total else 0
        counts.append(target - done)
        done = target
    return counts


def obs_prune(
    weight: Tensor,
    hessian: Tensor,
    *,
    amount: int | float | None = None,
    keep_n: int | None = None,
    of_m: int | None = None,
    alive: Tensor | None = None,
    block_size: int = 128,
    damp: float = 0.01,
) -> tuple[Tensor, Tensor]:
    """Prune ``weight`` by SparseGPT's OBS procedure; return ``(keep, new_weight)``.

    Args:
        weight: ``(rows, columns)``, columns along the input features (an
            ``nn.Linear`` weight; pass a GPT-2 ``Conv1D`` weight transposed).
            Not modified.
        hessian: ``(columns, columns)``, e.g. the mean of ``x xᵀ`` over the
            calibration inputs ``x``. Not modified.
        amount: unstructured: an int count or a float fraction of the alive
            entries to prune, torch's rules; exactly that many are pruned,
            spread over the blocks in proportion to their alive entries.
        keep_n, of_m: N:M instead of ``amount``: keep ``keep_n`` of every
            ``of_m`` consecutive entries of a row (``of_m`` must divide both
            ``columns`` and ``block_size``).
        alive: bool ``(rows, columns)``, the entries not yet pruned (``None``:
            all). The others count as pruned and stay pruned: their value is
            taken as 0, and the drift the updates give them is compensated
            like any pruned weight's. In N:M mode a group keeps at most
            ``keep_n`` of its alive entries.
        block_size: columns per block (mask selection and lazy updates).
        damp: dampening, a fraction of the mean diagonal of ``hessian`` added
            to the diagonal before inverting.

    Inputs that never fired (``H_jj = 0``) get ``H_jj = 1`` and their column of
    the weight is zeroed, as SparseGPT's code does. The work is in float32;
    ``new_weight`` has ``weight``'s dtype, 0 wherever ``keep`` is False (for
    a float32 weight it is the working copy itself, transposed back: a view
    in column-major layout, so no second copy is made). With nothing to
    prune (an amount of 0) the Hessian is not used and ``new_weight`` is
    ``weight`` with its dead entries zeroed.

    Raises:
        InvalidParametersError: neither or both of ``amount`` and N:M, a bad
            N:M pattern, shapes that do not fit, a bad ``block_size`` or ``damp``.
        InvalidAmountError: ``amount`` larger than the alive entries.
        CalibrationError: the Hessian is not finite, or its Cholesky
            factorization fails (try a larger ``damp``).
    """
    pattern = _pattern(amount, keep_n, of_m, block_size)
    if weight.dim() != 2:
        raise InvalidParametersError(f"the weight must be 2-D (rows, columns), got shape {tuple(weight.shape)}")
    rows, columns = weight.shape
    if tuple(hessian.shape) != (columns, columns):
        raise CalibrationError(
            f"the Hessian has shape {tuple(hessian.shape)}, expected ({columns}, {columns}) for a weight of shape "
            f"{tuple(weight.shape)} (one row and column per input feature)"
        )
    if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not (math.isfinite(damp) and damp >= 0):
        raise InvalidParametersError(f"damp must be a finite number >= 0, got {damp!r}")
    if pattern is not None:
        check_n_of_m(*pattern, columns, dim=1)
    # One input feature per row: a copy in float32 that the algorithm updates in place.
    work = weight.detach().t().to(torch.float32, memory_format=torch.contiguous_format, copy=True)
    alive_t = None if alive is None else plain(alive).t().contiguous()
    if alive_t is not None:
        work.masked_fill_(~alive_t, 0.0)
    counts = None
    if pattern is None:
        per_column = torch.full((columns,), rows) if alive_t is None else alive_t.sum(dim=1).cpu()
        counts = _block_counts(amount, per_column, block_size)  # type: ignore[arg-type]
        if not any(counts):  # nothing to prune: no update to make
            keep = torch.ones_like(weight, dtype=torch.bool)
            if alive is not None:
                keep.copy_(plain(alive))
            return keep, torch.empty_like(weight).copy_(work.t())

    hinv, dead = _inverse_factor(hessian, damp, work.device)
    work.masked_fill_(dead.unsqueeze(1), 0.0)  # as the paper's code: the weights of inputs that never fired

    keep_t = torch.empty((columns, rows), dtype=torch.bool, device=work.device)
    errors = torch.empty((min(block_size, columns), rows), dtype=torch.float32, device=work.device)
    zero = torch.zeros((), dtype=torch.float32, device=work.device)
    for block, start in enumerate(range(0, columns, block_size)):
        stop = min(start + block_size, columns)
        w1 = work[start:stop]  # a view: updated in place
        hinv1 = hinv[start:stop, start:stop].contiguous()  # (hinv is column-major: this block's rows, at hand)
        d = hinv1.diagonal()
        # per entry: 1/[H⁻¹]_jj where pruned, 0 where kept (so a column's error is one multiplication)
        scale = torch.empty_like(w1)
        keep1 = keep_t[start:stop]
        alive1 = None if alive_t is None else alive_t[start:stop]
        errors1 = errors[: stop - start]
        if counts is not None:
            scores = w1.square().div_(d.square().unsqueeze(1))
            keep1.copy_(keep_highest(scores, counts[block], alive1))
            del scores
            torch.where(keep1, zero, d.reciprocal().unsqueeze(1), out=scale)
        for i in range(stop - start):
            if pattern is not None and i % pattern[1] == 0:
                group = slice(i, i + pattern[1])
                scores = w1[group].square().div_(d[group].square().unsqueeze(1))
                alive_group = None if alive1 is None else alive1[group]
                keep1[group] = keep_n_of_m(scores, *pattern, alive_group, dim=0)
                torch.where(keep1[group], zero, d[group].reciprocal().unsqueeze(1), out=scale[group])
            error = torch.mul(w1[i], scale[i], out=errors1[i])
            # (addmm of a rank-1 product: addr_ does not reach BLAS on the CPU and is 100x slower)
            w1[i + 1 :].addmm_(hinv1[i, i + 1 :].unsqueeze(1), error.unsqueeze(0), alpha=-1.0)
        w1.masked_fill_(~keep1, 0.0)  # a kept column is as the updates left it; a pruned one is 0
        if stop < columns:
            work[stop:].addmm_(hinv[start:stop, stop:].t(), errors1, alpha=-1.0)

    del hinv  # (freed before the result is allocated: the two never coexist)
    keep = torch.empty_like(weight, dtype=torch.bool).copy_(keep_t.t())
    del keep_t
    if weight.dtype == torch.float32:  # the working copy is the result: no second copy at the end
        return keep, work.t()
    return keep, torch.empty_like(weight).copy_(work.t())
