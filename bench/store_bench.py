"""What the store's safety costs: the child-process check at start-up, a delete, and a rebuild.

Run from the repository root::

    python bench/store_bench.py [--sizes 1100,3000] [--repeats 5]

For each size, a PDF of that many one-line pages (one chunk each; over Chroma's 1,000-chunk sync threshold the
vector index is on disk, which is what the check loads) is ingested into a temporary data dir as an upload.
Then, per size, it prints:

- ``check s``: ``ChunkStoreCheck(...).result()`` alone, the child process that reads the store;
- ``open s``: ``build_services`` in a warm process (the check runs while the embedder loads);
- ``open, unchecked s``: the in-process part alone (``Registry`` and ``ChunkStore`` on the same store);
- ``delete s``: ``Ingestor.delete`` of that document (every chunk, in batches), on a copy;
- ``rebuild s`` / ``chunks/s``: ``rebuild`` after the chunk store's database was overwritten with noise.

Times are medians over ``--repeats`` (the rebuild runs once per size). ``data/`` is never touched.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from offline import enforce_offline  # noqa: E402

enforce_offline()


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def build_store(root: Path, pages: int) -> Path:
    from ingest.pipeline import SourceFile
    from services import build_services
    from settings import Settings
    from tests.fixtures.pdfs import make_pdf

    pdf = make_pdf(root / "pdfs" / "notes.pdf", [f"Note {i}: zebras cross the Mara river." for i in range(pages)])
    services = build_services(Settings(data_dir=root / "data"), keep_uploads=True)
    try:
        report = services.ingestor.ingest([SourceFile(pdf, pdf.name)])
        assert report.ok and report.files[0].chunks == pages, report.as_dict()
    finally:
        services.close()
    return root / "data"


def measure(pages: int, repeats: int) -> dict[str, float]:
    from ingest.rebuild import rebuild
    from models.embedder import Embedder
    from rag.damage import ChunkStoreCheck
    from rag.registry import Registry
    from rag.store import ChunkStore
    from services import build_services
    from settings import Settings

    with tempfile.TemporaryDirectory(prefix="zhiku-store-bench-") as tmp:
        data = build_store(Path(tmp), pages)
        settings = Settings(data_dir=data)
        row: dict[str, float] = {"chunks": pages}
        row["check s"] = median_time(lambda: ChunkStoreCheck(settings.chroma_dir).result(), repeats)
        row["open s"] = median_time(lambda: build_services(settings).close(), repeats)
        embedder = Embedder(settings.embed_model, "cpu", settings.embed_batch_size)

        def open_unchecked() -> None:
            registry = Registry(settings.registry_path)
            ChunkStore(settings.chroma_dir, embedder, embedder.name).close()
            registry.close()

        row["open, unchecked s"] = median_time(open_unchecked, repeats)

        copy = Path(tmp) / "copy"
        shutil.copytree(data, copy)
        services = build_services(Settings(data_dir=copy))
        started = time.perf_counter()
        assert services.ingestor.delete("notes.pdf")
        row["delete s"] = time.perf_counter() - started
        services.close()

        database = settings.chroma_dir / "chroma.sqlite3"
        database.write_bytes(os.urandom(database.stat().st_size))
        started = time.perf_counter()
        result = rebuild(settings, lambda: build_services(settings, rebuilding=True))
        row["rebuild s"] = time.perf_counter() - started
        result.services.close()
        assert result.report.totals()["chunks"] == pages
        row["chunks/s"] = pages / row["rebuild s"]
        return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1100,3000", help="pages (= chunks) per store, comma-separated")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    rows = [measure(int(size), args.repeats) for size in args.sizes.split(",")]
    headers = list(rows[0])
    widths = [max(len(h), 8) for h in headers]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths)))
    for row in rows:
        cells = [f"{row[h]:.0f}" if h in ("chunks", "chunks/s") else f"{row[h]:.2f}" for h in headers]
        print("  ".join(c.rjust(w) for c, w in zip(cells, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
