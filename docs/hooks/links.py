"""MkDocs hook: links from a page to repository files outside ``docs/`` point at the repository.

Guides link to files next to the docs -- ``[the plugin](../plugins/pruneplug-nm)``
-- which work when reading the Markdown on GitHub but are not part of the
site, so MkDocs (rightly, in strict mode) rejects them. This hook rewrites
each such relative link, when its target exists in the repository, to the
file or folder on the repository's web page (``repo_url``, on the branch
named in ``edit_uri``). A link to a target that does not exist anywhere is
left alone, so MkDocs still reports it.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.pages import Page

__all__ = ["repository_links", "on_page_markdown"]

_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s#]+)(?P<anchor>#[^)\s]*)?\)")
_FENCE = re.compile(r"^(`{3,}(?=[^`]*$)|~{3,})")  # a backtick fence's info string has no backticks
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")


def repository_links(markdown: str, page_path: Path, docs_dir: Path, repository: str, branch: str) -> str:
    """Rewrite relative links of ``markdown`` (the page at ``page_path``) that leave ``docs_dir``.

    >>> import tempfile
    >>> scratch = tempfile.TemporaryDirectory()
    >>> root = Path(scratch.name); (root / "docs").mkdir(); (root / "plugins").mkdir()
    >>> fenced = "```` ```python ```` [x](../plugins)\\n```\\n[y](../plugins)\\n```"
    >>> print(repository_links(fenced, root / "docs" / "x.md", root / "docs", "https://github.com/o/r", "main"))
    ```` ```python ```` [x](https://github.com/o/r/tree/main/plugins)
    ```
    [y](../plugins)
    ```
    >>> text = "[`a`](../plugins) [b](other.md) [c](../missing) `[d](../plugins)`"
    >>> repository_links(text, root / "docs" / "x.md", root / "docs", "https://github.com/o/r", "main")
    '[`a`](https://github.com/o/r/tree/main/plugins) [b](other.md) [c](../missing) `[d](../plugins)`'
    >>> scratch.cleanup()
    """
    root = docs_dir.resolve().parent

    def rewrite(match: re.Match[str], code: list[range]) -> str:
        target = match.group("target")
        if any(match.start() in span for span in code) or "://" in target or target.startswith(("/", "mailto:")):
            return match.group(0)
        resolved = (page_path.parent / target).resolve()
        if resolved.is_relative_to(docs_dir.resolve()) or not resolved.is_relative_to(root) or not resolved.exists():
            return match.group(0)
        kind = "tree" if resolved.is_dir() else "blob"
        url = f"{repository.rstrip('/')}/{kind}/{branch}/{resolved.relative_to(root).as_posix()}"
        return f"[{match.group('text')}]({url}{match.group('anchor') or ''})"

    out: list[str] = []
    fence = ""  # the open fence's marker, "" outside code blocks
    for line in markdown.split("\n"):
        opening = _FENCE.match(line.lstrip())
        if fence:
            if opening and opening.group(1).startswith(fence) and not line.strip().strip(fence[0]):
                fence = ""
            out.append(line)
            continue
        if opening:
            fence = opening.group(1)
            out.append(line)
            continue
        code = [range(span.start(), span.end()) for span in _CODE_SPAN.finditer(line)]  # links shown as code
        out.append(_LINK.sub(functools.partial(rewrite, code=code), line))
    return "\n".join(out)


def on_page_markdown(markdown: str, *, page: Page, config: MkDocsConfig, **kwargs: Any) -> str:
    """Rewrite the page's links to repository files before MkDocs checks its links."""
    del kwargs
    repository = config.repo_url
    if not repository or page.file.abs_src_path is None:
        return markdown
    edit_uri = config.edit_uri or ""
    branch_match = re.match(r"(?:edit|blob|tree)/([^/]+)/", edit_uri)
    branch = branch_match.group(1) if branch_match else "main"
    return repository_links(markdown, Path(page.file.abs_src_path), Path(config.docs_dir), repository, branch)
