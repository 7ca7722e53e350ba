from pathlib import Path

import pytest

from ingest.pdf_reader import RejectedFile, read_pdf
from tests.fixtures.pdfs import (
    make_encrypted_pdf,
    make_image_only_pdf,
    make_pdf,
    make_png_named_pdf,
    make_truncated_pdf,
)

LIMIT = 200_000_000


def reason_for(path: Path, max_bytes: int = LIMIT) -> str:
    with pytest.raises(RejectedFile) as info:
        read_pdf(path, max_bytes)
    return info.value.reason


def test_reads_pages_with_physical_numbers(english_pdf):
    document = read_pdf(english_pdf, LIMIT)
    assert document.name == "animals.pdf"
    assert document.page_count == 3
    assert [p.number for p in document.pages] == [1, 2, 3]
    assert "Mara River" in document.pages[1].text
    assert len(document.sha256) == 64


def test_chinese_file_name_and_text(chinese_pdf):
    document = read_pdf(chinese_pdf, LIMIT)
    assert document.name == "中国文化.pdf"
    assert "山海关" in document.pages[1].text


def test_blank_pages_are_skipped_but_counted(pdf_dir):
    path = make_pdf(pdf_dir / "gaps.pdf", ["First page text.", "", "Third page text."])
    document = read_pdf(path, LIMIT)
    assert document.page_count == 3
    assert [p.number for p in document.pages] == [1, 3]


def test_empty_file(pdf_dir):
    path = pdf_dir / "empty.pdf"
    path.write_bytes(b"")
    assert reason_for(path) == "empty file (0 bytes)"


def test_png_named_pdf(pdf_dir):
    assert reason_for(make_png_named_pdf(pdf_dir / "photo.pdf")) == "not a PDF: the content is a PNG image"


def test_text_named_pdf(pdf_dir):
    path = pdf_dir / "notes.pdf"
    path.write_text("just some notes")
    assert "not a PDF" in reason_for(path)


def test_truncated_pdf(pdf_dir, english_pdf):
    path = make_truncated_pdf(pdf_dir / "broken.pdf", english_pdf, keep=0.3)
    assert "corrupt" in reason_for(path)


def test_encrypted_pdf(pdf_dir, english_pdf):
    path = make_encrypted_pdf(pdf_dir / "locked.pdf", english_pdf)
    assert "password-protected" in reason_for(path)


def test_image_only_pdf(pdf_dir):
    path = make_image_only_pdf(pdf_dir / "scan.pdf", pages=2)
    assert reason_for(path) == (
        "no text layer, probably scanned (2 pages, no extractable text; OCR is off (setting ZHIKU_OCR))"
    )


def test_oversized_file(english_pdf):
    size_mb = english_pdf.stat().st_size / 1e6
    reason = reason_for(english_pdf, max_bytes=1000)
    assert reason == f"file is {size_mb:.3g} MB, over the 0.001 MB limit (setting ZHIKU_MAX_FILE_MB)"
