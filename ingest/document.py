"""What every reader hands the pipeline: a checked, opened file whose text comes out part by part.

A PDF's parts are its physical pages. A file without pages (text, Markdown, Word, HTML) is cut into parts by
its own structure, and each part says where it is (``location``: a heading path, a line range, a section),
which citations show instead of a page number. An image, or a PDF page without a text layer, is read by OCR
and its part says so (``ocr``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ingest.pdf_outline import NO_SECTIONS, PageSections


class RejectedFile(Exception):
    """The file cannot be ingested; ``reason`` says why in plain words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Page:
    """One part of a document's text."""

    number: int  # 1-based: the physical page of a PDF (an image is page 1), else the part's position
    text: str
    sections: PageSections = NO_SECTIONS  # what a PDF's outline says of this page
    location: str = ""  # where the part is in a file without pages ("lines 12–40", "Setup › Linux"); "" for pages
    ocr: bool = False  # the text was read from pixels


ProgressFn = Callable[[int, int], None]  # (parts done, parts in all)

OCR_MODES = ("auto", "off", "force")


@dataclass(frozen=True)
class OcrSetting:
    """When pixels are read as text (``ZHIKU_OCR``), and by what.

    auto: images, and PDF pages without a usable text layer; force: every PDF page, its text layer ignored
    (a bad text layer: scanned pages with garbage OCR from elsewhere); off: never, images are refused.
    ``engine`` is an ``ingest.ocr.Ocr`` (anything with ``read(image) -> result with .text``), loaded on first use.
    """

    mode: str = "auto"
    engine: object | None = None

    @property
    def enabled(self) -> bool:
        return self.mode != "off" and self.engine is not None


NO_OCR = OcrSetting("off")


class OpenedDocument(Protocol):
    """A file that passed its reader's checks and opened; its parts are read lazily, in order."""

    path: Path
    name: str
    sha256: str
    size: int
    page_count: int  # physical pages, or parts for a file without pages

    def pages(self, on_page: ProgressFn | None = None) -> Iterator[Page]:
        """The parts with text, in order; raises RejectedFile at the end if none had any."""
        ...


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_size(path: Path, max_bytes: int) -> int:
    """The file's size in bytes; RejectedFile if it cannot be read, is empty or is over the limit."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise RejectedFile(f"cannot read the file: {exc.strerror or exc}") from exc
    if size == 0:
        raise RejectedFile("empty file (0 bytes)")
    if size > max_bytes:
        raise RejectedFile(
            f"file is {size / 1e6:.3g} MB, over the {max_bytes / 1e6:g} MB limit (setting ZHIKU_MAX_FILE_MB)"
        )
    return size


_BINARY = [
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive or an Office document"),
    (b"PK\x05\x06", "an empty ZIP archive"),
    (b"\xd0\xcf\x11\xe0", "an old Microsoft Office document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\x7fELF", "a program"),
    (b"SQLite format 3\x00", "an SQLite database"),
]
_TEXT_FORMATS = [(b"{\\rtf", "an RTF document"), (b"<!DOCTYPE html", "an HTML page"), (b"<html", "an HTML page")]


def binary_kind(head: bytes) -> str | None:
    """What a binary file's first bytes say it is ("a PNG image"), or None."""
    return next((what for magic, what in _BINARY if head.startswith(magic)), None)


def content_kind(head: bytes) -> str | None:
    """What a file's first bytes say it is, binary or a text format ("an HTML page"), or None."""
    text_format = next((what for magic, what in _TEXT_FORMATS if head.lstrip().startswith(magic)), None)
    return binary_kind(head) or text_format


def short_error(exc: BaseException) -> str:
    """An exception as a short phrase for a rejection reason."""
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "…"
