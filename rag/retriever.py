"""Question -> the best chunks: semantic (dense), keyword (BM25) or both fused (hybrid), with timings."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from langchain_core.embeddings import Embeddings

from rag.fusion import fuse
from rag.keyword_index import TermStats
from rag.store import DENSE, KEYWORD, ChunkStore, StoredChunk
from rag.tokenizer import is_chinese, tokenize

HYBRID = "hybrid"
MODES = (HYBRID, KEYWORD, DENSE)
Mode = Literal["hybrid", "keyword", "dense"]
POOL = 30  # candidates taken from each index, before fusing and keeping one chunk per page


@dataclass(frozen=True)
class Retrieval:
    chunks: list[StoredChunk]
    embed_ms: float
    search_ms: float  # both searches, fetching the chunks and fusing
    mode: str = HYBRID
    question_terms: tuple[str, ...] = ()  # the question's words as the keyword index knows them
    stats: TermStats = TermStats(0, {}, {})  # those words' chunk counts and idf
    vector: tuple[float, ...] = ()  # the question's embedding


def one_per_page(chunks: list[StoredChunk]) -> list[StoredChunk]:
    """The best chunk of each page, in order. Chunks of one page overlap, so a second one adds little for the
    reader or the model, and takes the place of another page that may hold the answer (recall@5 on the eval
    set: English 0.82 -> 0.83, Chinese 0.92 -> 0.93, docs/benchmarks.md)."""
    seen: set[tuple[str, int]] = set()
    kept = []
    for chunk in chunks:
        if (chunk.file, chunk.page) not in seen:
            seen.add((chunk.file, chunk.page))
            kept.append(chunk)
    return kept


class Retriever:
    def __init__(self, store: ChunkStore, embeddings: Embeddings, mode: Mode = HYBRID, pool: int = POOL) -> None:
        self.store = store
        self.embeddings = embeddings
        self.mode = mode
        self.pool = pool

    def retrieve(self, question: str, k: int, mode: Mode | None = None) -> Retrieval:
        """The ``k`` best chunks for ``question``; each carries its cosine similarity and BM25 score."""
        mode = mode or self.mode
        if mode not in MODES:
            raise ValueError(f"unknown retrieval mode {mode!r}; choose one of {', '.join(MODES)}")
        started = time.perf_counter()
        self.store.catch_up()  # a store shared through a Chroma server: other front-ends' changes first
        vector = self.embeddings.embed_query(question)  # every mode: relevance is judged on similarity too
        embedded = time.perf_counter()
        terms = tuple(tokenize(question))
        keyword = self.store.keyword.score(terms)
        depth = max(k, self.pool)  # more than k: several chunks of one page count once
        dense: list[StoredChunk] = []
        if mode != KEYWORD:
            dense = self.store.search_by_vector(vector, depth)
            bm25 = keyword.of(c.id for c in dense)
            dense = [c.with_scores(keyword_score=bm25[c.id]) for c in dense]
        if mode == DENSE:
            chunks = dense
        else:
            hits = {h.id: h.score for h in keyword.top(depth)}
            known = {c.id: c for c in dense}
            fetched = {c.id: c for c in self.store.get_chunks([i for i in hits if i not in known], vector)}
            found = [
                (known.get(i) or fetched[i]).with_scores(keyword_score=s, found_by=(KEYWORD,))
                for i, s in hits.items()
                if i in known or i in fetched  # a chunk deleted since the BM25 matrix was built is left out
            ]
            chunks = found if mode == KEYWORD else fuse(dense, found, chinese=is_chinese(question))
        chunks = one_per_page(chunks)[:k]
        done = time.perf_counter()
        stats = self.store.keyword.term_stats(terms)
        return Retrieval(
            chunks, (embedded - started) * 1000, (done - embedded) * 1000, mode, terms, stats, tuple(vector)
        )
