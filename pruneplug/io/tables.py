"""Tables for people that never cut a name: whole words in columns, or one record per row.

Rich squeezes a table into the console by shortening columns, which cuts
strategy, tensor and plugin names (``custom_from_ma…``) or folds them
mid-word at 80 columns, the width of every pipe. A :class:`FittedTable`
instead wraps cells only between words, giving every column at least its
longest word; when even that is wider than the console it prints one
record per row -- the first cell, then ``column: value; ...`` indented
under it -- so names stay whole at any width. Needs rich (the ``cli`` extra).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult
    from rich.table import Table

__all__ = ["FittedTable"]

Justify = Literal["left", "right"]


def _longest(texts: Sequence[str], split: bool) -> int:
    """The widest word (``split``) or line of ``texts``, in terminal cells (a CJK character takes two)."""
    from rich.cells import cell_len

    parts = [part for text in texts for part in (text.split() if split else text.splitlines())]
    return max((cell_len(part) for part in parts), default=1)


class FittedTable:
    """A rich renderable: a table if its columns fit with whole words, else a list of records.

    Args:
        title: shown above, as rich would (literal text, never markup).
        columns: the headers.
        rows: the cells, as plain text (never read as markup); a cell may hold several lines.
        justify: per header, ``"right"`` for numbers; default left.
    """

    def __init__(
        self,
        title: str | None,
        columns: Sequence[str],
        rows: Sequence[Sequence[str]],
        *,
        justify: Mapping[str, Justify] | None = None,
    ) -> None:
        self.title = title
        self.columns = tuple(columns)
        self.rows = [tuple(row) for row in rows]
        self.justify = dict(justify or {})

    def _cells(self, index: int) -> list[str]:
        return [self.columns[index], *(row[index] for row in self.rows)]

    def widths(self, width: int) -> list[int] | None:
        """Each column's content width in a table ``width`` wide, or ``None`` if whole words do not fit.

        Every column gets its longest word; what is left goes to the columns
        whose longest line is longer, in turn, one character at a time.
        """
        least = [_longest(self._cells(i), split=True) for i in range(len(self.columns))]
        most = [max(low, _longest(self._cells(i), split=False)) for i, low in enumerate(least)]
        room = width - (3 * len(self.columns) + 1)  # borders and one space of padding either side of each cell
        if sum(least) > room:
            return None
        widths = list(least)
        spare = room - sum(widths)
        while spare > 0:
            wanting = [i for i, (now, top) in enumerate(zip(widths, most)) if now < top]
            if not wanting:
                break
            for i in wanting[:spare]:
                widths[i] += 1
            spare -= min(spare, len(wanting))
        return widths

    def table(self, widths: Sequence[int]) -> Table:
        """The table, with the given content width for each column."""
        from rich.table import Table
        from rich.text import Text

        title = None if self.title is None else Text(self.title, no_wrap=False, overflow="fold")
        table = Table(title=title, title_justify="left")
        for header, width in zip(self.columns, widths):
            table.add_column(Text(header), justify=self.justify.get(header, "left"), width=width, overflow="fold")
        for row in self.rows:
            table.add_row(*(Text(cell) for cell in row))
        return table

    def records(self, width: int) -> Iterator[str]:
        """The rows as records ``width`` wide: the first cell, then ``column: value; ...`` indented under it.

        A field starts a new line when it does not fit on the current one;
        lines break between words only, and a single word longer than a line
        is left whole (too long) rather than cut.
        """
        width = max(width, 20)
        if self.title is not None:
            yield from textwrap.wrap(self.title, width=width, break_long_words=False, break_on_hyphens=False)
        for row in self.rows:
            yield from row[0].splitlines() or [""]
            line = ""
            for header, cell in zip(self.columns[1:], row[1:]):
                field = f"{header}: {', '.join(cell.splitlines())};"
                if line and len(line) + 1 + len(field) <= width:
                    line += " " + field
                    continue
                if line:
                    yield line
                *full, line = textwrap.wrap(
                    field,
                    width=width,
                    initial_indent="  ",
                    subsequent_indent="  ",
                    break_long_words=False,
                    break_on_hyphens=False,
                )
                yield from full
            if line:
                yield line.removesuffix(";")

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.text import Text

        widths = self.widths(options.max_width)
        if widths is not None:
            yield self.table(widths)
            return
        for line in self.records(options.max_width):
            yield Text(line, no_wrap=True, overflow="ignore")
