"""Ingest files into the store: parse ahead in one thread while the caller's thread embeds and stores.

Crash safety: a document's registry row is set to ``ingesting`` before its chunks are written and to
``ingested`` after; chunk ids are ``sha256:index`` and written with upsert, so re-running after a crash
rewrites the same ids and then drops the chunks of any older version. Deleting marks ``deleting`` first.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ingest.chunker import Chunk, Chunker
from ingest.document import OpenedDocument, RejectedFile
from ingest.readers import open_document
from rag.registry import DELETING, INGESTED, INGESTING, REJECTED, DocumentRecord, Registry
from rag.store import ChunkStore
from rag.writer_lock import WriterBusy, WriterLock

log = logging.getLogger(__name__)

INGESTED_NEW, UNCHANGED, UPDATED, REJECTED_STATUS = "ingested", "unchanged", "updated", "rejected"


@dataclass
class FileResult:
    file: str
    status: str
    reason: str | None = None
    pages: int = 0
    chunks: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class IngestReport:
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(f.status != REJECTED_STATUS for f in self.files)

    def totals(self) -> dict[str, int | float]:
        counts = {s: 0 for s in (INGESTED_NEW, UPDATED, UNCHANGED, REJECTED_STATUS)}
        for f in self.files:
            counts[f.status] += 1
        return {
            "files": len(self.files),
            **counts,
            "pages": sum(f.pages for f in self.files),
            "chunks": sum(f.chunks for f in self.files),
            "seconds": round(self.seconds, 2),
        }

    def as_dict(self) -> dict:
        return {"files": [f.as_dict() for f in self.files], "totals": self.totals()}


@dataclass(frozen=True)
class Progress:
    """``phase`` is ``pages`` (reading), ``chunks`` (embedding and storing) or ``done`` for ``file_index``."""

    file: str
    file_index: int
    file_count: int
    phase: str
    done: int
    total: int


ProgressFn = Callable[[Progress], None]
Opener = Callable[[Path, int, str], OpenedDocument]  # (path, max bytes, name) -> the opened document


@dataclass(frozen=True)
class SourceFile:
    path: Path
    name: str  # the name the document is known by (a file name, possibly Chinese)


@dataclass(frozen=True)
class _Batch:
    chunks: list[Chunk]
    pages_read: int  # pages read so far, for estimating the document's chunk total


_END = "end of document"


@dataclass
class _Parsed:
    """One file as the reading thread hands it over: opened, then its chunks arrive in ``batches``."""

    position: int
    source: SourceFile
    document: OpenedDocument | None = None
    batches: queue.Queue = field(default_factory=lambda: queue.Queue(maxsize=4))  # _Batch, then _END or an error
    abandoned: threading.Event = field(default_factory=threading.Event)  # the storing side gave up on it
    result: FileResult | None = None  # set when nothing is left to store


class Ingestor:
    def __init__(
        self,
        store: ChunkStore,
        registry: Registry,
        chunker: Chunker,
        max_bytes: int,
        batch_size: int = 32,
        uploads_dir: Path | None = None,
        keep_copies: bool = False,
        opener: Opener | None = None,
        writer: WriterLock | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.chunker = chunker
        self.max_bytes = max_bytes
        self.batch_size = batch_size
        self.uploads_dir = uploads_dir  # copies of uploaded files live here; deleting a document drops its copy
        self.keep_copies = keep_copies and uploads_dir is not None  # copy accepted files there (UI uploads)
        # one ingest or delete at a time: in this process, and with ``writer`` (services pass the data directory's
        # lock) in every zhiku process writing to the same data directory
        self.writer = writer or WriterLock(None)
        self.opener = opener or open_document  # by suffix: PDF, Word, Markdown, text, HTML, images (OCR)

    # -- public -----------------------------------------------------------------------------------------

    def ingest(self, sources: Sequence[SourceFile], progress: ProgressFn | None = None) -> IngestReport:
        started = time.perf_counter()
        report = IngestReport(files=[None] * len(sources))  # type: ignore[list-item]
        notify = progress or (lambda _p: None)
        with self.writer.hold(f"ingesting {len(sources)} file(s)"):
            parsed: queue.Queue[_Parsed | None] = queue.Queue(maxsize=2)
            stop = threading.Event()
            reader = threading.Thread(
                target=self._parse_all, args=(sources, parsed, notify, stop), name="zhiku-parse", daemon=True
            )
            reader.start()
            try:
                while (item := parsed.get()) is not None:
                    if item.result is None:
                        item.result = self._store_or_roll_back(item, len(sources), notify)
                    report.files[item.position] = item.result
                    notify(Progress(item.result.file, item.position, len(sources), "done", 1, 1))
                    log.info("%s: %s %s", item.result.file, item.result.status, item.result.reason or "")
            finally:
                stop.set()
                reader.join()
                self.store.refresh()  # searches see the new chunks' words too
        report.seconds = time.perf_counter() - started
        return report

    def delete(self, name: str) -> bool:
        """Remove a document and its chunks; False when it is not known."""
        with self.writer.hold(f"deleting {name}"):
            record = self.registry.get(name)
            if record is None:
                return False
            self.registry.set_status(name, DELETING)
            self._finish_delete(name, record.path)
            self.store.refresh()
            return True

    def finish_deletes(self, wait: bool = True) -> list[str]:
        """Finish the deletes a crash interrupted (cheap: every entry point does it when it opens the store).
        ``wait=False`` (commands that only read): skip it, returning [], while another writer holds the lock."""
        try:
            with self.writer.hold("finishing interrupted deletes", wait=wait):
                return self._finish_deletes()
        except WriterBusy:
            return []

    def _finish_deletes(self) -> list[str]:
        finished = []
        for record in self.registry.all():
            if record.status == DELETING:
                log.info("finishing the interrupted delete of %s", record.name)
                self._finish_delete(record.name, record.path)
                finished.append(record.name)
        if finished:
            self.store.refresh()
        return finished

    def recover(self, progress: ProgressFn | None = None) -> IngestReport:
        """Finish what a crash interrupted: pending deletes, and ingests whose file is still there."""
        pending: list[SourceFile] = []
        with self.writer.hold("resuming interrupted ingests"):
            self._finish_deletes()
            for record in self.registry.all():
                if record.status == INGESTING:
                    if file := available_file(record.path, self.uploads_dir):
                        pending.append(SourceFile(file, record.name))
                    else:
                        self.store.delete_source(record.name)
                        self.registry.put(
                            record.name,
                            REJECTED,
                            reason="ingest was interrupted and the file is gone; add it again",
                        )
            self.store.refresh()
        if not pending:
            return IngestReport()
        log.info("resuming %d interrupted ingest(s)", len(pending))
        return self.ingest(pending, progress)

    def file_of(self, path: str | None) -> Path | None:
        return document_file(path, self.uploads_dir)

    def stored_file(self, name: str) -> Path | None:
        """The copy zhiku keeps of the ingested document ``name`` (an upload), or None: a document ingested
        in place from a folder, or one not (or no longer) ingested."""
        record = self.registry.get(name)
        if record is None or record.status != INGESTED:
            return None
        file = available_file(record.path, self.uploads_dir)
        return file if file is not None and in_uploads(file, self.uploads_dir) else None

    # -- reading (background thread) ----------------------------------------------------------------------

    def _parse_all(
        self, sources: Sequence[SourceFile], out: queue.Queue, notify: ProgressFn, stop: threading.Event
    ) -> None:
        seen: dict[str, int] = {}
        batch_hashes: dict[str, str] = {}  # sha256 -> name, for twins inside this batch
        try:
            for position, source in enumerate(sources):
                item = _Parsed(position, source)
                try:
                    if source.name in seen:
                        raise RejectedFile(f"another file named {source.name!r} is in the same batch")
                    seen[source.name] = position
                    self._open(item, batch_hashes)
                except RejectedFile as exc:
                    item.result = self._rejected(source.name, exc.reason)
                except Exception as exc:  # noqa: BLE001 - one file's failure must not stop the others
                    log.exception("unexpected error reading %s", source.path)
                    item.result = self._rejected(source.name, f"could not be read ({type(exc).__name__}: {exc})")
                if not _put(out, item, stop):
                    return
                if item.result is None:
                    self._read_pages(item, len(sources), notify, stop)
                if stop.is_set():
                    return
        finally:
            _put(out, None, stop)

    def _open(self, item: _Parsed, batch_hashes: dict[str, str]) -> None:
        doc = self.opener(item.source.path, self.max_bytes, item.source.name)
        record = self.registry.get(doc.name)
        if record and record.status == INGESTED and record.sha256 == doc.sha256:
            item.result = FileResult(doc.name, UNCHANGED, None, record.pages, record.chunks)
            return
        # Chunk ids derive from the content hash: the same content under a second name is not stored twice.
        twin = batch_hashes.get(doc.sha256) or getattr(self.registry.find_by_sha(doc.sha256), "name", None)
        if twin and twin != doc.name:
            item.result = FileResult(
                doc.name, UNCHANGED, f"same content as {twin!r}, already indexed", doc.page_count, 0
            )
            return
        batch_hashes[doc.sha256] = doc.name
        item.document = doc

    def _read_pages(self, item: _Parsed, file_count: int, notify: ProgressFn, stop: threading.Event) -> None:
        """Read and chunk page by page, handing over a batch as soon as it is full (embedding starts early)."""
        doc = item.document
        assert doc is not None

        def on_page(done: int, total: int) -> None:
            notify(Progress(doc.name, item.position, file_count, "pages", done, total))

        pending: list[Chunk] = []
        next_index = 0
        try:
            for page in doc.pages(on_page):
                chunks = self.chunker.split_page(page, doc.name, doc.sha256, next_index)
                next_index += len(chunks)
                pending += chunks
                while len(pending) >= self.batch_size:
                    batch, pending = pending[: self.batch_size], pending[self.batch_size :]
                    if not _put(item.batches, _Batch(batch, page.number), stop, item.abandoned):
                        return
            if pending and not _put(item.batches, _Batch(pending, doc.page_count), stop, item.abandoned):
                return
            _put(item.batches, _END, stop, item.abandoned)
        except Exception as exc:  # noqa: BLE001 - handed to the storing side, which rolls the file back
            _put(item.batches, exc, stop, item.abandoned)

    def _rejected(self, name: str, reason: str) -> FileResult:
        """Record a refusal; a document already indexed under this name keeps its previous version."""
        record = self.registry.get(name)
        if record is None or record.status == REJECTED:
            self.registry.put(name, REJECTED, reason=reason)
        else:
            reason = f"{reason} (the previously indexed version is kept)"
        return FileResult(name, REJECTED_STATUS, reason)

    # -- storing (caller's thread) ------------------------------------------------------------------------

    def _store_or_roll_back(self, item: _Parsed, file_count: int, notify: ProgressFn) -> FileResult:
        """Store one document; if reading or storing fails, remove its new chunks and keep any earlier version."""
        assert item.document is not None
        name, sha = item.document.name, item.document.sha256
        # Checked again here, where documents are stored one after another: when the reader looked, an update
        # of another document from this content may have been under way, and been rolled back since.
        twin = self.registry.find_by_sha(sha)
        if twin is not None and twin.name != name:
            item.abandoned.set()
            reason = f"same content as {twin.name!r}, already indexed"
            return FileResult(name, UNCHANGED, reason, item.document.page_count, 0)
        previous = self.registry.get(name)
        try:
            return self._store(item, previous, file_count, notify)
        except Exception as exc:  # noqa: BLE001 - reported per file; the other files go on
            item.abandoned.set()
            if isinstance(exc, RejectedFile):  # found while reading its pages (no text at all, say)
                reason, kept = exc.reason, f"{exc.reason} (the previously indexed version is kept)"
            else:
                log.exception("storing %s failed", name)
                reason = f"could not be stored ({exc})"
                kept = f"{reason}; the previous version is kept"
            self.store.delete_source(name, only_sha256=sha)
            new_copy = self.registry.get(name)
            if new_copy and new_copy.path != (previous.path if previous else None):
                self._drop_copy(new_copy.path)
            if previous is not None and previous.status == INGESTED and previous.sha256 != sha:
                self.registry.put(
                    name,
                    INGESTED,
                    sha256=previous.sha256,
                    size=previous.size,
                    pages=previous.pages,
                    chunks=previous.chunks,
                    path=previous.path,
                )
                return FileResult(name, REJECTED_STATUS, kept)
            self.registry.put(name, REJECTED, reason=reason)
            return FileResult(name, REJECTED_STATUS, reason)

    def _store(self, item: _Parsed, previous: DocumentRecord | None, file_count: int, notify: ProgressFn) -> FileResult:
        doc = item.document
        assert doc is not None
        updating = previous is not None and previous.status in (INGESTED, INGESTING) and previous.sha256
        path = recorded_path(self._keep_copy(doc) if self.keep_copies else doc.path, self.uploads_dir)
        fields = dict(sha256=doc.sha256, size=doc.size, pages=doc.page_count, path=path)
        self.registry.put(doc.name, INGESTING, **fields)
        stored = 0
        while (message := item.batches.get()) is not _END:
            if isinstance(message, BaseException):
                raise message
            batch = message.chunks
            self.store.add([c.text for c in batch], [c.metadata() for c in batch], [c.id for c in batch])
            stored += len(batch)
            expected = max(stored, round(stored * doc.page_count / max(1, message.pages_read)))
            notify(Progress(doc.name, item.position, file_count, "chunks", stored, expected))
        notify(Progress(doc.name, item.position, file_count, "chunks", stored, stored))
        self.store.delete_source(doc.name, keep_sha256=doc.sha256)
        self.registry.put(doc.name, INGESTED, chunks=stored, **fields)
        if updating and previous and previous.path and previous.path != path:
            self._drop_copy(previous.path)
        status = UPDATED if updating and previous and previous.sha256 != doc.sha256 else INGESTED_NEW
        return FileResult(doc.name, status, None, doc.page_count, stored)

    def _keep_copy(self, document: OpenedDocument) -> Path:
        assert self.uploads_dir is not None
        target = self.uploads_dir / document.sha256[:16] / document.name
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".part")
            shutil.copyfile(document.path, partial)
            partial.replace(target)
        return target

    def _drop_copy(self, path: str | None) -> None:
        copy = available_file(path, self.uploads_dir)
        if copy and in_uploads(copy, self.uploads_dir):
            copy.unlink()
            try:
                copy.parent.rmdir()
            except OSError:
                pass

    def _finish_delete(self, name: str, path: str | None) -> None:
        """Chunks first, then the kept copy, then the registry row: a crash at any point leaves ``deleting``."""
        self.store.delete_source(name)
        self._drop_copy(path)
        self.registry.remove(name)


def document_file(path: str | None, uploads_dir: Path | None) -> Path | None:
    """The file a registry ``path`` names: absolute for a file ingested in place, else a kept upload copy."""
    if not path:
        return None
    file = Path(path)
    return file if file.is_absolute() or uploads_dir is None else uploads_dir / file


def available_file(path: str | None, uploads_dir: Path | None) -> Path | None:
    """``document_file``, or None when that file is no longer there."""
    file = document_file(path, uploads_dir)
    return file if file and file.is_file() else None


def in_uploads(file: Path, uploads_dir: Path | None) -> bool:
    return uploads_dir is not None and uploads_dir.resolve() in file.resolve().parents


def recorded_path(file: Path, uploads_dir: Path | None) -> str:
    """The inverse of ``document_file``: relative to the uploads folder inside it (the data dir can move)."""
    if in_uploads(file, uploads_dir):
        return str(file.resolve().relative_to(uploads_dir.resolve()))
    return str(file.resolve())


def _put(out: queue.Queue, item, *stops: threading.Event) -> bool:
    """Hand ``item`` to the storing side unless it stopped (raised, or gave up on this file); False then."""
    while not any(stop.is_set() for stop in stops):
        try:
            out.put(item, timeout=0.2)
            return True
        except queue.Full:
            continue
    return False
