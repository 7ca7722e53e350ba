"""Is a retrieved chunk about the question at all? Keyword evidence first, semantic similarity second.

A chunk is relevant when, with a cosine similarity of at least ``min_score``, it
- holds most of the question's words weighted by idf (``coverage``; a word no document has counts fully
  against: "sourdough", "量子纠缠"), or
- shares at least two *distinctive* words with the question: words found in at most 5 % of the chunks
  ("journalctl" and "systemd", "umask" and "0002"). A user's own wording ("好烦", "网速占满") is missing
  from any manual, so coverage alone refused half of the answerable colloquial Chinese questions, while
  questions from outside the documents shared at most one such word with any chunk (measured on the eval
  set, docs/benchmarks.md), or
- for an English question, is very similar in meaning (``sure_score``), or fairly similar (``helped_score``)
  and shares one distinctive word: in a store of one small PDF most of a question's words are in no chunk,
  so the two rules above alone refused "Does this show zebras?" next to the page about zebras.
  all-MiniLM-L6-v2 is an English model: two unrelated Chinese texts still score 0.4-0.6, so similarity
  does not vouch for a Chinese chunk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rag.keyword_index import TermStats
from rag.store import StoredChunk, indexed_text
from rag.tokenizer import tokenize

DISTINCTIVE_SHARE = 0.05  # a word in at most this share of the chunks is distinctive


@dataclass(frozen=True)
class RelevanceRule:
    min_score: float = 0.2  # cosine below which a chunk never counts
    sure_score: float = 0.65  # cosine at which an English question's chunk counts on its own
    min_coverage: float = 0.5  # share of the question's idf-weighted words a chunk must hold
    min_distinctive: int = 2  # ... or this many distinctive words shared with the question
    helped_score: float = 0.5  # cosine at which one distinctive word will do, for an English question

    def keeps(self, cover: float, distinctive: int, score: float, chinese: bool) -> bool:
        if score < self.min_score:
            return False
        if cover >= self.min_coverage or distinctive >= self.min_distinctive:
            return True
        return not chinese and (score >= self.sure_score or (score >= self.helped_score and distinctive >= 1))


@dataclass(frozen=True)
class Evidence:
    coverage: float  # share of the question's idf-weighted words the chunk holds
    distinctive: int  # distinctive question words the chunk holds


def evidence(question_terms: Sequence[str], stats: TermStats, text: str) -> Evidence:
    terms = set(question_terms)
    total = math.fsum(stats.idf.get(t, 0.0) for t in terms)  # fsum: the same sum in any set order
    if not terms or total <= 0:
        return Evidence(0.0, 0)
    present = terms & set(tokenize(text))
    rare = max(1.0, DISTINCTIVE_SHARE * stats.chunks)
    return Evidence(
        math.fsum(stats.idf.get(t, 0.0) for t in present) / total,
        sum(1 for t in present if 0 < stats.doc_count.get(t, 0) <= rare),
    )


def relevant(
    question_terms: Sequence[str], stats: TermStats, chunks: Sequence[StoredChunk], chinese: bool, rule: RelevanceRule
) -> list[int]:
    """Indices of the chunks relevant to the question."""
    keep = []
    for i, chunk in enumerate(chunks):
        # the words the keyword index holds for it: its section heading too, which may be why it was found
        found = evidence(question_terms, stats, indexed_text(chunk.text, {"section": chunk.section}))
        if rule.keeps(found.coverage, found.distinctive, chunk.score, chinese):
            keep.append(i)
    return keep
