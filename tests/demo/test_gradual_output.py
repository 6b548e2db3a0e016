"""The gradual comparison's files and printed table: one row per method and target, written with the rest."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from pruneplug.demo import (
    GRADUAL_PLOT_FILE,
    GRADUAL_TABLE_FILE,
    DemoResult,
    GradualComparison,
    gradual_markdown,
    write_outputs,
)
from pruneplug.demo._gradual_output import TABLE_HEADER
from pruneplug.demo._table import gradual_table


def _gradual(result: DemoResult) -> GradualComparison:
    assert result.gradual is not None
    return result.gradual


def test_the_markdown_table_has_a_row_per_method_and_target(quick_result: DemoResult) -> None:
    comparison = _gradual(quick_result)
    assert comparison.settings.amounts == (0.9, 0.95)
    lines = gradual_markdown(comparison).splitlines()
    table = [line for line in lines if line.startswith("| ")]
    assert table[0] == "| " + " | ".join(TABLE_HEADER) + " |"
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]
    assert [row[:2] for row in rows] == [
        ["dense", "0"],
        ["one-shot", "90"],
        ["gradual (cubic)", "90"],
        ["one-shot", "95"],
        ["gradual (cubic)", "95"],
    ]
    assert [row[2] for row in rows] == ["0.0", "90.0", "90.0", "95.0", "95.0"]  # sparsity reached, %
    assert [row[4] for row in rows] == [f"{100 * r.accuracy:.1f}" for r in comparison.rows]


def test_the_comparison_is_written_with_the_other_outputs(quick_result: DemoResult, tmp_path: Path) -> None:
    written = write_outputs(quick_result, tmp_path)
    assert written["gradual_plot"] == tmp_path / GRADUAL_PLOT_FILE
    assert written["gradual_plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert written["gradual_table"].read_text() == gradual_markdown(_gradual(quick_result))
    payload = json.loads(written["json"].read_text())
    assert payload["gradual"] == json.loads(json.dumps(dataclasses.asdict(_gradual(quick_result))))


def test_without_the_comparison_no_file_is_written_for_it(quick_result: DemoResult, tmp_path: Path) -> None:
    written = write_outputs(dataclasses.replace(quick_result, gradual=None), tmp_path)
    assert set(written) == {"json", "plot"}
    assert not (tmp_path / GRADUAL_TABLE_FILE).exists() and not (tmp_path / GRADUAL_PLOT_FILE).exists()
    assert json.loads(written["json"].read_text())["gradual"] is None


@pytest.mark.parametrize("width", [60, 100])
def test_the_printed_table_is_whole_at_60_columns(quick_result: DemoResult, width: int) -> None:
    out = io.StringIO()
    Console(width=width, file=out).print(*gradual_table(_gradual(quick_result)))
    text = out.getvalue()
    rows = [
        line.split()
        for line in text.splitlines()
        if line.startswith(("dense ", "one-shot ", "gradual ")) and line.rstrip()[-1].isdigit()
    ]
    assert "…" not in text and len(rows) == 5
    assert [row[-5] for row in rows] == ["0.0", "90.0", "90.0", "95.0", "95.0"]  # the sparsity column, whole
