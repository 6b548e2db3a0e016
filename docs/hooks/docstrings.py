"""Griffe extension: pruneplug's docstrings (Google sections, reST inline markup) as Markdown.

pruneplug's docstrings are written for ``help()`` and doctest: Google-style
sections, with reST inline markup (``:class:`X` ``, ``::`` literal blocks,
`` `text <url>`_ `` links) and bare ``>>>`` examples. mkdocstrings renders
docstrings as Markdown, where those come out as literal roles and nested
block quotes. ``mkdocs.yml`` loads this extension so the API pages read well
without changing a docstring:

* ``>>>`` examples become fenced ``pycon`` blocks;
* a paragraph ending in ``::`` ends in ``:`` (its indented block already is
  a Markdown code block);
* ``:role:`target` `` becomes a code span (not a cross-reference: targets
  outside the rendered API would break the strict build);
* `` `text <url>`_ `` becomes ``[text](url)``;
* a ``Raises:`` item naming several exceptions over several lines
  (``A, B,`` / ``C: why``) is joined onto one line, as Google style wants.

The conversion is a plain function (:func:`to_markdown`), tested by its
doctests in the suite; griffe is imported only when MkDocs loads the extension.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["to_markdown", "ReSTInlineToMarkdown"]

_ROLE = re.compile(r":(?:[a-z]+:)?[a-z]+:`~?([^`<]+?)(?:\s*<[^>]+>)?`")
_REST_LINK = re.compile(r"`([^`<]+?)\s*<(https?://[^>]+)>`__?")


def _fence_doctests(lines: list[str]) -> list[str]:
    out: list[str] = []
    in_example = in_fence = False
    indent = ""
    for line in lines:
        stripped = line.lstrip()
        if stripped.startswith("```"):
            in_fence = not in_fence
        if in_example and not stripped:
            out += [f"{indent}```", line]
            in_example = False
            continue
        if not in_example and not in_fence and stripped.startswith(">>>"):
            indent = line[: len(line) - len(stripped)]
            out.append(f"{indent}```pycon")
            in_example = True
        out.append(line)
    if in_example:
        out.append(f"{indent}```")
    return out


def _join_raises(lines: list[str]) -> list[str]:
    """Join a ``Raises:`` item whose list of exceptions wraps (a line ending in a comma) with the next line."""
    out: list[str] = []
    in_raises = False
    for line in lines:
        stripped = line.strip()
        if stripped == "Raises:":
            in_raises = True
        elif not stripped:
            in_raises = False
        elif in_raises and out and out[-1].rstrip().endswith(",") and ":" not in out[-1]:
            out[-1] = f"{out[-1].rstrip()} {stripped}"
            continue
        out.append(line)
    return out


def to_markdown(docstring: str) -> str:
    """A docstring's reST inline markup and bare doctests, as Markdown.

    >>> print(to_markdown("See :func:`~pruneplug.prune` and `pluggy <https://pluggy.rtfd.io>`_::\\n\\n    x = 1"))
    See `pruneplug.prune` and [pluggy](https://pluggy.rtfd.io):
    <BLANKLINE>
        x = 1
    >>> to_markdown("Raises:\\n    A, B,\\n    C: why.").splitlines()
    ['Raises:', '    A, B, C: why.']
    >>> to_markdown("Text.\\n\\n>>> 1 + 1\\n2").splitlines()
    ['Text.', '', '```pycon', '>>> 1 + 1', '2', '```']
    """
    text = _REST_LINK.sub(r"[\1](\2)", _ROLE.sub(r"`\1`", docstring))
    lines = []
    for line in text.split("\n"):
        if line.rstrip().endswith("::"):
            stripped = line.rstrip()[:-2].rstrip()
            line = f"{stripped}:" if stripped else ""
        lines.append(line)
    return "\n".join(_fence_doctests(_join_raises(lines)))


try:
    from griffe import Extension
except ImportError:  # imported without the docs extra (pytest collects this file for its doctests)
    Extension = object  # type: ignore[assignment,misc]


class ReSTInlineToMarkdown(Extension):  # type: ignore[misc,valid-type]
    """Rewrite every loaded object's docstring with :func:`to_markdown` before it is parsed."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        """Called by griffe for each object it loads."""
        del kwargs
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
