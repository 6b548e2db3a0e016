"""Sparsity reports: per tensor and in total, as data, a rich table, JSON or Markdown.

:func:`report` describes a model: for every parameter its shape, how many
entries are zero, whether it is *masked* (pruned, the mask still in place) or
*zeroed* (zeros held by a plain parameter, e.g. after
:func:`pruneplug.remove`), and the strategies that pruned it
(:func:`~pruneplug.core.method.describe_method`); in total the global sparsity,
and the dense and non-zero parameter counts and bytes. :func:`report_state_dict`
does the same from a checkpoint alone. The result is a frozen pydantic
model, so ``--json`` output is its schema, and it renders for people as a
rich table or Markdown.

>>> import torch
>>> layer = torch.nn.Linear(4, 2, bias=False)
>>> with torch.no_grad():
...     _ = layer.weight.copy_(torch.tensor([[0.0, 1.0, 2.0, 3.0], [4.0, 0.0, 6.0, 7.0]]))
>>> r = report(layer)
>>> r.tensors[0].zeros, r.tensors[0].status, r.totals.sparsity
(2, 'zeroed', 0.25)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from torch.distributed.tensor import DTensor

from ..core.hook import describe_method
from ..core.state import count_nonzero, pruning_hooks
from ..errors import InvalidMaskError, InvalidTargetError
from ..storage.packed import is_packed, plain, storage_of
from ..strategies import Identity
from .tables import FittedTable

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = [
    "Report",
    "TensorReport",
    "Totals",
    "RuleOutcome",
    "TensorStatus",
    "report",
    "report_state_dict",
    "tensor_histories",
]

TensorStatus = Literal["masked", "zeroed", "dense"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TensorReport(_Frozen):
    """One tensor of a model or checkpoint."""

    name: str = Field(description="Qualified name, as in a state_dict without the _orig suffix: 'conv1.weight'.")
    module_type: str | None = Field(description="Class of the owning module (unknown from a checkpoint alone).")
    shape: tuple[int, ...]
    dtype: str
    entries: int
    zeros: int = Field(description="Entries that are zero now (pruned or not).")
    sparsity: float = Field(description="zeros / entries, in [0, 1].")
    status: TensorStatus = Field(
        description="'masked': pruned, the mask in place; 'zeroed': zeros in a plain tensor; 'dense': no zeros."
    )
    pruned: bool = Field(description="Whether a mask is in place (pruning can be resumed or removed).")
    masked_entries: int = Field(description="Entries the mask removes (0 unless masked).")
    history: tuple[str, ...] = Field(description="The strategies that pruned it, oldest first.")
    bytes: int = Field(description="Dense storage.")
    nonzero_bytes: int = Field(description="Storage of the non-zero entries alone.")


class Totals(_Frozen):
    """The whole model or checkpoint."""

    tensors: int
    masked_tensors: int
    parameters: int = Field(description="Entries of every tensor (dense count).")
    nonzero_parameters: int
    zeros: int
    sparsity: float = Field(description="Global sparsity: zeros / parameters.")
    dense_bytes: int
    nonzero_bytes: int
    mask_bytes: int = Field(description="Storage of the masks still in place.")


class RuleOutcome(_Frozen):
    """What one rule of a plan selected and did."""

    index: int
    strategy: str
    scope: str
    description: str | None = None
    tensors: tuple[str, ...] = Field(description="Qualified names of the selected tensors.")
    entries: int = Field(description="Entries of the selected tensors.")
    newly_pruned: int = Field(description="Entries this rule masked.")
    sparsity_before: float
    sparsity_after: float
    skipped: str | None = Field(default=None, description="Why an optional rule selected nothing.")


class Report(_Frozen):
    """A sparsity report; ``rules`` is filled when it comes from applying a plan."""

    source: str | None = Field(default=None, description="The checkpoint it describes, if any.")
    dry_run: bool = Field(default=False, description="True if the plan was applied and rolled back.")
    tensors: tuple[TensorReport, ...]
    totals: Totals
    rules: tuple[RuleOutcome, ...] = ()

    def tensor(self, name: str) -> TensorReport:
        """The entry for tensor ``name`` (``KeyError`` if absent)."""
        for item in self.tensors:
            if item.name == name:
                return item
        raise KeyError(name)

    def to_json(self, *, indent: int | None = 2) -> str:
        """The report as JSON (the fields of these models)."""
        return self.model_dump_json(indent=indent)

    def to_markdown(self) -> str:
        """The report as Markdown tables."""
        lines = []
        if self.rules:
            lines += [
                "| rule | strategy | scope | tensors | sparsity before | after |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
            for rule in self.rules:
                lines.append("| " + " | ".join(_md(cell) for cell in (str(rule.index), *_rule_cells(rule))) + " |")
            lines.append("")
        lines += [
            "| tensor | type | shape | zeros | sparsity | status | history |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for item in self.tensors:
            lines.append("| " + " | ".join(_md(cell) for cell in _tensor_cells(item)) + " |")
        lines += ["", _totals_text(self.totals), ""]
        return "\n".join(lines)

    def to_rich(self, *, tensors: bool = True) -> RenderableType:
        """The report as rich tables (needs rich, from the ``cli`` extra).

        ``tensors=False`` leaves the per-tensor table out (rules and totals only).
        Tensor and strategy names are never cut: columns wrap between words,
        and a console too narrow for that gets one record per tensor. The
        type column is left out when no type is known (a checkpoint alone).
        """
        from rich.console import Group
        from rich.text import Text  # literal text: names and paths are never rich markup

        parts: list[RenderableType] = []
        if self.rules:
            title = "Rules" + (" (dry run: nothing changed)" if self.dry_run else "")
            rule_rows = [(str(rule.index), *_rule_cells(rule)) for rule in self.rules]
            parts.append(
                FittedTable(title, ("rule", "strategy", "scope", "tensors", "sparsity before", "after"), rule_rows)
            )
        if tensors:
            columns: tuple[str, ...] = ("tensor", "type", "shape", "zeros", "sparsity", "status", "history")
            rows = [_tensor_cells(item) for item in self.tensors]
            if all(item.module_type is None for item in self.tensors):
                columns, rows = columns[:1] + columns[2:], [row[:1] + row[2:] for row in rows]
            justify: dict[str, Literal["left", "right"]] = {"zeros": "right", "sparsity": "right"}
            parts.append(FittedTable(self.source or "Tensors", columns, rows, justify=justify))
        # Wrapped between words even on a console that soft-wraps (as the CLI's does).
        parts.append(Text(_totals_text(self.totals), no_wrap=False, overflow="fold"))
        return Group(*parts)


# --- rendering helpers ------------------------------------------------------------------------


def _percent(value: float) -> str:
    return f"{100.0 * value:.2f}%"


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"  # pragma: no cover - the loop always returns


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _tensor_cells(item: TensorReport) -> tuple[str, ...]:
    return (
        item.name,
        item.module_type or "-",
        "x".join(map(str, item.shape)) or "scalar",
        f"{item.zeros}/{item.entries}",
        _percent(item.sparsity),
        item.status,
        " -> ".join(item.history) or "-",
    )


def _rule_cells(rule: RuleOutcome) -> tuple[str, ...]:
    strategy = rule.strategy + (f" ({rule.description})" if rule.description else "")
    if rule.skipped is not None:
        return strategy, rule.scope, f"skipped: {rule.skipped}", "-", "-"
    shown = ", ".join(rule.tensors[:6]) + (f" ... ({len(rule.tensors)} in all)" if len(rule.tensors) > 6 else "")
    return strategy, rule.scope, shown, _percent(rule.sparsity_before), _percent(rule.sparsity_after)


def _totals_text(totals: Totals) -> str:
    return (
        f"Global sparsity {_percent(totals.sparsity)}: {totals.nonzero_parameters} of {totals.parameters} "
        f"parameters non-zero in {totals.tensors} tensors ({totals.masked_tensors} masked); "
        f"dense {_size(totals.dense_bytes)}, non-zero {_size(totals.nonzero_bytes)}, masks {_size(totals.mask_bytes)}."
    )


# --- building reports ---------------------------------------------------------------------------


def _masked(value: Tensor, alive: Tensor) -> Tensor:
    """``value`` with the entries ``alive`` drops set to zero (in its own dtype, float8 included)."""
    try:
        return value * alive
    except RuntimeError:  # no type promotion for float8: compute in fp32, give back the dtype
        return (value.float() * alive).to(value.dtype)


def _describe(
    name: str, module_type: str | None, value: Tensor, mask: Tensor | None, history: Sequence[str]
) -> TensorReport:
    value = value.detach()
    entries = value.numel()
    zeros = entries - count_nonzero(value)
    masked = 0 if mask is None else mask.numel() - count_nonzero(mask)
    status: TensorStatus = "masked" if mask is not None else "zeroed" if zeros else "dense"
    size = value.element_size()
    return TensorReport(
        name=name,
        module_type=module_type,
        shape=tuple(value.shape),
        dtype=str(value.dtype).removeprefix("torch."),
        entries=entries,
        zeros=zeros,
        sparsity=zeros / entries if entries else 0.0,
        status=status,
        pruned=mask is not None,
        masked_entries=masked,
        history=tuple(history),
        bytes=size * entries,
        nonzero_bytes=size * (entries - zeros),
    )


def _totals(items: Sequence[TensorReport], mask_bytes: int) -> Totals:
    parameters = sum(item.entries for item in items)
    zeros = sum(item.zeros for item in items)
    return Totals(
        tensors=len(items),
        masked_tensors=sum(item.pruned for item in items),
        parameters=parameters,
        nonzero_parameters=parameters - zeros,
        zeros=zeros,
        sparsity=zeros / parameters if parameters else 0.0,
        dense_bytes=sum(item.bytes for item in items),
        nonzero_bytes=sum(item.nonzero_bytes for item in items),
        mask_bytes=mask_bytes,
    )


def _qualified(module_name: str, tensor: str) -> str:
    return f"{module_name}.{tensor}" if module_name else tensor


def tensor_histories(model: nn.Module, earlier: Mapping[str, Sequence[str]] | None = None) -> dict[str, list[str]]:
    """Per tensor, the descriptions of the strategies that pruned it, oldest first.

    ``earlier`` is history recorded before ``model`` was built -- read from a
    checkpoint's metadata (:attr:`pruneplug.Checkpoint.history`). It comes
    first; the ``identity`` with which loading re-created a saved mask is left
    out, since it pruned nothing. Tensors with no history are absent. Pass the
    result to :func:`pruneplug.save_checkpoint` to keep the history in the file.

    >>> import torch, pruneplug
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4))
    >>> _ = pruneplug.prune(net[0], "weight", "l1_unstructured", amount=0.5)
    >>> pruneplug.tensor_histories(net)
    {'0.weight': ['l1_unstructured(amount=0.5)']}
    """
    earlier = dict(earlier or {})
    out: dict[str, list[str]] = {}
    for module_name, module in model.named_modules():
        for _, hook in pruning_hooks(module):
            name = _qualified(module_name, str(hook._tensor_name))
            methods = list(hook) if isinstance(hook, torch.nn.utils.prune.PruningContainer) else [hook]
            if name in earlier and methods and isinstance(methods[0], Identity):
                methods = methods[1:]
            out[name] = [*earlier.pop(name, ()), *(describe_method(m) for m in methods)]
    for name, history in earlier.items():  # tensors no longer masked (pruning removed)
        if history:
            out[name] = list(history)
    return {name: history for name, history in out.items() if history}


def _mask_bytes(mask: Tensor) -> int:
    """The bytes ``mask`` takes: a bit-packed mask's, not the bool tensor's it stands for.

    A DTensor's are the whole tensor's, stored as one process stores it (as
    the rest of the report counts the whole model on every rank).
    """
    if isinstance(mask, DTensor):
        return (mask.numel() + 7) // 8 if is_packed(mask) else mask.numel() * mask.element_size()
    stored = storage_of(mask)
    return stored.numel() * stored.element_size()


def _model_tensors(model: nn.Module) -> Iterable[tuple[str, str, Tensor, Tensor | None]]:
    """``(qualified name, module type, current value, mask or None)`` of every parameter, each once.

    By module, then by tensor name: the order does not change when a tensor is
    pruned (which moves ``weight_orig`` after ``bias``), and matches a safetensors file's.
    """
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        hooked = {str(hook._tensor_name) for _, hook in pruning_hooks(module)}
        for name, parameter in sorted(module._parameters.items(), key=lambda item: item[0].removesuffix("_orig")):
            if parameter is None or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            base = name[: -len("_orig")] if name.endswith("_orig") else None
            if base is not None and base in hooked:
                mask = module._buffers.get(base + "_mask")
                value = getattr(module, base)
                yield _qualified(module_name, base), type(module).__name__, value, mask
            else:
                yield _qualified(module_name, name), type(module).__name__, parameter, None


def report(
    model: nn.Module,
    *,
    history: Mapping[str, Sequence[str]] | None = None,
    rules: Sequence[RuleOutcome] = (),
    source: str | None = None,
    dry_run: bool = False,
) -> Report:
    """Describe the sparsity of every parameter of ``model`` and in total.

    Args:
        model: any module, pruned or not.
        history: earlier history per tensor (from a checkpoint's metadata),
            shown before what the model itself records.
        rules: what each rule of a plan did (filled by :func:`pruneplug.plans.apply_plan`).
        source: the checkpoint the model was loaded from, shown as the title.
        dry_run: mark the report as describing a plan that was rolled back.
    """
    if not isinstance(model, nn.Module):
        raise InvalidTargetError(f"expected a torch.nn.Module, got {type(model).__name__}")
    histories = tensor_histories(model, history)
    items: list[TensorReport] = []
    mask_bytes = 0
    with torch.no_grad():
        for name, module_type, value, mask in _model_tensors(model):
            items.append(
                _describe(name, module_type, value, None if mask is None else plain(mask), histories.get(name, ()))
            )
            if mask is not None:
                mask_bytes += _mask_bytes(mask)
    return Report(
        source=source, dry_run=dry_run, tensors=tuple(items), totals=_totals(items, mask_bytes), rules=tuple(rules)
    )


def report_state_dict(
    state_dict: Mapping[str, Tensor],
    *,
    history: Mapping[str, Sequence[str]] | None = None,
    source: str | None = None,
) -> Report:
    """Describe a checkpoint without its model.

    A pair ``<name>_orig`` + ``<name>_mask`` is one masked tensor ``<name>``;
    every other floating-point tensor counts as a parameter (without the
    model, buffers such as BatchNorm's running statistics cannot be told
    apart from parameters; pass the model to :func:`report` for that).
    """
    history = history or {}
    items: list[TensorReport] = []
    mask_bytes = 0
    used: set[str] = set()
    for key, value in state_dict.items():
        if key in used or not isinstance(value, Tensor):
            continue
        if isinstance(state_dict.get(key + "_orig"), Tensor) and isinstance(state_dict.get(key + "_mask"), Tensor):
            continue  # a stored masked copy: the tensor is described from its _orig and _mask
        base = key[: -len("_orig")] if key.endswith("_orig") else None
        mask = state_dict.get(f"{base}_mask") if base is not None else None
        if base is not None and isinstance(mask, Tensor) and mask.shape == value.shape:
            used.add(f"{base}_mask")
            if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
                raise InvalidMaskError(f"{base}_mask holds values other than 0 and 1: it is not a pruning mask")
            alive = mask if mask.dtype == torch.bool else mask != 0
            items.append(_describe(base, None, _masked(value, alive), alive, history.get(base, ())))
            mask_bytes += mask.numel() * mask.element_size()
        elif key.endswith("_mask") and isinstance(state_dict.get(key[: -len("_mask")] + "_orig"), Tensor):
            continue  # described with its _orig
        elif value.is_floating_point() or value.is_complex():
            items.append(_describe(key, None, value, None, history.get(key, ())))
    modules: dict[str, int] = {}
    for item in items:
        modules.setdefault(item.name.rpartition(".")[0], len(modules))
    items.sort(key=lambda item: (modules[item.name.rpartition(".")[0]], item.name))
    return Report(source=source, tensors=tuple(items), totals=_totals(items, mask_bytes))
