"""Sentences of a chunk, as (start, end) offsets into its text: Chinese and English punctuation, line breaks.

A sentence ends at 。！？；… (Chinese), at . ! ? followed by a space and a capital, digit or opening mark
(English: "e.g. the" stays one sentence), at a blank line, and at a line break after a short line (headings,
table rows, list items), which manuals are full of. A sentence longer than ``MAX_CHARS`` is cut at its line
breaks or, failing those, at its commas, so no evidence span is a whole page.
"""

from __future__ import annotations

import re

MAX_CHARS = 300
_END_ZH = re.compile(r"[。！？；…]+[”’」』）)]*")
_END_EN = re.compile(r"(?<=[a-z0-9)\]\"'”’])[.!?]+[\"'”’)]*(?=\s+[A-Z0-9(\"“‘'`$\-•*])")
_BLANK = re.compile(r"\n\s*\n")
_SOFT = re.compile(r"[,，、:：]\s*")
_SHORT_LINE = 60  # a line this short ends its sentence (a heading, a list item, a table row)


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Offsets of the sentences of ``text``, in order, each stripped of surrounding whitespace."""
    cuts = {0, len(text)}
    cuts.update(m.end() for m in _END_ZH.finditer(text))
    cuts.update(m.end() for m in _END_EN.finditer(text))
    cuts.update(m.start() for m in _BLANK.finditer(text))
    position = 0
    for line in text.split("\n"):
        end = position + len(line)
        if len(line.strip()) < _SHORT_LINE:
            cuts.update((position, end))
        position = end + 1
    spans: list[tuple[int, int]] = []
    ordered = sorted(cuts)
    for start, end in zip(ordered, ordered[1:], strict=False):
        spans.extend(_shorten(text, start, end))
    return [span for span in (_strip(text, s, e) for s, e in spans) if span]


def _shorten(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """``text[start:end]`` as pieces of at most ``MAX_CHARS``: cut at line breaks, then commas, then anywhere."""
    if end - start <= MAX_CHARS:
        return [(start, end)]
    for separator in (re.compile(r"\n"), _SOFT):
        inner = [m.end() for m in separator.finditer(text, start, end) if start < m.end() < end]
        if inner:
            pieces, begin = [], start
            for cut in inner:
                if cut - begin >= MAX_CHARS // 3:  # keep pieces of a useful length together
                    pieces.append((begin, cut))
                    begin = cut
            pieces.append((begin, end))
            if len(pieces) > 1:
                return [p for s, e in pieces for p in _shorten(text, s, e)]
    return [(s, min(s + MAX_CHARS, end)) for s in range(start, end, MAX_CHARS)]


def _strip(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if end > start else None
