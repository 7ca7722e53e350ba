"""The keyword index beside the vector store: BM25 (bm25s) over the chunks' words (``rag.tokenizer``).

Two parts in ``DATA_DIR/keyword/``:
- ``tokens.sqlite3``: every chunk's id, source, version and words. It is the truth, written in the same step
  as Chroma (``ChunkStore.add`` and ``delete_source``), one transaction per batch, with a generation number
  that every change increments;
- ``bm25/``: the BM25 matrix built from those rows and stamped with the generation it was built from. BM25's
  weights depend on every document, so it is rebuilt as a whole after an ingest or delete (``refresh``),
  written to a new folder and swapped in; a stale or unreadable one is rebuilt from the rows on open.

If ``tokens.sqlite3`` is missing, unreadable, or made by another tokenizer version, it is made again from
the chunk texts already in Chroma: no re-embedding (``ChunkStore`` does that, see ``sync_keyword_index``).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.tokenizer import TOKENIZER_VERSION, tokenize

log = logging.getLogger(__name__)

K1, B = 1.2, 0.75  # BM25's usual term-saturation and length-normalisation constants
_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (id TEXT PRIMARY KEY, source TEXT NOT NULL, sha256 TEXT, tokens TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks (source);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_STAMP = "zhiku.json"


def _bm25s():
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets its own logger to DEBUG on import
    return bm25s


class KeywordIndexDamaged(RuntimeError):
    """The token table cannot be read; it is made again from the chunk store."""


@dataclass(frozen=True)
class KeywordHit:
    id: str
    score: float  # BM25


@dataclass(frozen=True)
class TermStats:
    """Question words as the index knows them: in how many of ``chunks`` each occurs, and its idf."""

    chunks: int
    doc_count: dict[str, int]
    idf: dict[str, float]


class KeywordScores:
    """One question's BM25 over the whole index: its best chunks, or the score of any chunk."""

    def __init__(self, matrix: _Matrix | None, scores: np.ndarray | None) -> None:
        self._matrix, self._scores = matrix, scores

    def top(self, k: int) -> list[KeywordHit]:
        """The ``k`` best chunks, best first; only chunks sharing a word with the question score."""
        if self._scores is None or k <= 0:
            return []
        scores, k = self._scores, min(k, len(self._scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [KeywordHit(str(self._matrix.ids[i]), float(scores[i])) for i in top if scores[i] > 0]

    def of(self, ids: Iterable[str]) -> dict[str, float]:
        """BM25 of these chunks (0 for one sharing no word, or not in the index yet)."""
        if self._scores is None:
            return {i: 0.0 for i in ids}
        row = self._matrix.row
        return {i: float(self._scores[row[i]]) if i in row else 0.0 for i in ids}


class _Matrix:
    """One built BM25 matrix: bm25s' retriever, the chunk id of each row, and the generation it reflects."""

    def __init__(self, retriever, ids: np.ndarray, generation: int) -> None:
        self.retriever = retriever
        self.ids = ids
        self.generation = generation
        self.row = {str(chunk_id): i for i, chunk_id in enumerate(ids)}
        self.vocab = retriever.vocab_dict if retriever is not None else {}
        # documents per vocabulary entry: the lengths of the CSC matrix's columns
        self.doc_freq = np.diff(np.asarray(retriever.scores["indptr"])) if retriever is not None else np.array([])

    @property
    def size(self) -> int:
        return len(self.ids)

    def term_ids(self, tokens: Iterable[str]) -> list[int]:
        return [self.vocab[t] for t in tokens if t in self.vocab]

    def scores(self, term_ids: list[int]) -> np.ndarray:
        return self.retriever.get_scores(term_ids)

    def doc_count(self, token: str) -> int:
        term = self.vocab.get(token)
        return int(self.doc_freq[term]) if term is not None else 0

    def idf(self, token: str) -> float:
        """BM25's idf; a word no chunk contains gets the idf of a word in one chunk of a corpus twice as big."""
        n = max(self.size, 1)
        df = self.doc_count(token)
        if df == 0:
            return math.log(1 + (2 * n - 0.5) / 1.5)
        return math.log(1 + (n - df + 0.5) / (df + 0.5))


class KeywordIndex:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.db_path = directory / "tokens.sqlite3"
        self.matrix_dir = directory / "bm25"
        self._lock = threading.RLock()  # the token table and the current matrix
        self._build_lock = threading.Lock()  # one matrix build at a time
        self._matrix: _Matrix | None = None
        self._conn: sqlite3.Connection | None = None
        self.rebuilt_reason: str | None = None  # why the token table had to be made again on open, if it did
        existed = self.db_path.exists()
        try:
            self._conn = self._open()
        except (sqlite3.DatabaseError, KeywordIndexDamaged) as exc:
            self._set_aside(f"{type(exc).__name__}: {exc}")
            self._conn = self._open()
        made_by = self._meta("tokenizer")
        if made_by != str(TOKENIZER_VERSION):
            if made_by is not None:
                self.rebuilt_reason = f"it was made by tokenizer version {made_by}, this is {TOKENIZER_VERSION}"
                self._clear()
            elif not existed and self.rebuilt_reason is None:
                self.rebuilt_reason = "it did not exist yet"
            self._set_meta("tokenizer", str(TOKENIZER_VERSION))
        tokenize("预热")  # load the Chinese dictionary now, not during the first ingest or question

    # -- the token table ----------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            problems = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                raise KeywordIndexDamaged("; ".join(problems[:3]))
        except BaseException:
            conn.close()
            raise
        return conn

    def _set_aside(self, reason: str) -> None:
        """An unreadable token table is moved aside (it only holds what Chroma holds) and made again."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            part = self.db_path.with_name(self.db_path.name + suffix)
            if part.exists():
                part.rename(part.with_name(f"{part.name}.damaged-{stamp}"))
        shutil.rmtree(self.matrix_dir, ignore_errors=True)
        self.rebuilt_reason = f"it could not be read ({reason})"
        log.warning("the keyword index in %s could not be read (%s); it is made again", self.directory, reason)

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self._conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def _clear(self) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM chunks")
            self._bump()

    def _bump(self) -> None:
        """Mark a change: the BM25 matrix built before it is stale (called inside the change's transaction)."""
        self._set_meta("generation", str(self.generation() + 1))

    def generation(self) -> int:
        return int(self._meta("generation") or 0)

    def count(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    def ids(self) -> set[str]:
        with self._lock:
            return {row[0] for row in self._conn.execute("SELECT id FROM chunks")}

    def add(self, ids: Sequence[str], texts: Sequence[str], metadatas: Sequence[dict]) -> None:
        """Tokenize and upsert; the same ids again overwrite (a re-run after a crash adds no duplicates)."""
        rows = [
            (chunk_id, str(meta.get("source", "")), meta.get("sha256"), " ".join(tokenize(text)))
            for chunk_id, text, meta in zip(ids, texts, metadatas, strict=True)
        ]
        with self._lock, self._conn:
            self._conn.execute("BEGIN")
            self._conn.executemany("INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?)", rows)
            self._bump()

    def delete(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        with self._lock, self._conn:
            self._conn.execute("BEGIN")
            for start in range(0, len(ids), 500):
                batch = ids[start : start + 500]
                self._conn.execute(f"DELETE FROM chunks WHERE id IN ({','.join('?' * len(batch))})", batch)
            self._bump()

    def ids_where(self, source: str, keep_sha256: str | None = None, only_sha256: str | None = None) -> list[str]:
        """The ids ``ChunkStore.delete_source`` removes, as this table has them."""
        query, args = "SELECT id FROM chunks WHERE source = ?", [source]
        if keep_sha256 is not None:
            query, args = query + " AND sha256 IS NOT ?", [*args, keep_sha256]
        elif only_sha256 is not None:
            query, args = query + " AND sha256 IS ?", [*args, only_sha256]
        with self._lock:
            return [row[0] for row in self._conn.execute(query, args)]

    # -- the BM25 matrix ----------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Make the BM25 matrix reflect the token table: load the saved one, or build, save and swap in a new one.

        The build runs outside the lock, so searches go on with the previous matrix meanwhile.
        """
        with self._build_lock:
            with self._lock:
                generation = self.generation()
                if self._matrix is not None and self._matrix.generation == generation:
                    return
                saved = self._load(generation)
                if saved is not None:
                    self._matrix = saved
                    return
                rows = self._conn.execute("SELECT id, tokens FROM chunks ORDER BY id").fetchall()
            built = self._build(rows, generation)
            with self._lock:
                if self._matrix is None or self._matrix.generation < generation:
                    self._matrix = built

    def _load(self, generation: int) -> _Matrix | None:
        stamp = self.matrix_dir / _STAMP
        if not stamp.is_file():
            return None
        try:
            info = json.loads(stamp.read_text())
            if info.get("generation") != generation or info.get("tokenizer") != TOKENIZER_VERSION:
                return None
            ids = np.load(self.matrix_dir / "ids.npy", mmap_mode="r")
            if info.get("wordless"):
                return _Matrix(None, ids, generation)
            retriever = _bm25s().BM25.load(str(self.matrix_dir), mmap=True)
            if len(ids) != retriever.scores["num_docs"]:
                raise ValueError("the id list and the matrix disagree")
            return _Matrix(retriever, ids, generation)
        except Exception as exc:  # noqa: BLE001 - any unreadable part: build it again from the token table
            log.warning("the saved keyword matrix in %s is unreadable (%s); building it again", self.matrix_dir, exc)
            return None

    def _build(self, rows: list[tuple[str, str]], generation: int) -> _Matrix:
        started = time.perf_counter()
        partial = self.directory / "bm25.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        ids, retriever = np.array([row[0] for row in rows], dtype=str), None
        # bm25s cannot index a corpus without a single word (only stop words and punctuation, or
        # nothing): such chunks are kept by id and score 0 until a chunk with words arrives
        wordless = not any(row[1] for row in rows)
        if not wordless:
            retriever = _bm25s().BM25(k1=K1, b=B, method="lucene")
            retriever.index([row[1].split() for row in rows], show_progress=False)
            retriever.save(str(partial), show_progress=False)
        np.save(partial / "ids.npy", ids)
        matrix = _Matrix(retriever, ids, generation)
        stamp = {"generation": generation, "tokenizer": TOKENIZER_VERSION, "chunks": len(rows), "wordless": wordless}
        (partial / _STAMP).write_text(json.dumps(stamp))  # written last: a folder without it is incomplete
        old = self.directory / "bm25.old"
        shutil.rmtree(old, ignore_errors=True)
        if self.matrix_dir.exists():
            self.matrix_dir.rename(old)
        partial.rename(self.matrix_dir)
        shutil.rmtree(old, ignore_errors=True)
        log.info("keyword matrix of %d chunks built in %.2f s", len(rows), time.perf_counter() - started)
        return matrix

    def _current(self) -> _Matrix | None:
        """The matrix to search: the loaded one, or a newer one another process saved meanwhile."""
        with self._lock:
            if self._matrix is None or self._matrix.generation != self.generation():
                newer = self._load(self.generation())
                if newer is not None:
                    self._matrix = newer
            return self._matrix

    def score(self, tokens: Sequence[str]) -> KeywordScores:
        """BM25 of every indexed chunk for these query words."""
        matrix = self._current()
        term_ids = matrix.term_ids(tokens) if matrix is not None else []
        scores = matrix.scores(term_ids) if term_ids else None
        return KeywordScores(matrix, scores)

    def search(self, tokens: Sequence[str], k: int) -> list[KeywordHit]:
        return self.score(tokens).top(k)

    def term_stats(self, tokens: Iterable[str]) -> TermStats:
        """How many chunks hold each word, and its idf; empty while nothing is indexed."""
        matrix = self._current()
        if matrix is None or matrix.size == 0:
            return TermStats(0, {}, {})
        tokens = set(tokens)
        return TermStats(matrix.size, {t: matrix.doc_count(t) for t in tokens}, {t: matrix.idf(t) for t in tokens})

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.rglob("*") if p.is_file())

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._matrix = None
