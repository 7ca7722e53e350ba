"""A PDF's outline (its bookmarks) as sections: the heading each chunk sits under.

A chunk from the middle of a manual's section rarely repeats the section's name ("Mxtics", "Startup Files",
"如何确保所有程序使用相同的纸张大小？"), yet that name is often the very word a question uses. Both indexes see
each chunk with its section path in front (``rag.store.indexed_text``): on the eval set that lifted hybrid
recall@5 from 0.830 to 0.864 (English) and 0.934 to 0.945 (Chinese), docs/benchmarks.md section 4.

A page may hold the end of one section and the start of others. The section open where a page starts is the
last outline entry on an earlier page; within the page, a chunk moves on to an entry starting on that page
once the entry's title appears in it (or in an earlier chunk of the page). A PDF without an outline, or with
a broken one, simply has no sections: reading the outline never fails an ingest.
"""

from __future__ import annotations

import bisect
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

DEPTH = 2  # levels of the path kept: "Set-show › Mxtics", "第 11 章… › 11.2. 如何…"
MAX_TITLE = 80  # characters kept of one title
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class PageSections:
    """What the outline says of one page."""

    open_at_start: str = ""  # the section a chunk at the top of the page belongs to ("" before any)
    starting: tuple[tuple[str, str], ...] = ()  # (title, section path) of entries that start on the page


NO_SECTIONS = PageSections()


class Outline:
    def __init__(self, entries: Sequence[tuple[int, tuple[str, ...]]]) -> None:
        """``entries``: (1-based page, title path from the top level) in the outline's order."""
        ordered = sorted(entries, key=lambda entry: entry[0])  # stable: the outline's order within a page
        self._pages = [page for page, _ in ordered]
        self._paths = [path for _, path in ordered]

    def __len__(self) -> int:
        return len(self._pages)

    def page(self, number: int) -> PageSections:
        before = bisect.bisect_left(self._pages, number)
        through = bisect.bisect_right(self._pages, number)
        return PageSections(
            _label(self._paths[before - 1]) if before else "",
            tuple((self._paths[i][-1], _label(self._paths[i])) for i in range(before, through)),
        )


def read_outline(reader, name: str) -> Outline:
    """The outline of a pypdf ``PdfReader``; empty when there is none or it cannot be read."""
    entries: list[tuple[int, tuple[str, ...]]] = []

    def walk(items, parents: tuple[str, ...]) -> None:
        last = None
        for item in items:
            if isinstance(item, list):  # the children of the entry before
                walk(item, (*parents, last) if last else parents)
                continue
            title = _SPACE.sub(" ", str(getattr(item, "title", "") or "")).strip()[:MAX_TITLE]
            try:
                page = reader.get_destination_page_number(item)
            except Exception:  # noqa: BLE001 - one entry pointing nowhere: skip it, keep the others
                page = None
            last = title or None  # its children hang under it even when it points nowhere itself
            if title and page is not None and page >= 0:
                entries.append((page + 1, (*parents, title)))

    try:
        walk(reader.outline, ())
    except Exception as exc:  # noqa: BLE001 - a broken outline costs the sections, never the document
        log.warning("%s: the outline could not be read (%s); chunks get no section names", name, exc)
        return Outline(())
    return Outline(entries)


def sections_of(page: PageSections, texts: Sequence[str]) -> list[str]:
    """The section of each of a page's chunks, in order."""
    current, sections = page.open_at_start, []
    pending = [(_squash(title), path) for title, path in page.starting]
    for text in texts:
        squashed = _squash(text)
        found = [i for i, (title, _) in enumerate(pending) if title and title in squashed]
        if found:  # a later entry of the page found: the ones before it started in this chunk too
            current = pending[found[-1]][1]
            del pending[: found[-1] + 1]
        sections.append(current)
    return sections


def _label(path: tuple[str, ...]) -> str:
    return " › ".join(path[-DEPTH:])


def _squash(text: str) -> str:
    """Compare titles with page text regardless of spacing and case (pypdf spaces text unevenly)."""
    return _SPACE.sub("", text).lower()
