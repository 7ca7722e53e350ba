"""Read a PDF's text page by page, refusing bad files with a reason a user can act on."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# A page with fewer characters than this is treated as having no text layer.
MIN_PAGE_CHARS = 3

_MAGIC = [
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"PK\x03\x04", "a ZIP archive (Word/Excel/…)"),
    (b"\xd0\xcf\x11\xe0", "an old Microsoft Office document"),
    (b"{\\rtf", "an RTF document"),
    (b"<!DOCTYPE html", "an HTML page"),
    (b"<html", "an HTML page"),
]


class RejectedFile(Exception):
    """The file cannot be ingested; ``reason`` says why in plain words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PdfPage:
    number: int  # 1-based physical page
    text: str


@dataclass(frozen=True)
class PdfDocument:
    path: Path
    name: str
    sha256: str
    size: int
    page_count: int
    pages: list[PdfPage]  # pages with text only


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_file(path: Path, max_bytes: int) -> int:
    """Cheap checks before parsing; returns the size in bytes."""
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
    with path.open("rb") as handle:
        head = handle.read(1024)
    if b"%PDF-" not in head:
        kind = next((what for magic, what in _MAGIC if head.lstrip().startswith(magic)), None)
        raise RejectedFile(f"not a PDF: the content is {kind}" if kind else "not a PDF (no %PDF header)")
    return size


def read_pdf(
    path: Path, max_bytes: int, name: str | None = None, on_page: Callable[[int, int], None] | None = None
) -> PdfDocument:
    """Parse ``path``; raises RejectedFile for empty, oversized, non-PDF, corrupt, encrypted or textless files."""
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError

    size = check_file(path, max_bytes)
    sha = file_sha256(path)
    try:
        reader = PdfReader(path, strict=False)
        if reader.is_encrypted:
            # Owner-password-only PDFs open with an empty user password.
            try:
                opened = reader.decrypt("")
            except Exception:  # noqa: BLE001 - pypdf raises several types here
                opened = 0
            if not opened:
                raise RejectedFile("password-protected PDF: remove the password and add it again")
        page_count = len(reader.pages)
    except RejectedFile:
        raise
    except FileNotDecryptedError as exc:
        raise RejectedFile("password-protected PDF: remove the password and add it again") from exc
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError, RecursionError) as exc:
        raise RejectedFile(f"corrupt or truncated PDF ({_short(exc)})") from exc
    if page_count == 0:
        raise RejectedFile("corrupt or truncated PDF (no pages found)")
    pages = list(_page_texts(reader, path, on_page or (lambda _done, _total: None)))
    if not pages:
        raise RejectedFile(f"no text layer, probably scanned ({page_count} pages, no extractable text)")
    return PdfDocument(path=path, name=name or path.name, sha256=sha, size=size, page_count=page_count, pages=pages)


def _page_texts(reader, path: Path, on_page: Callable[[int, int], None]) -> Iterator[PdfPage]:
    failures = 0
    total = len(reader.pages)
    for index in range(total):
        on_page(index, total)
        try:
            text = reader.pages[index].extract_text() or ""
        except Exception as exc:  # noqa: BLE001 - one bad page must not lose the others
            failures += 1
            log.warning("%s: page %d unreadable (%s); skipped", path.name, index + 1, _short(exc))
            continue
        text = text.replace("\x00", "").strip()
        if len(text) >= MIN_PAGE_CHARS:
            yield PdfPage(number=index + 1, text=text)
    if failures == len(reader.pages):
        raise RejectedFile("corrupt PDF: no page could be read")


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "…"
