"""Writing a benchmark's table into docs/benchmarks.md, between its own markers (the other tables stay)."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_between(markers: tuple[str, str], text: str, docs: Path = DOCS) -> None:
    """Replace what lies between ``markers`` in ``docs`` with ``text``; exit naming them if they are missing."""
    start, end = markers
    document = docs.read_text()
    if start not in document or end not in document:
        raise SystemExit(f"{docs}: the markers {start} and {end} are missing")
    before, _, rest = document.partition(start)
    _, _, after = rest.partition(end)
    docs.write_text(f"{before}{start}\n{text}\n{end}{after}")
