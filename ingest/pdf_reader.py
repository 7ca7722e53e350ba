"""Read a PDF's text page by page, refusing bad files with a reason a user can act on."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ingest.document import (
    NO_OCR,
    OcrSetting,
    Page,
    RejectedFile,
    check_size,
    content_kind,
    file_sha256,
    short_error,
)
from ingest.pdf_outline import Outline, read_outline
from ingest.text_clean import clean_page_text

log = logging.getLogger(__name__)

# A page with fewer characters than this is treated as having no text layer.
MIN_PAGE_CHARS = 3
OCR_DPI = 200  # pages without a text layer are rendered at this resolution for OCR


PdfPage = Page  # a PDF's parts are its physical pages
__all__ = ["PdfPage", "RejectedFile", "check_file", "file_sha256", "open_pdf", "read_pdf"]


@dataclass(frozen=True)
class PdfDocument:
    path: Path
    name: str
    sha256: str
    size: int
    page_count: int
    pages: list[PdfPage]  # pages with text only


def check_file(path: Path, max_bytes: int) -> int:
    """Cheap checks before parsing; returns the size in bytes."""
    size = check_size(path, max_bytes)
    with path.open("rb") as handle:
        head = handle.read(1024)
    if b"%PDF-" not in head:
        kind = content_kind(head)
        raise RejectedFile(f"not a PDF: the content is {kind}" if kind else "not a PDF (no %PDF header)")
    return size


@dataclass
class OpenedPdf:
    """A PDF that passed the checks and opened; its pages are read lazily, one at a time."""

    path: Path
    name: str
    sha256: str
    size: int
    page_count: int
    reader: object
    ocr: OcrSetting = NO_OCR
    _renderer: object = field(default=None, repr=False)  # pypdfium2's document, open while OCR renders pages

    @cached_property
    def outline(self) -> Outline:
        """Read when the pages are, not for a file found unchanged (0.26 s for a 1,158-page manual)."""
        return read_outline(self.reader, self.name)

    def pages(self, on_page: Callable[[int, int], None] | None = None) -> Iterator[PdfPage]:
        """Pages with text, in order; a page without a usable text layer is read by OCR when ``ocr`` allows.
        Raises RejectedFile at the end if no page had any text."""
        on_page = on_page or (lambda _done, _total: None)
        failures = found = 0
        try:
            for index in range(self.page_count):
                on_page(index, self.page_count)
                text, failed = self._text_layer(index)
                failures += failed
                scanned = len(text) < MIN_PAGE_CHARS and self.ocr.enabled
                if scanned:
                    text = self._read_pixels(index)
                if len(text) >= MIN_PAGE_CHARS:
                    found += 1
                    yield PdfPage(index + 1, text, sections=self.outline.page(index + 1), ocr=scanned)
        finally:
            self._close_renderer()
        on_page(self.page_count, self.page_count)
        if not found and failures == self.page_count:
            raise RejectedFile("corrupt PDF: no page could be read")
        if not found:
            pages = f"{self.page_count} page{'s' if self.page_count != 1 else ''}"
            if self.ocr.enabled:
                raise RejectedFile(f"no text layer, and OCR found no text either ({pages})")
            off = "; OCR is off (setting ZHIKU_OCR)" if self.ocr.mode == "off" else ""
            raise RejectedFile(f"no text layer, probably scanned ({pages}, no extractable text{off})")

    def _text_layer(self, index: int) -> tuple[str, int]:
        """The page's text layer, cleaned, and 1 if it could not be read ("" when OCR is forced)."""
        if self.ocr.mode == "force" and self.ocr.enabled:
            return "", 0
        try:
            return clean_page_text(self.reader.pages[index].extract_text() or ""), 0
        except Exception as exc:  # noqa: BLE001 - one bad page must not lose the others
            log.warning("%s: page %d unreadable (%s); skipped", self.name, index + 1, short_error(exc))
            return "", 1

    def _read_pixels(self, index: int) -> str:
        """The page rendered at OCR_DPI and read by OCR; "" (with a warning) if it cannot be rendered."""
        import pypdfium2

        try:
            if self._renderer is None:
                self._renderer = pypdfium2.PdfDocument(self.path)
            page = self._renderer[index]
            try:
                image = page.render(scale=OCR_DPI / 72, grayscale=True).to_pil()
            finally:
                page.close()
        except Exception as exc:  # noqa: BLE001 - a page that cannot be rendered is one page lost, not the file
            log.warning("%s: page %d could not be rendered for OCR (%s)", self.name, index + 1, short_error(exc))
            return ""
        from ingest.ocr import OcrUnavailable

        try:
            return clean_page_text(self.ocr.engine.read(image).text)
        except OcrUnavailable as exc:  # the whole file waits for OCR that cannot run here: say what to install
            raise RejectedFile(f"page {index + 1} has no text layer and OCR cannot run: {exc.reason}") from exc

    def _close_renderer(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def open_pdf(path: Path, max_bytes: int, name: str | None = None, ocr: OcrSetting = NO_OCR) -> OpenedPdf:
    """Check and open ``path``; raises RejectedFile for empty, oversized, non-PDF, corrupt or encrypted files.
    ``ocr`` says whether pages without a text layer are read by OCR."""
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
        raise RejectedFile(f"corrupt or truncated PDF ({short_error(exc)})") from exc
    if page_count == 0:
        raise RejectedFile("corrupt or truncated PDF (no pages found)")
    return OpenedPdf(path, name or path.name, sha, size, page_count, reader, ocr)


def read_pdf(
    path: Path, max_bytes: int, name: str | None = None, on_page: Callable[[int, int], None] | None = None
) -> PdfDocument:
    """Open and read every page; raises RejectedFile as ``open_pdf`` does, or for a PDF with no text."""
    opened = open_pdf(path, max_bytes, name)
    pages = list(opened.pages(on_page))
    return PdfDocument(opened.path, opened.name, opened.sha256, opened.size, opened.page_count, pages)
