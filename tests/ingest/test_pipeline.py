import threading
from pathlib import Path

import pytest

from ingest.chunker import Chunker
from ingest.pipeline import Ingestor, SourceFile
from rag.registry import DELETING, INGESTED, INGESTING, REJECTED, Registry
from rag.store import ChunkStore
from tests.fixtures.pdfs import ZEBRA, make_image_only_pdf, make_pdf, make_png_named_pdf


def sources(*paths: Path) -> list[SourceFile]:
    return [SourceFile(p, p.name) for p in paths]


def by_file(report):
    return {f.file: f for f in report.files}


def stored_ids(store: ChunkStore, name: str) -> set[str]:
    return set(store.ids_for(name))


def test_ingest_then_unchanged(services, english_pdf, chinese_pdf):
    first = services.ingestor.ingest(sources(english_pdf, chinese_pdf))
    results = by_file(first)
    assert results["animals.pdf"].status == "ingested"
    assert results["中国文化.pdf"].status == "ingested"
    assert results["animals.pdf"].pages == 3
    total = sum(f.chunks for f in first.files)
    assert services.store.count() == total > 0
    assert first.ok

    again = services.ingestor.ingest(sources(english_pdf, chinese_pdf))
    assert [f.status for f in again.files] == ["unchanged", "unchanged"]
    assert [f.chunks for f in again.files] == [f.chunks for f in first.files]
    assert services.store.count() == total


def test_changed_file_replaces_its_old_chunks(services, pdf_dir):
    path = make_pdf(pdf_dir / "report.pdf", ["Old version about apples.", "More about apples."])
    services.ingestor.ingest(sources(path))
    old_sha = services.registry.get("report.pdf").sha256
    make_pdf(path, ["New version about oranges."])
    result = services.ingestor.ingest(sources(path)).files[0]
    assert result.status == "updated"
    record = services.registry.get("report.pdf")
    assert record.sha256 != old_sha and record.status == INGESTED
    ids = stored_ids(services.store, "report.pdf")
    assert ids == {f"{record.sha256}:{i}" for i in range(result.chunks)}
    assert services.store.count() == result.chunks


def test_bad_new_version_keeps_the_indexed_one(services, pdf_dir, english_pdf):
    services.ingestor.ingest(sources(english_pdf))
    before = stored_ids(services.store, "animals.pdf")
    english_pdf.write_bytes(b"")
    result = services.ingestor.ingest(sources(english_pdf)).files[0]
    assert result.status == "rejected"
    assert result.reason == "empty file (0 bytes) (the previously indexed version is kept)"
    assert stored_ids(services.store, "animals.pdf") == before
    assert services.registry.get("animals.pdf").status == INGESTED


def test_one_bad_file_never_stops_the_others(services, pdf_dir, english_pdf, chinese_pdf):
    empty = pdf_dir / "empty.pdf"
    empty.write_bytes(b"")
    png = make_png_named_pdf(pdf_dir / "picture.pdf")
    scan = make_image_only_pdf(pdf_dir / "scan.pdf")
    report = services.ingestor.ingest(sources(empty, english_pdf, png, scan, chinese_pdf))
    results = by_file(report)
    assert not report.ok
    assert results["animals.pdf"].status == "ingested"
    assert results["中国文化.pdf"].status == "ingested"
    assert results["empty.pdf"].reason == "empty file (0 bytes)"
    assert results["picture.pdf"].reason == "not a PDF: the content is a PNG image"
    assert results["scan.pdf"].reason == "no text layer, and OCR found no text either (2 pages)"
    rejected = {r.name: r.reason for r in services.registry.all() if r.status == REJECTED}
    assert set(rejected) == {"empty.pdf", "picture.pdf", "scan.pdf"}
    assert report.totals()["rejected"] == 3 and report.totals()["ingested"] == 2


def test_same_name_twice_in_one_batch(services, pdf_dir, english_pdf):
    other = make_pdf(pdf_dir / "sub" / "animals.pdf", ["A different animals file."])
    first, second = services.ingestor.ingest(sources(english_pdf, other)).files
    assert first.status == "ingested"
    assert second.status == "rejected" and "same batch" in second.reason


def test_same_content_under_another_name(services, pdf_dir, english_pdf):
    copy = pdf_dir / "copy of animals.pdf"
    copy.write_bytes(english_pdf.read_bytes())
    report = services.ingestor.ingest(sources(english_pdf, copy))
    assert by_file(report)["copy of animals.pdf"].status == "unchanged"
    assert "same content as 'animals.pdf'" in by_file(report)["copy of animals.pdf"].reason
    assert services.store.count() == by_file(report)["animals.pdf"].chunks


def test_progress_reports_pages_then_chunks(services, english_pdf):
    events = []
    services.ingestor.ingest(sources(english_pdf), progress=events.append)
    phases = [e.phase for e in events]
    assert phases.index("pages") < phases.index("chunks") < phases.index("done")
    last_chunks = [e for e in events if e.phase == "chunks"][-1]
    assert last_chunks.done == last_chunks.total > 0
    assert max(e.done for e in events if e.phase == "pages") == 3


def test_delete_removes_chunks_and_row(services, english_pdf, chinese_pdf):
    services.ingestor.ingest(sources(english_pdf, chinese_pdf))
    assert services.ingestor.delete("animals.pdf")
    assert services.registry.get("animals.pdf") is None
    assert stored_ids(services.store, "animals.pdf") == set()
    assert stored_ids(services.store, "中国文化.pdf")
    assert not services.ingestor.delete("animals.pdf")


class FailingStore(ChunkStore):
    """The real store whose writes fail after a number of successes: ``KeyboardInterrupt`` stands for a killed
    process, ``OSError`` for a full disk."""

    def __init__(self, *args, writes_before_failure: int, error: BaseException, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.writes_left = writes_before_failure
        self.error = error

    def add(self, texts, metadatas, ids) -> None:
        if self.writes_left == 0:
            raise self.error
        self.writes_left -= 1
        super().add(texts, metadatas, ids)


def crashing(settings, writes_before_crash: int):
    return build_ingestor(
        settings, FailingStore, writes_before_failure=writes_before_crash, error=KeyboardInterrupt("simulated crash")
    )


def build_ingestor(settings, store_class=ChunkStore, **store_kwargs):
    from models.embedder import Embedder

    embedder = Embedder()
    store = store_class(settings.chroma_dir, embedder, **store_kwargs)
    registry = Registry(settings.registry_path)
    chunker = Chunker(200, 40, embedder.count_tokens, embedder.max_tokens - 2)
    return Ingestor(store, registry, chunker, max_bytes=10**9, batch_size=1), store, registry


def test_crash_mid_ingest_then_rerun_finishes_exactly(settings, pdf_dir, tmp_path):
    path = make_pdf(pdf_dir / "long.pdf", [f"Page {i}. " + ZEBRA for i in range(6)])
    clean_settings = settings.model_copy(update={"data_dir": tmp_path / "clean"})
    clean, clean_store, _ = build_ingestor(clean_settings)
    expected = clean.ingest(sources(path)).files[0]
    expected_ids = stored_ids(clean_store, "long.pdf")
    assert expected.chunks >= 6

    crashed, store, registry = crashing(settings, writes_before_crash=3)
    with pytest.raises(KeyboardInterrupt):
        crashed.ingest(sources(path))
    assert registry.get("long.pdf").status == INGESTING
    assert 0 < len(stored_ids(store, "long.pdf")) < expected.chunks
    registry.close()

    rerun, store, registry = build_ingestor(settings)
    result = rerun.ingest(sources(path)).files[0]
    assert (result.status, result.chunks) == ("ingested", expected.chunks)
    assert stored_ids(store, "long.pdf") == expected_ids
    assert store.count() == expected.chunks
    assert registry.get("long.pdf").status == INGESTED


def test_recover_resumes_interrupted_ingest_and_delete(settings, pdf_dir, english_pdf):
    gone = make_pdf(pdf_dir / "gone.pdf", ["This file will disappear."])
    ingestor, store, registry = build_ingestor(settings)
    ingestor.ingest(sources(english_pdf))
    registry.set_status("animals.pdf", DELETING)  # as if killed during a delete
    crashed, _, crash_registry = crashing(settings, writes_before_crash=0)
    keep = make_pdf(pdf_dir / "keep.pdf", ["Resumable content about otters."])
    for path in (keep, gone):
        with pytest.raises(KeyboardInterrupt):
            crashed.ingest(sources(path))
    gone.unlink()

    recovered = ingestor.recover()
    assert [(f.file, f.status) for f in recovered.files] == [("keep.pdf", "ingested")]
    assert registry.get("animals.pdf") is None and not stored_ids(store, "animals.pdf")
    assert registry.get("keep.pdf").status == INGESTED and stored_ids(store, "keep.pdf")
    gone_record = registry.get("gone.pdf")
    assert gone_record.status == REJECTED and "interrupted" in gone_record.reason
    assert not stored_ids(store, "gone.pdf")


def test_store_failure_rolls_back_and_keeps_previous_version(settings, pdf_dir):
    path = make_pdf(pdf_dir / "notes.pdf", [f"Old page {i}. " + ZEBRA for i in range(3)])
    ingestor, store, registry = build_ingestor(settings)
    ingestor.ingest(sources(path))
    old_ids = stored_ids(store, "notes.pdf")
    registry.close()

    make_pdf(path, [f"New page {i}. " + ZEBRA for i in range(4)])
    other = make_pdf(pdf_dir / "other.pdf", ["Another document about otters."])
    failing, store, registry = build_ingestor(
        settings, FailingStore, writes_before_failure=2, error=OSError("No space left on device")
    )
    report = failing.ingest(sources(path, other))
    result = by_file(report)["notes.pdf"]
    assert result.status == "rejected"
    assert result.reason == "could not be stored (No space left on device); the previous version is kept"
    assert stored_ids(store, "notes.pdf") == old_ids
    assert registry.get("notes.pdf").status == INGESTED
    assert by_file(report)["other.pdf"].status == "rejected"  # the disk is still full
    assert registry.get("other.pdf").status == REJECTED and not stored_ids(store, "other.pdf")


def test_store_refuses_another_embedder(settings, services, english_pdf):
    from rag.store import EmbedderMismatch

    services.ingestor.ingest(sources(english_pdf))
    with pytest.raises(EmbedderMismatch, match="built with the embedder 'all-MiniLM-L6-v2'.*'other-model'"):
        ChunkStore(settings.chroma_dir, services.embedder, "other-model")
    assert ChunkStore(settings.chroma_dir, services.embedder, "all-MiniLM-L6-v2").count() > 0


def test_embedding_starts_before_a_long_document_is_read(settings, pdf_dir):
    path = make_pdf(pdf_dir / "long.pdf", [f"Page {i}. " + ZEBRA for i in range(12)])
    ingestor, store, _ = build_ingestor(settings)  # one chunk per page, batches of one chunk
    events = []
    result = ingestor.ingest(sources(path), progress=events.append).files[0]
    kinds = [(e.phase, e.done) for e in events]
    first_stored = kinds.index(("chunks", 1))
    last_page = max(i for i, (phase, _) in enumerate(kinds) if phase == "pages")
    assert first_stored < last_page  # parsing overlaps with embedding, page by page
    assert result.chunks == store.count() >= 12
    assert [e for e in events if e.phase == "chunks"][-1].total == result.chunks


def test_scanned_new_version_keeps_the_indexed_one(services, pdf_dir, english_pdf):
    services.ingestor.ingest(sources(english_pdf))
    before = stored_ids(services.store, "animals.pdf")
    make_image_only_pdf(english_pdf, pages=2)
    result = services.ingestor.ingest(sources(english_pdf)).files[0]
    assert result.status == "rejected"
    assert result.reason == (
        "no text layer, and OCR found no text either (2 pages) (the previously indexed version is kept)"
    )
    assert stored_ids(services.store, "animals.pdf") == before
    record = services.registry.get("animals.pdf")
    assert record.status == INGESTED and record.pages == 3


class WatchedRegistry(Registry):
    """The real registry, noting when the reader thread looks for a document with a given content."""

    def __init__(self, path, sha256: str) -> None:
        super().__init__(path)
        self.sha256, self.reader_looked = sha256, threading.Event()

    def find_by_sha(self, sha256):
        found = super().find_by_sha(sha256)
        if sha256 == self.sha256 and threading.current_thread().name == "zhiku-parse":
            self.reader_looked.set()
        return found


class RollbackAfterTheReaderLooked(ChunkStore):
    """The real store; rolling a failed version back waits until the reader has checked the next file."""

    registry: WatchedRegistry

    def delete_source(self, source, keep_sha256=None, only_sha256=None):
        if only_sha256 is not None:
            assert self.registry.reader_looked.wait(30)
        return super().delete_source(source, keep_sha256, only_sha256)


def test_a_failed_update_keeps_its_content_when_a_second_name_brings_it_in_the_same_batch(settings, english_pdf):
    """animals.pdf is updated to a scanned version (rejected, so the indexed one is kept) while a copy of the
    indexed version comes in under another name. The reader checks the copy while the update is under way (the
    registry then shows the new version); the indexed version's chunks (ids ``sha256:index``) must not change
    hands when the update is rolled back."""
    from ingest.pdf_reader import file_sha256

    ingestor, store, unwatched = build_ingestor(settings, RollbackAfterTheReaderLooked)
    unwatched.close()
    registry = WatchedRegistry(settings.registry_path, file_sha256(english_pdf))
    ingestor.registry = store.registry = registry
    try:
        ingestor.ingest(sources(english_pdf))
        before = stored_ids(store, "animals.pdf")
        copy = english_pdf.parent / "later" / "copy of animals.pdf"
        copy.parent.mkdir()
        copy.write_bytes(english_pdf.read_bytes())
        make_image_only_pdf(english_pdf, pages=2)
        registry.reader_looked.clear()
        report = by_file(ingestor.ingest(sources(english_pdf, copy)))
        assert registry.reader_looked.is_set()
        assert report["animals.pdf"].status == "rejected"
        assert report["copy of animals.pdf"].status == "unchanged"
        assert "same content as 'animals.pdf'" in report["copy of animals.pdf"].reason
        assert stored_ids(store, "animals.pdf") == before
        assert registry.get("animals.pdf").chunks == len(before) == store.count()
        assert registry.get("copy of animals.pdf") is None
    finally:
        store.close()
        registry.close()
