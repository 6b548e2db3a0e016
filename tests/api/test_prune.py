"""The native API: validation and its messages, bias pruning, compute_mask, history."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

import pruneplug
import pruneplug.compat as compat
from pruneplug.strategies import L1Unstructured, LnStructured, RandomStructured
from pruneplug.testing import assert_unchanged, snapshot


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"amount": True}, "got bool True"),
        ({"amount": "0.5"}, "got str '0.5'"),
        ({"amount": torch.tensor(0.5)}, "got Tensor"),
        ({"amount": None}, "got NoneType"),
        ({"amount": math.nan}, "not a fraction in [0, 1]"),
        ({"amount": math.inf}, "not a fraction in [0, 1]"),
        ({"amount": 1.5}, "not a fraction in [0, 1]"),
        ({"amount": -2}, "negative count"),
        ({"amout": 0.5}, "unknown parameter 'amout'. Did you mean 'amount'?"),
        ({}, "missing required parameter 'amount'"),
        ({"amount": 0.5, "dim": 0}, "unknown parameter 'dim'"),
    ],
)
def test_invalid_parameters_are_named_and_nothing_changes(params: dict[str, object], fragment: str) -> None:
    layer = nn.Linear(4, 3)
    before = snapshot(layer)
    with pytest.raises(pruneplug.InvalidParametersError) as caught:
        pruneplug.prune(layer, "weight", "l1_unstructured", **params)
    message = str(caught.value)
    assert fragment in message
    assert message.startswith("Linear.weight, strategy 'l1_unstructured':"), message
    assert isinstance(caught.value, ValueError)
    assert_unchanged(before, layer)


def test_amount_larger_than_what_remains() -> None:
    layer = nn.Linear(2, 2)
    pruneplug.prune(layer, "weight", "l1_unstructured", amount=3)
    before = snapshot(layer)
    with pytest.raises(pruneplug.InvalidAmountError, match=r"amount=2 is larger than the 1 unpruned entries") as caught:
        pruneplug.prune(layer, "weight", "random_unstructured", amount=2)
    assert caught.value.module_type == "Linear" and caught.value.tensor == "weight"
    assert caught.value.strategy == "random_unstructured"
    assert_unchanged(before, layer)


def test_structured_errors_name_dims() -> None:
    conv = nn.Conv2d(2, 4, 3)
    with pytest.raises(
        pruneplug.InvalidDimError, match=r"dim=4 is out of range for a tensor with 4 dims \(valid: -4..3\)"
    ):
        pruneplug.prune(conv, "weight", "ln_structured", amount=1, n=2, dim=4)
    with pytest.raises(pruneplug.InvalidDimError, match="at least 2 dims"):
        pruneplug.prune(conv, "bias", "random_structured", amount=1, dim=0)
    with pytest.raises(pruneplug.InvalidParametersError, match="exactly 2 dims besides dim"):
        pruneplug.prune(conv, "weight", "ln_structured", amount=1, n="nuc", dim=0)
    with pytest.raises(pruneplug.InvalidParametersError, match="not a norm order"):
        pruneplug.prune(conv, "weight", "ln_structured", amount=1, n="l2", dim=0)
    with pytest.raises(pruneplug.InvalidParametersError, match="dim must be an int"):
        pruneplug.prune(conv, "weight", "ln_structured", amount=1, n=2, dim=0.0)
    assert not pruneplug.is_pruned(conv)


@pytest.mark.parametrize("n", [1, 2, 3, 0, -1, math.inf, -math.inf, "inf", "-inf", "fro"])
def test_ln_structured_takes_every_norm_order(n: object) -> None:
    conv = nn.Conv2d(3, 8, 3)
    pruneplug.prune(conv, "weight", "ln_structured", amount=3, n=n, dim=0)
    alive = conv.weight_mask.flatten(1).any(1)
    assert int((~alive).sum()) == 3


def test_nuclear_norm_on_a_three_dim_tensor() -> None:
    conv = nn.Conv1d(4, 6, 3)  # weight (6, 4, 3): two dims besides dim 0
    reference = nn.Conv1d(4, 6, 3)
    reference.load_state_dict(conv.state_dict())
    pruneplug.prune(conv, "weight", "ln_structured", amount=2, n="nuc", dim=0)
    torch_prune.ln_structured(reference, "weight", amount=2, n="nuc", dim=0)
    assert torch.equal(conv.weight_mask, reference.weight_mask.bool())


def test_unknown_tensor_lists_parameters() -> None:
    layer = nn.Linear(2, 2)
    with pytest.raises(pruneplug.TensorNotFoundError, match=r"no parameter named 'weigth'. Did you mean 'weight'\?"):
        pruneplug.prune(layer, "weigth", "l1_unstructured", amount=1)
    with pytest.raises(AttributeError):
        pruneplug.prune(layer, "nope", "l1_unstructured", amount=1)
    bn = nn.BatchNorm1d(3)
    with pytest.raises(pruneplug.InvalidTargetError, match="is a buffer or plain tensor attribute"):
        pruneplug.prune(bn, "running_mean", "l1_unstructured", amount=1)
    no_bias = nn.Linear(2, 2, bias=False)
    with pytest.raises(pruneplug.TensorNotFoundError, match="it is None"):
        pruneplug.prune(no_bias, "bias", "l1_unstructured", amount=1)
    with pytest.raises(pruneplug.InvalidTargetError, match="no dots"):
        pruneplug.prune(nn.Sequential(layer), "0.weight", "l1_unstructured", amount=1)
    with pytest.raises(pruneplug.InvalidTargetError, match="expected a torch.nn.Module"):
        pruneplug.prune(torch.zeros(3), "weight", "l1_unstructured", amount=1)  # type: ignore[arg-type]


def test_unknown_strategy_names_the_target() -> None:
    with pytest.raises(pruneplug.StrategyNotFoundError, match=r"^Linear.weight: no strategy named 'l2_unstructured'"):
        pruneplug.prune(nn.Linear(2, 2), "weight", "l2_unstructured", amount=1)


def test_importance_scores_are_checked() -> None:
    layer = nn.Linear(3, 2)
    with pytest.raises(pruneplug.InvalidImportanceScoresError, match=r"same shape.*\(3, 2\) vs \(2, 3\)"):
        pruneplug.prune(layer, "weight", "l1_unstructured", amount=1, importance_scores=torch.ones(3, 2))
    with pytest.raises(pruneplug.InvalidImportanceScoresError, match="must be a tensor"):
        pruneplug.prune(layer, "weight", "l1_unstructured", amount=1, importance_scores=[[1.0] * 3] * 2)
    with pytest.raises(pruneplug.InvalidParametersError, match="does not use importance scores"):
        pruneplug.prune(layer, "weight", "random_unstructured", amount=1, importance_scores=torch.ones(2, 3))
    scores = torch.tensor([[5.0, 1.0, 4.0], [2.0, 6.0, 3.0]])
    pruneplug.prune(layer, "weight", "l1_unstructured", amount=2, importance_scores=scores)
    assert layer.weight_mask.tolist() == [[True, False, True], [False, True, True]]


def test_a_raising_strategy_is_wrapped_with_its_cause(registry: pruneplug.Registry) -> None:
    class Broken(pruneplug.BasePruningMethod):
        PRUNING_TYPE = "unstructured"
        name = "broken"

        def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
            raise KeyError("boom")

    pruneplug.register(Broken)
    layer = nn.Linear(2, 2)
    pruneplug.prune(layer, "weight", "l1_unstructured", amount=1)
    before = snapshot(layer)
    with pytest.raises(
        pruneplug.StrategyFailedError, match="Linear.weight, strategy 'broken': the strategy raised KeyError"
    ) as caught:
        pruneplug.prune(layer, "weight", "broken")
    assert isinstance(caught.value.__cause__, KeyError)
    assert_unchanged(before, layer)


@pytest.mark.parametrize(
    ("returned", "fragment"),
    [
        (lambda t, d: torch.ones(3), "shape"),
        (lambda t, d: torch.full_like(d, 0.5, dtype=torch.float32), "values other than 0 and 1"),
        (lambda t, d: torch.ones_like(d), "un-prune"),
        (lambda t, d: "mask", "not a mask tensor"),
    ],
)
def test_bad_masks_are_rejected_naming_the_strategy(registry: pruneplug.Registry, returned, fragment: str) -> None:  # type: ignore[no-untyped-def]
    class Bad(pruneplug.BasePruningMethod):
        PRUNING_TYPE = "global"
        name = "bad"

        def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
            return returned(t, default_mask)  # type: ignore[no-any-return]

    pruneplug.register(Bad)
    layer = nn.Linear(2, 2)
    pruneplug.prune(layer, "weight", "l1_unstructured", amount=2)
    before = snapshot(layer)
    with pytest.raises(pruneplug.InvalidMaskError, match=fragment) as caught:
        pruneplug.prune(layer, "weight", "bad")
    assert caught.value.strategy == "bad" and "Linear.weight" in str(caught.value)
    assert_unchanged(before, layer)


def test_masks_are_bool_and_history_is_kept() -> None:
    conv = nn.Conv2d(3, 6, 3)
    pruneplug.prune(conv, "weight", "random_structured", amount=2, dim=0)
    pruneplug.prune(conv, "weight", "ln_structured", amount=0.5, n=1, dim=0)
    pruneplug.prune(conv, "weight", "l1_unstructured", amount=10)
    assert conv.weight_mask.dtype == torch.bool
    history = pruneplug.pruning_history(conv, "weight")
    assert [type(m) for m in history] == [RandomStructured, LnStructured, L1Unstructured]
    assert [m.describe() for m in history] == [
        "random_structured(amount=2, dim=0)",
        "ln_structured(amount=0.5, n=1, dim=0)",
        "l1_unstructured(amount=10)",
    ]
    assert pruneplug.pruning_history(conv, "bias") == []
    alive_channels = conv.weight_mask.flatten(1).any(1)
    assert int((~alive_channels).sum()) == 4
    assert int((~conv.weight_mask).sum()) == 4 * 27 + 10


@pytest.mark.parametrize(
    ("make", "dim"),
    [(lambda: nn.Conv2d(3, 8, 3), 0), (lambda: nn.Linear(5, 8), 0), (lambda: nn.ConvTranspose2d(3, 8, 3), 1)],
)
def test_prune_bias_zeroes_the_bias_of_pruned_output_channels(make, dim: int) -> None:  # type: ignore[no-untyped-def]
    module = make()
    pruneplug.prune(module, "weight", "ln_structured", amount=3, n=2, dim=dim, prune_bias=True)
    others = [d for d in range(module.weight.dim()) if d != dim]
    dead = ~module.weight_mask.any(dim=others)
    assert int(dead.sum()) == 3
    assert torch.equal(module.bias_mask, ~dead)
    assert bool((module.bias[dead] == 0).all()) and bool((module.bias[~dead] != 0).all())
    out = module(torch.randn(2, *([3, 6, 6] if isinstance(module, nn.modules.conv._ConvNd) else [5])))
    channel_axis = 1 if out.dim() > 2 else -1
    assert bool((out.select(channel_axis, int(dead.nonzero()[0])) == 0).all())
    # iterative: the bias follows the channels pruned later too
    pruneplug.prune(module, "weight", "random_structured", amount=2, dim=dim, prune_bias=True)
    dead = ~module.weight_mask.any(dim=others)
    assert torch.equal(module.bias_mask, ~dead) and int(dead.sum()) == 5
    assert next(m.describe() for m in pruneplug.pruning_history(module, "bias")).startswith(
        "bias of the output channels"
    )


def test_prune_bias_is_off_by_default_and_checked() -> None:
    conv = nn.Conv2d(3, 8, 3)
    pruneplug.prune(conv, "weight", "ln_structured", amount=3, n=2, dim=0)
    assert "bias_mask" not in dict(conv.named_buffers())
    with pytest.raises(pruneplug.InvalidParametersError, match="needs dim=0"):
        pruneplug.prune(nn.Conv2d(3, 8, 3), "weight", "ln_structured", amount=1, n=2, dim=1, prune_bias=True)
    with pytest.raises(pruneplug.InvalidParametersError, match="has no bias"):
        pruneplug.prune(nn.Linear(3, 8, bias=False), "weight", "ln_structured", amount=1, n=2, dim=0, prune_bias=True)
    with pytest.raises(pruneplug.InvalidParametersError, match="prune_bias"):
        pruneplug.prune(nn.Linear(3, 8), "weight", "ln_structured", amount=1, n=2, dim=0, prune_bias="yes")
    lstm = nn.LSTM(4, 4)
    with pytest.raises(pruneplug.InvalidParametersError, match="only applies when pruning 'weight'"):
        pruneplug.prune(lstm, "weight_ih_l0", "random_structured", amount=1, dim=0, prune_bias=True)
    assert not pruneplug.is_pruned(lstm)


def test_compute_mask_is_always_bool_and_respects_the_default_mask() -> None:
    t = torch.tensor([[4.0, -1.0, 3.0], [0.5, 2.0, -6.0]])
    default = torch.tensor([[1, 0, 1], [1, 1, 1]])
    mask = pruneplug.compute_mask("l1_unstructured", t, default, amount=2)
    assert mask.dtype == torch.bool
    assert mask.tolist() == [[True, False, True], [False, False, True]]
    structured = pruneplug.compute_mask("ln_structured", t, amount=1, n=1, dim=1)
    assert structured.dtype == torch.bool and structured.tolist() == [[True, False, True], [True, False, True]]
    assert pruneplug.compute_mask("identity", t).all()
    custom = pruneplug.compute_mask("custom_from_mask", t, mask=torch.tensor([[1.0, 1, 0], [1, 1, 1]]))
    assert custom.dtype == torch.bool and custom.tolist() == [[True, True, False], [True, True, True]]
    assert torch.equal(default, torch.tensor([[1, 0, 1], [1, 1, 1]]))  # inputs untouched


def test_prune_global_validates_targets_and_kind() -> None:
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    with pytest.raises(pruneplug.IncompatibleStrategyError, match="needs a strategy of kind .unstructured.") as caught:
        pruneplug.prune_global([(a, "weight")], "ln_structured", amount=0.1, n=2)
    assert isinstance(caught.value, TypeError)
    with pytest.raises(pruneplug.InvalidTargetError, match="listed twice"):
        pruneplug.prune_global([(a, "weight"), (a, "weight")], "l1_unstructured", amount=0.1)
    with pytest.raises(pruneplug.InvalidTargetError, match="at least one"):
        pruneplug.prune_global([], "l1_unstructured", amount=0.1)
    with pytest.raises(pruneplug.InvalidTargetError, match=r"target #1 must be a \(module, name\) pair"):
        pruneplug.prune_global([(a, "weight"), "b.weight"], "l1_unstructured", amount=0.1)
    with pytest.raises(pruneplug.InvalidImportanceScoresError, match="not one of the targets"):
        pruneplug.prune_global(
            [(a, "weight")], "l1_unstructured", amount=1, importance_scores={(b, "weight"): b.weight}
        )
    with pytest.raises(pruneplug.InvalidAmountError, match="larger than the 18 unpruned"):
        pruneplug.prune_global([(a, "weight"), (b, "weight")], "l1_unstructured", amount=19)
    assert not pruneplug.is_pruned(a) and not pruneplug.is_pruned(b)
    pruneplug.prune_global(((m, "weight") for m in (a, b)), "random_unstructured", amount=9)
    assert int((~a.weight_mask).sum() + (~b.weight_mask).sum()) == 9
    history = pruneplug.pruning_history(a, "weight")
    assert history[0].describe() == "random_unstructured(amount=9) [global over 2 tensors]"
    assert history[0].mask is None  # the history does not keep a second copy of the mask


def test_global_with_a_mask_only_strategy(registry: pruneplug.Registry) -> None:
    """A strategy that only knows compute_mask sees all targets as one flat tensor (as in torch)."""

    class EveryOther(pruneplug.BasePruningMethod):
        PRUNING_TYPE = "unstructured"
        name = "every_other"

        def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
            mask = default_mask.clone()
            mask.view(-1)[::2] = 0
            return mask

    pruneplug.register(EveryOther)
    a, b = nn.Linear(3, 1, bias=False), nn.Linear(2, 1, bias=False)
    pruneplug.prune_global([(a, "weight"), (b, "weight")], "every_other")
    assert a.weight_mask.tolist() == [[False, True, False]]
    assert b.weight_mask.tolist() == [[True, False]]


def test_native_pruning_on_top_of_torch_pruning() -> None:
    conv = nn.Conv2d(2, 4, 3)
    torch_prune.l1_unstructured(conv, "weight", amount=10)
    first = conv.weight_mask.clone()
    pruneplug.prune(conv, "weight", "ln_structured", amount=1, n=2, dim=0)
    assert conv.weight_mask.dtype == torch.bool
    assert bool((conv.weight_mask <= first.bool()).all())
    history = pruneplug.pruning_history(conv, "weight")
    assert [type(m).__name__ for m in history] == ["L1Unstructured", "LnStructured"]
    assert isinstance(history[0], torch_prune.L1Unstructured)
    pruneplug.remove(conv)
    assert not pruneplug.is_pruned(conv) and isinstance(conv.weight, nn.Parameter)


def test_remove_everything_and_errors() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    params_before = [id(p) for p in model.parameters()]
    pruneplug.prune(model[0], "weight", "l1_unstructured", amount=2)
    pruneplug.prune(model[0], "bias", "l1_unstructured", amount=1)
    pruneplug.prune(model[2], "weight", "random_unstructured", amount=0.5)
    effective = {k: v.detach().clone() for k, v in [("0.weight", model[0].weight), ("2.weight", model[2].weight)]}
    assert pruneplug.remove(model) is model
    assert not pruneplug.is_pruned(model)
    assert sorted(id(p) for p in model.parameters()) == sorted(params_before)
    assert torch.equal(model[0].weight, effective["0.weight"]) and torch.equal(model[2].weight, effective["2.weight"])
    with pytest.raises(pruneplug.NotPrunedError, match=r"pruned tensors of this module: none") as caught:
        pruneplug.remove(model[0], "weight")
    assert isinstance(caught.value, ValueError)
    pruneplug.prune(model[0], "weight", "identity")
    with pytest.raises(pruneplug.NotPrunedError, match=r"pruned tensors of this module: weight"):
        pruneplug.remove(model[0], "bias")


def test_errors_pickle_with_their_fields() -> None:
    import pickle

    error = pruneplug.InvalidAmountError("too much", module_type="Linear", tensor="weight", strategy="l1_unstructured")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is pruneplug.InvalidAmountError and str(copy) == str(error)
    assert (copy.module_type, copy.tensor, copy.strategy, copy.reason) == (
        "Linear",
        "weight",
        "l1_unstructured",
        "too much",
    )
    missing = pickle.loads(pickle.dumps(pruneplug.StrategyNotFoundError("x", ["a", "b"])))
    assert missing.available == ["a", "b"]


def test_global_pruning_across_float32_and_float64_tensors_is_exact() -> None:
    """One comparison dtype for all targets: a float64 threshold must not round against float32 scores."""
    a, b = nn.Linear(1, 1, bias=False), nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        a.weight.fill_(0.1)
        b.weight.copy_(torch.tensor([[0.1, 5.0]], dtype=torch.float64))
    pruneplug.prune_global([(a, "weight"), (b, "weight")], "l1_unstructured", amount=1)
    assert int((~a.weight_mask).sum() + (~b.weight_mask).sum()) == 1
    assert bool(a.weight_mask.all()) and b.weight_mask.tolist() == [[False, True]]


def test_a_strategy_s_own_tensor_is_not_the_stored_mask(registry: pruneplug.Registry) -> None:
    """A strategy returning a tensor it keeps must not be able to un-prune later by changing it."""

    class Fixed(pruneplug.BasePruningMethod):
        PRUNING_TYPE = "global"

        def __init__(self, mask: torch.Tensor) -> None:
            self.mask = mask

        def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
            return self.mask

    kept = torch.tensor([[True, False], [True, True]])
    layer = nn.Linear(2, 2)
    pruneplug.prune(layer, "weight", Fixed(kept))
    kept[0, 1] = True
    assert layer.weight_mask.tolist() == [[True, False], [True, True]]


def test_tied_parameters_are_refused_by_global_pruning() -> None:
    """One Parameter reached through two modules would be ranked twice and untied."""
    embedding, head = nn.Embedding(10, 4), nn.Linear(4, 10, bias=False)
    head.weight = embedding.weight
    with pytest.raises(pruneplug.InvalidTargetError, match="Embedding.weight and Linear.weight are one tied"):
        pruneplug.prune_global([(embedding, "weight"), (head, "weight")], "l1_unstructured", amount=10)
    assert not pruneplug.is_pruned(embedding) and not pruneplug.is_pruned(head)


def test_compat_warns_about_tied_parameters_and_does_what_torch_does() -> None:
    pairs = []
    for _ in range(2):
        embedding, head = nn.Embedding(10, 4), nn.Linear(4, 10, bias=False)
        head.weight = embedding.weight
        pairs.append((embedding, head))
    with torch.no_grad():
        pairs[1][0].weight.copy_(pairs[0][0].weight)
    torch_prune.global_unstructured([(m, "weight") for m in pairs[0]], torch_prune.L1Unstructured, amount=10)
    with pytest.warns(UserWarning, match="one tied parameter"):
        compat.global_unstructured([(m, "weight") for m in pairs[1]], compat.L1Unstructured, amount=10)
    for theirs, ours in zip(*pairs):
        assert torch.equal(theirs.weight_mask, ours.weight_mask)


def test_the_parts_of_a_pruned_tensor_are_not_targets() -> None:
    """Natively refused (it breaks the module); compat lets it through, as torch does."""
    layer = nn.Linear(4, 3)
    pruneplug.prune(layer, "weight", "l1_unstructured", amount=2)
    for part in ("weight_orig", "weight_mask"):
        with pytest.raises(pruneplug.InvalidTargetError, match="prune 'weight' itself"):
            pruneplug.prune(layer, part, "l1_unstructured", amount=2)
    assert int((~layer.weight_mask).sum()) == 2
    torch_layer = nn.Linear(4, 3)
    for lib in (torch_prune, compat):
        module = copy.deepcopy(torch_layer)
        lib.l1_unstructured(module, "weight", amount=2)
        lib.l1_unstructured(module, "weight_orig", amount=2)
        assert module(torch.ones(1, 4)).shape == (1, 3)


def test_remove_suggests_the_pruned_name() -> None:
    layer = nn.Linear(4, 3)
    pruneplug.prune(layer, "weight", "l1_unstructured", amount=2)
    with pytest.raises(pruneplug.NotPrunedError, match="Did you mean 'weight'"):
        pruneplug.remove(layer, "wieght")


def test_remove_works_on_a_parameter_with_overlapping_memory() -> None:
    layer = nn.Linear(4, 3)
    layer.weight = nn.Parameter(torch.arange(4.0).expand(3, 4))  # every row is one memory
    pruneplug.prune(layer, "weight", "custom_from_mask", mask=torch.eye(3, 4, dtype=torch.bool))
    effective = layer.weight.clone()
    pruneplug.remove(layer, "weight")
    assert torch.equal(layer.weight, effective)


def test_complex_weights_are_ranked_by_modulus_as_torch_does() -> None:
    ours, theirs = nn.Linear(2, 2), nn.Linear(2, 2)
    for layer in (ours, theirs):
        layer.weight = nn.Parameter(torch.tensor([[10j, 1.0], [0.5, 3j]], dtype=torch.complex64))
    pruneplug.prune(ours, "weight", "l1_unstructured", amount=2)
    torch_prune.l1_unstructured(theirs, "weight", amount=2)
    assert torch.equal(ours.weight_mask, theirs.weight_mask.bool())


def test_lookups_refuse_what_they_cannot_answer() -> None:
    with pytest.raises(pruneplug.InvalidParametersError, match="kind must be one of"):
        pruneplug.list_strategies(kind="semi")
    with pytest.raises(pruneplug.InvalidTargetError, match="expected a torch.nn.Module"):
        pruneplug.pruning_history(3, "weight")  # type: ignore[arg-type]
    with pytest.raises(pruneplug.StrategyNotFoundError, match="built-ins and plugins stay"):
        pruneplug.unregister("l1_unstructured")


@pytest.mark.parametrize("remove", [pruneplug.remove, torch_prune.remove], ids=["pruneplug", "torch"])
def test_removing_the_last_pruned_tensor_leaves_no_load_hook(remove) -> None:  # type: ignore[no-untyped-def]
    """pruneplug's state_dict and load_state_dict hooks go with the last pruned tensor."""
    layer = nn.Linear(4, 3)

    def hooks() -> list[int]:
        containers = ("_load_state_dict_post_hooks", "_load_state_dict_pre_hooks", "_state_dict_hooks")
        return [len(getattr(layer, name)) for name in containers]

    before = hooks()
    pruneplug.prune(layer, "weight", "l1_unstructured", amount=2, mask_storage="packed")
    pruneplug.prune(layer, "bias", "l1_unstructured", amount=1)
    remove(layer, "weight")
    assert all(now > was for now, was in zip(hooks(), before))  # the bias is still pruned
    remove(layer, "bias")
    assert hooks() == before and type(layer) is nn.Linear


class NoKind(pruneplug.BasePruningMethod):
    PRUNING_TYPE = "bogus"

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        return default_mask


class NamedNoKind(NoKind):
    name = "no_kind"


@pytest.mark.parametrize(("strategy", "label"), [(NoKind, "NoKind"), (NoKind(), "NoKind"), (NamedNoKind, "no_kind")])
def test_a_strategy_class_without_a_valid_pruning_type_is_named_with_its_target(strategy: object, label: str) -> None:
    layer = nn.Linear(3, 2)
    before = snapshot(layer)
    with pytest.raises(pruneplug.IncompatibleStrategyError, match="PRUNING_TYPE") as caught:
        pruneplug.prune(layer, "weight", strategy)  # type: ignore[arg-type]
    assert isinstance(caught.value, TypeError)  # what it was before; code catching that keeps working
    error = caught.value
    assert (error.module_type, error.tensor, error.strategy) == ("Linear", "weight", label)
    assert str(error).startswith(f"Linear.weight, strategy '{label}': strategy class")
    assert_unchanged(before, layer)


# --- prune_global: every error names what is at fault -----------------------------------------------


class _ScoresRaise(pruneplug.UnstructuredStrategy):
    """Raises scoring the tensor with 6 entries only: the second target below."""

    name = "scores_raise"

    def scores(self, t: torch.Tensor, alive: torch.Tensor | None) -> torch.Tensor:
        if t.numel() == 6:
            raise KeyError("boom")
        return t.abs()


class _ScoresRefuse(_ScoresRaise):
    name = "scores_refuse"

    def scores(self, t: torch.Tensor, alive: torch.Tensor | None) -> torch.Tensor:
        if t.numel() == 6:
            raise pruneplug.InvalidParametersError("cannot score this one")
        return t.abs()


class _ScoresMisshapen(_ScoresRaise):
    name = "scores_misshapen"

    def scores(self, t: torch.Tensor, alive: torch.Tensor | None) -> torch.Tensor:
        return t.abs() if t.numel() != 6 else torch.ones(2)


class _FlatRaise(pruneplug.BasePruningMethod):
    PRUNING_TYPE = "unstructured"
    name = "flat_raise"

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        raise KeyError("boom")


def _two() -> tuple[nn.Linear, nn.Linear]:
    torch.manual_seed(0)
    return nn.Linear(3, 3), nn.Linear(3, 2)


def _global_case(name: str) -> tuple[list[nn.Module], dict[str, Any]]:
    """The modules of one failing prune_global call, and its arguments."""
    a, b = _two()
    pairs = [(a, "weight"), (b, "weight")]
    l1: dict[str, Any] = {"strategy": "l1_unstructured", "amount": 1}
    if name == "targets not iterable":
        return [a], {"targets": 3, **l1}
    if name == "no targets":
        return [a], {"targets": [], **l1}
    if name == "malformed target":
        return [a], {"targets": [(a, "weight"), "b.weight"], **l1}
    if name == "half a pair":
        return [a], {"targets": [(a, 3)], **l1}
    if name == "listed twice":
        return [a], {"targets": [(a, "weight"), (a, "weight")], **l1}
    if name == "unknown strategy":
        return [a, b], {"targets": pairs, "strategy": "l2_unstructured", "amount": 1}
    if name == "kind structured":
        return [a, b], {"targets": pairs, "strategy": "ln_structured", "amount": 1, "n": 1}
    if name == "kind global":
        return [a, b], {"targets": pairs, "strategy": "custom_from_mask", "mask": torch.ones(3, 3)}
    if name == "class without a kind":
        return [a, b], {"targets": pairs, "strategy": NoKind}
    if name == "unused importance scores":
        scores = {(a, "weight"): torch.ones(3, 3)}
        return [a, b], {"targets": pairs, "strategy": "random_unstructured", "amount": 1, "importance_scores": scores}
    if name == "mask_storage":
        return [a, b], {"targets": pairs, **l1, "mask_storage": "bits"}
    if name == "amount out of range":
        return [a, b], {"targets": pairs, "strategy": "l1_unstructured", "amount": 1.5}
    if name == "amount larger than all targets":
        return [a, b], {"targets": pairs, "strategy": "l1_unstructured", "amount": 16}
    if name == "a buffer":
        norm = nn.BatchNorm1d(3)
        return [a, norm], {"targets": [(a, "weight"), (norm, "running_mean")], **l1}
    if name == "unknown tensor":
        return [a, b], {"targets": [(a, "weight"), (b, "wieght")], **l1}
    if name == "dotted tensor name":
        model = nn.Sequential(a)
        return [model], {"targets": [(model, "0.weight")], **l1}
    if name == "part of a pruned tensor":
        pruneplug.prune(b, "weight", "l1_unstructured", amount=1)
        return [a, b], {"targets": [(a, "weight"), (b, "weight_orig")], **l1}
    if name == "half-undone prune":
        torch_prune.l1_unstructured(b, "weight", amount=1)
        b._forward_pre_hooks.clear()
        return [a, b], {"targets": pairs, **l1}
    if name == "name taken":
        b.register_buffer("weight_mask", torch.ones(2, 3))
        return [a, b], {"targets": pairs, **l1}
    if name == "tied parameter":
        b.weight = a.weight
        return [a, b], {"targets": pairs, **l1}
    if name == "importance scores not a dict":
        return [a, b], {"targets": pairs, **l1, "importance_scores": [torch.ones(3, 3)]}
    if name == "importance scores of another tensor":
        other = nn.Linear(3, 2)
        return [a, b], {"targets": pairs, **l1, "importance_scores": {(other, "weight"): torch.ones(2, 3)}}
    if name == "importance scores misshapen":
        return [a, b], {"targets": pairs, **l1, "importance_scores": {(b, "weight"): torch.ones(3, 3)}}
    if name == "existing mask not binary":
        torch_prune.custom_from_mask(b, "weight", torch.full((2, 3), 0.5))
        return [a, b], {"targets": pairs, **l1}
    if name == "strategy raises scoring one target":
        return [a, b], {"targets": pairs, "strategy": _ScoresRaise, "amount": 1}
    if name == "strategy refuses one target":
        return [a, b], {"targets": pairs, "strategy": _ScoresRefuse, "amount": 1}
    if name == "strategy scores one target misshapen":
        return [a, b], {"targets": pairs, "strategy": _ScoresMisshapen, "amount": 1}
    if name == "mask-only strategy raises":
        return [a, b], {"targets": pairs, "strategy": _FlatRaise}
    raise AssertionError(name)


#: (case, error type, (module type, tensor, strategy) named; None where no one target is at fault, words).
_GLOBAL_ERRORS: list[tuple[str, type[Exception], tuple[str | None, str | None, str | None], list[str]]] = [
    ("targets not iterable", pruneplug.InvalidTargetError, (None, None, "l1_unstructured"), ["got int"]),
    ("no targets", pruneplug.InvalidTargetError, (None, None, "l1_unstructured"), ["at least one"]),
    ("malformed target", pruneplug.InvalidTargetError, (None, None, "l1_unstructured"), ["target #1"]),
    ("half a pair", pruneplug.InvalidTargetError, ("Linear", None, "l1_unstructured"), ["target #0"]),
    ("listed twice", pruneplug.InvalidTargetError, ("Linear", "weight", "l1_unstructured"), ["listed twice"]),
    ("unknown strategy", pruneplug.StrategyNotFoundError, (None, None, None), ["'l2_unstructured'"]),
    (
        "kind structured",
        pruneplug.IncompatibleStrategyError,
        (None, None, "ln_structured"),
        ["kind 'unstructured'", "'ln_structured' is of kind 'structured'", "pruneplug.prune("],
    ),
    (
        "kind global",
        pruneplug.IncompatibleStrategyError,
        (None, None, "custom_from_mask"),
        ["kind 'unstructured'", "is of kind 'global'", "whole tensor", "per tensor", "pruneplug.prune("],
    ),
    ("class without a kind", pruneplug.IncompatibleStrategyError, (None, None, "NoKind"), ["PRUNING_TYPE"]),
    ("unused importance scores", pruneplug.InvalidParametersError, (None, None, "random_unstructured"), ["scores"]),
    ("mask_storage", pruneplug.InvalidParametersError, (None, None, "l1_unstructured"), ["'bits'"]),
    ("amount out of range", pruneplug.InvalidParametersError, (None, None, "l1_unstructured"), ["[0, 1]"]),
    ("amount larger than all targets", pruneplug.InvalidAmountError, (None, None, "l1_unstructured"), ["15"]),
    ("a buffer", pruneplug.InvalidTargetError, ("BatchNorm1d", "running_mean", "l1_unstructured"), ["buffer"]),
    ("unknown tensor", pruneplug.TensorNotFoundError, ("Linear", "wieght", "l1_unstructured"), ["'weight'"]),
    ("dotted tensor name", pruneplug.InvalidTargetError, ("Sequential", "0.weight", "l1_unstructured"), ["dots"]),
    ("part of a pruned tensor", pruneplug.InvalidTargetError, ("Linear", "weight_orig", "l1_unstructured"), []),
    ("half-undone prune", pruneplug.PruningStateError, ("Linear", "weight", "l1_unstructured"), ["half-undone"]),
    ("name taken", pruneplug.PruningStateError, ("Linear", "weight", "l1_unstructured"), ["'weight_mask'"]),
    ("tied parameter", pruneplug.InvalidTargetError, ("Linear", "weight", "l1_unstructured"), ["tied"]),
    ("importance scores not a dict", pruneplug.InvalidImportanceScoresError, (None, None, "l1_unstructured"), []),
    (
        "importance scores of another tensor",
        pruneplug.InvalidImportanceScoresError,
        ("Linear", "weight", "l1_unstructured"),
        ["not one of the targets", "same module object"],
    ),
    (
        "importance scores misshapen",
        pruneplug.InvalidImportanceScoresError,
        ("Linear", "weight", "l1_unstructured"),
        ["(3, 3) vs (2, 3)"],
    ),
    ("existing mask not binary", pruneplug.InvalidMaskError, ("Linear", "weight", "l1_unstructured"), ["0 and 1"]),
    (
        "strategy raises scoring one target",
        pruneplug.StrategyFailedError,
        ("Linear", "weight", "scores_raise"),
        ["KeyError"],
    ),
    (
        "strategy refuses one target",
        pruneplug.InvalidParametersError,
        ("Linear", "weight", "scores_refuse"),
        ["cannot score this one"],
    ),
    (
        "strategy scores one target misshapen",
        pruneplug.StrategyFailedError,
        ("Linear", "weight", "scores_misshapen"),
        ["2 entries"],
    ),
    (
        "mask-only strategy raises",
        pruneplug.StrategyFailedError,
        (None, None, "flat_raise"),
        ["KeyError", "all 2 targets together"],
    ),
]


@pytest.mark.parametrize(("case", "error", "named", "words"), _GLOBAL_ERRORS, ids=[c[0] for c in _GLOBAL_ERRORS])
def test_every_prune_global_error_names_what_is_at_fault(
    case: str, error: type[Exception], named: tuple[str | None, str | None, str | None], words: list[str]
) -> None:
    """Module type and tensor wherever one target is at fault, the strategy wherever it is resolved; nothing changes."""
    modules, call = _global_case(case)
    before = [snapshot(m) for m in modules]
    with pytest.raises(error) as caught:
        pruneplug.prune_global(**call)
    raised = caught.value
    assert isinstance(raised, pruneplug.PruneplugError)
    assert (raised.module_type, raised.tensor, raised.strategy) == named
    module_type, tensor, strategy = named
    prefix = f"{module_type}.{tensor}" if module_type and tensor else module_type or ""
    assert str(raised).startswith(prefix), str(raised)
    if strategy is not None:
        assert f"strategy '{strategy}'" in str(raised)
    for word in words:
        assert word in str(raised), str(raised)
    for module, state in zip(modules, before):
        assert_unchanged(state, module)
