"""Where a chunk sits, as every citation shows it: the page of a PDF or an image, the location (heading path,
line range, section) of a file without pages, and a mark when its text was read from pixels by OCR."""

from __future__ import annotations


def place(page: int, location: str = "", ocr: bool = False) -> str:
    """``p. 12``, ``Install › Linux``, ``lines 40–95``; ``p. 3 (OCR)`` for a page read by OCR."""
    where = location or f"p. {page}"
    return f"{where} (OCR)" if ocr else where
