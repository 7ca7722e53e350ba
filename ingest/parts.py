"""What the readers of files without pages share: cutting a document into located parts, and serving them.

A reader turns its file into ``Section``s (the text under one heading, as numbered ``Block``s: source lines
for text and Markdown, paragraphs for Word and HTML); ``section_parts`` packs each section's blocks into parts
of at most ``MAX_PART_CHARS`` characters, never splitting a block line, and names where each part is;
``OpenedParts`` hands them to the pipeline as ``Page``s, like ``OpenedPdf`` does with a PDF's pages.

The text is tidied, not cleaned as PDF text is (``clean_page_text``): these files hold logical lines, not
printed ones, so nothing is joined and indentation (code, nested lists) is kept; only line ends, odd spaces,
control and invisible characters, blank-line runs, and full-width letters and CJK radicals are made plain.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ingest.document import Page, ProgressFn, RejectedFile
from rag.tokenizer import fold_characters

MAX_PART_CHARS = 3000  # a part holds at most about this many characters, unless one line is longer
PATH_SEPARATOR = " › "

_ODD_SPACES = re.compile(r"[\u00a0\u2000-\u200a\u202f\u205f\u3000]")
_INVISIBLE = re.compile(r"[\u200b-\u200d\u2060\ufeff\u00ad]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all but tab and line feed
_BLANK_RUN = re.compile(r"\n{3,}")


def tidy_text(text: str) -> str:
    """Plain line ends and spaces, no control or invisible characters, one blank line at most in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n").replace("\v", "\n")
    text = _CONTROL.sub("", _INVISIBLE.sub("", fold_characters(text)))
    lines = [_ODD_SPACES.sub(" ", line).rstrip() for line in text.split("\n")]
    return _BLANK_RUN.sub("\n\n", "\n".join(lines)).strip("\n")


def has_text(text: str) -> bool:
    return bool(text.strip()) and bool(tidy_text(text).strip())


@dataclass
class Block:
    """A piece a part is never cut inside of: a paragraph (Word, HTML) or a run of source lines (text)."""

    first: int  # its number: the first source line, or the paragraph's position
    last: int
    text: str


@dataclass
class Section:
    """The text under one heading, the heading's own block first; before the first heading, ``path`` is ()."""

    path: tuple[str, ...]
    level: int  # 0 before the first heading
    blocks: list[Block] = field(default_factory=list)
    body: bool = False  # holds more than its heading


def line_range(first: int, last: int) -> str:
    return f"line {first}" if first == last else f"lines {first}–{last}"


def paragraph_range(first: int, last: int) -> str:
    return f"paragraph {first}" if first == last else f"paragraphs {first}–{last}"


def split_block(block: Block, limit: int = MAX_PART_CHARS, numbered_lines: bool = False) -> list[Block]:
    """``block`` cut between its lines into blocks of at most ``limit`` characters (a longer line stays whole).

    ``numbered_lines``: the block's numbers are its lines' (text files), so each piece gets its own; else the
    pieces keep the block's number (the rows of one Word table are one paragraph)."""
    if len(block.text) <= limit or "\n" not in block.text:
        return [block]
    pieces: list[Block] = []
    lines: list[str] = []
    start = size = 0
    for offset, line in enumerate(block.text.split("\n")):
        if lines and size + 1 + len(line) > limit:
            pieces.append(_piece(block, start, offset - 1, lines, numbered_lines))
            lines, start, size = [], offset, 0
        size += len(line) + (1 if lines else 0)
        lines.append(line)
    pieces.append(_piece(block, start, start + len(lines) - 1, lines, numbered_lines))
    return pieces


def _piece(block: Block, start: int, end: int, lines: list[str], numbered_lines: bool) -> Block:
    if numbered_lines:
        return Block(block.first + start, block.first + end, "\n".join(lines))
    return Block(block.first, block.last, "\n".join(lines))


def pack(blocks: Sequence[Block], limit: int = MAX_PART_CHARS) -> list[list[Block]]:
    """Consecutive blocks grouped greedily into parts of at most ``limit`` characters (a longer block alone)."""
    groups: list[list[Block]] = []
    current: list[Block] = []
    size = 0
    for block in blocks:
        if current and size + 2 + len(block.text) > limit:
            groups.append(current)
            current, size = [], 0
        size += len(block.text) + (2 if current else 0)
        current.append(block)
    if current:
        groups.append(current)
    return groups


def merge_heading_only(sections: Sequence[Section]) -> list[Section]:
    """A heading with nothing under it but a deeper heading goes into that heading's part; empty ones go."""
    merged: list[Section] = []
    pending: list[Block] = []
    for index, section in enumerate(sections):
        blocks = pending + section.blocks
        pending = []
        if not blocks:
            continue
        following = sections[index + 1] if index + 1 < len(sections) else None
        if not section.body and following is not None and following.level > section.level:
            pending = blocks
            continue
        merged.append(Section(section.path, section.level, blocks, section.body))
    return merged


def section_parts(
    sections: Sequence[Section],
    describe: Callable[[int, int], str],
    prefix: str = "",
    join: Callable[[list[Block]], str] | None = None,
    limit: int = MAX_PART_CHARS,
) -> list[tuple[str, str]]:
    """(location, text) of every part, in order.

    A part's location is its heading path ("Install › Linux"), with ``describe(first, last)`` of its blocks
    when the section took several parts ("Install › Linux (lines 40–95)"), or that alone before the first
    heading ("lines 1–12"). ``prefix`` goes before a heading path ("section: ")."""
    join = join or (lambda group: "\n\n".join(block.text for block in group))
    parts: list[tuple[str, str]] = []
    for section in merge_heading_only(sections):
        groups = pack(section.blocks, limit)
        for group in groups:
            where = describe(group[0].first, group[-1].last)
            if section.path:
                heading = prefix + PATH_SEPARATOR.join(section.path)
                where = heading if len(groups) == 1 else f"{heading} ({where})"
            parts.append((where, join(group)))
    return parts


@dataclass
class OpenedParts:
    """A file without pages that passed its reader's checks and opened, cut into located parts.

    The parts were found when the file was opened (their count is ``page_count``); their text is tidied as
    they are read."""

    path: Path
    name: str
    sha256: str
    size: int
    page_count: int
    parts: list[tuple[str, str]]  # (location, raw text)
    no_text: str  # the reason given when no part has text: "no text found (…)"

    def pages(self, on_page: ProgressFn | None = None) -> Iterator[Page]:
        """Parts with text, in order, numbered from 1. Raises RejectedFile at the end if none had any."""
        on_page = on_page or (lambda _done, _total: None)
        found = 0
        for index, (location, raw) in enumerate(self.parts):
            on_page(index, self.page_count)
            text = tidy_text(raw)
            if text.strip():
                found += 1
                yield Page(number=index + 1, text=text, location=location)
        on_page(self.page_count, self.page_count)
        if not found:
            raise RejectedFile(self.no_text)


def opened_parts(
    path: Path, name: str | None, sha256: str, size: int, parts: list[tuple[str, str]], no_text: str
) -> OpenedParts:
    """The opened file; RejectedFile(``no_text``) now when no part has any text (checks first)."""
    if not any(has_text(text) for _location, text in parts):
        raise RejectedFile(no_text)
    return OpenedParts(path, name or path.name, sha256, size, len(parts), parts, no_text)
