"""Several front-ends, one Chroma server: each front-end's document registry follows what the others did.

With ``ZHIKU_CHROMA_URL`` the chunks live on the server, while each front-end keeps its own registry and keyword
index in its data directory. The keyword index follows the collection by chunk id (``ChunkStore.catch_up``);
the registry follows it by document here: a document another front-end stored gets a row (``ingested``, its
hash, pages and chunk count read from the chunks' metadata), and a finished row whose chunks another front-end
deleted goes. Rows of work in progress here (``ingesting``, ``deleting``) are left to this front-end's own
recovery.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from rag.registry import INGESTED, REJECTED, Registry

log = logging.getLogger(__name__)


def follow_shared_store(store, registry: Registry) -> tuple[list[str], list[str]]:
    """Bring ``registry`` in line with the documents in ``store``: (names added, names dropped)."""
    shas: dict[str, set[str]] = defaultdict(set)
    pages: dict[str, int] = defaultdict(int)
    chunks: dict[str, int] = defaultdict(int)
    for meta in store.metadatas():
        name = str(meta.get("source", ""))
        if not name:
            continue
        shas[name].add(str(meta.get("sha256", "")))
        pages[name] = max(pages[name], int(meta.get("page", 0)))
        chunks[name] += 1
    added, dropped = [], []
    for name, versions in shas.items():
        row = registry.get(name)
        if row is not None and (row.status not in (INGESTED, REJECTED) or row.sha256 in versions):
            continue  # this front-end's own, or work it is doing
        registry.put(name, INGESTED, sha256=sorted(versions)[0], pages=pages[name], chunks=chunks[name])
        added.append(name)
    for row in registry.all():
        if row.status == INGESTED and row.name not in shas:
            registry.remove(row.name)
            dropped.append(row.name)
    if added or dropped:
        log.info("the shared store changed: %d document(s) added here, %d dropped", len(added), len(dropped))
    return added, dropped
