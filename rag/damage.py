"""Is the persisted store readable? The chunk store is checked in a child process first.

A damaged HNSW file can make Chroma's native reader crash the whole process (SIGSEGV, measured with a
randomised ``data_level0.bin``), so a reader that dies must be a child, never the app. The check opens the
collection, counts it, reads one vector and runs one query with it, which loads the vector index: it
runs while the embedder loads and adds about 0.5 s to a start. ``python -m rag.damage DIR`` is that child.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

COLLECTION = "zhiku_chunks"
CHECK_TIMEOUT_S = 300
_DAMAGED_EXIT = 3  # the child read the store and Chroma raised
# How a native reader dies on a damaged file; a SIGKILL (out of memory, say) is no verdict on the store.
_CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL, signal.SIGFPE}
PENDING_REBUILD = "rebuild-pending.json"  # written before a rebuild sets anything aside, removed when it is done


class StoreDamaged(RuntimeError):
    """A part of the store cannot be read; zhiku offers to rebuild it from the documents it knows."""

    def __init__(self, part: str, path: Path, reason: str) -> None:
        self.part, self.path, self.reason = part, Path(path), reason
        super().__init__(
            f"the {part} in {path} is damaged and cannot be opened ({reason}). zhiku can rebuild it from the "
            "documents it knows: open the app (python app.py) and press Rebuild, or run `python -m ingest --rebuild`. "
            "The damaged files are set aside, not deleted."
        )


class ChunkStoreCheck:
    """The child process reading the chunk store; ``result()`` raises StoreDamaged if it failed or crashed."""

    def __init__(self, directory: Path, enabled: bool = True) -> None:
        self.directory = directory.resolve()  # the child runs in the repository root, not in our working dir
        self._child: subprocess.Popen | None = None
        if enabled and (self.directory / "chroma.sqlite3").is_file():  # a new store has nothing to check
            self._child = subprocess.Popen(
                [sys.executable, "-m", "rag.damage", str(self.directory)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                cwd=Path(__file__).resolve().parents[1],
            )

    def result(self, timeout: float = CHECK_TIMEOUT_S) -> None:
        if self._child is None:
            return
        try:
            _, err = self._child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:  # slow is no verdict: the store is opened in-process as before
            self.cancel()
            log.warning(
                "checking the chunk store in %s took over %.0f s; opening it unchecked", self.directory, timeout
            )
            return
        code = self._child.returncode
        lines = [line for line in (err or "").strip().splitlines() if line.strip()]
        if code == 0:
            return
        if code < 0 and signal.Signals(-code) in _CRASH_SIGNALS:
            reason = f"reading it crashed the reader with {signal.Signals(-code).name}"
        elif code == _DAMAGED_EXIT:
            reason = lines[-1] if lines else "the check could not read it"
        else:  # the check itself failed (killed, could not start): no verdict on the store
            log.warning("the chunk store check exited with %s: %s", code, lines[-1] if lines else "no message")
            return
        raise StoreDamaged("chunk store", self.directory, reason)

    def cancel(self) -> None:
        if self._child is not None and self._child.poll() is None:
            self._child.kill()
            self._child.wait()


def pending_rebuild(data_dir: Path) -> dict | None:
    """What an unfinished rebuild had set aside (``{"registry": bool, "chunks": bool}``), or None."""
    marker = data_dir / PENDING_REBUILD
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return {"registry": True, "chunks": True}  # unreadable: assume the worst, the rebuild is idempotent


def refuse_pending_rebuild(data_dir: Path) -> None:
    """A rebuild that stopped half way left a store that looks healthy but lacks documents: say so."""
    if pending_rebuild(data_dir) is not None:
        raise StoreDamaged("document store", data_dir, "a rebuild was started and did not finish")


def check(directory: Path) -> None:
    """Open, count, read one vector and query with it (loads the HNSW index). Raises on damage."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.PersistentClient(path=str(directory), settings=ChromaSettings(anonymized_telemetry=False))
    if COLLECTION not in {c.name for c in client.list_collections()}:
        return
    collection = client.get_collection(COLLECTION)
    if collection.count() == 0:
        return
    first = collection.get(limit=1, include=["embeddings"])["embeddings"]
    if first is None or len(first) == 0:
        raise RuntimeError("the collection has chunks but no vectors")
    collection.query(query_embeddings=[first[0]], n_results=1, include=[])


def main(argv: list[str] | None = None) -> int:
    from offline import enforce_offline

    enforce_offline()
    directory = Path((argv or sys.argv[1:])[0])
    try:
        check(directory)
    except Exception as exc:  # noqa: BLE001 - any failure to read is the verdict, reported on the last line
        print(f"{type(exc).__name__}: {exc}".replace("\n", " "), file=sys.stderr)
        return _DAMAGED_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
