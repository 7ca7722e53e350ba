"""The persisted chunks: the Chroma collection (langchain-chroma over chromadb's PersistentClient) and, beside
it, the keyword index (``rag.keyword_index``), changed together in each step."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from langchain_core.embeddings import Embeddings

from rag.chroma_client import ChromaServerUnavailable, open_client
from rag.citations import place
from rag.damage import COLLECTION, StoreDamaged
from rag.keyword_index import KeywordIndex

log = logging.getLogger(__name__)

DENSE, KEYWORD = "dense", "keyword"  # the indexes a chunk can be found by
GENERATION = "zhiku_generation"  # the shared collection's change counter, in its metadata


@dataclass(frozen=True)
class StoredChunk:
    text: str
    file: str
    page: int
    index: int
    score: float  # cosine similarity to the question
    id: str = ""
    found_by: tuple[str, ...] = ()  # which indexes returned it: DENSE, KEYWORD or both
    keyword_score: float = 0.0  # BM25 for the question's words
    section: str = ""  # the PDF outline's section path, "" if none
    location: str = ""  # where it is in a file without pages ("lines 12–40", "Install › Linux"), "" for pages
    ocr: bool = False  # its text was read by OCR

    @property
    def place(self) -> str:
        return place(self.page, self.location, self.ocr)

    def with_scores(self, **changes) -> StoredChunk:
        return replace(self, **changes)


class EmbedderMismatch(RuntimeError):
    """The store was built with another embedding model; its vectors cannot be searched with this one."""


class ChunkStore:
    """Chunks with metadata ``source``, ``page``, ``chunk``, ``sha256`` (and ``section`` when the PDF has an
    outline); ids are ``sha256:index``.

    The collection remembers which embedder built it (``embedder_name``), and refuses to open with another.
    The keyword index lives in ``keyword_dir`` (default: ``keyword`` beside ``directory``); on open it is
    brought in line with the collection from the texts stored there, without embedding anything again.
    """

    delete_batch = 1000  # ids per delete request (Chroma refuses requests over its max batch size, ~5,000)
    sync_batch = 1000  # chunks read from Chroma at a time when the keyword index is made again

    def __init__(
        self,
        directory: Path,
        embeddings: Embeddings,
        embedder_name: str = "",
        keyword_dir: Path | None = None,
        server_url: str = "",
    ) -> None:
        from chromadb.errors import ChromaError
        from langchain_chroma import Chroma

        self._embeddings = embeddings
        self._client = None
        self.server_url = server_url  # a Chroma server shared with other front-ends, or "" (embedded)
        self._generation: object = None  # the shared collection's change marker, as last seen
        self.on_shared_change = None  # called after catching up with another front-end's change (the registry)
        self.keyword = None
        try:  # run rag.damage.ChunkStoreCheck first: a damaged vector index can crash this process outright
            self._client = open_client(directory, server_url)
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
        self.keyword = KeywordIndex(keyword_dir or directory.with_name("keyword"))
        try:
            self._generation = self.generation()
            self.keyword_notice = self._sync_keyword_index()
            self.keyword.refresh()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release Chroma's per-path system: a later store on the same path (a rebuilt one) starts afresh."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.keyword is not None:
            self.keyword.close()

    # -- a store shared through a Chroma server ----------------------------------------------------------------
    def generation(self) -> object:
        """The shared collection's change marker (every write bumps it); None for an embedded store."""
        if not self.server_url:
            return None
        try:
            collection = self._client.get_collection(COLLECTION)
        except Exception as exc:  # noqa: BLE001 - the server went away: say which and why, not a client traceback
            raise ChromaServerUnavailable(
                f"The Chroma server at {self.server_url} stopped answering ({type(exc).__name__}: {exc})"
            ) from exc
        return (collection.metadata or {}).get(GENERATION, 0)

    def catch_up(self) -> bool:
        """With a server: if another front-end changed the collection since this one last looked, bring the keyword
        index in line with it (the registry follows in ``rag.shared_store``). True when something changed."""
        if not self.server_url:
            return False
        seen = self.generation()
        if seen == self._generation:
            return False
        with self._write_lock:
            self._sync_keyword_index(quiet=True)
            self.keyword.refresh()
            self._generation = seen
        if self.on_shared_change is not None:
            self.on_shared_change()
        return True

    def _bump(self) -> None:
        """Tell the other front-ends that the collection changed (a counter in the collection's metadata)."""
        if not self.server_url:
            return
        collection = self._client.get_collection(COLLECTION)
        metadata = dict(collection.metadata or {})
        metadata.pop("hnsw:space", None)  # fixed at creation; Chroma refuses to modify it
        metadata[GENERATION] = int(metadata.get(GENERATION, 0)) + 1
        collection.modify(metadata=metadata)
        self._generation = metadata[GENERATION]

    def _sync_keyword_index(self, quiet: bool = False) -> str | None:
        """Make the keyword index hold exactly the collection's chunks; a message when it had to be made again
        (``quiet``: another front-end's change to a shared store, which is no damage)."""
        if self.keyword.count() == self.count() and not quiet:
            return None
        collection = self._vectors._collection
        stored = set(collection.get(include=[])["ids"])
        indexed = self.keyword.ids()
        extra, missing = indexed - stored, sorted(stored - indexed)
        if extra:
            self.keyword.delete(extra)
        for start in range(0, len(missing), self.sync_batch):
            got = collection.get(ids=missing[start : start + self.sync_batch], include=["documents", "metadatas"])
            texts = [indexed_text(text, meta or {}) for text, meta in zip(got["documents"], got["metadatas"])]
            self.keyword.add(got["ids"], texts, got["metadatas"])
        if quiet:
            log.info("the shared store changed: %d chunk(s) added to the keyword index, %d removed", len(missing),
                     len(extra))  # fmt: skip
            return None
        why = f" ({self.keyword.rebuilt_reason})" if self.keyword.rebuilt_reason else ""
        notice = (
            f"The keyword index was out of step with the chunk store{why}: {len(missing)} chunk(s) added to it from "
            f"the texts already stored (nothing embedded again), {len(extra)} removed. "
            "/ 关键词索引已根据已存储的文本重建。"
        )
        log.warning("%s", notice)
        return notice

    def refresh(self) -> None:
        """Let searches see the latest changes: rebuild the keyword index's BM25 matrix if it is stale."""
        self.keyword.refresh()

    def count(self) -> int:
        return self._vectors._collection.count()

    def add(self, texts: Sequence[str], metadatas: Sequence[dict], ids: Sequence[str]) -> None:
        """Upsert into both indexes (the same ids again overwrite, so a re-run after a crash adds no duplicates).

        Searches see the new chunks' words after ``refresh()``.
        """
        indexed = [indexed_text(text, meta) for text, meta in zip(texts, metadatas, strict=True)]
        with self._write_lock:
            self.keyword.add(list(ids), indexed, list(metadatas))
            vectors = self._embeddings.embed_documents(indexed)
            self._vectors._collection.upsert(
                ids=list(ids), embeddings=vectors, documents=list(texts), metadatas=list(metadatas)
            )
            self._bump()

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
            self.keyword.delete(set(ids) | set(self.keyword.ids_where(source, keep_sha256, only_sha256)))
            if ids:
                self._bump()
        return len(ids)

    def search_by_vector(self, vector: list[float], k: int) -> list[StoredChunk]:
        """The ``k`` nearest chunks, best first, with cosine similarity as ``score``.

        An empty collection answers with no hits; no count() first: at 100,000 chunks Chroma's count takes
        longer (~10 ms here) than the search itself.
        """
        hits = self._vectors.similarity_search_by_vector_with_relevance_scores(vector, k=k)
        return [
            _chunk(doc.id or "", doc.page_content, doc.metadata, 1.0 - float(distance), DENSE)  # cosine space
            for doc, distance in hits
        ]

    def get_chunks(self, ids: Sequence[str], vector: Sequence[float], found_by: str = KEYWORD) -> list[StoredChunk]:
        """These chunks, in this order, scored by cosine similarity to ``vector``; ids no longer stored are left out."""
        if not ids:
            return []
        got = self._vectors._collection.get(ids=list(ids), include=["documents", "metadatas", "embeddings"])
        query = np.asarray(vector, dtype=np.float32)
        found = {}
        for chunk_id, text, meta, embedding in zip(got["ids"], got["documents"], got["metadatas"], got["embeddings"]):
            similarity = float(np.dot(np.asarray(embedding, dtype=np.float32), query))  # both unit vectors
            found[chunk_id] = _chunk(chunk_id, text, meta or {}, similarity, found_by)
        return [found[i] for i in ids if i in found]


def indexed_text(text: str, metadata: Mapping) -> str:
    """What both indexes see of a chunk: its section path (``ingest.pdf_outline``) above its text.

    Users are shown the text alone. Chunks are cut to fit the embedder's token limit without the heading, so
    on a full chunk the heading (up to two titles of 80 characters) pushes the chunk's last tokens past the
    limit: they are left out of its vector, though not out of the keyword index, and the next chunk's overlap
    holds them except at the end of a page. Measured with this cost: docs/benchmarks.md section 4.
    """
    section = metadata.get("section")
    return f"{section}\n{text}" if section else text


def _chunk(chunk_id: str, text: str, meta: dict, similarity: float, found_by: str) -> StoredChunk:
    return StoredChunk(
        text=text,
        file=str(meta.get("source", "?")),
        page=int(meta.get("page", 0)),
        index=int(meta.get("chunk", 0)),
        score=round(similarity, 4),
        id=chunk_id,
        section=str(meta.get("section", "")),
        location=str(meta.get("location", "")),
        ocr=bool(meta.get("ocr", False)),
        found_by=(found_by,),
    )
