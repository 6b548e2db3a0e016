"""The demo's accuracy tables: every label and number whole at any usual terminal width."""

from __future__ import annotations

import dataclasses
import io

import pytest
from rich.console import Console

from pruneplug.demo import DemoResult
from pruneplug.demo._table import accuracy_tables


@pytest.mark.parametrize("width", [60, 80, 100, 200])
def test_no_label_or_accuracy_is_cut(quick_result: DemoResult, width: int) -> None:
    # Eleven amounts and a long label: more columns than fit at 80, so the amounts are split over tables.
    amounts = tuple(round(0.1 * i, 1) for i in range(11))
    curve = dataclasses.replace(
        quick_result.curves[0],
        label="scored_unstructured (magnitude, a long label)",
        points=[dataclasses.replace(quick_result.curves[0].points[0], amount=a) for a in amounts],
    )
    result = dataclasses.replace(
        quick_result, config=dataclasses.replace(quick_result.config, amounts=amounts), curves=[curve]
    )
    out = io.StringIO()
    Console(width=width, file=out).print(accuracy_tables(result))
    text = out.getvalue()
    assert "…" not in text
    assert text.count("scored_unstructured (magnitude, a long label)") >= 2  # once per table, whole
    headers = [line for line in text.splitlines() if line.lstrip().startswith("strategy")]
    assert {cell for line in headers for cell in line.split()[4:]} == {f"{100 * a:g}" for a in amounts}
