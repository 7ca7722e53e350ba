"""The headless ingest command: progress on stderr, a summary table or JSON on stdout."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from ingest.pipeline import IngestReport, Progress, SourceFile
from ingest.readers import READS, SUFFIXES

EXIT_OK, EXIT_REJECTED, EXIT_USAGE, EXIT_BUSY = 0, 1, 2, 3


def collect_sources(paths: Sequence[str]) -> tuple[list[SourceFile], list[str]]:
    """Files as given, and folders searched recursively for the suffixes zhiku reads (any case: .pdf, .docx,
    .md, .txt, .html, images); returns sources and errors."""
    sources: list[SourceFile] = []
    errors: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
            if not found:
                print(f"warning: {raw}: folder holds no files zhiku reads ({READS})", file=sys.stderr)
            sources.extend(SourceFile(p, p.name) for p in found)
        elif path.is_file():
            sources.append(SourceFile(path, path.name))
        else:
            errors.append(f"{raw}: no such file or folder")
    return sources, errors


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ingest",
        description=f"Ingest files and folders (recursively, by suffix: {READS}) into zhiku's document store.",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="files or folders")
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="rebuild a damaged store from the documents it knows (damaged files are set aside, not deleted)",
    )
    p.add_argument("--force", action="store_true", help="with --rebuild: embed every document again")
    p.add_argument("--data-dir", help="data directory (default: setting ZHIKU_DATA_DIR, else ./data)")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="if another zhiku process is writing to the data directory, stop (exit 3) instead of waiting",
    )
    return p


class _Bars:
    """tqdm bars on stderr: one over the files, and per file in progress one over pages and one over chunks
    (reading runs ahead of embedding, so both move at once)."""

    def __init__(self, enabled: bool, file_count: int) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.enabled = enabled
        self.files = tqdm(total=file_count, desc="files", unit="file", file=sys.stderr, disable=not enabled)
        self.bars: dict[tuple[str, str], object] = {}

    def __call__(self, event: Progress) -> None:
        if not self.enabled:
            return
        if event.phase == "done":
            for key in [k for k in self.bars if k[0] == event.file]:
                self.bars.pop(key).close()
            self.files.update(1)
            return
        key = (event.file, event.phase)
        bar = self.bars.get(key)
        if bar is None:
            unit = "page" if event.phase == "pages" else "chunk"
            bar = self._tqdm(desc=f"{event.file[:40]} {event.phase}", unit=unit, file=sys.stderr, leave=False)
            self.bars[key] = bar
        bar.total = event.total
        bar.n = event.done
        bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.files.close()


def format_table(report: IngestReport) -> str:
    rows = [("file", "status", "pages", "chunks", "reason")]
    rows += [(f.file, f.status, str(f.pages), str(f.chunks), f.reason or "") for f in report.files]
    widths = [max(_width(r[i]) for r in rows) for i in range(4)]
    lines = []
    for row in rows:
        cells = [row[i] + " " * (widths[i] - _width(row[i])) for i in range(4)]
        lines.append("  ".join(cells + [row[4]]).rstrip())
    totals = report.totals()
    lines.append(
        f"\n{totals['files']} file(s): {totals['ingested']} ingested, {totals['updated']} updated, "
        f"{totals['unchanged']} unchanged, {totals['rejected']} rejected; "
        f"{totals['pages']} pages, {totals['chunks']} chunks in {totals['seconds']} s"
    )
    return "\n".join(lines)


def _width(text: str) -> int:
    """Display width in a terminal: wide (CJK) characters take two columns."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_OK
    from settings import Settings

    settings = Settings(data_dir=args.data_dir) if args.data_dir else Settings()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.rebuild or args.force:
        if args.paths or not args.rebuild:
            print("error: --rebuild takes no paths; --force goes with --rebuild", file=sys.stderr)
            return EXIT_USAGE
        return _rebuild(settings, args)
    if not args.paths:
        parser().print_usage(sys.stderr)
        print("error: give files or folders, or --rebuild", file=sys.stderr)
        return EXIT_USAGE
    sources, errors = collect_sources(args.paths)
    if errors:
        for error in errors:
            print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if not sources:
        print(f"error: no files zhiku reads ({READS}) found in the given paths", file=sys.stderr)
        return EXIT_USAGE

    from rag.writer_lock import WriterBusy, command_lock
    from services import StartupError, build_services

    try:
        services = build_services(settings, writer=command_lock(settings.data_dir, wait=not args.no_wait))
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        recovered = services.ingestor.recover()
        bars = _Bars(enabled=not args.quiet, file_count=len(sources))
        try:
            report = services.ingestor.ingest(sources, progress=bars)
        finally:
            bars.close()
    except WriterBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BUSY
    finally:
        services.close()
    if recovered.files:
        print(f"resumed {len(recovered.files)} interrupted ingest(s) first", file=sys.stderr)
    if args.json:
        print(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    else:
        print(format_table(report))
    return EXIT_OK if report.ok else EXIT_REJECTED


def _rebuild(settings, args) -> int:
    from ingest.rebuild import SharedStoreRebuild, known_documents, rebuild
    from rag.writer_lock import WriterBusy, command_lock
    from services import StartupError, build_services

    writer = command_lock(settings.data_dir, wait=not args.no_wait)
    bars = _Bars(enabled=not args.quiet, file_count=len(known_documents(settings)))
    try:
        with writer.hold("rebuilding the index"):  # the whole rebuild: no other writer sees a half-made store
            open_services = lambda: build_services(settings, rebuilding=True, writer=writer)  # noqa: E731
            result = rebuild(settings, open_services, force=args.force, progress=bars)
    except (*StartupError, SharedStoreRebuild) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except WriterBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BUSY
    finally:
        bars.close()
    try:
        if args.json:
            document = result.report.as_dict()
            document["set_aside"] = [str(p) for p in result.set_aside]
            document["registered_from_store"] = result.registered
            print(json.dumps(document, ensure_ascii=False, indent=2))
        elif not (result.set_aside or result.report.files):
            print("The store is readable: nothing to rebuild (--force embeds every document again).")
        else:
            print(format_table(result.report))
            print(result.summary())
    finally:
        result.services.close()
    return EXIT_OK if result.report.ok else EXIT_REJECTED
