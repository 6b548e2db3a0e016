"""``FittedTable``: whole words in columns while they fit, one record per row when they do not."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from pruneplug.io.tables import FittedTable

ROWS = [
    ("custom_from_mask", "global", "mask: torch.Tensor", "pruneplug 0.1.0"),
    (
        "random_unstructured",
        "unstructured",
        "amount: int | float\ngenerator: torch.Generator | None = None",
        "pruneplug",
    ),
]
COLUMNS = ("name", "kind", "parameters", "provider")


def rendered(table: FittedTable, width: int) -> list[str]:
    buffer = io.StringIO()
    Console(file=buffer, width=width, soft_wrap=True, markup=False, highlight=False).print(table)
    return buffer.getvalue().splitlines()


@pytest.mark.parametrize("width", [120, 80, 70, 50, 30])
def test_names_are_never_cut(width: int) -> None:
    lines = rendered(FittedTable("Strategies", COLUMNS, ROWS), width)
    words = {word.strip("│┃,;") for line in lines for word in line.split()}
    assert {"custom_from_mask", "random_unstructured", "torch.Generator", "unstructured"} <= words
    assert max(len(line) for line in lines) <= width


def test_a_table_while_whole_words_fit_then_records() -> None:
    table = FittedTable("Strategies", COLUMNS, ROWS)
    assert table.widths(70) is not None and table.widths(60) is None
    assert rendered(table, 60) == [
        "Strategies",
        "custom_from_mask",
        "  kind: global; parameters: mask: torch.Tensor;",
        "  provider: pruneplug 0.1.0",
        "random_unstructured",
        "  kind: unstructured;",
        "  parameters: amount: int | float, generator:",
        "  torch.Generator | None = None; provider: pruneplug",
    ]


def test_markup_is_printed_as_written() -> None:
    lines = rendered(FittedTable("[bold]t[/bold]", ("a", "b"), [("[red]x[/red]", ":smile:")]), 80)
    assert lines[0].rstrip() == "[bold]t[/bold]" and "[red]x[/red]" in lines[4] and ":smile:" in lines[4]


def test_wide_characters_are_measured_in_cells_and_never_folded() -> None:
    table = FittedTable("T", ["tensor", "sparsity"], [["编码器层.权重矩阵参数", "50%"], ["fc1.weight", "10%"]])
    out = io.StringIO()
    Console(width=40, file=out).print(table)
    assert "编码器层.权重矩阵参数" in out.getvalue()
