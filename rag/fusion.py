"""Fusing the semantic and the keyword list into one ranking.

Each candidate (from either list) carries both its cosine similarity and its BM25 score, so the rule can
weigh them directly: ``w * cosine + (1 - w) * BM25 / best BM25 among the candidates``. The weight follows
the question's script: all-MiniLM-L6-v2 is an English model, so a Chinese question leans on its words.
Chosen by measurement on the eval set (``bench/fusion_choices.py``, docs/benchmarks.md): this beat
reciprocal-rank fusion, which lets the weak Chinese dense list pull good keyword hits down (RRF with equal
weights: Chinese recall@5 0.80 against 0.91 for BM25 alone), and the exact weights matter little (English
0.5-0.7, Chinese 0.1-0.3: within two questions of 90).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rag.store import StoredChunk


@dataclass(frozen=True)
class FusionRule:
    dense_weight_en: float = 0.6
    dense_weight_zh: float = 0.2

    def rank(self, chunks: Sequence[StoredChunk], chinese: bool) -> list[StoredChunk]:
        top_bm25 = max((c.keyword_score for c in chunks), default=0.0) or 1.0
        w = self.dense_weight_zh if chinese else self.dense_weight_en

        def value(c: StoredChunk) -> float:
            return w * c.score + (1 - w) * c.keyword_score / top_bm25

        return sorted(chunks, key=value, reverse=True)


DEFAULT_RULE = FusionRule()


def merge(dense: Sequence[StoredChunk], keyword: Sequence[StoredChunk]) -> list[StoredChunk]:
    """Both lists as one, each chunk once, remembering every index that found it."""
    merged: dict[str, StoredChunk] = {}
    for chunk in [*dense, *keyword]:
        seen = merged.get(chunk.id)
        if seen is None:
            merged[chunk.id] = chunk
        elif not set(chunk.found_by) <= set(seen.found_by):
            merged[chunk.id] = seen.with_scores(found_by=seen.found_by + chunk.found_by)
    return list(merged.values())


def fuse(
    dense: Sequence[StoredChunk], keyword: Sequence[StoredChunk], *, chinese: bool, rule: FusionRule = DEFAULT_RULE
) -> list[StoredChunk]:
    return rule.rank(merge(dense, keyword), chinese)
