"""Read plain text (.txt) and Markdown (.md) files, in any of the encodings they come in on Chinese desks.

Encodings, tried in order, strictly: a BOM (UTF-8, UTF-16, UTF-32); UTF-16 without a BOM when the NUL
bytes fall on every other byte; UTF-8; GB18030 (a superset of GBK and GB2312: files from Chinese Windows),
when what it gives is mostly common Chinese; then charset-normalizer's guess. A binary file (a known magic
number, NUL bytes in no UTF-16 pattern, many control characters) is refused before any of that matters.

A text file is cut at blank lines into parts of at most ``MAX_PART_CHARS`` characters, located by their
lines ("lines 12–40"); a Markdown file at its headings, located by the heading path ("Install › Linux"),
and a long section further at blank lines ("Install › Linux (lines 40–95)").
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

from ingest.document import RejectedFile, binary_kind, check_size
from ingest.parts import Block, OpenedParts, Section, line_range, opened_parts, section_parts, split_block

__all__ = ["decode_text", "open_markdown", "open_text"]

_BOMS = [  # UTF-32 first: its little-endian BOM starts with UTF-16's
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
]
_MAX_CONTROL_SHARE = 0.01
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f-\x9f]")  # not tab, line ends, form feed, escape
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_SAMPLE = 1 << 16


def decode_text(data: bytes, what: str = "a text file", declared: str | None = None) -> tuple[str, str]:
    """(text, encoding) of a text file's bytes; RejectedFile("not {what}: the content looks binary (…)").

    ``declared``: the encoding the file itself names (an HTML page's meta charset), tried after a BOM."""

    def binary(detail: str) -> RejectedFile:
        return RejectedFile(f"not {what}: the content looks binary ({detail})")

    kind = binary_kind(data[:16])
    if kind:
        raise binary(kind)
    encoding = _bom_encoding(data)
    text = _strict(data, encoding) if encoding else None
    if text is None and b"\x00" in data:
        encoding = _utf16_by_nul_bytes(data)
        text = _strict(data, encoding) if encoding else None
        if text is None:
            raise binary("it contains NUL bytes")
    if text is None and declared:
        encoding, text = declared, _strict(data, declared)
        utf8 = _strict(data, "utf-8") if declared != "utf-8" else None
        if utf8 is not None and (declared == "cp1252" or len(_NON_ASCII.findall(utf8[:_SAMPLE])) >= 8):
            encoding, text = "utf-8", utf8  # a wrong label (a page saved again in UTF-8): other bytes hardly fit
    if text is None:
        encoding, text = "utf-8", _strict(data, "utf-8")
    if text is None:
        chinese = _strict(data, "gb18030")
        if chinese is not None and _mostly_common_chinese(chinese):
            encoding, text = "gb18030", chinese
        else:
            text, encoding = _guess(data)
            if text is None and chinese is not None:
                encoding, text = "gb18030", chinese  # decodes, but hardly reads as Chinese; nothing fits better
        if text is None:
            raise binary("no known text encoding fits")
    controls = len(_CONTROL.findall(text[:_SAMPLE]))
    if controls > _MAX_CONTROL_SHARE * min(len(text), _SAMPLE):
        raise binary(f"{controls / min(len(text), _SAMPLE):.0%} control characters")
    return text, encoding


def _bom_encoding(data: bytes) -> str | None:
    return next((encoding for bom, encoding in _BOMS if data.startswith(bom)), None)


def _strict(data: bytes, encoding: str) -> str | None:
    try:
        return data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None


def _utf16_by_nul_bytes(data: bytes) -> str | None:
    """UTF-16 without a BOM: Latin letters, digits, spaces and line ends have a NUL byte, on the same side."""
    sample = data[:_SAMPLE]
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    units = len(sample) // 2
    if max(even, odd) < max(2, 0.01 * units) or min(even, odd) * 20 > max(even, odd):
        return None
    return "utf-16-le" if odd > even else "utf-16-be"


def _mostly_common_chinese(text: str) -> bool:
    """Chinese text in GB18030 is nearly all GB2312 characters; Latin-1 text misread as GB18030 is not."""
    rare = _NON_ASCII.findall(text[:_SAMPLE])
    if not rare:
        return True
    common = len("".join(rare).encode("gb2312", errors="ignore")) // 2
    return common >= 0.8 * len(rare)


def _guess(data: bytes) -> tuple[str | None, str]:
    from charset_normalizer import from_bytes

    results = from_bytes(data)
    best = results.best()
    if best is None:
        return None, ""
    # On a short Western text, several code pages read equally clean; windows-1252 is the likeliest by far.
    western = next((m for m in results if m.encoding == "cp1252" and m.chaos <= best.chaos + 0.01), None)
    best = western or best
    return str(best), best.encoding


def read_text_file(path: Path, max_bytes: int, what: str) -> tuple[str, str, int]:
    """(text, sha256, size): checked, read and decoded; line ends made plain ``\\n``."""
    size = check_size(path, max_bytes)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RejectedFile(f"cannot read the file: {exc.strerror or exc}") from exc
    text, _encoding = decode_text(data, what)
    return text.replace("\r\n", "\n").replace("\r", "\n"), hashlib.sha256(data).hexdigest(), size


NO_TEXT = "no text found (the file holds only blank lines)"


def open_text(path: Path, max_bytes: int, name: str | None = None) -> OpenedParts:
    """Check, decode and cut a plain text file; parts are runs of paragraphs, located "lines A–B"."""
    text, sha, size = read_text_file(path, max_bytes, "a text file")
    lines = text.split("\n")
    sections = [Section((), 0, _line_blocks(lines, 1), body=True)]
    parts = section_parts(sections, line_range, join=_source(lines, markdown=False))
    return opened_parts(path, name, sha, size, parts, NO_TEXT)


def open_markdown(path: Path, max_bytes: int, name: str | None = None) -> OpenedParts:
    """Check, decode and cut a Markdown file at its headings; parts are located by heading path."""
    text, sha, size = read_text_file(path, max_bytes, "a Markdown file")
    lines = text.split("\n")
    parts = section_parts(markdown_sections(lines), line_range, join=_source(lines, markdown=True))
    return opened_parts(path, name, sha, size, parts, NO_TEXT)


def _source(lines: list[str], markdown: bool) -> Callable[[list[Block]], str]:
    """A part's text: its lines as they are in the file, blank lines between paragraphs included."""

    def join(group: list[Block]) -> str:
        text = "\n".join(lines[group[0].first - 1 : group[-1].last])
        return _IMAGE.sub(r"![\1]", text) if markdown else text  # an image's URL (or data URL) says nothing

    return join


_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")


def _line_blocks(lines: list[str], first_number: int) -> list[Block]:
    """Runs of non-blank lines, numbered by line, each cut between lines to fit a part."""
    blocks: list[Block] = []
    run: list[str] = []
    for offset, line in enumerate([*lines, ""]):
        if line.strip():
            run.append(line)
            continue
        if run:
            start = first_number + offset - len(run)
            blocks += split_block(Block(start, start + len(run) - 1, "\n".join(run)), numbered_lines=True)
            run = []
    return blocks


_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r" {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_NOT_PARAGRAPH = re.compile(r" {0,3}(?:[-*+>|#`~<]|\d+[.)]\s|$)|\s{4}")  # list, quote, table, heading, code
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_ATTRIBUTES = re.compile(r"\s*\{[#.][^}]*\}$")  # "{#install}": a heading's id in some dialects


def markdown_sections(lines: list[str]) -> list[Section]:
    """The file cut at its ATX ("## Linux") and setext headings; not inside code fences or front matter."""
    headings: list[tuple[int, int, int, str]] = []  # (first line index, heading lines, level, title)
    fence: str | None = None
    start = _front_matter_end(lines)
    for index in range(start, len(lines)):
        line = lines[index]
        if fence:
            stripped = line.strip()
            if stripped.startswith(fence) and set(stripped) == {fence[0]}:
                fence = None
            continue
        opened = _FENCE.match(line)
        if opened:
            fence = opened.group(1)
            continue
        atx = _ATX.match(line)
        if atx:
            headings.append((index, 1, len(atx.group(1)), _plain(atx.group(2) or "")))
            continue
        setext = _SETEXT.match(line)
        previous = lines[index - 1] if index > start else ""
        if (
            setext
            and previous.strip()
            and not _NOT_PARAGRAPH.match(previous)
            and (index - 1 == start or not lines[index - 2].strip())
            and not (headings and headings[-1][0] == index - 1)
        ):
            headings.append((index - 1, 2, 1 if setext.group(1)[0] == "=" else 2, _plain(previous)))
    sections: list[Section] = []
    first = headings[0][0] if headings else len(lines)
    prelude = _line_blocks(lines[:first], 1)
    sections.append(Section((), 0, prelude, body=bool(prelude)))
    path: list[tuple[int, str]] = []
    for number, (index, size, level, title) in enumerate(headings):
        end = headings[number + 1][0] if number + 1 < len(headings) else len(lines)
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, title or "#" * level))
        heading = Block(index + 1, index + size, "\n".join(lines[index : index + size]))
        body = _line_blocks(lines[index + size : end], index + size + 1)
        sections.append(Section(tuple(title for _level, title in path), level, [heading, *body], bool(body)))
    return sections


def _front_matter_end(lines: list[str]) -> int:
    """Index of the first line after YAML front matter ("---" … "---"), or 0."""
    if lines and lines[0].strip() == "---":
        for index in range(1, len(lines)):
            if lines[index].strip() in ("---", "..."):
                return index + 1
    return 0


def _plain(title: str) -> str:
    """A heading as a location shows it: no link targets, emphasis or code marks, or {#id}."""
    title = _ATTRIBUTES.sub("", _LINK.sub(r"\1", title))
    return re.sub(r"\*\*|__|[*`]", "", title).strip()
