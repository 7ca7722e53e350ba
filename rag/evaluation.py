"""Retrieval evaluation: does the page that answers a question come back, and is "nothing relevant" right?

A question file has one JSON object per line::

    {"question": "...", "lang": "en", "source": "manual.pdf", "pages": [12], "answer_any": ["13.5 nm"]}
    {"question": "...", "lang": "zh"}                       # no source: the answer is not in the documents

A retrieved chunk answers a question when it comes from ``source``, lies on one of ``pages`` (when given),
and contains one of ``answer_any`` (when given; compared without case and whitespace). Answerable questions
count for recall@1/@k/@10 and MRR (over the first 10); every question counts for the "nothing relevant"
decision, made exactly as ``rag ask`` makes it on the first ``k`` chunks.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from rag.store import StoredChunk

T = TypeVar("T")

DEPTH = 10  # chunks looked at for recall@10 and MRR


class BadQuestionFile(ValueError):
    """The question file cannot be used; the message names the line and the reason."""


@dataclass(frozen=True)
class EvalQuestion:
    question: str
    lang: str
    source: str | None = None
    pages: tuple[int, ...] = ()
    answer_any: tuple[str, ...] = ()

    @property
    def answerable(self) -> bool:
        return self.source is not None

    def answered_by(self, chunk: StoredChunk) -> bool:
        if chunk.file != self.source or (self.pages and chunk.page not in self.pages):
            return False
        if not self.answer_any:
            return True
        text = _squash(chunk.text)
        return any(_squash(answer) in text for answer in self.answer_any)


def pages_only(questions: Sequence[EvalQuestion]) -> list[EvalQuestion]:
    """The questions with ``answer_any`` dropped wherever ``pages`` are given: a chunk on a gold page counts
    as the answer even without the answer's words (the page-level recall of the figures measured before the
    question file had ``answer_any``: a stricter test, since a page is cut into several chunks)."""
    return [replace(q, answer_any=()) if q.pages else q for q in questions]


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text).casefold()


def load_questions(path: Path) -> list[EvalQuestion]:
    return read_lines(path, _question)


def read_lines(path: Path, parse: Callable[[Any], T]) -> list[T]:
    """``parse`` of each JSON line of ``path``; BadQuestionFile names the file, the line and the reason."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BadQuestionFile(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise BadQuestionFile(f"{path}: not UTF-8 text ({exc.reason})") from exc
    items = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            items.append(parse(json.loads(line)))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise BadQuestionFile(f"{path}, line {number}: {exc}") from exc
    if not items:
        raise BadQuestionFile(f"{path}: no questions in it")
    return items


def _question(row) -> EvalQuestion:
    if not isinstance(row, dict):
        raise ValueError("each line must be a JSON object")
    question, lang = row.get("question"), row.get("lang")
    if not isinstance(question, str) or not question.strip():
        raise ValueError('"question" must be a non-empty string')
    if lang not in ("en", "zh"):
        raise ValueError(f'"lang" must be "en" or "zh", not {lang!r}')
    source, pages, answers = row.get("source"), row.get("pages") or [], row.get("answer_any") or []
    if source is not None and (not isinstance(source, str) or not source):
        raise ValueError('"source" must be a file name')
    if not isinstance(pages, list) or not all(isinstance(p, int) and p >= 1 for p in pages):
        raise ValueError('"pages" must be a list of 1-based page numbers')
    if not isinstance(answers, list) or not all(isinstance(a, str) and a.strip() for a in answers):
        raise ValueError('"answer_any" must be a list of non-empty strings')
    if source is None and (pages or answers):
        raise ValueError('"pages" and "answer_any" need a "source"')
    if source is not None and not (pages or answers):
        raise ValueError('an answerable question needs "pages" or "answer_any"')
    return EvalQuestion(question.strip(), lang, source, tuple(pages), tuple(answers))


@dataclass
class Outcome:
    """One question in one mode: where the first answering chunk came, and whether it was refused."""

    question: EvalQuestion
    mode: str
    rank: int | None  # 1-based position of the first answering chunk among the first DEPTH, None if absent
    refused: bool  # "nothing relevant": no chunk among the first k passed the relevance rule
    latency_ms: float
    top: list[str] = field(default_factory=list)  # "file p. N" of the first k chunks


# (question, k, mode) -> (the first DEPTH chunks, best first; whether the first k leave nothing relevant)
Probe = Callable[[str, int, str], tuple[list[StoredChunk], bool]]


def run(probe: Probe, questions: Sequence[EvalQuestion], modes: Sequence[str], k: int) -> list[Outcome]:
    outcomes = []
    for mode in modes:
        probe(questions[0].question, k, mode)  # warm-up: the first search loads what later ones reuse
        for q in questions:
            started = time.perf_counter()
            chunks, refused = probe(q.question, k, mode)
            latency = (time.perf_counter() - started) * 1000
            rank = next((i for i, c in enumerate(chunks[:DEPTH], 1) if q.answered_by(c)), None)
            top = [f"{c.file} p. {c.page}" for c in chunks[:k]]
            outcomes.append(Outcome(q, mode, rank if q.answerable else None, refused, latency, top))
    return outcomes


def _recall(ranks: list[int | None], cutoff: int) -> float:
    return sum(1 for r in ranks if r is not None and r <= cutoff) / len(ranks)


def summarise(outcomes: Sequence[Outcome], k: int) -> dict:
    """Figures per mode and language, as one JSON-ready object (keys like ``recall@5``)."""
    cutoffs = sorted({1, k, DEPTH})
    result: dict = {"k": k, "modes": {}}
    for mode in dict.fromkeys(o.mode for o in outcomes):
        mine = [o for o in outcomes if o.mode == mode]
        by_lang = {}
        for lang in ("en", "zh"):
            answerable = [o for o in mine if o.question.lang == lang and o.question.answerable]
            if not answerable:
                continue
            ranks = [o.rank for o in answerable]
            row = {"questions": len(answerable)}
            row.update({f"recall@{c}": round(_recall(ranks, c), 3) for c in cutoffs})
            row["mrr"] = round(statistics.fmean(1 / r if r else 0.0 for r in ranks), 3)
            row["refused"] = sum(o.refused for o in answerable)
            by_lang[lang] = row
        unanswerable = [o for o in mine if not o.question.answerable]
        answerable = [o for o in mine if o.question.answerable]
        latencies = sorted(o.latency_ms for o in mine)
        result["modes"][mode] = {
            "languages": by_lang,
            "no_answer": {
                "questions": len(unanswerable),
                "accuracy": round(sum(o.refused for o in unanswerable) / len(unanswerable), 3)
                if unanswerable
                else None,
                "false_refusals": sum(o.refused for o in answerable),
                "answerable": len(answerable),
            },
            "latency_ms": {"p50": round(_percentile(latencies, 50), 1), "p95": round(_percentile(latencies, 95), 1)},
            "misses": [_miss(o, k) for o in mine if _missed(o, k)],
        }
    return result


def _missed(outcome: Outcome, k: int) -> bool:
    if outcome.question.answerable:
        return outcome.refused or outcome.rank is None or outcome.rank > k
    return not outcome.refused


def _miss(outcome: Outcome, k: int) -> dict:
    q = outcome.question
    if not q.answerable:
        why = "answered, but the answer is not in the documents"
    elif outcome.rank is None or outcome.rank > k:
        why = f"gold page not in the top {k}" + (f" (rank {outcome.rank})" if outcome.rank else "")
    else:
        why = f"refused as nothing relevant, though rank {outcome.rank} answers it"
    gold = "-"
    if q.answerable:
        gold = q.source + (f" p. {', '.join(map(str, q.pages))}" if q.pages else "")
        gold += f" with {' or '.join(repr(a) for a in q.answer_any)}" if q.answer_any else ""
    return {"question": q.question, "lang": q.lang, "expected": gold, "why": why, "got": outcome.top, **_extra(q)}


def _extra(q: EvalQuestion) -> dict:
    return {"answer_any": list(q.answer_any)} if q.answer_any else {}


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    position = (len(values) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def format_summary(summary: dict) -> str:
    """The summary as plain-text tables: recall per mode and language, "nothing relevant", latency, misses."""
    k = summary["k"]
    cutoffs = sorted({1, k, DEPTH})
    headers = ["mode", "lang", "questions", *[f"recall@{c}" for c in cutoffs], "MRR", "refused"]
    rows = []
    for mode, figures in summary["modes"].items():
        for lang, row in figures["languages"].items():
            rows.append(
                [mode, lang, row["questions"], *[row[f"recall@{c}"] for c in cutoffs], row["mrr"], row["refused"]]
            )
    parts = [_table(f"Retrieval (k = {k}; recall counts the gold page among the first N chunks)", headers, rows)]
    rows = []
    for mode, figures in summary["modes"].items():
        na, lat = figures["no_answer"], figures["latency_ms"]
        accuracy = "-" if na["accuracy"] is None else f"{na['accuracy']:.3f} ({na['questions']})"
        rows.append(
            [mode, accuracy, f"{na['false_refusals']} / {na['answerable']}", f"{lat['p50']:.1f}", f"{lat['p95']:.1f}"]
        )
    headers = ["mode", "no-answer accuracy", "false refusals", "latency p50 ms", "latency p95 ms"]
    parts.append(_table('"Nothing relevant" and latency', headers, rows))
    for mode, figures in summary["modes"].items():
        if figures["misses"]:
            lines = [f"Misses, {mode} ({len(figures['misses'])}):"]
            for miss in figures["misses"]:
                got = "; ".join(miss["got"][:3]) or "nothing"
                lines.append(f"  [{miss['lang']}] {miss['question']}\n      expected {miss['expected']}: {miss['why']}")
                lines.append(f"      got {got}")
            parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _table(title: str, headers: list[str], rows: list[list]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda values: "  ".join(v.rjust(w) if i > 1 else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths)))
    return "\n".join([title, line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _cell(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def outcomes_as_json(outcomes: Sequence[Outcome]) -> list[dict]:
    return [{**asdict(o), "question": asdict(o.question)} for o in outcomes]
