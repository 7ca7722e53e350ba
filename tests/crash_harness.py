"""``python -m tests.crash_harness POINT ARGS…`` runs ``python -m rag ARGS…`` (or ``python -m ingest ARGS…``)
and SIGKILLs itself at POINT.

A tripwire for crash tests, where an outside kill cannot land reliably inside a step that takes milliseconds.
Deletes (``python -m rag delete NAME``):
- ``before-chunks``: the registry says ``deleting``, no chunk is deleted yet;
- ``mid-chunks``: after the first of several delete requests to the store;
- ``before-registry``: chunks and kept copy gone, the registry row not yet removed.
Ingests (``python -m ingest FOLDER``):
- ``between-indexes``: the third batch is in the keyword index and not yet in Chroma;
- ``mid-refresh``: every chunk is stored, the new BM25 matrix is written but not yet swapped in.
The process dies by a real SIGKILL: no finally block, no atexit, no flush, exactly as with ``kill -9``.
"""

from __future__ import annotations

import os
import signal
import sys

from offline import enforce_offline

DELETE_POINTS = ("before-chunks", "mid-chunks", "before-registry")
INGEST_POINTS = ("between-indexes", "mid-refresh")
POINTS = DELETE_POINTS + INGEST_POINTS


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm_delete(point: str) -> None:
    from langchain_chroma import Chroma

    from rag.registry import Registry
    from rag.store import ChunkStore

    ChunkStore.delete_batch = 16  # several requests per document, so that "mid-chunks" is a real middle
    delete_chunks, remove_row = Chroma.delete, Registry.remove

    def chunks_tripwire(self, ids=None, **kwargs):
        if point == "before-chunks":
            die()
        delete_chunks(self, ids=ids, **kwargs)
        if point == "mid-chunks":
            die()

    def registry_tripwire(self, name):
        if point == "before-registry":
            die()
        remove_row(self, name)

    Chroma.delete = chunks_tripwire
    Registry.remove = registry_tripwire


def arm_ingest(point: str) -> None:
    import bm25s

    from rag.keyword_index import KeywordIndex

    add_words, save_matrix = KeywordIndex.add, bm25s.BM25.save
    batches = []

    def keyword_tripwire(self, *args, **kwargs):
        add_words(self, *args, **kwargs)
        batches.append(1)
        if point == "between-indexes" and len(batches) == 3:
            die()

    def matrix_tripwire(self, *args, **kwargs):
        save_matrix(self, *args, **kwargs)
        if point == "mid-refresh":
            die()

    KeywordIndex.add = keyword_tripwire
    bm25s.BM25.save = matrix_tripwire


def main() -> int:
    point, args = sys.argv[1], sys.argv[2:]
    if point not in POINTS:
        print(f"usage: python -m tests.crash_harness {{{','.join(POINTS)}}} ARGS…", file=sys.stderr)
        return 2
    enforce_offline()
    if point in DELETE_POINTS:
        arm_delete(point)
        from rag.cli import main as command
    else:
        arm_ingest(point)
        from ingest.cli import main as command
    return command(args)


if __name__ == "__main__":
    sys.exit(main())
