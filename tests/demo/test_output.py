"""The demo's plot: every curve can be told apart, from the others and from the reference lines."""

from __future__ import annotations

import io
import itertools
from typing import Any

import pytest

from pruneplug.demo import DemoResult
from pruneplug.demo._output import _draw_plot

MIN_COLOUR_DISTANCE = 0.2  # in RGB space, 0..sqrt(3): matplotlib's "grey" and tab10's grey are 0.007 apart
REFERENCE = "dense network"


def _drawn_lines(result: DemoResult, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The lines of the plot's first panel, by label, as ``_draw_plot`` drew them."""
    from matplotlib.figure import Figure

    drawn: list[Figure] = []
    monkeypatch.setattr(Figure, "savefig", lambda figure, *args, **kwargs: drawn.append(figure))
    _draw_plot(result, io.BytesIO())
    (figure,) = drawn
    return {line.get_label(): line for line in figure.axes[0].get_lines()}


def _distance(a: Any, b: Any) -> float:
    from matplotlib.colors import to_rgb

    return float(sum((x - y) ** 2 for x, y in zip(to_rgb(a), to_rgb(b))) ** 0.5)


def test_every_curve_has_a_colour_of_its_own_far_from_the_reference(
    quick_result: DemoResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = _drawn_lines(quick_result, monkeypatch)
    curves = [lines[curve.label] for curve in quick_result.curves]
    assert len(curves) >= 10  # the built-ins and the installed plugins
    for a, b in itertools.combinations(curves, 2):
        assert _distance(a.get_color(), b.get_color()) >= MIN_COLOUR_DISTANCE, (a.get_label(), b.get_label())
    reference = lines[REFERENCE]
    for line in curves:
        assert _distance(line.get_color(), reference.get_color()) >= MIN_COLOUR_DISTANCE, line.get_label()
    # ... and it is a pale band: translucent, wider than any curve (the curves are opaque).
    assert reference.get_alpha() < 1 and all(line.get_alpha() in (None, 1) for line in curves)
    assert reference.get_linewidth() > max(line.get_linewidth() for line in curves)


def test_a_curve_another_lies_on_is_drawn_wider_around_it(
    quick_result: DemoResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = _drawn_lines(quick_result, monkeypatch)
    under, over = lines["l1_unstructured"], lines["scored_unstructured (magnitude)"]
    assert list(under.get_ydata()) == list(over.get_ydata())  # the same ranking: the same curve
    assert under.get_linewidth() > over.get_linewidth() and under.get_markersize() > over.get_markersize()
    assert under.get_zorder() <= over.get_zorder()
