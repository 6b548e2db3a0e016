"""The native API: prune by strategy name, validated first, bool masks, atomic.

Every function here validates everything it can before touching a module
(the strategy, its parameters through its pydantic model, the tensor, the
importance scores), then computes and checks every mask, then installs
everything at once. A failure at any point leaves every module exactly as it
was: parameters, buffers, hooks and state_dict.
"""

from __future__ import annotations

import copy
import fnmatch
import inspect
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from ..core.container import alive_slices, combine_masks, normalize_dim
from ..core.reparam import (
    NATIVE_POLICY,
    MaskStorage,
    PendingPrune,
    TensorState,
    check_importance_scores,
    check_storage,
    check_untied,
    commit,
    default_alive,
    find_hook,
    is_pruned as _is_pruned,
    plan_prune,
    pruned_tensors,
    remove_pruning,
    storage_for,
    tensor_state,
)
from ..errors import (
    IncompatibleStrategyError,
    InvalidImportanceScoresError,
    InvalidMaskError,
    InvalidParametersError,
    InvalidTargetError,
    PruneplugError,
    StrategyFailedError,
    StrategyNotFoundError,
    cross_tensor_hint,
)
from ..registry import KINDS, StrategySpec, get_registry
from ..storage.packed import PackedMask, plain
from ..strategies import PrecomputedMask
from .global_prune import global_masks

__all__ = [
    "prune",
    "prune_global",
    "remove",
    "is_pruned",
    "list_strategies",
    "get_strategy",
    "register",
    "unregister",
    "registered",
    "pruning_history",
    "compute_mask",
    "refresh",
]

StrategyLike = str | StrategySpec | type | torch_prune.BasePruningMethod


def _resolve(strategy: StrategyLike) -> StrategySpec:
    """A strategy given by registered name, spec, class or (configured) instance."""
    if isinstance(strategy, str):
        return get_registry().get(strategy)
    if isinstance(strategy, StrategySpec):
        return strategy
    if inspect.isclass(strategy) and issubclass(strategy, torch_prune.BasePruningMethod):
        return _spec_of_class(strategy)
    if isinstance(strategy, torch_prune.BasePruningMethod):
        return _spec_of_class(type(strategy))
    raise StrategyNotFoundError(
        repr(strategy),
        get_registry().names(),
        extra=" A strategy is a registered name, a StrategySpec, or a BasePruningMethod class or instance.",
    )


def _spec_of_class(cls: type[torch_prune.BasePruningMethod]) -> StrategySpec:
    """The spec of a strategy class passed directly; a class that cannot be one is an IncompatibleStrategyError.

    ``strategy_spec`` raises a bare ``TypeError`` (its contract for
    :func:`register`) for an abstract class or an invalid ``PRUNING_TYPE``;
    here it becomes a :class:`PruneplugError` (still a ``TypeError``) that the
    caller names the module and tensor in.
    """
    try:
        return get_registry().spec_for(cls, provider="(passed directly)")
    except TypeError as error:
        name = getattr(cls, "name", None)
        raise IncompatibleStrategyError(
            str(error), strategy=name if isinstance(name, str) and name else cls.__qualname__
        ) from error


def _instantiate(strategy: StrategyLike, spec: StrategySpec, params: dict[str, Any]) -> torch_prune.BasePruningMethod:
    if isinstance(strategy, torch_prune.BasePruningMethod):
        if params:
            raise InvalidParametersError(
                f"a strategy instance is already configured; pass its class to give parameters ({', '.join(params)})",
                strategy=spec.name,
            )
        return copy.copy(strategy)  # each tensor gets its own hook object
    return spec.create(**params)


def _context(module: nn.Module, name: str | None, spec_name: str | None) -> dict[str, str | None]:
    return {
        "module_type": type(module).__name__ if isinstance(module, nn.Module) else None,
        "tensor": name,
        "strategy": spec_name,
    }


def _plan_bias(pending: PendingPrune, label: str, storage: MaskStorage | None) -> PendingPrune | None:
    """The bias prune that goes with a structured prune of ``weight`` (``prune_bias=True``)."""
    state = pending.state
    module, hook = state.module, pending.hook
    method: Any = hook[-1] if isinstance(hook, torch_prune.PruningContainer) else hook
    context: dict[str, Any] = {"module_type": state.module_type, "tensor": state.name, "strategy": label}
    if state.name != "weight":
        raise InvalidParametersError("prune_bias=True only applies when pruning 'weight'", **context)
    bias_present = "bias" in module._parameters and module._parameters["bias"] is not None
    if not bias_present and find_hook(module, "bias") is None:
        raise InvalidParametersError(f"prune_bias=True but {state.module_type} has no bias", **context)
    transposed = isinstance(module, nn.modules.conv._ConvTransposeNd)
    if transposed and getattr(module, "groups", 1) != 1:
        raise InvalidParametersError("prune_bias=True is not supported for grouped transposed convolutions", **context)
    out_dim = 1 if transposed else 0
    dim = normalize_dim(method.dim, pending.mask.dim())
    if dim != out_dim:
        raise InvalidParametersError(
            f"prune_bias=True needs dim={out_dim} (the output channels of {state.module_type}), got dim={method.dim}",
            **context,
        )
    bias_state = tensor_state(module, "bias")
    channels = alive_slices(plain(pending.alive), out_dim)
    if bias_state.orig.shape != channels.shape:
        raise InvalidParametersError(
            f"prune_bias=True but the bias has shape {tuple(bias_state.orig.shape)}, not ({channels.numel()},)",
            **context,
        )
    current = default_alive(bias_state)
    new_mask = current & channels
    if torch.equal(new_mask, current) and bias_state.pruned:
        return None
    if not bool((~new_mask).any()) and not bias_state.pruned:
        return None
    record = PrecomputedMask(new_mask, f"bias of the output channels pruned from weight by {label}")
    if storage is None and isinstance(pending.mask, PackedMask):
        storage = "packed"  # the bias is stored as the weight is
    return plan_prune(module, "bias", record, mask=new_mask, policy=NATIVE_POLICY, label=label, storage=storage)


def prune(
    module: nn.Module,
    name: str,
    strategy: StrategyLike,
    *,
    importance_scores: Tensor | None = None,
    mask_storage: MaskStorage | None = None,
    **params: Any,
) -> nn.Module:
    """Prune tensor ``name`` of ``module`` with a strategy; returns ``module``.

    Afterwards ``module.<name>_orig`` is the original parameter (the same
    object), ``module.<name>_mask`` a bool buffer, and ``module.<name>`` the
    masked tensor, computed when read (see the Concepts page; RNNs keep it
    stored and refreshed by a forward pre-hook, as torch does). Pruning an
    already pruned tensor acts only on what is still unpruned. Whatever is
    raised, the module is left exactly as it was.

    Args:
        module: the module that owns the tensor (e.g. ``model.conv1``).
        name: the parameter's name in ``module`` (e.g. ``"weight"``).
        strategy: a registered name (see :func:`list_strategies`), a
            :class:`StrategySpec`, or a strategy class or instance.
        importance_scores: rank by these instead of the tensor's values
            (same shape), for strategies that rank.
        mask_storage: ``"bool"`` (a ``torch.bool`` mask) or ``"packed"``
            (a :class:`PackedMask`, one bit per entry: 1/32 of fp32
            weights); default: as the tensor's mask is stored now, ``"bool"``
            for a tensor not pruned yet. ``prune_bias=True`` stores the bias
            mask the same way.
        **params: the strategy's parameters, validated by its pydantic model
            before anything is touched (e.g. ``amount=0.3``, ``dim=0``).

    Raises:
        StrategyNotFoundError: unknown strategy name (lists close matches).
        StrategyConflictError: two plugins claim the name.
        InvalidParametersError: parameters rejected by the strategy's model.
        IncompatibleStrategyError: a strategy class (or instance) passed
            directly that is abstract or has no valid ``PRUNING_TYPE``.
        InvalidTargetError: ``module`` is not a module, or ``name`` is not a
            parameter's name (a buffer, a dotted path, part of a pruned tensor).
        TensorNotFoundError: ``module`` has no parameter ``name``.
        PruningStateError: the tensor's pruning was left half-undone.
        InvalidAmountError, InvalidDimError, InvalidImportanceScoresError,
        InvalidMaskError, StrategyFailedError: the prune cannot be done.

    >>> import torch, pruneplug
    >>> layer = torch.nn.Linear(4, 2)
    >>> pruneplug.prune(layer, "weight", "l1_unstructured", amount=3)
    Linear(in_features=4, out_features=2, bias=True)
    >>> int((layer.weight == 0).sum()), layer.weight_mask.dtype
    (3, torch.bool)
    """
    label = None  # a strategy that does not resolve is named by its own error
    try:
        spec = _resolve(strategy)
        label = spec.name
        if importance_scores is not None and not spec.uses_importance_scores:
            raise InvalidParametersError(f"{spec.name} does not use importance scores")
        storage = check_storage(mask_storage)
        method = _instantiate(strategy, spec, params)
        pending = plan_prune(
            module,
            name,
            method,
            importance_scores=importance_scores,
            policy=NATIVE_POLICY,
            label=spec.name,
            storage=storage,
        )
        pendings = [pending]
        if getattr(method, "prune_bias", False):
            bias = _plan_bias(pending, spec.name, storage)
            if bias is not None:
                pendings.append(bias)
    except PruneplugError as error:
        raise error.add_context(**_context(module, name, label)) from error.__cause__
    commit(pendings)
    for extra in pendings[1:]:
        _release(extra.hook)
    return module


def _release(hook: torch_prune.BasePruningMethod) -> None:
    last = hook[-1] if isinstance(hook, torch_prune.PruningContainer) else hook
    if isinstance(last, PrecomputedMask):
        last.mask = None  # type: ignore[assignment]  # the _mask buffer holds it; do not keep a second copy


def _pair_context(item: object) -> dict[str, str | None]:
    """The module type and tensor of what looks like a ``(module, name)`` pair, as far as it does."""
    pair = item if isinstance(item, tuple) and len(item) == 2 else (None, None)
    return {
        "module_type": type(pair[0]).__name__ if isinstance(pair[0], nn.Module) else None,
        "tensor": pair[1] if isinstance(pair[1], str) else None,
    }


@contextmanager
def _blamed(module: nn.Module, name: str) -> Iterator[None]:
    """Name ``module``'s type and ``name`` in a PruneplugError raised while handling that one target."""
    try:
        yield
    except PruneplugError as error:
        error.add_context(module_type=type(module).__name__, tensor=name)
        raise


def _targets(targets: Iterable[tuple[nn.Module, str]]) -> list[tuple[nn.Module, str]]:
    if isinstance(targets, (str, bytes)) or not isinstance(targets, Iterable):
        raise InvalidTargetError(f"targets must be an iterable of (module, name) pairs, got {type(targets).__name__}")
    out: list[tuple[nn.Module, str]] = []
    seen: set[tuple[int, str]] = set()
    for index, item in enumerate(targets):
        if not (
            isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], nn.Module) and isinstance(item[1], str)
        ):
            raise InvalidTargetError(
                f"target #{index} must be a (module, name) pair, got {item!r}", **_pair_context(item)
            )
        key = (id(item[0]), item[1])
        if key in seen:
            raise InvalidTargetError(
                f"target #{index} is listed twice; list each (module, name) pair once", **_pair_context(item)
            )
        seen.add(key)
        out.append(item)
    if not out:
        raise InvalidTargetError("prune_global needs at least one (module, name) target")
    return out


def _importance_for(
    targets: list[tuple[nn.Module, str]], states: list[TensorState], importance_scores: Mapping[Any, Tensor] | None
) -> list[Tensor | None]:
    if importance_scores is None:
        return [None] * len(targets)
    if not isinstance(importance_scores, Mapping):
        raise InvalidImportanceScoresError(
            "importance_scores must be a dict mapping (module, name) to a tensor, "
            f"got {type(importance_scores).__name__}"
        )
    known = {(id(m), n) for m, n in targets}
    for key in importance_scores:
        if not (isinstance(key, tuple) and len(key) == 2 and (id(key[0]), key[1]) in known):
            raise InvalidImportanceScoresError(
                f"importance_scores has a key that is not one of the targets: {key!r} "
                "(a key is a target's own (module, name) pair: the same module object)",
                **_pair_context(key),
            )
    by_key = {(id(k[0]), k[1]): v for k, v in importance_scores.items()}
    out = []
    for (module, name), state in zip(targets, states):
        scores = by_key.get((id(module), name))
        if scores is not None:
            check_importance_scores(scores, state.orig, module_type=state.module_type, tensor=name)
        out.append(scores)
    return out


def _alive_or_none(state: TensorState) -> Tensor | None:
    """What is still unpruned of a global target: ``None`` if never pruned, a packed mask as it is stored."""
    if isinstance(state.mask, PackedMask):
        return state.mask.detach()  # read a chunk at a time by the selection, never unpacked whole
    return default_alive(state) if state.pruned else None


def prune_global(
    targets: Iterable[tuple[nn.Module, str]],
    strategy: StrategyLike,
    *,
    amount: int | float | None = None,
    importance_scores: Mapping[tuple[nn.Module, str], Tensor] | None = None,
    mask_storage: MaskStorage | None = None,
    **params: Any,
) -> None:
    """Prune the ``amount`` lowest-importance entries across all ``targets`` together.

    Per-tensor sparsity follows from the data: layers whose entries matter
    less lose more of them. ``amount`` counts (or is a fraction of) the
    still-unpruned entries of all targets together.

    Args:
        targets: ``(module, name)`` pairs; any iterable, a generator too.
        strategy: any unstructured strategy (``"l1_unstructured"``,
            ``"random_unstructured"``, a plugin's).
        amount: an int count or a float fraction in [0, 1] (required by
            strategies that rank; a strategy without ``amount`` takes none).
        importance_scores: optional ``{(module, name): tensor}``; targets
            without an entry are ranked by their own values.
        mask_storage: ``"bool"`` or ``"packed"`` (see :func:`prune`);
            default: each target's as it is now, ``"bool"`` for targets not
            pruned yet. With ``"packed"``, each mask is packed as soon as it
            is computed, so the extra memory of the whole selection stays
            near 1/32 of fp32 weights plus one tensor's bool mask.
        **params: the strategy's other parameters.

    Each target's history records the selection as one step,
    ``<strategy>(amount=...) [global over N tensors]``. Either every target
    is pruned or, whatever is raised, none is.

    Raises:
        InvalidTargetError: no targets, a malformed or repeated one, or one
            tied parameter listed through two modules.
        IncompatibleStrategyError: the strategy is not of kind
            ``"unstructured"`` (a strategy of kind ``"global"`` computes one
            tensor's mask from that whole tensor: use :func:`prune` per tensor).
        StrategyNotFoundError, StrategyConflictError: as for :func:`prune`.
        InvalidAmountError, InvalidParametersError,
        InvalidImportanceScoresError, InvalidMaskError, StrategyFailedError:
            the selection cannot be done.

    >>> import torch, pruneplug
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    >>> pruneplug.prune_global([(net[0], "weight"), (net[1], "weight")], "l1_unstructured", amount=0.5)
    >>> int((net[0].weight == 0).sum() + (net[1].weight == 0).sum())
    40
    """
    # Errors caused by one target name its module type and tensor (and all name the strategy, once
    # resolved); the others -- no or malformed targets, the amount, the parameters, a strategy that
    # sees all targets as one flat tensor -- name the strategy only.
    label = None
    try:
        spec = _resolve(strategy)
        label = spec.name
        pairs = _targets(targets)
        if spec.kind != "unstructured":
            raise IncompatibleStrategyError(
                "prune_global ranks single entries across all targets together, so it needs a strategy of kind "
                f"'unstructured'; {cross_tensor_hint(spec.name, spec.kind)}. "
                f"Prune each tensor on its own with pruneplug.prune(module, name, {spec.name!r}, ...) instead"
            )
        if importance_scores is not None and not spec.uses_importance_scores:
            raise InvalidParametersError(f"{spec.name} does not use importance scores")
        storage = check_storage(mask_storage)
        method = _instantiate(strategy, spec, params if amount is None else {"amount": amount, **params})
        states = []
        for module, name in pairs:
            with _blamed(module, name):
                states.append(tensor_state(module, name))
        packed = [storage_for(state, storage) == "packed" for state in states]
        check_untied(states)
        importance = _importance_for(pairs, states, importance_scores)
        alive = []
        for state in states:
            with _blamed(state.module, state.name):
                alive.append(_alive_or_none(state))
        try:
            masks = global_masks(states, method, importance, alive, packed=packed)
        except PruneplugError:
            raise
        except Exception as error:
            raise StrategyFailedError(
                f"the strategy raised {type(error).__name__} ranking all {len(pairs)} targets together: {error}"
            ) from error
        description = (
            f"{method.describe() if hasattr(method, 'describe') else spec.name} [global over {len(pairs)} tensors]"
        )
        pendings = [
            plan_prune(
                module,
                name,
                PrecomputedMask(mask, description),
                mask=mask,
                policy=NATIVE_POLICY,
                label=spec.name,
                storage="packed" if pack else "bool",
            )
            for (module, name), mask, pack in zip(pairs, masks, packed)
        ]
    except PruneplugError as error:
        raise error.add_context(strategy=label) from error.__cause__
    commit(pendings)
    for pending in pendings:
        _release(pending.hook)


def remove(module: nn.Module, name: str | None = None) -> nn.Module:
    """Make pruning permanent; returns ``module``.

    ``module.<name>`` becomes a plain parameter again -- the same object that
    was ``<name>_orig`` (so optimizers keep working) -- holding the masked
    values; ``<name>_orig``, ``<name>_mask`` and the hook are gone. With no
    ``name``, every pruned tensor of ``module`` and its submodules. Works on
    models pruned by ``torch.nn.utils.prune`` too.

    Raises:
        NotPrunedError: ``name`` is given but that tensor is not pruned.
    """
    if not isinstance(module, nn.Module):
        raise InvalidTargetError(f"expected a torch.nn.Module, got {type(module).__name__}")
    if name is not None:
        remove_pruning(module, name)
        return module
    for _, sub, tensor in list(pruned_tensors(module)):
        remove_pruning(sub, tensor)
    return module


def refresh(module: nn.Module) -> nn.Module:
    """Recompute every masked tensor of ``module`` and its submodules now; returns ``module``.

    The forward pre-hook does this by itself whenever ``<name>_orig`` or
    ``<name>_mask`` change through PyTorch operations (optimizer steps,
    in-place ops, ``load_state_dict``). Writes through ``tensor.data`` bypass
    PyTorch's change tracking: call this after them.
    """
    from ..core.module_hooks import refresh_all

    if not isinstance(module, nn.Module):
        raise InvalidTargetError(f"expected a torch.nn.Module, got {type(module).__name__}")
    for sub in module.modules():
        refresh_all(sub)
    return module


def is_pruned(module: nn.Module) -> bool:
    """Whether ``module`` or any submodule has a pruned tensor (by pruneplug or torch)."""
    if not isinstance(module, nn.Module):
        raise InvalidTargetError(f"expected a torch.nn.Module, got {type(module).__name__}")
    return _is_pruned(module)


def list_strategies(pattern: str | None = None, *, kind: str | None = None) -> list[str]:
    """Names of the registered strategies, optionally filtered.

    Args:
        pattern: a glob such as ``"*_structured"``.
        kind: the strategy's kind (torch's ``PRUNING_TYPE``):
            ``"unstructured"`` (prunes single entries), ``"structured"``
            (whole slices along ``dim``) or ``"global"`` (a mask computed from
            the whole tensor at once, e.g. ``custom_from_mask``). Kind
            ``"global"`` is *not* what global pruning needs:
            :func:`prune_global` (and a plan's ``scope = "global"``) ranks
            entries across tensors and takes only ``kind="unstructured"``
            strategies.

    Raises:
        InvalidParametersError: ``kind`` is none of those three.

    >>> import pruneplug
    >>> pruneplug.list_strategies("*_structured")
    ['ln_structured', 'random_structured', 'scored_structured']
    """
    if kind is not None and kind not in KINDS:
        raise InvalidParametersError(f"kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")
    specs = get_registry().specs()
    return [
        s.name
        for s in specs
        if (pattern is None or fnmatch.fnmatchcase(s.name, pattern)) and (kind is None or s.kind == kind)
    ]


def get_strategy(name: str) -> StrategySpec:
    """The :class:`StrategySpec` registered as ``name``: kind, parameters, provider.

    Raises:
        StrategyNotFoundError: no such strategy (the message lists close matches).
        StrategyConflictError: two plugins claim the name.
    """
    return get_registry().get(name)


def register(strategy: Any, *, name: str | None = None) -> StrategySpec:
    """Register a strategy class defined in a script or notebook, by name; returns its spec.

    Accepts a :class:`BasePruningMethod` subclass, a
    ``torch.nn.utils.prune.BasePruningMethod`` subclass written for torch
    (its constructor arguments become its parameters), or a spec. The name is
    ``name``, else the class's ``name`` attribute, else its class name in
    snake_case (``EveryOther`` -> ``every_other``).

    Raises:
        StrategyConflictError: a built-in, an installed plugin or an earlier
            :func:`register` already provides the name.
        TypeError: not a strategy class (or an abstract one, or one without
            a valid ``PRUNING_TYPE``).
        ValueError: the name is not a lowercase identifier.
    """
    return get_registry().register(strategy, name=name)


def unregister(name: str) -> None:
    """Remove a strategy added with :func:`register`.

    Raises:
        StrategyNotFoundError: ``name`` was not added with :func:`register`
            (built-ins and plugins cannot be unregistered).
    """
    get_registry().unregister(name)


@contextmanager
def registered(strategy: Any, *, name: str | None = None) -> Iterator[StrategySpec]:
    """Register a strategy for the duration of a ``with`` block, which receives its spec.

    Raises what :func:`register` raises.
    """
    with get_registry().registered(strategy, name=name) as spec:
        yield spec


def pruning_history(module: nn.Module, name: str) -> list[torch_prune.BasePruningMethod]:
    """The methods applied to ``module.<name>``, oldest first (empty if not pruned).

    Raises:
        InvalidTargetError: ``module`` is not a module.
    """
    if not isinstance(module, nn.Module):
        raise InvalidTargetError(f"expected a torch.nn.Module, got {type(module).__name__}")
    found = find_hook(module, name)
    if found is None:
        return []
    hook = found[1]
    return list(hook) if isinstance(hook, torch_prune.PruningContainer) else [hook]


def compute_mask(
    strategy: StrategyLike,
    t: Tensor,
    default_mask: Tensor | None = None,
    *,
    importance_scores: Tensor | None = None,
    **params: Any,
) -> Tensor:
    """The bool mask a strategy gives ``t`` without touching any module.

    As in iterative pruning, the strategy acts only on what ``default_mask``
    keeps; the result is always ``torch.bool``, whatever the strategy. Neither
    ``t`` nor ``default_mask`` is modified.

    Args:
        strategy: a registered name, a :class:`StrategySpec`, or a strategy
            class or instance.
        t: the tensor to rank (its values, unless ``importance_scores``).
        default_mask: what is still unpruned (bool or 0/1, ``t``'s shape);
            default: everything.
        importance_scores: rank by these instead of ``t`` (``t``'s shape).
        **params: the strategy's parameters, validated by its model.

    Raises:
        StrategyNotFoundError, StrategyConflictError, InvalidParametersError:
            as for :func:`prune`.
        InvalidTargetError: ``t`` is not a tensor.
        InvalidMaskError: ``default_mask`` is misshapen or not 0/1, or the
            strategy returned a bad mask.
        InvalidAmountError, InvalidDimError, InvalidImportanceScoresError,
        StrategyFailedError: the mask cannot be computed.

    >>> import torch, pruneplug
    >>> pruneplug.compute_mask("l1_unstructured", torch.tensor([3.0, -1.0, 2.0]), amount=1)
    tensor([ True, False,  True])
    """
    spec = _resolve(strategy)
    method = _instantiate(strategy, spec, params)
    if not isinstance(t, Tensor):
        raise InvalidTargetError(f"t must be a tensor, got {type(t).__name__}", strategy=spec.name)
    scores = t if importance_scores is None else check_importance_scores(importance_scores, t)
    if default_mask is None:
        alive = torch.ones(t.shape, dtype=torch.bool, device=t.device)
    else:
        if not isinstance(default_mask, Tensor) or default_mask.shape != t.shape:
            raise InvalidMaskError("default_mask must be a tensor of t's shape", strategy=spec.name)
        if default_mask.dtype != torch.bool and not bool(((default_mask == 0) | (default_mask == 1)).all()):
            raise InvalidMaskError("default_mask holds values other than 0 and 1", strategy=spec.name)
        alive = default_mask != 0
    try:
        mask = combine_masks(method, scores, alive)
    except PruneplugError as error:
        error.add_context(strategy=spec.name)
        raise
    if mask.shape != t.shape or bool((mask & ~alive).any()):
        raise InvalidMaskError(
            "the strategy returned a mask that is misshapen or un-prunes entries", strategy=spec.name
        )
    return mask
