"""torch.nn.utils.prune's observable behaviour, reached through ``pruneplug.compat``.

Each test pins one behaviour that code written for ``torch.nn.utils.prune``
relies on (helper semantics, exception types, the reparametrization layout,
autograd through the mask, the container protocol, pickling, RNN flat
weights), or one of the fixes :mod:`pruneplug.compat` promises on top of it
(deepcopy, ``load_state_dict``, atomic failures, generators in
``global_unstructured``, an untouched ``default_mask``). Where torch is the
reference, it is run on an identical copy and compared.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import pickle
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
import torch.nn.utils.prune as torch_prune
from torch import Tensor, nn

import pruneplug
import pruneplug.compat as compat
from pruneplug.testing import assert_unchanged, snapshot


def param_names(module: nn.Module) -> list[str]:
    return [name for name, _ in module.named_parameters()]


def buffer_names(module: nn.Module) -> list[str]:
    return [name for name, _ in module.named_buffers()]


def pruning_hooks(module: nn.Module) -> list[torch_prune.BasePruningMethod]:
    return [h for h in module._forward_pre_hooks.values() if isinstance(h, torch_prune.BasePruningMethod)]


def small_net() -> nn.Sequential:
    """A conv + linear network for the whole-model tests (input: 2x2x6x6)."""
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5))


def net_input() -> Tensor:
    return torch.randn(2, 2, 6, 6)


# --- amount helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize("amount", [0, 1, 7, 10**9, 0.0, 0.25, 1.0, True, Fraction(1, 3)])
def test_validate_pruning_amount_init_accepts_counts_and_fractions(amount: Any) -> None:
    """Any non-negative integral count and any real fraction in [0, 1] is accepted, as in torch."""
    torch_prune._validate_pruning_amount_init(amount)  # the reference accepts it too
    compat._validate_pruning_amount_init(amount)


@pytest.mark.parametrize("amount", ["0.5", None, [0.5], 1j, torch.tensor(0.5), object()])
def test_validate_pruning_amount_init_rejects_non_numbers_with_type_error(amount: Any) -> None:
    """A non-real amount is a TypeError (not ValueError), as in torch."""
    with pytest.raises(TypeError):
        torch_prune._validate_pruning_amount_init(amount)
    with pytest.raises(TypeError):
        compat._validate_pruning_amount_init(amount)


@pytest.mark.parametrize("amount", [-1, -100, -0.1, 1.0001, 2.0, math.inf, -math.inf])
def test_validate_pruning_amount_init_rejects_out_of_range_with_value_error(amount: Any) -> None:
    """Negative counts and fractions outside [0, 1] are ValueErrors, as in torch."""
    with pytest.raises(ValueError):
        torch_prune._validate_pruning_amount_init(amount)
    with pytest.raises(ValueError):
        compat._validate_pruning_amount_init(amount)


@pytest.mark.parametrize(("amount", "size"), [(0, 0), (4, 4), (3, 10), (0.9, 1), (1.0, 0), (0.5, 3)])
def test_validate_pruning_amount_accepts_what_fits(amount: int | float, size: int) -> None:
    """A count up to the tensor size, and any fraction, fits the tensor."""
    torch_prune._validate_pruning_amount(amount, size)
    compat._validate_pruning_amount(amount, size)


@pytest.mark.parametrize(("amount", "size"), [(5, 4), (1, 0), (101, 100)])
def test_validate_pruning_amount_rejects_a_count_larger_than_the_tensor(amount: int, size: int) -> None:
    """An int amount larger than the tensor is a ValueError, as in torch."""
    with pytest.raises(ValueError):
        torch_prune._validate_pruning_amount(amount, size)
    with pytest.raises(ValueError):
        compat._validate_pruning_amount(amount, size)


@pytest.mark.parametrize(
    ("amount", "size", "expected"),
    [
        (3, 10, 3),
        (12, 5, 12),
        (0, 7, 0),
        (0.0, 7, 0),
        (1.0, 7, 7),
        (0.3, 10, 3),
        (0.5, 5, 2),
        (0.5, 7, 4),
        (0.25, 10, 2),
    ],
)
def test_compute_nparams_toprune(amount: int | float, size: int, expected: int) -> None:
    """An int is a count returned as it is; a float is rounded half-to-even (Python's round), as in torch."""
    assert torch_prune._compute_nparams_toprune(amount, size) == expected
    result = compat._compute_nparams_toprune(amount, size)
    assert result == expected and isinstance(result, int)


def test_pruning_more_entries_than_the_tensor_has_raises_value_error_and_changes_nothing() -> None:
    """An int amount larger than the tensor fails at prune time, and the module stays unpruned."""
    module = nn.Linear(2, 2)
    before = snapshot(module)
    with pytest.raises(ValueError):
        torch_prune.l1_unstructured(copy.deepcopy(module), "weight", amount=5)
    with pytest.raises(ValueError):
        compat.l1_unstructured(module, "weight", amount=5)
    assert_unchanged(before, module)


# --- the reparametrization ----------------------------------------------------------------------


def test_orig_mask_and_pruned_tensor_have_the_parameter_shape_and_values() -> None:
    """``weight_orig`` is the original parameter, ``weight_mask`` 0/1, ``weight`` their product."""
    module = nn.Conv2d(2, 4, 3)
    parameter = module.weight
    original = parameter.detach().clone()
    compat.l1_unstructured(module, "weight", amount=0.4)
    assert module.weight_orig.shape == module.weight_mask.shape == module.weight.shape == original.shape
    assert module.weight_orig is parameter
    assert torch.equal(module.weight_orig, original)
    assert module.weight_mask.dtype == torch.float32
    assert int((module.weight_mask == 0).sum()) == round(0.4 * original.numel())
    assert torch.equal(module.weight, module.weight_orig * module.weight_mask)
    assert not isinstance(module.weight, nn.Parameter)
    assert param_names(module) == ["bias", "weight_orig"] and buffer_names(module) == ["weight_mask"]


def test_optimizer_created_before_pruning_keeps_training_the_same_parameter() -> None:
    """Prune and remove keep the parameter object, so an optimizer built before pruning still works."""
    module = nn.Linear(6, 4)
    parameter = module.weight
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    compat.random_unstructured(module, "weight", amount=0.5)
    assert module.weight_orig is parameter
    before = parameter.detach().clone()
    module(torch.randn(3, 6)).sum().backward()
    optimizer.step()
    kept = module.weight_mask.bool()
    assert not torch.equal(parameter[kept], before[kept])  # the optimizer's parameter was trained
    assert torch.equal(parameter[~kept], before[~kept])

    compat.remove(module, "weight")
    assert module.weight is parameter and isinstance(module.weight, nn.Parameter)
    optimizer.zero_grad()
    before = parameter.detach().clone()
    module(torch.randn(3, 6)).sum().backward()
    optimizer.step()
    assert not torch.equal(parameter, before)


def test_remove_makes_pruning_permanent_like_torch() -> None:
    """remove deletes _orig, _mask and the hook, keeps the masked values, and orders parameters as torch."""
    module = nn.Conv2d(2, 3, 3)
    reference = copy.deepcopy(module)
    parameter = module.weight
    compat.l1_unstructured(module, "weight", amount=0.5)
    torch_prune.l1_unstructured(reference, "weight", amount=0.5)
    pruned = module.weight.detach().clone()

    assert compat.remove(module, "weight") is module
    torch_prune.remove(reference, "weight")
    assert param_names(module) == param_names(reference) == ["bias", "weight"]
    assert list(module.state_dict()) == list(reference.state_dict())
    assert buffer_names(module) == [] and pruning_hooks(module) == []
    assert not hasattr(module, "weight_orig") and not hasattr(module, "weight_mask")
    assert module.weight is parameter and isinstance(module.weight, nn.Parameter)
    assert torch.equal(module.weight, pruned) and torch.equal(module.weight, reference.weight)
    assert not compat.is_pruned(module)


def test_remove_of_an_unpruned_tensor_raises_value_error() -> None:
    """remove on a tensor that was never pruned (or already removed) is a ValueError, as in torch."""
    module = nn.Linear(3, 2)
    with pytest.raises(ValueError):
        torch_prune.remove(copy.deepcopy(module), "weight")
    with pytest.raises(ValueError):
        compat.remove(module, "weight")
    compat.l1_unstructured(module, "weight", amount=1)
    with pytest.raises(ValueError):
        compat.remove(module, "bias")
    compat.remove(module, "weight")
    with pytest.raises(ValueError):
        compat.remove(module, "weight")


def test_is_pruned_looks_at_every_submodule() -> None:
    """is_pruned is true for a model as soon as any submodule has a pruning hook, and false after remove."""
    model = small_net()
    assert not compat.is_pruned(model)
    compat.random_unstructured(model[3], "bias", amount=2)
    assert compat.is_pruned(model) and compat.is_pruned(model[3])
    assert not compat.is_pruned(model[0])
    compat.remove(model[3], "bias")
    assert not compat.is_pruned(model)


def test_apply_returns_the_hook_now_in_charge_of_the_tensor() -> None:
    """Method.apply returns the method on a first prune and the PruningContainer after that, as in torch."""
    module = nn.Linear(4, 3)
    first = compat.L1Unstructured.apply(module, "weight", amount=2)
    assert type(first).__name__ == "L1Unstructured" and first._tensor_name == "weight"
    assert pruning_hooks(module) == [first]
    second = compat.RandomStructured.apply(module, "weight", amount=1, dim=0)
    assert isinstance(second, torch_prune.PruningContainer) and second._tensor_name == "weight"
    assert second[0] is first and type(second[-1]).__name__ == "RandomStructured"
    assert pruning_hooks(module) == [second]


@contextlib.contextmanager
def forward_mode(mode: str, module: nn.Module) -> Iterator[None]:
    """Run forwards without autograd: under no_grad, inference_mode, or with weight_orig frozen."""
    if mode == "no_grad":
        with torch.no_grad():
            yield
    elif mode == "inference_mode":
        with torch.inference_mode():
            yield
    else:
        module.weight_orig.requires_grad_(False)
        yield


def double_orig_through_data(module: nn.Module) -> None:
    module.weight_orig.data.mul_(2.0)


def prune_row_through_mask_data(module: nn.Module) -> None:
    module.weight_mask.data[0].zero_()


def replace_orig_data(module: nn.Module) -> None:
    module.weight_orig.data = module.weight_orig.detach().flip(0) + 1.0


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "frozen"])
@pytest.mark.parametrize(
    "edit",
    [double_orig_through_data, prune_row_through_mask_data, replace_orig_data],
    ids=["orig.data.mul_", "mask.data.zero_", "orig.data="],
)
def test_forward_without_autograd_sees_every_change_to_orig_and_mask(
    mode: str, edit: Callable[[nn.Module], None]
) -> None:
    """The pre-hook recomputes weight = weight_orig * weight_mask before every forward, as torch's does.

    Edits made through ``.data`` do not bump the tensor's version counter, so
    a cache keyed on versions must not serve the weight computed before them.
    """
    module = nn.Linear(4, 3)
    reference = copy.deepcopy(module)
    compat.l1_unstructured(module, "weight", amount=5)
    torch_prune.l1_unstructured(reference, "weight", amount=5)
    x = torch.randn(2, 4)
    for m in (module, reference):
        with forward_mode(mode, m):
            m(x)  # the hook has computed weight once
        edit(m)
    with forward_mode(mode, module):
        out = module(x)
    with forward_mode(mode, reference):
        expected = reference(x)
    assert torch.equal(module.weight, module.weight_orig * module.weight_mask)
    assert torch.equal(out, F.linear(x, (module.weight_orig * module.weight_mask).detach(), module.bias.detach()))
    assert torch.equal(out, expected)


OPTIMIZERS: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.1),
    "sgd-fused": lambda params: torch.optim.SGD(params, lr=0.1, fused=True),
    "adam-foreach": lambda params: torch.optim.Adam(params, lr=0.1, foreach=True),
    "adam-fused": lambda params: torch.optim.Adam(params, lr=0.1, fused=True),
}


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_evaluation_after_an_optimizer_step_uses_the_trained_weights(optimizer: str) -> None:
    """A training step, then a no_grad forward: the output comes from the updated weight_orig, as in torch.

    Fused optimizers update parameters without bumping their version
    counters; the forward must still see the new values.
    """
    module = nn.Linear(6, 3)
    reference = copy.deepcopy(module)
    compat.l1_unstructured(module, "weight", amount=0.5)
    torch_prune.l1_unstructured(reference, "weight", amount=0.5)
    x = torch.randn(5, 6)
    outputs = []
    for m in (module, reference):
        opt = OPTIMIZERS[optimizer](m.parameters())
        with torch.no_grad():
            m(x)  # an evaluation before the step
        m(x).pow(2).sum().backward()
        opt.step()
        with torch.no_grad():
            outputs.append(m(x))
    assert torch.equal(outputs[0], F.linear(x, module.weight_orig.detach() * module.weight_mask, module.bias.detach()))
    assert torch.equal(outputs[0], outputs[1])


# --- autograd through the mask --------------------------------------------------------------------


def test_identity_pruning_changes_neither_forward_nor_backward() -> None:
    """identity reparametrizes with a mask of ones: outputs and gradients are those of the unpruned module."""
    module = nn.Conv2d(2, 3, 3)
    reference = copy.deepcopy(module)
    compat.identity(module, "weight")
    compat.identity(module, "bias")
    assert torch.equal(module.weight_mask, torch.ones_like(module.weight_orig))
    x = torch.randn(2, 2, 5, 5)
    out, expected = module(x), reference(x)
    assert torch.equal(out, expected)
    out.square().sum().backward()
    expected.square().sum().backward()
    assert torch.equal(module.weight_orig.grad, reference.weight.grad)
    assert torch.equal(module.bias_orig.grad, reference.bias.grad)


def test_gradient_of_orig_is_exactly_the_mask() -> None:
    """d(sum(weight))/d(weight_orig) is the mask: pruned entries get zero gradient, as in torch."""
    module = nn.Linear(5, 4)
    reference = copy.deepcopy(module)
    compat.l1_unstructured(module, "weight", amount=0.5)
    torch_prune.l1_unstructured(reference, "weight", amount=0.5)
    for m in (module, reference):
        m(torch.randn(2, 5))
        m.weight.sum().backward()
    assert torch.equal(module.weight_orig.grad, module.weight_mask)
    assert torch.equal(module.weight_orig.grad, reference.weight_orig.grad)


def test_sgd_never_updates_pruned_entries() -> None:
    """Pruned entries of weight_orig stay at their original value through training; the rest train."""
    module = nn.Linear(8, 6)
    compat.random_unstructured(module, "weight", amount=0.5)
    original = module.weight_orig.detach().clone()
    pruned = module.weight_mask == 0
    optimizer = torch.optim.SGD(module.parameters(), lr=0.5, momentum=0.9)
    for _ in range(5):
        optimizer.zero_grad()
        module(torch.randn(4, 8)).pow(2).sum().backward()
        optimizer.step()
    module(torch.randn(1, 8))
    assert torch.equal(module.weight_orig[pruned], original[pruned])
    assert not torch.equal(module.weight_orig[~pruned], original[~pruned])
    assert bool((module.weight[pruned] == 0).all())


# --- compute_mask patched with unittest.mock ----------------------------------------------------

MOCK_MODULES: list[Any] = [
    pytest.param(lambda: nn.Linear(5, 3), id="Linear"),
    pytest.param(lambda: nn.Conv3d(2, 3, 2), id="Conv3d"),
]
#: Tests written for torch patch torch's class; tests written for pruneplug may patch compat's.
MOCK_TARGETS = ["pruneplug.compat.RandomUnstructured", "torch.nn.utils.prune.RandomUnstructured"]


@pytest.mark.parametrize("target", MOCK_TARGETS)
@pytest.mark.parametrize("name", ["weight", "bias"])
@pytest.mark.parametrize("factory", MOCK_MODULES)
def test_a_mocked_compute_mask_is_the_mask_installed(factory: Callable[[], nn.Module], name: str, target: str) -> None:
    """Patching RandomUnstructured.compute_mask decides the mask, as it does with torch's class."""
    module = factory()
    original = getattr(module, name).detach().clone()
    mask = (torch.rand(original.shape) > 0.5).float()
    with mock.patch(target + ".compute_mask") as compute_mask:
        compute_mask.return_value = mask
        compat.random_unstructured(module, name, amount=0.9)
    compute_mask.assert_called_once()
    (scores,), kwargs = compute_mask.call_args
    assert torch.equal(scores, original)
    assert torch.equal(kwargs["default_mask"], torch.ones_like(original))
    assert torch.equal(getattr(module, name + "_mask"), mask)
    assert torch.equal(getattr(module, name), original * mask)


@pytest.mark.parametrize("target", MOCK_TARGETS)
@pytest.mark.parametrize("name", ["weight", "bias"])
@pytest.mark.parametrize("factory", MOCK_MODULES)
def test_a_failing_compute_mask_leaves_the_module_unpruned(
    factory: Callable[[], nn.Module], name: str, target: str
) -> None:
    """An exception from compute_mask propagates as it is and the module is exactly as before."""
    module = factory()
    before = snapshot(module)
    with mock.patch(target + ".compute_mask") as compute_mask:
        compute_mask.side_effect = RuntimeError("mask computation failed")
        with pytest.raises(RuntimeError, match="mask computation failed"):
            compat.random_unstructured(module, name, amount=0.9)
    assert_unchanged(before, module)


def test_patching_torchs_method_reaches_an_iterative_prune() -> None:
    """Pruning again while torch's L1Unstructured.compute_mask is patched calls the patch, not a shortcut."""
    module = nn.Linear(6, 4)
    compat.random_unstructured(module, "weight", amount=3)
    before = module.weight_mask.clone()
    partial = torch.ones(21)  # as in torch, the method sees only the 21 still-unpruned entries
    partial[:5] = 0
    with mock.patch("torch.nn.utils.prune.L1Unstructured.compute_mask") as compute_mask:
        compute_mask.return_value = partial
        compat.l1_unstructured(module, "weight", amount=5)
    compute_mask.assert_called_once()
    expected = before.clone()
    expected[before.bool()] = partial
    assert torch.equal(module.weight_mask, expected)


def test_patching_pruneplugs_own_class_reaches_an_iterative_compat_prune() -> None:
    module = nn.Linear(6, 4)
    compat.l1_unstructured(module, "weight", amount=3)
    with mock.patch("pruneplug.strategies.L1Unstructured.compute_mask") as compute_mask:
        compute_mask.return_value = torch.ones(21)
        compat.l1_unstructured(module, "weight", amount=5)
    compute_mask.assert_called_once()
    assert int((module.weight_mask == 0).sum()) == 3


def test_without_a_patch_torchs_compute_mask_is_never_run() -> None:
    """The twins of torch's classes run pruneplug's selection, not torch's topk-based code."""
    module = nn.Linear(6, 4)
    with mock.patch("torch.topk", side_effect=AssertionError("torch's selection ran")):
        compat.l1_unstructured(module, "weight", amount=5)
        compat.random_unstructured(module, "weight", amount=0.5)
        compat.ln_structured(module, "weight", amount=1, n=2, dim=0)
    assert int((module.weight_mask == 0).sum()) > 5


@pytest.mark.parametrize(
    "name", ["Identity", "RandomUnstructured", "L1Unstructured", "RandomStructured", "LnStructured", "CustomFromMask"]
)
def test_each_method_class_is_a_subclass_of_torchs(name: str) -> None:
    """isinstance checks written against torch's classes hold for compat's hooks (and pickle by name)."""
    ours, theirs = getattr(compat, name), getattr(torch_prune, name)
    assert issubclass(ours, theirs) and ours.__name__ == name
    assert pickle.loads(pickle.dumps(ours)) is ours


# --- PruningContainer ---------------------------------------------------------------------------


def on(method: torch_prune.BasePruningMethod, name: str = "weight") -> torch_prune.BasePruningMethod:
    """``method`` marked as acting on tensor ``name``, as ``apply`` would mark it."""
    method._tensor_name = name
    return method


def test_an_empty_container_is_an_empty_pruning_method() -> None:
    """PruningContainer() holds nothing and is a torch PruningContainer / BasePruningMethod."""
    container = compat.PruningContainer()
    assert len(container) == 0 and list(container) == []
    assert isinstance(container, torch_prune.PruningContainer)
    assert isinstance(container, torch_prune.BasePruningMethod)


def test_add_pruning_method_checks_type_and_tensor_name() -> None:
    """Adding a non-method is a TypeError; a method for another tensor is a ValueError."""
    container = compat.PruningContainer(on(compat.L1Unstructured(amount=1)))
    with pytest.raises(TypeError):
        container.add_pruning_method("l1_unstructured")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        container.add_pruning_method(nn.Linear(1, 1))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        container.add_pruning_method(on(compat.L1Unstructured(amount=1), "bias"))
    assert len(container) == 1


def test_container_is_a_sequence_of_methods_in_order() -> None:
    """len, iteration and indexing give the methods in the order they were added."""
    first, second, third = on(compat.Identity()), on(compat.L1Unstructured(amount=2)), on(compat.RandomStructured(1))
    container = compat.PruningContainer(first)
    assert container._tensor_name == "weight"
    container.add_pruning_method(second)
    container.add_pruning_method(third)
    assert len(container) == 3
    assert list(container) == [first, second, third]
    assert container[0] is first and container[1] is second and container[-1] is third


@pytest.mark.parametrize("mask_dtype", [torch.float32, torch.float64, torch.int64])
def test_container_compute_mask_unstructured(mask_dtype: torch.dtype) -> None:
    """The last method prunes among entries the default mask keeps; result in t's dtype; input untouched."""
    t = torch.tensor([[0.5, -3.0, 2.0], [-0.1, 4.0, 1.0]])
    default_mask = torch.tensor([[1, 0, 1], [1, 1, 1]], dtype=mask_dtype)
    untouched = default_mask.clone()
    container = compat.PruningContainer(on(compat.Identity()))
    container.add_pruning_method(on(compat.L1Unstructured(amount=2)))
    mask = container.compute_mask(t, default_mask)
    assert mask.dtype == t.dtype
    assert torch.equal(mask, torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0]]))
    assert torch.equal(default_mask, untouched)  # torch writes into it; pruneplug must not

    reference = torch_prune.PruningContainer(on(torch_prune.Identity()))
    reference.add_pruning_method(on(torch_prune.L1Unstructured(amount=2)))
    assert torch.equal(mask, reference.compute_mask(t, untouched.clone()))


@pytest.mark.parametrize("dim", [0, 1, 2, -1, -2])
def test_container_compute_mask_structured_along_each_dim(dim: int) -> None:
    """A structured method prunes the lowest-norm slice still alive along dim; dead slices stay dead."""
    t = torch.randn(3, 4, 5)
    default_mask = torch.ones(3, 4, 5)
    default_mask.select(dim, 1).zero_()  # slice 1 already pruned
    default_mask[0, 0, 0] = 0  # and one stray entry
    untouched = default_mask.clone()
    container = compat.PruningContainer(on(compat.Identity()))
    container.add_pruning_method(on(compat.LnStructured(amount=1, n=2, dim=dim)))
    mask = container.compute_mask(t, default_mask)

    others = [d for d in range(3) if d != dim % 3]
    norms = t.norm(p=2, dim=others)
    norms[1] = math.inf  # not a candidate: already pruned
    expected = default_mask.clone()
    expected.select(dim, int(norms.argmin())).zero_()
    assert mask.dtype == t.dtype
    assert torch.equal(mask, expected)
    assert torch.equal(default_mask, untouched)

    reference = torch_prune.PruningContainer(on(torch_prune.Identity()))
    reference.add_pruning_method(on(torch_prune.LnStructured(amount=1, n=2, dim=dim)))
    assert torch.equal(mask, reference.compute_mask(t, untouched.clone()))


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_container_compute_mask_random_structured_matches_torch(dim: int) -> None:
    """Random structured pruning in a container draws like torch's and keeps a float64 mask's input intact."""
    t = torch.randn(6, 5, 4)
    default_mask = torch.ones(6, 5, 4, dtype=torch.float64)
    default_mask.select(dim, 0).zero_()
    untouched = default_mask.clone()
    container = compat.PruningContainer(on(compat.Identity()))
    container.add_pruning_method(on(compat.RandomStructured(amount=2, dim=dim)))
    torch.manual_seed(3)
    mask = container.compute_mask(t, default_mask)
    reference = torch_prune.PruningContainer(on(torch_prune.Identity()))
    reference.add_pruning_method(on(torch_prune.RandomStructured(amount=2, dim=dim)))
    torch.manual_seed(3)
    expected = reference.compute_mask(t, untouched.clone())
    assert mask.dtype == torch.float32 == expected.dtype
    assert torch.equal(mask, expected)
    assert torch.equal(default_mask, untouched)
    others = [d for d in range(3) if d != dim % 3]
    assert int((mask.sum(dim=others) == 0).sum()) == 3


# --- the methods' compute_mask and prune -----------------------------------------------------------


@pytest.mark.parametrize(("amount", "pruned"), [(1, 1), (3, 3), (0.5, 4), (5, 5), (6, 6)])
def test_l1_unstructured_with_repeated_magnitudes_prunes_exactly_the_amount(amount: int | float, pruned: int) -> None:
    """Ties at the threshold never make L1 prune more or fewer entries than asked, smallest first."""
    t = torch.tensor([1.0, -1.0, 2.0, 1.0, -2.0, 1.0, 3.0, -1.0])
    mask = compat.L1Unstructured(amount=amount).compute_mask(t, torch.ones_like(t))
    assert int((mask == 0).sum()) == pruned
    gone = t[mask == 0].abs()
    kept = t[mask == 1].abs()
    assert float(gone.max()) <= float(kept.min())


@pytest.mark.parametrize("amount", [0.37, 777_777])
def test_l1_unstructured_with_repeated_magnitudes_on_a_large_tensor(amount: int | float) -> None:
    """On 1.3M entries holding only 40 distinct magnitudes, pruning (twice) removes exactly the amount each time."""
    generator = torch.Generator().manual_seed(0)
    size = 1_300_000
    signs = torch.where(torch.rand(size, generator=generator) > 0.5, 1.0, -1.0)
    module = nn.Linear(1300, 1000)
    with torch.no_grad():
        module.weight.copy_((torch.randint(0, 40, (size,), generator=generator).float() * signs).reshape(1000, 1300))
    magnitudes = module.weight.detach().abs()
    compat.l1_unstructured(module, "weight", amount=amount)
    first = int((module.weight_mask == 0).sum())
    assert first == (amount if isinstance(amount, int) else round(amount * size))
    compat.l1_unstructured(module, "weight", amount=0.5)
    second = int((module.weight_mask == 0).sum())
    assert second - first == round(0.5 * (size - first))
    kept = module.weight_mask == 1
    assert float(magnitudes[~kept].max()) <= float(magnitudes[kept].min())


def test_l1_unstructured_on_a_constant_tensor_prunes_exactly_the_amount() -> None:
    """Every entry tied: still exactly round(0.3 * 10) pruned."""
    mask = compat.L1Unstructured(amount=0.3).compute_mask(torch.full((10,), 0.5), torch.ones(10))
    assert int((mask == 0).sum()) == 3


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
@pytest.mark.parametrize("amount", [2, 0.5])
def test_random_structured_compute_mask_prunes_whole_slices(dim: int, amount: int | float) -> None:
    """Each slice along dim is all kept or all pruned, and the requested number of slices goes."""
    t = torch.randn(4, 6, 3)
    mask = compat.RandomStructured(amount=amount, dim=dim).compute_mask(t, torch.ones_like(t))
    slices = [mask.select(dim, i) for i in range(t.shape[dim])]
    assert all(bool((s == 0).all()) or bool((s == 1).all()) for s in slices)
    expected = amount if isinstance(amount, int) else round(amount * t.shape[dim])
    assert sum(bool((s == 0).all()) for s in slices) == expected


LN_CASES = [
    # (t, amount, n, dim, expected mask)
    ([[1.0, 2.0], [3.0, -4.0], [0.5, -0.5]], 1, 1, 0, [[1, 1], [1, 1], [0, 0]]),  # row L1 norms 3, 7, 1
    ([[1.0, 2.0], [3.0, -4.0], [0.5, -0.5]], 0.5, 2, 0, [[0, 0], [1, 1], [0, 0]]),  # round(1.5) = 2 rows
    ([[1.0, 2.0], [3.0, -4.0], [0.5, -0.5]], 1, math.inf, -1, [[0, 1], [0, 1], [0, 1]]),  # column max 3 < 4
    ([[1.0, 2.0], [3.0, -4.0], [0.5, -0.25]], 1, -math.inf, 1, [[1, 0], [1, 0], [1, 0]]),  # column min .5 > .25
    ([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0], [1.0, 1.0, 1.0]], 1, 0, 0, [[1, 1, 1], [0, 0, 0], [1, 1, 1]]),  # L0 2, 1, 3
    ([[3.0, 4.0], [1.0, 1.0]], 1, "fro", 1, [[0, 1], [0, 1]]),  # column norms sqrt(10) < sqrt(17)
    ([[3.0, 4.0], [1.0, 1.0]], 0, 2, 0, [[1, 1], [1, 1]]),  # nothing to prune
    ([[3.0, 4.0], [1.0, 1.0]], 1.0, 2, 0, [[0, 0], [0, 0]]),  # everything
]


@pytest.mark.parametrize(("t", "amount", "n", "dim", "expected"), LN_CASES)
def test_ln_structured_compute_mask_by_hand(t: list, amount: int | float, n: Any, dim: int, expected: list) -> None:
    """Slices with the smallest L-n norm go first (examples worked out by hand)."""
    tensor = torch.tensor(t)
    mask = compat.LnStructured(amount=amount, n=n, dim=dim).compute_mask(tensor, torch.ones_like(tensor))
    assert mask.dtype == tensor.dtype
    assert torch.equal(mask, torch.tensor(expected, dtype=tensor.dtype))


def test_ln_structured_compute_mask_respects_the_default_mask() -> None:
    """Entries the default mask prunes stay pruned in the structured mask."""
    t = torch.tensor([[1.0, 2.0], [3.0, -4.0], [0.5, -0.5]])
    default_mask = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    mask = compat.LnStructured(amount=1, n=1, dim=0).compute_mask(t, default_mask)
    assert torch.equal(mask, torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]))


@pytest.mark.parametrize("mask_dtype", [torch.float32, torch.int64, torch.bool])
def test_custom_from_mask_compute_mask(mask_dtype: torch.dtype) -> None:
    """CustomFromMask multiplies the default mask by its own, in the default mask's dtype."""
    method = compat.CustomFromMask(mask=torch.tensor([0, 1, 1, 0], dtype=mask_dtype))
    default_mask = torch.tensor([1.0, 1.0, 0.0, 1.0])
    mask = method.compute_mask(torch.randn(4), default_mask)
    assert mask.dtype == torch.float32
    assert torch.equal(mask, torch.tensor([0.0, 1.0, 0.0, 0.0]))
    assert torch.equal(default_mask, torch.tensor([1.0, 1.0, 0.0, 1.0]))


def test_method_prune_uses_default_mask_and_importance_scores() -> None:
    """method.prune(t, default_mask, importance_scores) returns t times the mask ranked by the scores."""
    t = torch.tensor([1.0, 2.0, 3.0, 4.0])
    scores = torch.tensor([4.0, 3.0, 2.0, 1.0])
    method, reference = compat.L1Unstructured(amount=2), torch_prune.L1Unstructured(amount=2)
    assert torch.equal(method.prune(t, importance_scores=scores), torch.tensor([1.0, 2.0, 0.0, 0.0]))
    default_mask = torch.tensor([0.0, 1.0, 1.0, 1.0])
    one = compat.L1Unstructured(amount=1)
    result = one.prune(t, default_mask=default_mask, importance_scores=scores)
    assert torch.equal(result, torch.tensor([0.0, 2.0, 3.0, 0.0]))
    assert torch.equal(result, torch_prune.L1Unstructured(amount=1).prune(t, default_mask, scores))
    assert torch.equal(method.prune(t), reference.prune(t))
    with pytest.raises(AssertionError):
        torch_prune.L1Unstructured(amount=1).prune(t, importance_scores=torch.ones(3))
    with pytest.raises(AssertionError):
        one.prune(t, importance_scores=torch.ones(3))


# --- global_unstructured -----------------------------------------------------------------------


def global_targets(model: nn.Sequential) -> list[tuple[nn.Module, str]]:
    return [(model[0], "weight"), (model[0], "bias"), (model[3], "weight")]


@pytest.mark.parametrize("container", ["tuple", "list", "generator"])
def test_global_unstructured_accepts_any_iterable_of_pairs(container: str) -> None:
    """A tuple, a list and a generator of (module, name) pairs all prune like torch's call with a tuple."""
    model = small_net()
    reference = copy.deepcopy(model)
    targets = global_targets(model)
    parameters: Any = {"tuple": tuple(targets), "list": list(targets), "generator": (p for p in targets)}[container]
    compat.global_unstructured(parameters, pruning_method=compat.L1Unstructured, amount=0.3)
    torch_prune.global_unstructured(tuple(global_targets(reference)), torch_prune.L1Unstructured, amount=0.3)
    total = sum(getattr(m, n).numel() for m, n in targets)
    assert sum(int((getattr(m, n + "_mask") == 0).sum()) for m, n in targets) == round(0.3 * total)
    for (mine, name), (theirs, _) in zip(targets, global_targets(reference)):
        assert torch.equal(getattr(mine, name + "_mask"), getattr(theirs, name + "_mask"))
        assert type(pruning_hooks(mine)[-1]).__name__ == "CustomFromMask"


def test_global_unstructured_with_importance_scores() -> None:
    """importance_scores, a dict keyed by (module, name), rank those tensors instead of their values."""
    model = small_net()
    reference = copy.deepcopy(model)
    scores = torch.randn(model[3].weight.shape)
    compat.global_unstructured(
        global_targets(model), compat.L1Unstructured, importance_scores={(model[3], "weight"): scores}, amount=40
    )
    torch_prune.global_unstructured(
        global_targets(reference),
        torch_prune.L1Unstructured,
        importance_scores={(reference[3], "weight"): scores},
        amount=40,
    )
    for (mine, name), (theirs, _) in zip(global_targets(model), global_targets(reference)):
        assert torch.equal(getattr(mine, name + "_mask"), getattr(theirs, name + "_mask"))
    ranked = scores.abs()[model[3].weight_mask == 0]
    assert ranked.numel() > 0 and float(ranked.max()) <= float(scores.abs()[model[3].weight_mask == 1].min())


def test_global_unstructured_rejects_a_structured_method() -> None:
    """Only unstructured methods prune globally: a structured one is a TypeError and nothing changes."""
    model = small_net()
    with pytest.raises(TypeError):
        compat.global_unstructured(global_targets(model), compat.RandomStructured, amount=0.2)
    assert not compat.is_pruned(model)


@pytest.mark.parametrize("parameters", [5, None, 1.5])
def test_global_unstructured_rejects_a_non_iterable(parameters: Any) -> None:
    """parameters that are not iterable are a TypeError."""
    with pytest.raises(TypeError):
        compat.global_unstructured(parameters, compat.L1Unstructured, amount=1)


@pytest.mark.parametrize("scores", [[1.0], (1.0,), "scores", torch.ones(3)])
def test_global_unstructured_importance_scores_must_be_a_dict(scores: Any) -> None:
    """importance_scores that is not a dict is a TypeError and nothing changes."""
    model = small_net()
    with pytest.raises(TypeError):
        compat.global_unstructured(global_targets(model), compat.L1Unstructured, importance_scores=scores, amount=1)
    assert not compat.is_pruned(model)


# --- copying, pickling and loading -------------------------------------------------------------


def pruned_net() -> nn.Sequential:
    """small_net with an iteratively pruned conv weight and pruned linear weight and bias."""
    model = small_net()
    compat.random_structured(model[0], "weight", amount=1, dim=0)
    compat.ln_structured(model[0], "weight", amount=0.5, n=2, dim=1)
    compat.l1_unstructured(model[3], "weight", amount=0.4)
    compat.random_unstructured(model[3], "bias", amount=2)
    return model


def assert_same_pruned_model(copied: nn.Module, model: nn.Module) -> None:
    """``copied`` holds the same pruning as ``model``: keys, masks, hooks, values and outputs."""
    assert list(copied.state_dict()) == list(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(copied.state_dict()[key], value), key
    for mine, theirs in zip(copied.modules(), model.modules()):
        assert [type(h).__name__ for h in pruning_hooks(mine)] == [type(h).__name__ for h in pruning_hooks(theirs)]
        for hook in pruning_hooks(theirs):
            name = hook._tensor_name
            assert torch.equal(getattr(mine, name), getattr(theirs, name))
            assert torch.equal(getattr(mine, name), getattr(mine, name + "_orig") * getattr(mine, name + "_mask"))
    x = net_input()
    assert torch.equal(copied(x), model(x))


def test_pickle_round_trip_keeps_the_model_pruned() -> None:
    """pickle.loads(pickle.dumps(model)) is pruned the same way, and can be pruned further and removed."""
    model = pruned_net()
    restored = pickle.loads(pickle.dumps(model))
    assert compat.is_pruned(restored)
    assert_same_pruned_model(restored, model)
    assert [type(m).__name__ for m in pruning_hooks(restored[0])[0]] == ["RandomStructured", "LnStructured"]
    compat.l1_unstructured(restored[3], "weight", amount=0.5)
    assert int((restored[3].weight_mask == 0).sum()) > int((model[3].weight_mask == 0).sum())
    compat.remove(restored[0], "weight")
    assert isinstance(restored[0].weight, nn.Parameter)


def test_torch_save_and_load_keep_the_model_pruned() -> None:
    """torch.save / torch.load(weights_only=False) of a pruned model round-trips."""
    model = pruned_net()
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=False)
    assert compat.is_pruned(restored)
    assert_same_pruned_model(restored, model)


def test_deepcopy_of_a_pruned_model_works_and_is_independent() -> None:
    """copy.deepcopy works (torch raises on its non-leaf masked tensors) and shares nothing with the original."""
    model = pruned_net()
    masks = {k: v.clone() for k, v in model.state_dict().items()}
    duplicate = copy.deepcopy(model)
    assert_same_pruned_model(duplicate, model)
    assert duplicate[3].weight_orig is not model[3].weight_orig
    assert pruning_hooks(duplicate[3])[0] is not pruning_hooks(model[3])[0]

    compat.l1_unstructured(duplicate[3], "weight", amount=0.5)
    compat.remove(duplicate[0], "weight")
    with torch.no_grad():
        duplicate[3].bias_orig.add_(1.0)
    duplicate(net_input())
    for key, value in model.state_dict().items():
        assert torch.equal(value, masks[key]), key
    assert compat.is_pruned(model[0]) and isinstance(pruning_hooks(model[0])[0], torch_prune.PruningContainer)
    assert torch.equal(model[3].bias, model[3].bias_orig * model[3].bias_mask)


def test_load_state_dict_updates_the_pruned_tensor_at_once() -> None:
    """After load_state_dict into a pruned model, module.weight is already orig * mask (no forward needed)."""
    source = nn.Linear(6, 4)
    compat.l1_unstructured(source, "weight", amount=0.5)
    target = nn.Linear(6, 4)
    compat.identity(target, "weight")
    target.load_state_dict(source.state_dict())
    assert torch.equal(target.weight_mask, source.weight_mask)
    assert torch.equal(target.weight, source.weight)
    assert torch.equal(target.weight, target.weight_orig * target.weight_mask)


def test_load_state_dict_into_a_pruned_model_updates_every_submodule_at_once() -> None:
    """Loading at the model level refreshes the pruned tensors of every pruned submodule."""
    source = pruned_net()
    target = small_net()
    compat.identity(target[0], "weight")
    compat.identity(target[3], "weight")
    compat.identity(target[3], "bias")
    target.load_state_dict(source.state_dict())
    for index, name in [(0, "weight"), (3, "weight"), (3, "bias")]:
        assert torch.equal(getattr(target[index], name), getattr(source[index], name))
    x = net_input()
    assert torch.equal(target(x), source(x))


def test_load_state_dict_saved_by_torch_into_a_compat_pruned_model() -> None:
    """A checkpoint of a torch-pruned model loads into a compat-pruned one with the same keys."""
    source = nn.Conv2d(2, 3, 3)
    torch_prune.ln_structured(source, "weight", amount=1, n=1, dim=0)
    target = nn.Conv2d(2, 3, 3)
    compat.identity(target, "weight")
    assert list(target.state_dict()) == list(source.state_dict())
    target.load_state_dict(source.state_dict())
    assert torch.equal(target.weight, source.weight)


# --- RNNs ----------------------------------------------------------------------------------------


def test_pruning_an_lstm_weight_updates_its_flat_weights() -> None:
    """LSTM._flat_weights hold the pruned (plain) tensor; remove restores four Parameters; outputs match torch."""
    lstm = nn.LSTM(4, 5)
    reference = copy.deepcopy(lstm)
    compat.l1_unstructured(lstm, "weight_ih_l0", amount=0.5)
    torch_prune.l1_unstructured(reference, "weight_ih_l0", amount=0.5)
    flat = lstm._flat_weights
    assert len(flat) == 4 and sum(isinstance(w, nn.Parameter) for w in flat) == 3
    assert not isinstance(flat[0], nn.Parameter) and flat[0] is lstm.weight_ih_l0
    x = torch.randn(3, 2, 4)
    out, (h, c) = lstm(x)
    expected, (h_ref, c_ref) = reference(x)
    assert torch.equal(out, expected) and torch.equal(h, h_ref) and torch.equal(c, c_ref)
    assert lstm._flat_weights[0] is lstm.weight_ih_l0

    compat.remove(lstm, "weight_ih_l0")
    assert all(isinstance(w, nn.Parameter) for w in lstm._flat_weights) and len(lstm._flat_weights) == 4
    assert lstm._flat_weights[0] is lstm.weight_ih_l0
    assert torch.equal(lstm(x)[0], expected)


def test_deepcopy_and_pickle_of_a_pruned_lstm() -> None:
    """A pruned LSTM copies and unpickles with its flat weights pointing at its own tensors."""
    lstm = nn.LSTM(3, 4)
    compat.l1_unstructured(lstm, "weight_hh_l0", amount=0.3)
    x = torch.randn(2, 1, 3)
    for restored in (copy.deepcopy(lstm), pickle.loads(pickle.dumps(lstm))):
        assert restored._flat_weights[1] is restored.weight_hh_l0
        assert restored._flat_weights[0] is restored.weight_ih_l0
        assert torch.equal(restored(x)[0], lstm(x)[0])


# --- a failing prune of an already pruned tensor -------------------------------------------------

FAILING_SECOND_PRUNES: list[Any] = [
    pytest.param(lambda lib, m: lib.l1_unstructured(m, "weight", amount=1000), ValueError, id="l1-too-many"),
    pytest.param(lambda lib, m: lib.random_unstructured(m, "weight", amount=1000), ValueError, id="random-too-many"),
    pytest.param(lambda lib, m: lib.ln_structured(m, "weight", amount=50, n=2, dim=0), ValueError, id="ln-too-many"),
    pytest.param(lambda lib, m: lib.random_structured(m, "weight", amount=1, dim=5), IndexError, id="dim-too-large"),
    pytest.param(lambda lib, m: lib.ln_structured(m, "weight", amount=1, n=1, dim=-7), IndexError, id="dim-too-small"),
]


@pytest.mark.parametrize(("call", "error"), FAILING_SECOND_PRUNES)
def test_a_failing_second_prune_leaves_everything_as_it_was(
    call: Callable[[Any, nn.Module], None], error: type[Exception]
) -> None:
    """Same exception type as torch, but the hook, mask, tensor and state_dict survive (torch drops the hook)."""
    module = nn.Conv2d(2, 4, 3)
    compat.l1_unstructured(module, "weight", amount=10)
    reference = nn.Conv2d(2, 4, 3)
    torch_prune.l1_unstructured(reference, "weight", amount=10)
    with pytest.raises(error):
        call(torch_prune, reference)

    before = snapshot(module)
    with pytest.raises(error):
        call(compat, module)
    assert_unchanged(before, module)
    x = torch.randn(1, 2, 5, 5)
    assert torch.equal(module(x), F.conv2d(x, module.weight_orig * module.weight_mask, module.bias))
    compat.l1_unstructured(module, "weight", amount=1)  # and it can still be pruned further
    assert int((module.weight_mask == 0).sum()) == 11


NORMS_TORCH_CANNOT_COMPUTE: list[Any] = [
    pytest.param(lambda: nn.Linear(5, 4), "nuc", id="nuc-2d"),
    pytest.param(lambda: nn.Conv2d(2, 3, 2), "nuc", id="nuc-4d"),
    pytest.param(lambda: nn.Linear(5, 4), "bogus", id="unknown-order"),
]


@pytest.mark.parametrize(("factory", "n"), NORMS_TORCH_CANNOT_COMPUTE)
def test_a_norm_order_torch_cannot_compute_raises_runtime_error_like_torch(
    factory: Callable[[], nn.Module], n: str
) -> None:
    """ln_structured with an order torch.norm rejects for the slices raises RuntimeError, as torch does.

    ``"nuc"`` needs exactly two dims besides ``dim``; code written for torch
    catches the RuntimeError torch.norm raises. The module stays unpruned.
    """
    module = factory()
    reference = copy.deepcopy(module)
    with pytest.raises(RuntimeError):
        torch_prune.ln_structured(reference, "weight", amount=1, n=n, dim=0)
    names = param_names(module)
    with pytest.raises(RuntimeError):
        compat.ln_structured(module, "weight", amount=1, n=n, dim=0)
    assert not compat.is_pruned(module) and param_names(module) == names


# --- interoperation with torch.nn.utils.prune --------------------------------------------------


def test_a_model_pruned_by_torch_is_continued_by_pruneplug() -> None:
    """compat and pruneplug.prune extend torch's pruning, is_pruned sees it, and pruneplug.remove removes it."""
    module = nn.Conv2d(3, 6, 3)
    reference = copy.deepcopy(module)
    torch_prune.l1_unstructured(module, "weight", amount=0.3)
    torch_prune.l1_unstructured(reference, "weight", amount=0.3)
    assert pruneplug.is_pruned(module) and compat.is_pruned(module)

    compat.ln_structured(module, "weight", amount=2, n=2, dim=0)
    torch_prune.ln_structured(reference, "weight", amount=2, n=2, dim=0)
    assert torch.equal(module.weight_mask, reference.weight_mask)
    assert [type(m).__name__ for m in pruning_hooks(module)[0]] == ["L1Unstructured", "LnStructured"]

    pruneplug.prune(module, "weight", "l1_unstructured", amount=5)
    torch_prune.l1_unstructured(reference, "weight", amount=5)
    assert torch.equal(module.weight_mask.bool(), reference.weight_mask.bool())
    assert torch.equal(module.weight, reference.weight)

    pruneplug.prune(module, "bias", "l1_unstructured", amount=2)
    pruneplug.remove(module, "weight")
    torch_prune.remove(reference, "weight")
    assert isinstance(module.weight, nn.Parameter) and torch.equal(module.weight, reference.weight)
    assert not hasattr(module, "weight_orig") and not hasattr(module, "weight_mask")
    assert pruneplug.is_pruned(module)  # the bias still is
    pruneplug.remove(module)
    assert not pruneplug.is_pruned(module) and param_names(module) == ["weight", "bias"]


@pytest.mark.parametrize("flavor", ["compat", "native"])
def test_a_model_pruned_by_pruneplug_is_understood_by_torch(flavor: str) -> None:
    """torch's is_pruned recognises pruneplug's hooks and torch's remove makes the pruning permanent."""
    model = small_net()
    if flavor == "compat":
        compat.l1_unstructured(model[3], "weight", amount=0.5)
        compat.random_structured(model[3], "weight", amount=1, dim=0)
    else:
        pruneplug.prune(model[3], "weight", "l1_unstructured", amount=0.5)
        pruneplug.prune(model[3], "weight", "random_structured", amount=1, dim=0)
    parameter = model[3].weight_orig
    pruned = model[3].weight.detach().clone()
    assert torch_prune.is_pruned(model)
    torch_prune.remove(model[3], "weight")
    assert isinstance(model[3].weight, nn.Parameter) and model[3].weight is parameter
    assert torch.equal(model[3].weight, pruned)
    assert buffer_names(model) == [] and "3.weight_orig" not in param_names(model)
    assert not torch_prune.is_pruned(model)
    model(net_input())
    assert torch.equal(model[3].weight, pruned)


def test_global_unstructured_refuses_a_target_listed_twice() -> None:
    """A (module, name) pair given twice is an error naming the problem, and nothing is pruned."""
    layer = nn.Linear(3, 3)
    with pytest.raises(TypeError, match="listed more than once"):
        compat.global_unstructured(
            [(layer, "weight"), (layer, "weight")], pruning_method=compat.L1Unstructured, amount=2
        )
    assert not compat.is_pruned(layer)


# --- exception types, side by side with torch ----------------------------------------------------


def _linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(3, 4)


def _pruned_linear(api: Any) -> nn.Linear:
    layer = _linear()
    api.l1_unstructured(layer, "weight", amount=2)
    return layer


_BAD_CALLS: dict[str, Callable[[Any], object]] = {
    "mask of another shape": lambda api: api.custom_from_mask(_linear(), "weight", torch.ones(3)),
    "mask transposed": lambda api: api.custom_from_mask(_linear(), "weight", torch.ones(3, 4)),
    "mask of another shape, pruned before": lambda api: api.custom_from_mask(
        _pruned_linear(api), "weight", torch.ones(5)
    ),
    "bias mask of another shape": lambda api: api.custom_from_mask(_linear(), "bias", torch.ones(3)),
    "mask that is a list": lambda api: api.custom_from_mask(_linear(), "weight", [[1.0] * 3] * 4),
    "mask that is None": lambda api: api.custom_from_mask(_linear(), "weight", None),
    "CustomFromMask.apply": lambda api: api.CustomFromMask.apply(_linear(), "weight", torch.ones(2)),
    "CustomFromMask.compute_mask": lambda api: api.CustomFromMask(torch.ones(2)).compute_mask(
        torch.ones(3), torch.ones(3)
    ),
    "CustomFromMask.prune": lambda api: api.CustomFromMask(torch.ones(2)).prune(torch.ones(3)),
    "importance scores of another shape": lambda api: api.l1_unstructured(
        _linear(), "weight", 1, importance_scores=torch.ones(3)
    ),
    "structured importance scores of another shape": lambda api: api.ln_structured(
        _linear(), "weight", 1, 2, 0, importance_scores=torch.ones(3)
    ),
    "amount larger than the tensor": lambda api: api.l1_unstructured(_linear(), "weight", 13),
    "negative amount": lambda api: api.random_unstructured(_linear(), "weight", -1),
    "amount that is a string": lambda api: api.l1_unstructured(_linear(), "weight", "a"),
    "dim out of range": lambda api: api.ln_structured(_linear(), "weight", 1, 2, 5),
    "structured on one dim": lambda api: api.random_structured(_linear(), "bias", 1, 0),
    "unknown norm": lambda api: api.ln_structured(_linear(), "weight", 1, "bogus", 0),
    "unknown tensor": lambda api: api.identity(_linear(), "wieght"),
    "remove of an unpruned tensor": lambda api: api.remove(_linear(), "weight"),
    "global over a structured method": lambda api: api.global_unstructured(
        [(_linear(), "weight")], api.LnStructured, amount=1, n=2, dim=0
    ),
    "global over a mask given whole": lambda api: api.global_unstructured(
        [(_linear(), "weight")], api.CustomFromMask, mask=torch.ones(12)
    ),
    "global amount larger than the tensors": lambda api: api.global_unstructured(
        [(_linear(), "weight")], api.L1Unstructured, amount=13
    ),
}


@pytest.mark.parametrize("call", _BAD_CALLS.values(), ids=_BAD_CALLS.keys())
def test_a_bad_call_raises_an_instance_of_what_torch_raises(call: Callable[[Any], object]) -> None:
    """Code written for torch catches torch's exception type; compat's error is an instance of it."""
    with pytest.raises(Exception) as by_torch:
        call(torch_prune)
    with pytest.raises(Exception) as by_compat:
        call(compat)
    assert isinstance(by_compat.value, type(by_torch.value)), (type(by_compat.value), type(by_torch.value))
    assert isinstance(by_compat.value, pruneplug.PruneplugError) or type(by_torch.value) is type(by_compat.value)


def test_a_misshapen_mask_is_an_assertion_error_and_an_invalid_mask_error_and_changes_nothing() -> None:
    layer = _pruned_linear(compat)
    before = snapshot(layer)
    with pytest.raises(AssertionError) as caught:
        compat.custom_from_mask(layer, "weight", torch.ones(3))
    assert isinstance(caught.value, pruneplug.InvalidMaskError) and isinstance(caught.value, ValueError)
    assert "Linear.weight, strategy 'custom_from_mask'" in str(caught.value)
    assert_unchanged(before, layer)
    with pytest.raises(AttributeError) as not_a_tensor:
        compat.custom_from_mask(layer, "weight", [1.0] * 12)
    assert isinstance(not_a_tensor.value, pruneplug.InvalidMaskError)
    assert_unchanged(before, layer)


def test_global_unstructured_lets_a_strategy_s_own_exception_through_as_it_is() -> None:
    """Where the native API wraps it in StrategyFailedError, compat raises what the strategy raised."""

    class Raises(pruneplug.UnstructuredStrategy):
        def scores(self, t: Tensor, alive: Tensor | None) -> Tensor:
            raise KeyError("boom")

    layers = [_linear(), _linear()]
    with pytest.raises(KeyError) as caught:
        compat.global_unstructured([(m, "weight") for m in layers], Raises, amount=1)
    assert not isinstance(caught.value, pruneplug.PruneplugError)
    assert not any(compat.is_pruned(m) for m in layers)
    with pytest.raises(pruneplug.StrategyFailedError, match=r"^Linear\.weight, strategy 'raises': the strategy raised"):
        pruneplug.prune_global([(m, "weight") for m in layers], Raises, amount=1)
