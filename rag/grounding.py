"""Grounding check: the numbers, names and quoted terms of a generated answer that no source contains.

A small model invents plausible specifics ("13.5 nm", "read_fixed()"); these are what a reader acts on, so
each is looked up in the sources the answer was given (and the question, which the answer may repeat).
Citations ("p. 12", "gnuplot.pdf", "[2]") and list markers are not claims. Numbers match whole
("3" is not found in "13.5"; "1,000" is "1000"); names and quoted terms match without case or spaces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from rag.tokenizer import fold_characters

_CITATION = re.compile(
    r"[\w\-.\u4e00-\u9fff]+\.pdf|\b(?:pp?|pages?)\.?\s*\d+(?:\s*[-–,]\s*\d+)*|第\s*\d+\s*页|\[\d+(?:\s*[,，]\s*\d+)*\]",
    re.IGNORECASE,
)
_LIST_MARKER = re.compile(r"^\s*(?:\d+[.)、]|[-*•])\s+", re.MULTILINE)
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,:]\d+)*(?![\w])")
_NAME = re.compile(r"(?<![\w])(?:[A-Za-z]+[A-Z0-9_+][\w+\-]*|[a-z]+[_./\-][\w./+\-]*[A-Za-z0-9]|[A-Z]{2,})(?![\w])")
_QUOTED = re.compile(r"\"([^\"\n]{2,60})\"|“([^”\n]{2,60})”|「([^」\n]{2,60})」|`([^`\n]{2,60})`")


def specifics(text: str) -> list[str]:
    """The numbers and names in ``text`` (what ``rag.evidence`` weighs most in a question and a sentence)."""
    return [m.group() for pattern in (_NUMBER, _NAME) for m in pattern.finditer(text)]


def is_number(claim: str) -> bool:
    return _NUMBER.fullmatch(claim) is not None


def claims(answer: str) -> list[str]:
    """The answer's numbers, names and quoted terms, in order of appearance, each once."""
    text = _LIST_MARKER.sub(" ", _CITATION.sub(" ", fold_characters(answer)))
    found: list[tuple[int, str]] = []
    for pattern in (_QUOTED, _NUMBER, _NAME):
        for match in pattern.finditer(text):
            value = next((g for g in match.groups() if g), None) if match.groups() else match.group()
            value = (value or "").strip().rstrip(".,:")
            if value:
                found.append((match.start(), value))
    seen: set[str] = set()
    ordered = []
    for _, value in sorted(found):
        if value.casefold() not in seen:
            seen.add(value.casefold())
            ordered.append(value)
    return ordered


def _plain(text: str) -> str:
    text = fold_characters(text).casefold()
    return re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000 -> 1000


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def unsupported(answer: str, texts: Iterable[str], said: Sequence[str] | None = None) -> list[str]:
    """The claims of ``answer`` (``said``, when the caller has them already) that occur in none of ``texts``
    (the sources and the question)."""
    plain = _plain("\n".join(texts))
    squashed = _squash(plain)
    missing = []
    for claim in claims(answer) if said is None else said:
        value = _plain(claim)
        if is_number(value):
            if not re.search(rf"(?<![\d.]){re.escape(value)}(?![\d]|\.\d)", plain):
                missing.append(claim)
        elif _squash(value) not in squashed:
            missing.append(claim)
    return missing
