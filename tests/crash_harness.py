"""``python -m tests.crash_harness POINT ARGS…`` runs ``python -m rag ARGS…`` and SIGKILLs itself at POINT.

A tripwire for crash tests, where an outside kill cannot land reliably inside a step that takes milliseconds:
- ``before-chunks``: the registry says ``deleting``, no chunk is deleted yet;
- ``mid-chunks``: after the first of several delete requests to the store;
- ``before-registry``: chunks and kept copy gone, the registry row not yet removed.
The process dies by a real SIGKILL: no finally block, no atexit, no flush, exactly as with ``kill -9``.
"""

from __future__ import annotations

import os
import signal
import sys

from offline import enforce_offline

POINTS = ("before-chunks", "mid-chunks", "before-registry")


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str) -> None:
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


def main() -> int:
    point, rag_args = sys.argv[1], sys.argv[2:]
    if point not in POINTS:
        print(f"usage: python -m tests.crash_harness {{{','.join(POINTS)}}} RAG_ARGS…", file=sys.stderr)
        return 2
    enforce_offline()
    arm(point)
    from rag.cli import main as rag_main

    return rag_main(rag_args)


if __name__ == "__main__":
    sys.exit(main())
