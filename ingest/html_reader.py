"""Read a saved web page (.html, .htm) as the text a browser shows, cut at its h1–h3 headings.

The encoding comes from a BOM, then the page's own ``<meta charset>`` (or http-equiv Content-Type, or an
XML declaration), then the detection text files get (``decode_text``). Scripts, styles, ``<noscript>``,
``<template>``, SVG, navigation bars and the head (but its ``<title>``, which opens the first part) are
dropped; block elements start new paragraphs, ``<br>``, list items and table rows new lines, table cells
are joined with " | ", ``<pre>`` keeps its lines. A part is located by its heading path ("Install › Linux"),
with the paragraphs it holds when a section took several parts ("Install › Linux (paragraphs 40–55)");
text before the first heading is located by paragraphs alone ("paragraphs 1–3").
"""

from __future__ import annotations

import codecs
import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path

from ingest.document import RejectedFile, check_size
from ingest.parts import Block, OpenedParts, Section, opened_parts, paragraph_range, section_parts, split_block
from ingest.text_reader import decode_text

__all__ = ["html_sections", "open_html"]

NO_TEXT = "no text found (the page shows no text: only scripts, images or markup)"

_SKIPPED = {"script", "style", "noscript", "template", "svg", "nav", "iframe", "object", "canvas", "select"}
_HEAD_ONLY = {"meta", "link", "title", "base", "script", "style", "noscript", "template", "head", "html"}
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3}
_BLOCKS = {
    "address", "article", "aside", "blockquote", "body", "caption", "center", "details", "dialog", "div", "dl",
    "fieldset", "figcaption", "figure", "footer", "form", "h4", "h5", "h6", "header", "hr", "legend", "main",
    "menu", "ol", "p", "pre", "section", "summary", "table", "tbody", "tfoot", "thead", "ul",
}  # fmt: skip
_LINES = {"br", "dd", "dt", "li", "tr", "option"}
_CELLS = {"td", "th"}
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef"
_BREAK_IN_CHINESE = re.compile(rf"(?<=[{_HAN}])[ \t\r\n]*\n[ \t\r\n]*(?=[{_HAN}])")  # a browser shows no space
_SPACES = re.compile(r"[ \t\r\n\f]+")

_META_CHARSET = re.compile(rb"<meta[^>]*?charset\s*=\s*[\"']?\s*([A-Za-z0-9_:.\-]+)", re.IGNORECASE)
_XML_ENCODING = re.compile(rb"<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9_.\-]+)", re.IGNORECASE)
# What browsers decode these labels as (WHATWG Encoding): GB2312 and GBK pages use GBK's characters, and
# GB18030 holds them all; Latin-1 and ASCII pages are windows-1252; a page in UTF-16 has a BOM.
_LABELS = {
    **dict.fromkeys(["gb2312", "gbk", "x-gbk", "gb_2312-80", "csgb2312", "chinese", "gb18030", "euc-cn"], "gb18030"),
    **dict.fromkeys(["iso-8859-1", "iso8859-1", "latin1", "l1", "ascii", "us-ascii", "windows-1252"], "cp1252"),
    **dict.fromkeys(["utf-16", "utf-16le", "utf-16be", "unicode"], "utf-8"),
}


def declared_charset(head: bytes) -> str | None:
    """The encoding a page names in its first bytes, as a Python codec name; None if none or unknown."""
    match = _META_CHARSET.search(head) or _XML_ENCODING.search(head)
    if not match:
        return None
    label = match.group(1).decode("ascii").lower()
    label = _LABELS.get(label, label)
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def open_html(path: Path, max_bytes: int, name: str | None = None) -> OpenedParts:
    """Check, decode and cut a web page; raises RejectedFile for empty, oversized, binary or textless files."""
    size = check_size(path, max_bytes)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RejectedFile(f"cannot read the file: {exc.strerror or exc}") from exc
    declared = declared_charset(data[:8192])
    text, _encoding = decode_text(data, "an HTML page", declared=declared)
    parts = section_parts(html_sections(text), paragraph_range)
    return opened_parts(path, name, hashlib.sha256(data).hexdigest(), size, parts, NO_TEXT)


def html_sections(markup: str) -> list[Section]:
    """The page's visible text as sections at its h1–h3 headings, paragraphs numbered from 1."""
    extractor = _Extractor()
    extractor.feed(markup)
    extractor.close()
    return extractor.finish()


class _Extractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections = [Section((), 0)]
        self.path: list[tuple[int, str]] = []
        self.number = 0  # paragraphs so far
        self.lines: list[str] = []  # the paragraph being read, line by line
        self.pieces: list[str] = []  # the line being read
        self.skipping: list[str] = []  # the skipped elements we are inside
        self.in_head = False
        self.title: list[str] | None = None  # while inside <title>
        self.titled = False
        self.heading: tuple[int, list[str]] | None = None  # while inside h1–h3: (level, its text)
        self.pre = 0
        self.cells = 0  # cells so far in this table row
        self.in_cell = False  # inside <td> or <th>: a paragraph there is no new line of the page

    # -- the tags

    def handle_starttag(self, tag: str, attrs) -> None:
        if self.skipping:
            if tag == self.skipping[-1]:
                self.skipping.append(tag)
            return
        if tag in _SKIPPED:
            self.skipping.append(tag)
            return
        if tag == "head":
            self.in_head = True
        elif self.in_head and tag not in _HEAD_ONLY:
            self.in_head = False  # a head never closed: the body has begun
        if tag == "title":
            self.title = []
        elif tag in _HEADINGS:
            self._end_heading()
            self._end_paragraph()
            self.heading = (_HEADINGS[tag], [])
        elif self.heading is not None:
            if tag in _LINES or tag in _BLOCKS:
                self.heading[1].append(" ")
        elif tag == "tr":
            self._end_line()
            self.cells, self.in_cell = 0, False
        elif tag in _CELLS:
            if self.cells:
                self.pieces.append(" | ")
            self.cells += 1
            self.in_cell = True
        elif self.in_cell and (tag in _BLOCKS or tag in _LINES):
            self.pieces.append(" ")
        elif tag in _BLOCKS:
            self._end_paragraph()
            if tag == "pre":
                self.pre += 1
        elif tag in _LINES:
            self._end_line()
            if tag == "li":
                self.pieces.append("- ")

    def handle_startendtag(self, tag: str, attrs) -> None:
        if tag in _SKIPPED:
            return  # <svg/>: nothing inside
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if self.skipping:
            if tag == self.skipping[-1]:
                self.skipping.pop()
            return
        if tag == "head":
            self.in_head = False
        elif tag == "title" and self.title is not None:
            title = _collapse("".join(self.title))
            self.title = None
            if title and not self.titled:  # it opens the page's text, as a heading would
                self.titled = True
                self._end_paragraph()
                self.number += 1
                self.sections[-1].blocks.append(Block(self.number, self.number, title))
        elif tag in _HEADINGS and self.heading is not None:
            self._end_heading()
        elif self.heading is not None:
            return
        elif tag in ("tr", "table"):
            if tag == "tr":
                self._end_line()
            else:
                self._end_paragraph()
            self.cells, self.in_cell = 0, False
        elif tag in _CELLS:
            self.in_cell = False
        elif self.in_cell and (tag in _BLOCKS or tag in _LINES):
            self.pieces.append(" ")
        elif tag in _BLOCKS:
            self._end_paragraph()
            if tag == "pre":
                self.pre = max(0, self.pre - 1)
        elif tag in ("li", "dd", "dt"):
            self._end_line()

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        if self.title is not None:
            self.title.append(data)
        elif self.in_head:
            return
        elif self.heading is not None:
            self.heading[1].append(data)
        else:
            self.pieces.append(data)

    # -- the text

    def _end_line(self) -> None:
        text = "".join(self.pieces)
        self.pieces = []
        if self.pre:
            self.lines += [line.rstrip() for line in text.split("\n")]
        elif (line := _collapse(text)) and line != "-":
            self.lines.append(line)

    def _end_paragraph(self) -> None:
        self._end_line()
        while self.lines and not self.lines[-1].strip():
            self.lines.pop()
        while self.lines and not self.lines[0].strip():
            self.lines.pop(0)
        if self.lines:
            self.number += 1
            for block in split_block(Block(self.number, self.number, "\n".join(self.lines))):
                self.sections[-1].blocks.append(block)
            self.sections[-1].body = True
        self.lines = []

    def _end_heading(self) -> None:
        if self.heading is None:
            return
        level, pieces = self.heading
        self.heading = None
        title = _collapse("".join(pieces))
        if not title:
            return
        while self.path and self.path[-1][0] >= level:
            self.path.pop()
        self.path.append((level, title))
        self.number += 1
        heading = Block(self.number, self.number, title)
        self.sections.append(Section(tuple(text for _level, text in self.path), level, [heading]))

    def finish(self) -> list[Section]:
        self._end_heading()
        self._end_paragraph()
        if not any(section.body for section in self.sections):
            return []  # a title and headings with nothing under them: a page whose text a script would fill
        return self.sections


def _collapse(text: str) -> str:
    return _SPACES.sub(" ", _BREAK_IN_CHINESE.sub("", text)).strip()
