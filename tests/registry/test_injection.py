"""A registry is self-contained: its built-ins are given to it, and its strategies use its own scores.

Nothing reaches for the default registry behind a registry's back: the
scored strategies validate and compute with the importance scores of the
registry that hands them out, whichever registry is the default.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

import pruneplug
from pruneplug.hookspecs import hookimpl
from pruneplug.registry import StrategyRegistry
from pruneplug.strategies import ScoredUnstructured
from pruneplug.testing import check_strategy


def _square(values: torch.Tensor, target: pruneplug.ScoreTarget | None) -> torch.Tensor:
    return values * values


class _SquarePlugin:
    """Adds the importance score ``square``."""

    @staticmethod
    @hookimpl
    def pruneplug_add_importance_scores() -> list[pruneplug.ImportanceScore]:
        return [pruneplug.ImportanceScore("square", _square, elementwise=True)]


def _with_square() -> pruneplug.Registry:
    registry = pruneplug.Registry(load_entry_points=False)
    registry.plugin_manager.register(_SquarePlugin(), name="square-plugin")
    return registry


def test_a_registry_runs_its_own_score_while_the_default_lacks_it() -> None:
    """``scored_*`` from a registry with a score the default registry lacks: validated and computed with it."""
    own = _with_square()
    with pruneplug.use_registry(pruneplug.Registry(load_entry_points=False)) as default:
        assert "square" not in default.score_names()
        layer = nn.Linear(3, 2, bias=False)
        with torch.no_grad():
            layer.weight.copy_(torch.tensor([[3.0, -1.0, 2.0], [-4.0, 0.5, 1.5]]))
        pruneplug.prune(layer, "weight", own.get("scored_unstructured"), score="square", amount=2)
        assert layer.weight_mask.tolist() == [[True, False, True], [True, False, True]]
        method = own.get("scored_structured").create(score="square", amount=1, dim=0, reduce="max")
        assert method.compute_mask(layer.weight.detach(), torch.ones(2, 3, dtype=torch.bool)).tolist() == [
            [False, False, False],
            [True, True, True],
        ]
        with pytest.raises(pruneplug.InvalidParametersError, match="no importance score named 'square'"):
            pruneplug.prune(layer, "weight", "scored_unstructured", score="square", amount=1)


def test_a_score_of_the_default_registry_is_invisible_to_another_registry() -> None:
    """A separate registry validates against its own scores, not the default registry's."""
    with pruneplug.use_registry(_with_square()):
        pruneplug.prune(nn.Linear(3, 2), "weight", "scored_unstructured", score="square", amount=1)
        pruneplug.prune(nn.Linear(3, 2), "weight", ScoredUnstructured, score="square", amount=1)  # class: the default's
        other = pruneplug.Registry(load_entry_points=False)
        for name in ("scored_unstructured", "scored_structured"):
            with pytest.raises(pruneplug.InvalidParametersError, match="no importance score named 'square'"):
                other.get(name).validate({"amount": 1, "score": "square"})


def test_without_a_registry_only_the_builtin_scores_are_known() -> None:
    """Constructed directly, a scored strategy knows the built-in scores, and says how to reach the others."""
    with pruneplug.use_registry(_with_square()):
        assert ScoredUnstructured(1, "taylor").score == "taylor"
        with pytest.raises(pruneplug.ScoreNotFoundError, match="no importance score named 'square'.*get_score"):
            ScoredUnstructured(1, "square")
        direct = ScoredUnstructured(1, pruneplug.get_registry().get_score("square"))
        assert direct.score == "square" and direct.describe() == "scored_unstructured(amount=1, score='square')"


def test_the_builtins_are_given_to_the_registry() -> None:
    """``pruneplug.Registry`` gets pruneplug's strategies by default; any other built-in plugin can replace them."""

    class Keep(pruneplug.BasePruningMethod):
        PRUNING_TYPE = "unstructured"
        name = "keep"

        def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
            return default_mask

    class Mine:
        @staticmethod
        @hookimpl
        def pruneplug_add_strategies() -> list[type]:
            return [Keep]

    bare = StrategyRegistry(load_entry_points=False)
    assert bare.names() == [] and bare.score_names() == []
    assert [p.name for p in bare.plugins()] == []
    given = pruneplug.Registry(builtins=Mine(), load_entry_points=False)
    assert given.names() == ["keep"] and given.get("keep").provider == "pruneplug"
    assert "l1_unstructured" in pruneplug.Registry(load_entry_points=False).names()


def test_the_api_page_shows_every_method_registry_inherits() -> None:
    """``pruneplug.Registry``'s methods live in its base class: the API page must list each one to render it."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "reference" / "api" / "pruneplug.md").read_text()
    listed = re.search(r"^\s*inherited_members: \[(.*)\]$", page, re.MULTILINE)
    assert listed is not None
    public = {name for name in vars(StrategyRegistry) if not name.startswith("_")}
    assert {name.strip() for name in listed[1].split(",")} == public


def test_the_conformance_kit_checks_a_class_with_the_current_registrys_scores() -> None:
    """``check_strategy(SomeClass, {"score": ...})`` validates the class's parameters as the current registry
    does: a score only that registry has is known to it."""
    with pruneplug.use_registry(_with_square()):
        report = check_strategy(ScoredUnstructured, {"score": "square"}, checks=["count"], max_examples=3)
    assert "count" in report.passed


def test_a_scored_strategy_built_without_a_registry_says_only_built_in_scores_were_searched() -> None:
    """Built directly, a scored strategy knows the built-in scores only; the error says so and how to pass one."""
    with pruneplug.use_registry(_with_square()), pytest.raises(pruneplug.ScoreNotFoundError) as caught:
        ScoredUnstructured(0.5, score="square")
    message = str(caught.value)
    assert "Built-in scores: magnitude, taylor." in message and "Registered" not in message
    assert "get_score(name)" in message
    own = _with_square()
    assert ScoredUnstructured(0.5, score=own.get_score("square")).score == "square"
