"""Rebuild a damaged store from the documents zhiku knows; the damaged files are set aside, never deleted.

- Chunk store damaged: it is moved to ``chroma.damaged-<time>``, a new one is made, and every document the
  registry lists is ingested again from its file (the kept upload copy, or where it was ingested from).
- Registry damaged: it is moved aside too; the documents are found again in the uploads folder (ingested again)
  and in the chunk store's metadata (registered from it, no re-embedding).
A document whose file is gone is listed as rejected with the reason, so the user knows what to add again.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ingest.pipeline import (
    REJECTED_STATUS,
    FileResult,
    IngestReport,
    ProgressFn,
    available_file,
    document_file,
    recorded_path,
)
from rag.damage import PENDING_REBUILD, ChunkStoreCheck, StoreDamaged, pending_rebuild
from rag.registry import INGESTED, INGESTING, REJECTED, Registry
from settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnownDocument:
    name: str
    file: Path | None  # where its text can be read again; None when that file is gone

    @property
    def available(self) -> bool:
        return self.file is not None


@dataclass
class RebuildResult:
    services: object  # services.Services, opened on the rebuilt store
    report: IngestReport
    set_aside: list[Path] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)  # found in the chunk store, registered without re-reading

    def summary(self) -> str:
        totals = self.report.totals()
        lines = [
            f"Rebuilt the index: {totals['ingested'] + totals['updated']} document(s) ingested again, "
            f"{len(self.registered)} recovered from the chunk store, {totals['rejected']} could not be "
            f"(see their reasons), {totals['chunks']} chunks written.",
            f"重建完成：重新索引 {totals['ingested'] + totals['updated']} 个文档，"
            f"{totals['rejected']} 个无法恢复（原因见文档列表）。",
        ]
        if self.set_aside:
            lines.append("Files set aside, not deleted / 已保留的旧文件: " + ", ".join(str(p) for p in self.set_aside))
        return "\n".join(lines)


def set_aside(path: Path, label: str = "damaged") -> Path:
    """Rename ``path`` to ``<name>.<label>-<time>`` beside it (never deleted); returns the new path."""
    target = _free_name(path, label)
    path.rename(target)
    log.warning("set aside %s as %s", path, target)
    return target


def set_aside_registry(registry_path: Path) -> Path:
    """The database with its -wal and -shm, into one folder under their own names, so SQLite can still read them."""
    folder = _free_name(registry_path.with_name(registry_path.stem), "damaged")
    folder.mkdir(parents=True)
    for suffix in ("", "-wal", "-shm"):
        part = registry_path.with_name(registry_path.name + suffix)
        if part.exists():
            part.rename(folder / part.name)
    log.warning("set aside %s as %s", registry_path, folder)
    return folder


def _free_name(path: Path, label: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = path.with_name(f"{path.name}.{label}-{stamp}"), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.{label}-{stamp}-{n}")
    return target


def registry_readable(settings: Settings) -> bool:
    try:
        Registry(settings.registry_path).close()
        return True
    except StoreDamaged:
        return False


def chunk_store_readable(settings: Settings) -> bool:
    try:
        ChunkStoreCheck(settings.chroma_dir).result()
        return True
    except StoreDamaged:
        return False


def kept_uploads(uploads_dir: Path) -> dict[str, Path]:
    """Kept copies (``uploads/<hash>/<name>``) by document name, the newest when a name appears twice."""
    found: dict[str, Path] = {}
    for file in sorted(uploads_dir.glob("*/*"), key=lambda p: p.stat().st_mtime):
        if file.is_file() and not file.name.endswith(".part"):
            found[file.name] = file
    return found


def known_documents(settings: Settings) -> list[KnownDocument]:
    """What a rebuild can restore: the registry's documents, and the kept uploads when the registry is lost."""
    try:
        registry = Registry(settings.registry_path)
    except StoreDamaged:
        registry = None
    known: dict[str, KnownDocument] = {}
    if registry is None or (pending_rebuild(settings.data_dir) or {}).get("registry"):
        known = {name: KnownDocument(name, file) for name, file in kept_uploads(settings.uploads_dir).items()}
    if registry is not None:
        try:
            for record in registry.all():
                if record.status in (INGESTED, INGESTING):
                    known[record.name] = KnownDocument(record.name, available_file(record.path, settings.uploads_dir))
        finally:
            registry.close()
    return [known[name] for name in sorted(known)]


class SharedStoreRebuild(RuntimeError):
    """A rebuild was asked for a store that lives on a shared Chroma server; the message says what to do."""


def rebuild(
    settings: Settings, open_services: Callable[[], object], *, force: bool = False, progress: ProgressFn | None = None
) -> RebuildResult:
    """Set aside what cannot be read (the chunk store in any case with ``force``), then restore what is known.

    ``open_services`` opens the store once the damaged parts are out of the way:
    ``build_services(settings, rebuilding=True)``. A marker file says what was set aside until the restore is
    done; if this stops half way, the app and the commands refuse the half-filled store, and the next rebuild
    finishes the job.
    """
    if settings.chroma_url:
        raise SharedStoreRebuild(
            f"The chunks are on the Chroma server at {settings.chroma_url}, which other front-ends share: a rebuild "
            "from here would replace their store too. Rebuild it on purpose: stop the server, move its --path "
            "aside, start it again, then run `python -m ingest` over the documents from one front-end."
        )
    pending = pending_rebuild(settings.data_dir) or {}
    registry_damaged = not registry_readable(settings)
    store_damaged = not chunk_store_readable(settings)
    registry_lost = registry_damaged or bool(pending.get("registry"))
    store_lost = store_damaged or force or bool(pending.get("chunks"))
    marker = settings.data_dir / PENDING_REBUILD
    partial = marker.with_name(marker.name + ".part")
    partial.write_text(json.dumps({"registry": registry_lost, "chunks": store_lost}))
    partial.replace(marker)

    aside: list[Path] = []
    previous: Path | None = None  # a healthy store replaced by --force
    if registry_damaged:
        aside.append(set_aside_registry(settings.registry_path))
    if settings.chroma_dir.exists() and (store_damaged or (force and not pending.get("chunks"))):
        if store_damaged:
            aside.append(set_aside(settings.chroma_dir))
        else:
            previous = set_aside(settings.chroma_dir, label="before-rebuild")

    services = open_services()
    registered: list[str] = []
    lost: list[FileResult] = []
    try:
        if registry_lost:
            registered = _register_again(services, settings, from_store=not store_lost)
        if store_lost:
            lost = _mark_for_ingest(services, settings)
        report = services.ingestor.recover(progress)
        report.files = lost + report.files
    except BaseException:
        services.close()
        raise
    marker.unlink()
    if previous is not None:
        if report.ok:
            shutil.rmtree(previous)  # every document is back: the replaced store is only a stale copy
        else:
            aside.append(previous)  # some could not come back: their old chunks stay within reach
    result = RebuildResult(services, report, aside, registered)
    log.info("%s", result.summary())
    return result


def _mark_for_ingest(services, settings: Settings) -> list[FileResult]:
    """Every document's chunks are gone with the old store: mark each to be ingested again; the lost ones."""
    lost = []
    for record in services.registry.all():
        if record.status not in (INGESTED, INGESTING):
            continue
        if available_file(record.path, settings.uploads_dir):
            services.registry.set_status(record.name, INGESTING)
        else:
            file = document_file(record.path, settings.uploads_dir)
            where = f"the file is no longer at {file}" if file else "zhiku does not know where its file is"
            reason = f"the index was rebuilt and {where}; add it again"
            services.registry.put(record.name, REJECTED, reason=reason)
            lost.append(FileResult(record.name, REJECTED_STATUS, reason))
    return lost


def _register_again(services, settings: Settings, *, from_store: bool) -> list[str]:
    """Refill a new registry: kept uploads are ingested again; other documents come from the store's metadata."""
    uploads = kept_uploads(settings.uploads_dir)
    for name, file in uploads.items():
        services.registry.put(name, INGESTING, path=recorded_path(file, settings.uploads_dir))
    if not from_store:
        return []
    registered = []
    for name, version in _documents_in_store(services.store).items():
        if name in uploads:
            continue
        sha256, pages, chunks = version
        services.registry.put(name, INGESTED, sha256=sha256, pages=pages, chunks=chunks)
        registered.append(name)
    return registered


def _documents_in_store(store) -> dict[str, tuple[str, int, int]]:
    """name -> (sha256, pages, chunks) from the chunks' metadata (pages: the highest page with text)."""
    found: dict[str, tuple[str, int, int]] = {}
    for meta in store.metadatas():
        name, sha256, page = meta.get("source"), meta.get("sha256"), int(meta.get("page", 0))
        if not name:
            continue
        _, pages, chunks = found.get(name, (sha256, 0, 0))
        found[name] = (sha256, max(pages, page), chunks + 1)
    return found
