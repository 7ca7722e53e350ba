"""Per-document ingest status, persisted in SQLite beside the vector store.

The registry is the source of truth for which documents exist; the chunk store follows it. A row in state
``ingesting`` or ``deleting`` marks work a crash interrupted, which the next run finishes.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rag.damage import StoreDamaged

INGESTING, INGESTED, REJECTED, DELETING = "ingesting", "ingested", "rejected", "deleting"
_DAMAGE_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    name TEXT PRIMARY KEY,
    sha256 TEXT,
    size INTEGER NOT NULL DEFAULT 0,
    pages INTEGER NOT NULL DEFAULT 0,
    chunks INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    reason TEXT,
    path TEXT,
    updated REAL NOT NULL
)
"""


@dataclass(frozen=True)
class DocumentRecord:
    name: str
    sha256: str | None
    size: int
    pages: int
    chunks: int
    status: str
    reason: str | None
    path: str | None
    updated: float


class Registry:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute(_SCHEMA)
            problems = [row[0] for row in self._conn.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                raise StoreDamaged("document registry", path, "; ".join(problems[:3]))
            self._conn.execute("SELECT * FROM documents").fetchall()  # every row decodes
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            # Only a corrupt file or one that is no database at all is damage; "locked" or "disk full" are not.
            if getattr(exc, "sqlite_errorcode", sqlite3.SQLITE_CORRUPT) in _DAMAGE_CODES:
                raise StoreDamaged("document registry", path, str(exc)) from exc
            raise
        except BaseException:
            self._conn.close()
            raise
        self._lock = threading.Lock()

    def get(self, name: str) -> DocumentRecord | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM documents WHERE name = ?", (name,)).fetchone()
        return DocumentRecord(*row) if row else None

    def all(self) -> list[DocumentRecord]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM documents ORDER BY name COLLATE NOCASE").fetchall()
        return [DocumentRecord(*row) for row in rows]

    def find_by_sha(self, sha256: str) -> DocumentRecord | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT * FROM documents WHERE sha256 = ? AND status IN (?, ?)", (sha256, INGESTED, INGESTING)
            ).fetchone()
        return DocumentRecord(*row) if row else None

    def put(
        self,
        name: str,
        status: str,
        *,
        sha256: str | None = None,
        size: int = 0,
        pages: int = 0,
        chunks: int = 0,
        reason: str | None = None,
        path: str | None = None,
    ) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, sha256, size, pages, chunks, status, reason, path, time.time()),
            )

    def set_status(self, name: str, status: str) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE documents SET status = ?, updated = ? WHERE name = ?", (status, time.time(), name)
            )

    def remove(self, name: str) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM documents WHERE name = ?", (name,))

    def close(self) -> None:
        with self._lock:
            self._conn.close()
