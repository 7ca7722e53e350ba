"""Question -> the most similar chunks, with timings."""

from __future__ import annotations

import time
from dataclasses import dataclass

from langchain_core.embeddings import Embeddings

from rag.store import ChunkStore, StoredChunk


@dataclass(frozen=True)
class Retrieval:
    chunks: list[StoredChunk]
    embed_ms: float
    search_ms: float


class Retriever:
    def __init__(self, store: ChunkStore, embeddings: Embeddings) -> None:
        self.store = store
        self.embeddings = embeddings

    def retrieve(self, question: str, k: int) -> Retrieval:
        started = time.perf_counter()
        vector = self.embeddings.embed_query(question)
        embedded = time.perf_counter()
        chunks = self.store.search_by_vector(vector, k)
        done = time.perf_counter()
        return Retrieval(chunks, (embedded - started) * 1000, (done - embedded) * 1000)
