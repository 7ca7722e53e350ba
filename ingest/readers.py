"""Which reader opens a file: chosen by the suffix of its name, whatever its case."""

from __future__ import annotations

from pathlib import Path

from ingest.document import NO_OCR, OcrSetting, OpenedDocument, RejectedFile
from ingest.docx_reader import open_docx
from ingest.html_reader import open_html
from ingest.image_reader import open_image
from ingest.pdf_reader import open_pdf
from ingest.text_reader import open_markdown, open_text

__all__ = ["READS", "SUFFIXES", "open_document"]

SUFFIXES = {
    ".pdf": "PDF",
    ".docx": "Word",
    ".md": "Markdown",
    ".markdown": "Markdown",
    ".txt": "text",
    ".html": "HTML",
    ".htm": "HTML",
    ".png": "image",
    ".jpg": "image",
    ".jpeg": "image",
    ".webp": "image",
}
IMAGE_SUFFIXES = frozenset(suffix for suffix, label in SUFFIXES.items() if label == "image")
READS = "PDF, Word .docx, Markdown, text, HTML, images"


def open_document(path: Path, max_bytes: int, name: str | None = None, ocr: OcrSetting = NO_OCR) -> OpenedDocument:
    """Check and open ``path`` with the reader for the suffix of ``name`` (else of the path's own name).

    ``ocr``: when and by what pixels are read, for images and for PDF pages without a text layer. Raises
    RejectedFile for a file no reader takes, or that its reader refuses."""
    suffix = Path(name or path.name).suffix.lower()
    if suffix == ".pdf":
        return open_pdf(path, max_bytes, name, ocr)
    if suffix == ".docx":
        return open_docx(path, max_bytes, name)
    if suffix in (".md", ".markdown"):
        return open_markdown(path, max_bytes, name)
    if suffix == ".txt":
        return open_text(path, max_bytes, name)
    if suffix in (".html", ".htm"):
        return open_html(path, max_bytes, name)
    if suffix in IMAGE_SUFFIXES:
        return open_image(path, max_bytes, name, ocr)
    if suffix == ".doc":
        raise RejectedFile("old-format .doc Word file: save it as .docx")
    what = f"unsupported file type {suffix}" if suffix else "unsupported file: the name has no suffix"
    raise RejectedFile(f"{what} (zhiku reads: {READS})")
