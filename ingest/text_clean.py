"""Page text as pypdf gives it, made fit to read and to index: one pure function, ``clean_page_text``.

What pypdf leaves in real PDFs (measured on Debian's manuals and on chromium-printed Chinese pages):
- CJK radical code points instead of the ideographs they look like ("⽂档" for "文档", "常⻅" for "常见"), and
  full-width letters and digits ("ＲＴＸ４０９０");
- spaces between Chinese characters ("其卓 越的性能", "本  FAQ ⽂档") and around Chinese punctuation;
- one line per printed line: a Chinese sentence broken mid-word, English words hyphenated at the line end
  ("prece-\\ndence"), paragraphs wrapped;
- dot leaders in tables of contents (". . . . . . 141").

Lines are joined only when the line is nearly as wide as the page's longest ones (a wrapped line), so
headings, list items and code keep their own lines; blank lines (paragraph breaks) are kept. The result is
deterministic, so an unchanged file gets the same chunks and chunk ids again.
"""

from __future__ import annotations

import re
import unicodedata

from rag.tokenizer import fold_characters

_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_INVISIBLE = re.compile(r"[\u200b-\u200d\u2060\ufeff]")

_HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff"  # ideographs and kana
_CJK_PUNCT = r"\u3000-\u303f\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65"
_CJK = _HAN + _CJK_PUNCT
_SPACE_IN_CJK = re.compile(rf"(?<=[{_HAN}]) (?=[{_HAN}])")
_SPACE_AT_PUNCT = re.compile(rf"(?<=[{_CJK_PUNCT}]) | (?=[{_CJK_PUNCT}])")
_DOT_LEADER = re.compile(r" ?(?:\. ?){5,}")
_SENTENCE_END = "。！？!?"
_WRAP_SHARE = 0.7  # a line at least this share of the page's wide lines is taken as wrapped


def clean_page_text(text: str) -> str:
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    text = fold_characters(text)
    text = _INVISIBLE.sub("", text)
    lines = [_clean_line(line) for line in text.split("\n")]
    return _join_wrapped(lines)


def _clean_line(line: str) -> str:
    line = _SPACES.sub(" ", line.replace("\u00ad", "-" if line.rstrip().endswith("\u00ad") else ""))
    line = _DOT_LEADER.sub(" … ", line)
    line = _SPACE_IN_CJK.sub("", line)
    line = _SPACE_AT_PUNCT.sub("", line)
    return line.strip()


def display_width(line: str) -> int:
    """Columns the line takes when printed: CJK characters are about twice as wide as Latin ones."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in line)


def _join_wrapped(lines: list[str]) -> str:
    widths = sorted(display_width(line) for line in lines if line)
    if not widths:
        return ""
    wide = widths[int(0.9 * (len(widths) - 1))]  # the page's typical full line, robust to one long outlier
    wrap_at = _WRAP_SHARE * wide
    out: list[str] = []
    previous = ""  # the last line as printed (out[-1] may hold several joined ones)
    for line in lines:
        if not line:
            if out and out[-1] != "":
                out.append("")
            previous = ""
            continue
        if previous and display_width(previous) >= wrap_at and len(widths) >= 3:
            joined = _join(out[-1], line)
            if joined is not None:
                out[-1], previous = joined, line
                continue
        out.append(line)
        previous = line
    return "\n".join(out).strip()


def _is_cjk(ch: str) -> bool:
    return bool(re.match(f"[{_CJK}]", ch))


def _join(first: str, second: str) -> str | None:
    """``first`` (a wrapped line) and ``second`` as one line, or None when ``second`` starts a new block."""
    last, nxt = first[-1], second[0]
    if nxt in "•●▪◦*–—#>|":
        return None  # a list item, a comment, a quote or a table row
    if _is_cjk(last) and _is_cjk(nxt):
        return None if last in _SENTENCE_END else first + second
    if last == "-" and len(first) > 1 and first[-2].isalpha() and nxt.islower():
        word = first.rsplit(" ", 1)[-1]
        return first + second if word.count("-") > 1 else first[:-1] + second  # "built-in-" keeps its hyphen
    if last in _SENTENCE_END or (last == "." and not nxt.islower()):
        return None
    if _is_cjk(last) or _is_cjk(nxt):
        return first + second if (last in "，、；：（" or nxt in "，。、；：）！？") else first + " " + second
    return first + " " + second
