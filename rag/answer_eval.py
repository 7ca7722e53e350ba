"""``python -m rag eval --answers``: are the answers right, and can a reader check them?

For every answerable question with ``answer_any`` (a gold string one of which a right answer contains):
- evidence: a gold string is in the evidence sentences of the sources (the highlighted spans);
- extract: ... in the extractive answer ("From your documents", the best three sentences);
- answer: ... in the generated answer (compared without case and spaces);
- unsupported numbers: the generated answer has a number that no source holds (marked in the UI);
and the time from the question to the model's first words and to the whole answer. ``--limit N`` takes
every n-th question, so a slow model can be measured on a spread of the set.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from rag.evaluation import EvalQuestion, _percentile, _squash, _table
from rag.grounding import is_number


@dataclass
class AnswerOutcome:
    question: EvalQuestion
    evidence: bool
    extract: bool
    answer: bool | None  # None: no answer generated (extract mode, or "nothing relevant")
    unsupported_number: bool
    refused: bool
    first_token_ms: float | None  # question in -> the model's first words out (retrieval and evidence included)
    total_ms: float
    timings: dict[str, float]


def spread(questions: Sequence[EvalQuestion], limit: int | None) -> list[EvalQuestion]:
    """The answerable questions with gold strings; with ``limit``, every n-th of them per language."""
    usable = [q for q in questions if q.answerable and q.answer_any]
    if not limit:
        return usable
    chosen = []
    for lang in ("en", "zh"):
        some = [q for q in usable if q.lang == lang]
        step = max(1, len(some) // max(1, limit // 2))
        chosen += some[::step][: limit // 2]
    return chosen


def holds(q: EvalQuestion, text: str) -> bool:
    squashed = _squash(text)
    return any(_squash(gold) in squashed for gold in q.answer_any)


def run_answers(qa, questions: Sequence[EvalQuestion], k: int) -> list[AnswerOutcome]:
    outcomes = []
    if questions:
        qa.ask(questions[0].question, k=k)  # warm-up: loads the chat model, which later answers reuse
    for q in questions:
        started = time.perf_counter()
        answer = qa.ask(q.question, k=k)
        total = (time.perf_counter() - started) * 1000
        evidence = " ".join(span.text for s in answer.sources for span in s.evidence)
        generated = answer.text if answer.model else None
        outcomes.append(
            AnswerOutcome(
                q,
                holds(q, evidence),
                holds(q, " ".join(quote.span.text for quote in answer.extract)),
                None if generated is None else holds(q, generated),
                any(is_number(c) for c in answer.unsupported),
                not answer.sources,
                answer.timings.get("question_to_text_ms"),
                total,
                dict(answer.timings),
            )
        )
    return outcomes


def summarise_answers(outcomes: Sequence[AnswerOutcome], model: str, mode: str) -> dict:
    summary: dict = {"model": model, "answer_mode": mode, "languages": {}}
    for lang in ("en", "zh", "all"):
        some = [o for o in outcomes if lang in ("all", o.question.lang)]
        if not some:
            continue
        generated = [o for o in some if o.answer is not None]
        firsts = sorted(o.first_token_ms for o in some if o.first_token_ms is not None)
        totals = sorted(o.total_ms for o in some)
        summary["languages"][lang] = {
            "questions": len(some),
            "evidence_has_gold": round(sum(o.evidence for o in some) / len(some), 3),
            "extract_has_gold": round(sum(o.extract for o in some) / len(some), 3),
            "answers": len(generated),
            "answer_has_gold": round(sum(bool(o.answer) for o in generated) / len(generated), 3) if generated else None,
            "unsupported_numbers": round(sum(o.unsupported_number for o in generated) / len(generated), 3)
            if generated
            else None,
            "refused": sum(o.refused for o in some),
            "first_token_ms_p50": round(_percentile(firsts, 50)) if firsts else None,
            "first_token_ms_p95": round(_percentile(firsts, 95)) if firsts else None,
            "total_ms_p50": round(_percentile(totals, 50)),
            "total_ms_p95": round(_percentile(totals, 95)),
        }
    summary["misses"] = [
        {"question": o.question.question, "gold": list(o.question.answer_any), "evidence": o.evidence}
        for o in outcomes
        if not o.evidence
    ]
    return summary


def format_answers(summary: dict) -> str:
    headers = ["lang", "n", "evidence∋gold", "extract∋gold", "answer∋gold", "unsupported nums", "refused"]
    headers += ["1st token p50/p95 ms", "total p50/p95 ms"]
    rows = []
    for lang, f in summary["languages"].items():
        first = f"{f['first_token_ms_p50']}/{f['first_token_ms_p95']}" if f["first_token_ms_p50"] is not None else "—"
        rows.append(
            [lang, f["questions"], f["evidence_has_gold"], f["extract_has_gold"], _or_dash(f["answer_has_gold"])]
            + [_or_dash(f["unsupported_numbers"]), f["refused"], first]
            + [f"{f['total_ms_p50']}/{f['total_ms_p95']}"]
        )
    title = f"Answers — {summary['model']} (answer mode {summary['answer_mode']})"
    lines = [_table(title, headers, rows)]
    if summary["misses"]:
        lines.append(f"\nEvidence without a gold string ({len(summary['misses'])}):")
        lines += [f"  - {m['question']}  (gold: {' | '.join(m['gold'])})" for m in summary["misses"]]
    return "\n".join(lines)


def _or_dash(value):
    return "—" if value is None else value
