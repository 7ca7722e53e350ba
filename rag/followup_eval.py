"""``python -m rag eval FOLLOWUPS.jsonl --followups``: does a follow-up find its answer?

Each line holds a conversation (``history``: user and assistant messages), the follow-up ``question``, what
it means on its own (``standalone``), and the gold ``source``, ``pages`` and ``answer_any``. The follow-up is
searched four ways: as asked, rewritten by rule, rewritten by the chat model, and as the gold standalone
question; recall@k counts a chunk of a gold page holding a gold string among the first k.
"""

from __future__ import annotations

from pathlib import Path

from rag.evaluation import EvalQuestion, _question, _table, read_lines
from rag.followup import Turn, model_rewrite, rule_rewrite

WAYS = ("as asked", "rules", "model", "gold standalone")


def load_followups(path: Path) -> list[tuple[EvalQuestion, list[Turn], str]]:
    return read_lines(path, _followup)


def _followup(row) -> tuple[EvalQuestion, list[Turn], str]:
    history, standalone = row.get("history"), row.get("standalone")
    if not isinstance(history, list) or not history or not isinstance(standalone, str):
        raise ValueError('a follow-up needs "history" (messages) and "standalone"')
    turns: list[Turn] = []
    for message in history:
        if message.get("role") == "user":
            turns.append(Turn(message["content"]))
        elif message.get("role") == "assistant" and turns:
            turns[-1] = Turn(turns[-1].question, message["content"])
    question = _question(row)
    if not question.answerable:
        raise ValueError('a follow-up needs "source" and "pages"')
    return question, turns, standalone


def run_followups(qa, cases, k: int, with_model: bool) -> dict:
    retriever = qa.context.retriever
    hits = {way: {"en": [], "zh": []} for way in WAYS}
    rewrites = []
    for question, turns, standalone in cases:
        queries = {
            "as asked": question.question,
            "rules": rule_rewrite(question.question, turns),
            "gold standalone": standalone,
        }
        if with_model:
            queries["model"] = model_rewrite(question.question, turns, qa._complete)
        for way, query in queries.items():
            chunks = retriever.retrieve(query, k).chunks
            hits[way][question.lang].append(any(question.answered_by(c) for c in chunks))
        rewrites.append({"question": question.question, **{w: q for w, q in queries.items() if w != "as asked"}})
    recall = {
        way: {lang: round(sum(v) / len(v), 3) for lang, v in by_lang.items() if v}
        for way, by_lang in hits.items()
        if any(by_lang.values())
    }
    counts = {lang: sum(1 for q, _, _ in cases if q.lang == lang) for lang in ("en", "zh")}
    return {"k": k, "questions": counts, "recall": recall, "rewrites": rewrites}


def format_followups(summary: dict) -> str:
    rows = [[way, *(figures.get(lang, "—") for lang in ("en", "zh"))] for way, figures in summary["recall"].items()]
    counts = summary["questions"]
    title = f"Follow-ups: recall@{summary['k']} ({counts['en']} en, {counts['zh']} zh)"
    lines = [_table(title, ["searched as", "en", "zh"], rows), "", "Rewrites:"]
    for r in summary["rewrites"]:
        lines.append(
            f"  {r['question']}\n    rules: {r['rules']}" + (f"\n    model: {r['model']}" if "model" in r else "")
        )
    return "\n".join(lines)
