"""The persisted Chroma collection of chunks (langchain-chroma over chromadb's PersistentClient)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from langchain_core.embeddings import Embeddings

from rag.damage import COLLECTION, StoreDamaged


@dataclass(frozen=True)
class StoredChunk:
    text: str
    file: str
    page: int
    index: int
    score: float


class EmbedderMismatch(RuntimeError):
    """The store was built with another embedding model; its vectors cannot be searched with this one."""


class ChunkStore:
    """Chunks with metadata ``source``, ``page``, ``chunk``, ``sha256``; ids are ``sha256:index``.

    The collection remembers which embedder built it (``embedder_name``), and refuses to open with another.
    """

    delete_batch = 1000  # ids per delete request (Chroma refuses requests over its max batch size, ~5,000)

    def __init__(self, directory: Path, embeddings: Embeddings, embedder_name: str = "") -> None:
        import chromadb
        from chromadb.config import Settings as ChromaSettings
        from chromadb.errors import ChromaError
        from langchain_chroma import Chroma

        directory.mkdir(parents=True, exist_ok=True)
        self._client = None
        try:  # run rag.damage.ChunkStoreCheck first: a damaged vector index can crash this process outright
            self._client = chromadb.PersistentClient(
                path=str(directory), settings=ChromaSettings(anonymized_telemetry=False, allow_reset=False)
            )
            self._vectors = Chroma(
                collection_name=COLLECTION,
                embedding_function=embeddings,
                client=self._client,
                collection_metadata={"hnsw:space": "cosine", "zhiku_embedder": embedder_name},
            )
            self._vectors._collection.count()
        except ChromaError as exc:
            self.close()
            raise StoreDamaged("chunk store", directory, f"{type(exc).__name__}: {exc}") from exc
        built_with = (self._vectors._collection.metadata or {}).get("zhiku_embedder")
        if embedder_name and built_with and built_with != embedder_name:
            self.close()
            raise EmbedderMismatch(
                f"The document store in {directory} was built with the embedder {built_with!r}, but the "
                f"configured embedder is {embedder_name!r}. Run `python -m ingest --rebuild --force` to embed "
                f"every document again with the new one, use another data directory (ZHIKU_DATA_DIR), or set "
                f"ZHIKU_EMBED_MODEL back."
            )
        self._write_lock = threading.Lock()

    def close(self) -> None:
        """Release Chroma's per-path system: a later store on the same path (a rebuilt one) starts afresh."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def count(self) -> int:
        return self._vectors._collection.count()

    def add(self, texts: Sequence[str], metadatas: Sequence[dict], ids: Sequence[str]) -> None:
        """Embed and upsert; the same ids again overwrite, so a re-run after a crash adds no duplicates."""
        with self._write_lock:
            self._vectors.add_texts(list(texts), metadatas=list(metadatas), ids=list(ids))

    def ids_for(self, source: str) -> list[str]:
        return self._vectors.get(where={"source": source}, include=[])["ids"]

    def metadatas(self) -> list[dict]:
        """The metadata of every chunk (``source``, ``page``, ``chunk``, ``sha256``)."""
        return [m for m in self._vectors.get(include=["metadatas"])["metadatas"] if m]

    def delete_source(self, source: str, keep_sha256: str | None = None, only_sha256: str | None = None) -> int:
        """Delete the chunks of ``source``: all, all but version ``keep_sha256``, or only ``only_sha256``."""
        where: dict = {"source": source}
        if keep_sha256 is not None:
            where = {"$and": [where, {"sha256": {"$ne": keep_sha256}}]}
        elif only_sha256 is not None:
            where = {"$and": [where, {"sha256": only_sha256}]}
        with self._write_lock:
            ids = self._vectors.get(where=where, include=[])["ids"]
            for start in range(0, len(ids), self.delete_batch):  # Chroma caps one request's size
                self._vectors.delete(ids=ids[start : start + self.delete_batch])
        return len(ids)

    def search_by_vector(self, vector: list[float], k: int) -> list[StoredChunk]:
        """The ``k`` nearest chunks, best first, with cosine similarity as ``score``."""
        if self.count() == 0:
            return []
        hits = self._vectors.similarity_search_by_vector_with_relevance_scores(vector, k=k)
        return [
            StoredChunk(
                text=doc.page_content,
                file=str(doc.metadata.get("source", "?")),
                page=int(doc.metadata.get("page", 0)),
                index=int(doc.metadata.get("chunk", 0)),
                score=round(1.0 - float(distance), 4),  # cosine space: distance = 1 - similarity
            )
            for doc, distance in hits
        ]
