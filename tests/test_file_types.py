"""Every file type through the real commands: a folder of Markdown, GBK text, Word, HTML, a scanned PDF and a
photographed notice is ingested by suffix, and a question finds each with its location (or its page, read by
OCR); bad files of each type are refused by name with a reason, and nothing stored is lost."""

from __future__ import annotations

import json

import pytest
from PIL import Image, ImageDraw

from bench.ocr_pages import font
from ingest.cli import main as ingest_main
from rag.cli import main as rag_main

pytestmark = pytest.mark.slow

SCANNED_ZH = ["档案室的扫描件说明", "二零二四年的借阅记录共有三千四百条，", "存放在地下一层的第七号柜子里。"]
NOTICE_EN = ["NOTICE: the east gate closes at 9 pm", "during the library renovation."]
SCANNED_EN = ["Warranty claims for the X200 pump", "must be filed within 90 days of delivery."]


def _text_image(lines: list[str], size_px: int = 40) -> Image.Image:
    face = font(size_px)
    image = Image.new("RGB", (1400, 120 + int(size_px * 1.8) * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    for row, line in enumerate(lines):
        draw.text((60, 60 + int(size_px * 1.8) * row), line, font=face, fill="black")
    return image


def _docx(path, heading: str, paragraph: str) -> None:
    from docx import Document

    document = Document()
    document.add_heading("Annual report", level=1)
    document.add_paragraph("This report covers the year 2025.")
    document.add_heading(heading, level=2)
    document.add_paragraph(paragraph)
    document.save(str(path))


@pytest.fixture
def mixed_folder(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "guide.md").write_text(
        "# Guide\n\n## Install\n\n### Linux\n\nRun the script zhiku-setup.sh as root to install on Linux.\n\n"
        "### Windows\n\nDouble-click the file zhiku-installer.msi to install on Windows.\n\n"
        "```sh\n# not a heading: a comment in code\n```\n",
        encoding="utf-8",
    )
    (folder / "会议通知.txt").write_bytes("会议通知\n\n本周五下午三点在三楼报告厅召开全体员工大会。\n".encode("gbk"))
    _docx(folder / "report.docx", "Travel budget", "The travel budget for 2025 is 48,000 euros.")
    (folder / "recipes.html").write_text(
        "<html><head><title>Recipes</title><script>var flour = 'not text';</script></head><body>"
        "<h1>Recipes</h1><h2>Pancakes</h2><p>Mix 200 g of flour with two eggs and 300 ml of milk.</p>"
        "<h2>Bread</h2><p>Knead 500 g of flour with yeast and water.</p></body></html>",
        encoding="utf-8",
    )
    _text_image(SCANNED_ZH).save(folder / "扫描件.pdf")  # a PDF of one image: no text layer
    _text_image(SCANNED_EN).save(folder / "scan.pdf")
    _text_image(NOTICE_EN).save(folder / "notice.jpg", quality=90)
    (folder / "notes.xyz").write_text("a type zhiku does not read: not picked up from a folder")
    return folder


def _ask(question: str, capsys) -> dict:
    assert rag_main(["ask", question, "--retrieve-only", "--json", "--k", "3"]) == 0
    return json.loads(capsys.readouterr().out)["sources"][0]


def test_every_type_is_ingested_and_found_with_its_location(mixed_folder, capsys):
    assert ingest_main([str(mixed_folder), "--json"]) == 0
    files = {f["file"]: f for f in json.loads(capsys.readouterr().out)["files"]}
    assert set(files) == {
        "guide.md", "会议通知.txt", "report.docx", "recipes.html", "扫描件.pdf", "scan.pdf", "notice.jpg"
    }  # fmt: skip
    assert all(f["status"] == "ingested" and f["chunks"] > 0 for f in files.values()), files

    top = _ask("How do I install zhiku on Windows?", capsys)
    assert top["file"] == "guide.md" and top["location"] == "Guide › Install › Windows" and not top["ocr"]
    top = _ask("全体员工大会在哪里召开？", capsys)
    assert top["file"] == "会议通知.txt" and top["location"] == "lines 1–3" and "报告厅" in top["text"]
    top = _ask("What is the travel budget for 2025?", capsys)
    assert top["file"] == "report.docx" and top["location"] == "section: Annual report › Travel budget"
    top = _ask("How much flour goes into pancakes?", capsys)
    assert top["file"] == "recipes.html" and top["location"] == "Recipes › Pancakes"
    assert "not text" not in top["text"]  # the script is not read

    top = _ask("借阅记录存放在哪个柜子里？", capsys)  # the scanned page's facts, retrieved like any text page
    assert top["file"] == "扫描件.pdf" and top["page"] == 1 and top["ocr"] and top["location"] == ""
    assert "七号柜" in top["text"].replace(" ", "")
    top = _ask("How long do I have to file a warranty claim for the X200 pump?", capsys)
    assert top["file"] == "scan.pdf" and top["page"] == 1 and top["ocr"] and "90 days" in top["text"]
    top = _ask("When does the east gate close?", capsys)
    assert top["file"] == "notice.jpg" and top["ocr"] and "9 pm" in top["text"]

    assert rag_main(["ask", "When does the east gate close?", "--retrieve-only"]) == 0
    assert "notice.jpg, p. 1 (OCR)" in capsys.readouterr().out  # the citation marks text read by OCR


def test_bad_files_of_each_type_are_refused_by_name(tmp_path, mixed_folder, capsys):
    assert ingest_main([str(mixed_folder / "report.docx"), "-q"]) == 0
    capsys.readouterr()
    bad = tmp_path / "bad"
    bad.mkdir()
    good = (mixed_folder / "report.docx").read_bytes()
    (bad / "report.docx").write_bytes(good[: len(good) // 2])  # same name, now truncated
    (bad / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (bad / "picture.html").write_bytes((mixed_folder / "notice.jpg").read_bytes())
    Image.new("L", (9000, 8000), 255).save(bad / "huge.png")  # 72 MP: refused before decoding
    (bad / "broken.webp").write_bytes(b"RIFF\x10\x00\x00\x00WEBPVP8 truncated")
    assert ingest_main([str(bad), "--json"]) == 1
    reasons = {f["file"]: f["reason"] for f in json.loads(capsys.readouterr().out)["files"]}
    assert reasons["report.docx"].startswith("corrupt or truncated Word file")
    assert reasons["report.docx"].endswith("(the previously indexed version is kept)")
    assert reasons["binary.txt"].startswith("not a text file: the content looks binary")
    assert reasons["picture.html"].startswith("not an HTML page")
    assert reasons["huge.png"] == "image is 9000×8000 pixels, over the 60 megapixel limit"
    assert reasons["broken.webp"].startswith(("broken or truncated image", "not an image"))
    top = _ask("What is the travel budget for 2025?", capsys)
    assert top["file"] == "report.docx" and "48,000" in top["text"]  # the earlier version is still there


def test_with_ocr_off_a_scan_and_an_image_are_refused_with_that_reason(mixed_folder, monkeypatch, capsys):
    monkeypatch.setenv("ZHIKU_OCR", "off")
    assert ingest_main([str(mixed_folder / "扫描件.pdf"), str(mixed_folder / "notice.jpg"), "--json"]) == 1
    reasons = {f["file"]: f["reason"] for f in json.loads(capsys.readouterr().out)["files"]}
    assert reasons["扫描件.pdf"] == (
        "no text layer, probably scanned (1 page, no extractable text; OCR is off (setting ZHIKU_OCR))"
    )
    assert reasons["notice.jpg"] == "images are read by OCR, which is off (setting ZHIKU_OCR)"


def test_the_small_ocr_model_reads_a_scan_too(mixed_folder, monkeypatch, capsys):
    """ZHIKU_OCR_MODEL=small (RapidOCR) instead of the default tiny one (faster-paddle): the same scan is read."""
    from services import ocr_engine
    from settings import Settings

    monkeypatch.setenv("ZHIKU_OCR_MODEL", "small")
    assert ocr_engine(Settings()).model == "small"
    assert ingest_main([str(mixed_folder / "扫描件.pdf"), "--json"]) == 0
    capsys.readouterr()
    top = _ask("借阅记录存放在哪个柜子里？", capsys)
    assert top["file"] == "扫描件.pdf" and top["ocr"] and "七号柜" in top["text"].replace(" ", "")
