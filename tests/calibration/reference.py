"""Reference implementations of SparseGPT, Wanda and OWL: the ground truth of the calibration tests.

Written independently of ``pruneplug.strategies.calibrated`` from the papers'
official code, with the same maths and the same bookkeeping:

- SparseGPT: ``SparseGPT.add_batch`` / ``fasterprune`` of IST-DASLab/sparsegpt
  (``sparsegpt.py``; copied unchanged into locuslab/wanda and luuyin/OWL).
- Wanda: ``WrappedGPT.add_batch`` (``lib/layerwrapper.py``) and ``prune_wanda``
  (``lib/prune.py``) of locuslab/wanda; ``prune_magnitude`` for the baseline.
- OWL: ``check_outlier_mean`` and the ratio normalisation of
  ``prune_wanda_outlier`` in luuyin/OWL (``lib/prune_all.py``).

N:M convention here is the papers': ``prune_n`` entries are PRUNED in every
group of ``prune_m`` consecutive input columns (``prune_n=2, prune_m=4`` is
2:4). pruneplug names the KEPT count instead: ``keep_n = prune_m - prune_n``,
``of_m = prune_m``.

Weights are ``(d_out, d_in)`` (``nn.Linear`` layout); ``inputs`` are what the
layer sees, ``(rows, d_in)`` -- or a sequence of such tensors (or of
``(batch, seq, d_in)`` tensors), one per forward-hook call, accumulated the way
the official ``add_batch`` does. The test folders are not packages: test
modules load this file by path.

Checked once against the official code itself (``SparseGPT`` and ``WrappedGPT``
run on CPU, 8 calls of ``(2, 64, 256)`` inputs with a dead feature, a
``(64, 256)`` weight): with ``official_threshold=True`` the SparseGPT weights
agree to 1e-6 and the masks exactly (50%, 30%, 0%, 2:4); the Wanda masks and
``scaler_row`` agree exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = [
    "outlier_inputs",
    "reconstruction_error",
    "reference_magnitude",
    "reference_outlier_ratio",
    "reference_owl_ratios",
    "reference_sparsegpt",
    "reference_sparsegpt_from_hessian",
    "reference_sparsegpt_with_mask",
    "reference_wanda",
    "sparsegpt_hessian",
    "unequal_scale_inputs",
    "wanda_metric",
    "wanda_scaler_row",
]

Inputs = Tensor | Sequence[Tensor]


def _batches(inputs: Inputs) -> list[Tensor]:
    return [inputs] if isinstance(inputs, Tensor) else list(inputs)


def _as_hook_input(inp: Tensor) -> tuple[Tensor, int]:
    """One hook call's input as ``(rows, d_in)`` and the number of samples it counts for.

    The official wrappers treat a 2-D input as ONE sample (``unsqueeze(0)``)
    and a 3-D ``(batch, seq, d_in)`` input as ``batch`` samples: ``nsamples``
    counts sequences, not tokens.
    """
    if inp.dim() == 2:
        inp = inp.unsqueeze(0)
    if inp.dim() != 3:
        raise ValueError(f"an input batch must be (rows, d_in) or (batch, seq, d_in), got shape {tuple(inp.shape)}")
    return inp.reshape(-1, inp.shape[-1]), inp.shape[0]


def _accumulate(inputs: Inputs, term: Callable[[Tensor, int], Tensor]) -> Tensor:
    """The official ``add_batch`` bookkeeping, hook call by hook call: ``s *= n/(n+b); n += b; s += term(X, n)``.

    ``term(rows, n)`` is the call's share given the new sample count ``n``;
    the running rescale is kept so the float result matches the official
    one, not just its value in exact arithmetic.
    """
    total: Tensor | None = None
    nsamples = 0
    for batch in _batches(inputs):
        rows, count = _as_hook_input(batch)
        scale = nsamples / (nsamples + count)
        nsamples += count
        share = term(rows, nsamples)
        if total is None:
            total = torch.zeros_like(share)
        total *= scale
        total += share
    if total is None:
        raise ValueError("no calibration inputs")
    return total


def _check_nm(prune_n: int, prune_m: int) -> bool:
    """Whether N:M is asked for (``prune_n != 0``, as the official code tests it)."""
    if prune_n == 0:
        return False
    if not 0 < prune_n <= prune_m:
        raise ValueError(f"N:M needs 0 < prune_n <= prune_m, got prune_n={prune_n}, prune_m={prune_m}")
    return True


# --------------------------------------------------------------------------------------------- SparseGPT


def sparsegpt_hessian(inputs: Inputs, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """``H = 2/n Σ x xᵀ`` accumulated call by call as the official ``SparseGPT.add_batch``.

    ``n`` counts samples (sequences), not rows: a single 2-D input gives
    ``H = 2 XᵀX``.
    """

    def term(rows: Tensor, nsamples: int) -> Tensor:
        scaled = math.sqrt(2 / nsamples) * rows.to(dtype).t()
        return scaled @ scaled.t()

    return _accumulate(inputs, term)


def _block_mask(score: Tensor, sparsity: float, official_threshold: bool) -> Tensor:
    """Which entries of one block to prune (True), the lowest ``score`` over the whole block.

    ``official_threshold=False`` prunes exactly ``int(numel * sparsity)``
    entries (ties broken by flat index). ``True`` is the official rule,
    ``score <= sort(score)[int(numel * sparsity)]``: ONE MORE entry than that
    (more on ties), so even ``sparsity=0`` prunes one entry per block, and
    ``sparsity=1`` raises IndexError.
    """
    flat = score.flatten()
    k = int(flat.numel() * sparsity)
    if official_threshold:
        return score <= torch.sort(flat)[0][k]
    pruned = torch.zeros_like(flat, dtype=torch.bool)
    pruned[torch.sort(flat, stable=True)[1][:k]] = True
    return pruned.view_as(score)


def reference_sparsegpt_from_hessian(
    weight: Tensor,
    hessian: Tensor,
    *,
    sparsity: float | None,
    prune_n: int = 0,
    prune_m: int = 0,
    blocksize: int = 128,
    percdamp: float = 0.01,
    dtype: torch.dtype = torch.float32,
    official_threshold: bool = False,
) -> tuple[Tensor, Tensor]:
    """SparseGPT's ``fasterprune`` given the Hessian: the pruned-and-updated weight and the bool KEEP mask.

    Args:
        weight: ``(d_out, d_in)``; not modified.
        hessian: ``(d_in, d_in)``, :func:`sparsegpt_hessian` of the layer's
            inputs, or any positive multiple of it (pruneplug's
            ``input_hessian``, the mean of ``x xᵀ`` over rows): the dampening
            is relative to its mean diagonal, so the mask and the new weight do
            not depend on the scale (up to rounding). Not modified.
        sparsity: fraction pruned in every block of ``blocksize`` columns
            (unstructured); ignored (may be None) with N:M.
        prune_n, prune_m: N:M with ``prune_n`` entries PRUNED of every
            ``prune_m`` (the papers' convention; pruneplug's ``keep_n`` is
            ``prune_m - prune_n``). Groups start at multiples of ``prune_m``
            counted from each block's first column, as in the official loop.
        blocksize: columns per lazy-update block, and per mask choice.
        percdamp: dampening, ``percdamp * mean(diag H)`` added to the diagonal.
        dtype: compute dtype (the official code works in float32).
        official_threshold: pick the unstructured mask with the official
            ``<=`` threshold (one more entry per block; see :func:`_block_mask`)
            instead of exactly ``int(block numel * sparsity)`` entries.

    Returns:
        ``(new_weight, keep)``: ``new_weight`` in ``weight.dtype`` with zeros where
        ``keep`` is False (and in dead input columns, which may still be
        marked kept), the other entries updated by the OBS corrections.

    The steps, as the official code does them:

    1. Dead inputs (``H_jj == 0``): ``H_jj = 1`` and ``W[:, j] = 0``, BEFORE
       the dampening, so the mean diagonal includes those ones.
    2. ``H += percdamp * mean(diag H) * I``; ``Hinv = U``, the UPPER Cholesky
       factor of ``H⁻¹`` (cholesky, cholesky_inverse, cholesky upper).
    3. Per block of ``blocksize`` columns (its columns already corrected by the
       earlier blocks): unstructured -- the mask is chosen once at the block's
       start, the lowest ``w² / U_jj²`` over the whole block (all rows
       together, not per row); N:M -- at every group start, the ``prune_n``
       lowest ``w² / U_jj²`` of the group per row, on the CURRENT (updated)
       weights.
    4. Column by column: ``err = (w - q) / U_ii``, ``W1[:, i:] -= err ⊗ U[i, i:]``
       inside the block; after it, ``W[:, end:] -= Err1 @ U[block, end:]``.
    """
    nm = _check_nm(prune_n, prune_m)
    if not nm and sparsity is None:
        raise ValueError("unstructured SparseGPT needs a sparsity (or give prune_n and prune_m for N:M)")
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (d_out, d_in), got shape {tuple(weight.shape)}")
    d_out, d_in = weight.shape
    if hessian.shape != (d_in, d_in):
        raise ValueError(f"the Hessian is {tuple(hessian.shape)}, expected ({d_in}, {d_in}) for d_in={d_in}")
    hessian = hessian.detach().to(dtype=dtype, copy=True)  # the steps below change it in place

    w_all = weight.detach().to(dtype).clone()
    dead = torch.diagonal(hessian) == 0
    dead_idx = dead.nonzero().flatten()
    hessian[dead_idx, dead_idx] = 1
    w_all[:, dead] = 0

    damp = percdamp * torch.mean(torch.diagonal(hessian))
    diag = torch.arange(d_in)
    hessian[diag, diag] += damp
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hessian)), upper=True)

    pruned = torch.zeros(d_out, d_in, dtype=torch.bool)
    for start in range(0, d_in, blocksize):
        end = min(start + blocksize, d_in)
        block = w_all[:, start:end].clone()
        hinv_block = hinv[start:end, start:end]
        d = torch.diagonal(hinv_block)
        quantized = torch.zeros_like(block)
        errors = torch.zeros_like(block)
        if nm:
            mask = torch.zeros_like(block, dtype=torch.bool)
        else:
            assert sparsity is not None
            mask = _block_mask(block**2 / d.reshape(1, -1) ** 2, sparsity, official_threshold)

        for i in range(end - start):
            if nm and i % prune_m == 0:
                group = block[:, i : i + prune_m] ** 2 / d[i : i + prune_m].reshape(1, -1) ** 2
                mask.scatter_(1, i + torch.topk(group, prune_n, dim=1, largest=False)[1], True)
            column = block[:, i]
            kept = column.clone()
            kept[mask[:, i]] = 0
            quantized[:, i] = kept
            err = (column - kept) / d[i]
            block[:, i:] -= err.unsqueeze(1) @ hinv_block[i, i:].unsqueeze(0)
            errors[:, i] = err

        w_all[:, start:end] = quantized
        pruned[:, start:end] = mask
        w_all[:, end:] -= errors @ hinv[start:end, end:]

    return w_all.to(weight.dtype), ~pruned


def reference_sparsegpt_with_mask(
    weight: Tensor, inputs: Inputs, *, dtype: torch.dtype = torch.float32, **options: Any
) -> tuple[Tensor, Tensor]:
    """:func:`reference_sparsegpt_from_hessian` of the layer's ``inputs``: ``(new_weight, keep)``.

    The Hessian is :func:`sparsegpt_hessian` of ``inputs`` (see the module
    docstring), in ``dtype``; ``options`` are those of
    :func:`reference_sparsegpt_from_hessian` (``sparsity``, ``prune_n``, ...).
    """
    return reference_sparsegpt_from_hessian(weight, sparsegpt_hessian(inputs, dtype=dtype), dtype=dtype, **options)


def reference_sparsegpt(weight: Tensor, inputs: Inputs, **options: Any) -> Tensor:
    """The new weight of :func:`reference_sparsegpt_with_mask` (N:M: ``prune_n`` PRUNED of ``prune_m``)."""
    new_weight, _ = reference_sparsegpt_with_mask(weight, inputs, **options)
    return new_weight


# --------------------------------------------------------------------------------------------- Wanda


def wanda_scaler_row(inputs: Inputs) -> Tensor:
    """Wanda's ``scaler_row`` (float32), accumulated as the official ``WrappedGPT.add_batch``.

    ``scaler_row_j = (Σ over all rows of x_j²) / nsamples`` with ``nsamples``
    counting samples (sequences; a 2-D input is one), kept as a running mean:
    ``s *= n/(n+b); n += b; s += ‖X_j‖² / n``. A constant factor away from
    pruneplug's ``input_sq_norms`` (a mean over rows), which no per-row or
    per-tensor ranking of one layer can see.
    """
    return _accumulate(
        inputs, lambda rows, nsamples: torch.linalg.vector_norm(rows.to(torch.float32), ord=2, dim=0) ** 2 / nsamples
    )


def wanda_metric(weight: Tensor, inputs: Inputs) -> Tensor:
    """``|W_ij| · sqrt(scaler_row_j)``, Wanda's score (and OWL's outlier metric)."""
    return weight.detach().abs() * torch.sqrt(wanda_scaler_row(inputs)).reshape(1, -1)


def _nm_pruned(metric: Tensor, prune_n: int, prune_m: int) -> Tensor:
    """The official N:M loop: per row, the ``prune_n`` lowest of each group of ``prune_m`` columns from column 0."""
    pruned = torch.zeros_like(metric, dtype=torch.bool)
    for start in range(0, metric.shape[1], prune_m):
        group = metric[:, start : start + prune_m].float()
        pruned.scatter_(1, start + torch.topk(group, prune_n, dim=1, largest=False)[1], True)
    return pruned


def _row_pruned(metric: Tensor, sparsity: float) -> Tensor:
    """Per output row, exactly ``int(d_in * sparsity)`` lowest entries (stable sort: ties by column)."""
    pruned = torch.zeros_like(metric, dtype=torch.bool)
    pruned.scatter_(1, torch.sort(metric, dim=-1, stable=True)[1][:, : int(metric.shape[1] * sparsity)], True)
    return pruned


def reference_wanda(
    weight: Tensor, inputs: Inputs, *, sparsity: float | None, prune_n: int = 0, prune_m: int = 0
) -> Tensor:
    """Wanda's bool KEEP mask, as ``prune_wanda`` of locuslab/wanda (without its ``use_variant``).

    Unstructured: per output row, the ``int(d_in * sparsity)`` entries with the
    lowest :func:`wanda_metric` are pruned (stable sort, ties by column), so
    every row reaches the same sparsity. N:M: ``prune_n`` PRUNED of every
    ``prune_m`` consecutive columns, groups from column 0 (the papers'
    convention; pruneplug's ``keep_n = prune_m - prune_n``).
    """
    metric = wanda_metric(weight, inputs)
    if _check_nm(prune_n, prune_m):
        return ~_nm_pruned(metric, prune_n, prune_m)
    if sparsity is None:
        raise ValueError("unstructured Wanda needs a sparsity (or give prune_n and prune_m for N:M)")
    return ~_row_pruned(metric, sparsity)


def reference_magnitude(
    weight: Tensor,
    *,
    sparsity: float | None,
    compare: Literal["row", "tensor"] = "tensor",
    prune_n: int = 0,
    prune_m: int = 0,
    official_threshold: bool = False,
) -> Tensor:
    """The magnitude baseline's bool KEEP mask.

    ``compare="tensor"`` is the papers' ``prune_magnitude``: the lowest
    ``int(numel * sparsity)`` of ``|W|`` over the tensor (with
    ``official_threshold=True``, its ``|W| <= sort(|W|)[int(numel * sparsity)]``:
    one entry more). ``compare="row"`` ranks each output row as Wanda does.
    N:M: ``prune_n`` PRUNED of every ``prune_m``, as the official loop.
    """
    metric = weight.detach().abs()
    if _check_nm(prune_n, prune_m):
        return ~_nm_pruned(metric, prune_n, prune_m)
    if sparsity is None:
        raise ValueError("unstructured magnitude needs a sparsity (or give prune_n and prune_m for N:M)")
    if compare == "row":
        return ~_row_pruned(metric, sparsity)
    if compare != "tensor":
        raise ValueError(f"compare must be 'row' or 'tensor', got {compare!r}")
    return ~_block_mask(metric, sparsity, official_threshold)


# --------------------------------------------------------------------------------------------- OWL


def reference_outlier_ratio(metrics: Sequence[Tensor], *, threshold_m: float = 5.0) -> float:
    """OWL's ``check_outlier_mean``: the PERCENT of entries above ``threshold_m`` times their mean.

    ``metrics`` are one block's Wanda metrics (all its layers), flattened and
    concatenated first: the mean is over the whole block, not per layer.
    """
    flat = torch.cat([m.detach().flatten() for m in metrics])
    threshold = torch.mean(flat) * threshold_m
    return float((flat > threshold).sum().item()) / flat.numel() * 100


def reference_owl_ratios(
    layer_metrics: list[list[Tensor]], *, sparsity: float, threshold_m: float = 5.0, lamda: float = 0.08
) -> list[float]:
    """OWL's per-block sparsities from the dense model's Wanda metrics, as ``prune_wanda_outlier``.

    ``layer_metrics[i]`` holds block i's layers' :func:`wanda_metric`. With
    ``D_i`` the outlier ratio of block i (:func:`reference_outlier_ratio`):
    ``density_i = (D_i - min D) * (1 / (max D - min D) * 2 * lamda)``, then
    ``density_i += (1 - sparsity) - mean(density)``; the block's sparsity is
    ``1 - density_i``, and one ``<= 0`` becomes 0.01 (as the official pruning
    loop does). So the sparsities span exactly ``2 * lamda``, average to
    ``sparsity`` (unless clamped), and the block with the most outliers is
    pruned least.

    Raises:
        ValueError: all blocks have the same outlier ratio, where OWL's
            min-max scaling divides by zero (the official code yields NaN).
    """
    ratios = [reference_outlier_ratio(block, threshold_m=threshold_m) for block in layer_metrics]
    low, high = min(ratios), max(ratios)
    if high == low:
        raise ValueError(f"every block has the outlier ratio {low}%: OWL's normalisation divides by zero")
    density = [(r - low) * (1 / (high - low) * lamda * 2) for r in ratios]
    mean = sum(density) / len(density)
    density = [x - mean + (1 - sparsity) for x in density]
    return [s if s > 0 else 0.01 for s in (1 - x for x in density)]


# --------------------------------------------------------------------------------------------- measures and data


def reconstruction_error(weight: Tensor, pruned_weight: Tensor, inputs: Tensor, *, relative: bool = False) -> float:
    """``‖W Xᵀ - Ŵ Xᵀ‖_F²`` in float64, the layer-wise loss all three papers minimise.

    ``inputs`` is ``(rows, d_in)`` (or ``(..., d_in)``). ``relative=True``
    divides by ``‖W Xᵀ‖_F²``.
    """
    x = inputs.detach().reshape(-1, inputs.shape[-1]).double()
    dense = x @ weight.detach().double().t()
    error = float(((dense - x @ pruned_weight.detach().double().t()) ** 2).sum())
    return error / float((dense**2).sum()) if relative else error


def _correlated(rows: int, d_in: int, generator: torch.Generator) -> Tensor:
    """Unit-ish features sharing ``d_in // 8`` latent factors: correlated, as activations are."""
    factors = max(1, d_in // 8)
    shared = torch.randn(rows, factors, generator=generator) @ torch.randn(factors, d_in, generator=generator)
    return torch.randn(rows, d_in, generator=generator) + shared / math.sqrt(factors)


def unequal_scale_inputs(rows: int, d_in: int, seed: int) -> Tensor:
    """``(rows, d_in)`` float32 correlated features whose scales spread log-uniformly over 0.1 to 10."""
    generator = torch.Generator().manual_seed(seed)
    base = _correlated(rows, d_in, generator)
    scales = 10 ** (torch.rand(d_in, generator=generator) * 2 - 1)
    return base * scales


def outlier_inputs(rows: int, d_in: int, seed: int) -> Tensor:
    """``(rows, d_in)`` float32 correlated features (scales 0.5 to 2) with a few outlier columns.

    ``max(2, d_in // 64)`` columns, chosen at random, are 20 to 100 times larger in
    every row: the systematic outlier features of LLM activations.
    """
    generator = torch.Generator().manual_seed(seed)
    base = _correlated(rows, d_in, generator)
    scales = 2 ** (torch.rand(d_in, generator=generator) * 2 - 1)
    outliers = torch.randperm(d_in, generator=generator)[: max(2, d_in // 64)]
    scales[outliers] *= 20 + 80 * torch.rand(len(outliers), generator=generator)
    return base * scales
