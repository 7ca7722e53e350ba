"""Readers of files without pages (text, Markdown, Word, HTML) on real files, and the dispatch by suffix."""

import re
import zipfile
from pathlib import Path

import pytest

from ingest.document import RejectedFile
from ingest.docx_reader import PASSWORD_OR_DOC, open_docx
from ingest.html_reader import open_html
from ingest.parts import MAX_PART_CHARS
from ingest.readers import SUFFIXES, open_document
from ingest.text_reader import open_markdown, open_text
from tests.fixtures.pdfs import make_pdf

LIMIT = 50_000_000
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200)


def parts(opened):
    return [(page.number, page.location, page.text) for page in opened.pages()]


def reason_for(opener, path: Path, max_bytes: int = LIMIT) -> str:
    with pytest.raises(RejectedFile) as info:
        list(opener(path, max_bytes).pages())
    return info.value.reason


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# -- text


def test_utf8_text_round_trip(tmp_path):
    path = write(tmp_path / "notes.txt", b"First line.\nSecond line.\n\n\n\nA new paragraph.\n")
    opened = open_text(path, LIMIT)
    assert (opened.name, opened.size, opened.page_count, len(opened.sha256)) == (
        "notes.txt",
        path.stat().st_size,
        1,
        64,
    )
    assert parts(opened) == [(1, "lines 1–6", "First line.\nSecond line.\n\nA new paragraph.")]


def test_utf8_with_bom_and_crlf(tmp_path):
    path = write(tmp_path / "bom.txt", "\ufeffHello\r\nworld\r\n".encode())
    assert parts(open_text(path, LIMIT)) == [(1, "lines 1–2", "Hello\nworld")]


def test_gbk_chinese_text(tmp_path):
    text = "第一章 总则\n本办法适用于全体员工。\n\n第二章 细则\n请假须提前申请。"
    path = write(tmp_path / "规章.txt", text.encode("gbk"))
    assert parts(open_text(path, LIMIT)) == [(1, "lines 1–5", text)]


def test_gb18030_characters_outside_gbk(tmp_path):
    text = "生僻字𠀀在这里，其余是常用汉字组成的句子。"
    path = write(tmp_path / "rare.txt", text.encode("gb18030"))
    assert parts(open_text(path, LIMIT))[0][2] == text


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_utf16_with_bom(tmp_path, encoding):
    data = "中文与 English\n第二行".encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data
    path = write(tmp_path / "u16.txt", data)
    assert parts(open_text(path, LIMIT)) == [(1, "lines 1–2", "中文与 English\n第二行")]


def test_utf16_without_bom_by_its_nul_bytes(tmp_path):
    path = write(tmp_path / "u16.txt", "Plain ASCII notes\nsaved as UTF-16 by Notepad\n".encode("utf-16-le"))
    assert parts(open_text(path, LIMIT))[0][2] == "Plain ASCII notes\nsaved as UTF-16 by Notepad"


def test_latin1_text_is_not_read_as_chinese(tmp_path):
    path = write(tmp_path / "cv.txt", "Résumé: café au lait, déjà vu, naïve élève, señor.\n".encode("latin-1"))
    assert parts(open_text(path, LIMIT))[0][2] == "Résumé: café au lait, déjà vu, naïve élève, señor."


def test_long_text_is_cut_at_blank_lines_never_inside_a_line(tmp_path):
    paragraphs = [f"Paragraph {n}: " + "words " * 100 for n in range(20)]  # about 620 characters each
    lines = "\n\n".join(paragraphs).split("\n")
    lines.insert(10, "x" * 5000)  # a single line longer than a part stays whole
    path = write(tmp_path / "long.txt", "\n".join(lines).encode())
    found = parts(open_text(path, LIMIT))
    assert all(len(text) <= MAX_PART_CHARS or "x" * 5000 in text for _n, _where, text in found)
    assert any(text == "x" * 5000 for _n, _where, text in found)
    assert [n for n, _where, _text in found] == list(range(1, len(found) + 1))
    spans = [line_span(where) for _n, where, _text in found]
    assert spans[0][0] == 1 and spans[-1][-1] == len(lines)
    for (_first, last), (first, _last) in zip(spans, spans[1:]):
        assert first > last  # in order, no line twice
    for (first, last), (_n, _where, text) in zip(spans, found):  # each part's text is its lines of the file
        assert text == "\n".join(line.rstrip() for line in lines[first - 1 : last])


def line_span(where: str) -> tuple[int, int]:
    match = re.fullmatch(r"lines (\d+)–(\d+)|line (\d+)", where)
    assert match, where
    return (int(match[1]), int(match[2])) if match[1] else (int(match[3]), int(match[3]))


def test_progress_is_reported_like_pdf_pages(tmp_path):
    path = write(tmp_path / "p.txt", ("a line of text\n\n" * 600).encode())
    opened = open_text(path, LIMIT)
    calls = []
    assert len(list(opened.pages(lambda done, total: calls.append((done, total))))) == opened.page_count > 1
    assert calls == [(n, opened.page_count) for n in range(opened.page_count + 1)]


def test_binary_named_txt_is_refused(tmp_path):
    path = write(tmp_path / "data.txt", bytes(range(256)) * 20)
    assert reason_for(open_text, path) == "not a text file: the content looks binary (it contains NUL bytes)"
    png = write(tmp_path / "photo.txt", PNG)
    assert reason_for(open_text, png) == "not a text file: the content looks binary (a PNG image)"
    pdf = write(tmp_path / "doc.txt", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj")
    assert reason_for(open_text, pdf) == "not a text file: the content looks binary (a PDF document)"
    controls = write(tmp_path / "controls.txt", bytes([1, 2, 3, 4, 5, 6, 7, 8, 65, 66]) * 50)
    assert "not a text file: the content looks binary (" in reason_for(open_text, controls)
    assert "control characters" in reason_for(open_text, controls)


def test_empty_blank_and_oversized_text(tmp_path):
    assert reason_for(open_text, write(tmp_path / "empty.txt", b"")) == "empty file (0 bytes)"
    blank = write(tmp_path / "blank.txt", b" \n\t\n\r\n\xe3\x80\x80\n")
    assert reason_for(open_text, blank) == "no text found (the file holds only blank lines)"
    big = write(tmp_path / "big.txt", b"x" * 2_000_001)
    assert "over the 2 MB limit" in reason_for(open_text, big, 2_000_000)


# -- Markdown

MARKDOWN = """\
Some words before any heading.

# Guide

## Install

### Linux

Run the installer:

```sh
# this is a shell comment, not a heading
./install.sh
```

### Windows

Double-click ![the icon](data:image/png;base64,iVBORw0KGgo=) **Setup**.

## Use `zhiku`

Ask a question.

Appendix
========

The end.
"""


def test_markdown_parts_follow_headings(tmp_path):
    path = write(tmp_path / "guide.md", MARKDOWN.encode())
    found = parts(open_markdown(path, LIMIT))
    assert [(n, where) for n, where, _text in found] == [
        (1, "line 1"),
        (2, "Guide › Install › Linux"),  # "# Guide" and "## Install" have nothing but deeper headings
        (3, "Guide › Install › Windows"),
        (4, "Guide › Use zhiku"),
        (5, "Appendix"),
    ]
    linux = found[1][2]
    assert linux.startswith("# Guide\n\n## Install\n\n### Linux\n\nRun the installer:")
    assert "# this is a shell comment, not a heading\n./install.sh\n```" in linux
    assert found[2][2] == "### Windows\n\nDouble-click ![the icon] **Setup**."
    assert found[4][2] == "Appendix\n========\n\nThe end."


def test_long_markdown_section_is_cut_with_line_ranges(tmp_path):
    body = "\n\n".join(f"Paragraph {n} " + "text " * 120 for n in range(12))  # about 7,300 characters
    path = write(tmp_path / "long.md", f"# Intro\n\nShort.\n\n# Reference\n\n{body}\n".encode())
    found = parts(open_markdown(path, LIMIT))
    assert found[0][1:] == ("Intro", "# Intro\n\nShort.")
    locations = [where for _n, where, _text in found[1:]]
    assert len(locations) >= 3
    assert all(re.fullmatch(r"Reference \(lines \d+–\d+\)", where) for where in locations)
    assert locations[0].startswith("Reference (lines 5–")
    assert found[1][2].startswith("# Reference\n\nParagraph 0")


def test_markdown_in_gbk_with_chinese_headings(tmp_path):
    path = write(tmp_path / "说明.md", "# 安装\n\n## 在 Linux 上\n\n运行安装程序。\n".encode("gbk"))
    assert parts(open_markdown(path, LIMIT)) == [
        (1, "安装 › 在 Linux 上", "# 安装\n\n## 在 Linux 上\n\n运行安装程序。")
    ]


# -- Word


def make_docx(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.add_heading("年度报告", 0)
    document.add_paragraph("本报告总结了全年的工作。")
    document.add_heading("第一章 概述", 1)
    document.add_heading("1.1 背景", 2)
    document.add_paragraph("公司成立于2001年。")
    table = document.add_table(rows=3, cols=3)
    for row, cells in enumerate([("名称", "数量", "备注"), ("苹果", "3", "新鲜"), ("香蕉", "5", "")]):
        for column, text in enumerate(cells):
            table.cell(row, column).text = text
    document.add_paragraph("表格之后的文字。")
    document.add_heading("第二章 English part", 1)
    document.add_paragraph("Plain English text with a\ttab.")
    document.save(path)
    return path


def test_docx_sections_tables_and_chinese(tmp_path):
    opened = open_docx(make_docx(tmp_path / "报告.docx"), LIMIT)
    assert (opened.name, opened.page_count) == ("报告.docx", 3)
    assert parts(opened) == [
        (1, "section: 年度报告", "年度报告\n\n本报告总结了全年的工作。"),
        (
            2,
            "section: 第一章 概述 › 1.1 背景",
            "第一章 概述\n\n1.1 背景\n\n公司成立于2001年。\n\n"
            "名称 | 数量 | 备注\n苹果 | 3 | 新鲜\n香蕉 | 5\n\n表格之后的文字。",
        ),
        (3, "section: 第二章 English part", "第二章 English part\n\nPlain English text with a\ttab."),
    ]


def test_docx_without_headings_is_cut_by_paragraphs(tmp_path):
    import docx

    document = docx.Document()
    for n in range(1, 31):
        document.add_paragraph(f"第{n}段。" + "内容" * 100)
        document.add_paragraph("")  # empty paragraphs are not counted
    path = tmp_path / "plain.docx"
    document.save(path)
    found = parts(open_docx(path, LIMIT))
    assert [where for _n, where, _text in found] == ["paragraphs 1–14", "paragraphs 15–28", "paragraphs 29–30"]
    assert found[0][2].startswith("第1段。内容") and found[2][2].startswith("第29段。")


def test_docx_heading_styles_named_in_chinese(tmp_path):
    import docx
    from docx.enum.style import WD_STYLE_TYPE

    document = docx.Document()
    style = document.styles.add_style("标题 1", WD_STYLE_TYPE.PARAGRAPH)
    document.add_paragraph("前言。")
    document.add_paragraph("总则", style=style)
    document.add_paragraph("第一条 内容。")
    path = tmp_path / "wps.docx"
    document.save(path)
    assert parts(open_docx(path, LIMIT)) == [
        (1, "paragraph 1", "前言。"),
        (2, "section: 总则", "总则\n\n第一条 内容。"),
    ]


def test_bad_docx_files_are_refused(tmp_path):
    good = make_docx(tmp_path / "good.docx").read_bytes()
    truncated = write(tmp_path / "truncated.docx", good[: len(good) // 2])
    assert reason_for(open_docx, truncated).startswith("corrupt or truncated Word file (")

    xlsx = tmp_path / "sheet.docx"
    with zipfile.ZipFile(xlsx, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
    assert reason_for(open_docx, xlsx) == "not a Word document (it is an Excel workbook, .xlsx)"

    plain_zip = tmp_path / "archive.docx"
    with zipfile.ZipFile(plain_zip, "w") as archive:
        archive.writestr("notes.txt", "hello")
    assert reason_for(open_docx, plain_zip) == "not a Word document (it is a ZIP archive)"

    odt = tmp_path / "writer.docx"
    with zipfile.ZipFile(odt, "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        archive.writestr("content.xml", "<office:document-content/>")
    assert reason_for(open_docx, odt) == "not a Word document (it is an OpenDocument text, .odt: save it as .docx)"

    encrypted = write(tmp_path / "secret.docx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600))
    assert reason_for(open_docx, encrypted) == PASSWORD_OR_DOC
    assert PASSWORD_OR_DOC == "password-protected or old-format .doc Word file: save it as .docx without a password"

    text = write(tmp_path / "text.docx", "其实是文本文件".encode())
    assert reason_for(open_docx, text) == "not a Word document (the content is plain text)"
    assert reason_for(open_docx, write(tmp_path / "p.docx", PNG)) == "not a Word document (the content is a PNG image)"
    assert reason_for(open_docx, write(tmp_path / "e.docx", b"")) == "empty file (0 bytes)"


def test_docx_without_text(tmp_path):
    import docx

    path = tmp_path / "blank.docx"
    document = docx.Document()
    document.add_paragraph("   ")
    document.save(path)
    assert reason_for(open_docx, path).startswith("no text found (the Word document has no paragraphs or tables")


# -- HTML

PAGE = """<!DOCTYPE html>
<html><head>
<meta charset="gbk">
<title>使用手册</title>
<style>h1 { color: red }</style>
<script>document.write("<h1>不要这个</h1>");</script>
</head>
<body>
<nav><a href="/">首页</a> | <a href="/about">关于</a></nav>
<h1>第一章</h1>
<h2>安装</h2>
<p>在 Windows 上，双击安装
程序即可。</p>
<ul><li>第一步</li><li>第二步 <b>重要</b></li></ul>
<table><tr><th>系统</th><th>版本</th></tr><tr><td>Debian</td><td>13</td></tr></table>
<pre>apt install zhiku
  --yes</pre>
<h2>使用 &amp; 提问</h2>
<p>输入问题。<br>按回车。</p>
<noscript>请启用 JavaScript</noscript>
</body></html>
"""


def test_html_gbk_meta_charset_headings_and_dropped_content(tmp_path):
    path = write(tmp_path / "手册.html", PAGE.encode("gbk"))
    found = parts(open_html(path, LIMIT))
    assert found == [
        (
            1,
            "第一章 › 安装",
            "使用手册\n\n第一章\n\n安装\n\n在 Windows 上，双击安装程序即可。\n\n- 第一步\n- 第二步 重要\n\n"
            "系统 | 版本\nDebian | 13\n\napt install zhiku\n  --yes",
        ),
        (2, "第一章 › 使用 & 提问", "使用 & 提问\n\n输入问题。\n按回车。"),
    ]


def test_html_http_equiv_charset_and_text_before_headings(tmp_path):
    page = (
        '<html><head><meta http-equiv="Content-Type" content="text/html; charset=GB2312"></head>'
        "<body><p>开头的话。</p><div>第二段。</div><h3>小节</h3><p>正文。</p></body></html>"
    )
    path = write(tmp_path / "old.htm", page.encode("gb2312"))
    assert parts(open_html(path, LIMIT)) == [
        (1, "paragraphs 1–2", "开头的话。\n\n第二段。"),
        (2, "小节", "小节\n\n正文。"),
    ]


def test_html_labelled_gbk_but_saved_as_utf8(tmp_path):
    page = '<html><head><meta charset="gb2312"></head><body><p>这一页其实是 UTF-8 编码的。</p></body></html>'
    path = write(tmp_path / "saved.html", page.encode())
    assert parts(open_html(path, LIMIT)) == [(1, "paragraph 1", "这一页其实是 UTF-8 编码的。")]


def test_bad_html_files_are_refused(tmp_path):
    png = write(tmp_path / "photo.html", PNG)
    assert reason_for(open_html, png) == "not an HTML page: the content looks binary (a PNG image)"
    scripts = write(tmp_path / "app.html", b"<html><head><title>App</title><script>render()</script></head></html>")
    assert reason_for(open_html, scripts) == "no text found (the page shows no text: only scripts, images or markup)"
    assert reason_for(open_html, write(tmp_path / "empty.htm", b"")) == "empty file (0 bytes)"


# -- dispatch


def test_open_document_dispatches_by_suffix(tmp_path):
    text = write(tmp_path / "upload-1", b"hello")
    assert parts(open_document(text, LIMIT, name="README.TXT")) == [(1, "line 1", "hello")]
    markdown = write(tmp_path / "notes.Md", b"# Title\n\nBody.")
    assert parts(open_document(markdown, LIMIT))[0][1] == "Title"
    assert parts(open_document(make_docx(tmp_path / "r.DOCX"), LIMIT))[0][1] == "section: 年度报告"
    assert parts(open_document(write(tmp_path / "p.htm", b"<p>hi</p>"), LIMIT)) == [(1, "paragraph 1", "hi")]
    pdf = make_pdf(tmp_path / "a.PDF", ["Page one text."])
    assert [page.number for page in open_document(pdf, LIMIT).pages()] == [1]
    assert set(SUFFIXES) >= {".pdf", ".txt", ".md", ".docx", ".html", ".htm", ".png", ".jpg", ".jpeg", ".webp"}


def test_open_document_refuses_unknown_suffixes(tmp_path):
    for name, what in [
        ("sheet.xyz", "unsupported file type .xyz"),
        ("README", "unsupported file: the name has no suffix"),
    ]:
        with pytest.raises(RejectedFile) as info:
            open_document(write(tmp_path / name, b"data"), LIMIT)
        assert info.value.reason == f"{what} (zhiku reads: PDF, Word .docx, Markdown, text, HTML, images)"


@pytest.mark.parametrize("suffix", [".png", ".JPG", ".jpeg", ".webp"])
def test_open_document_hands_images_to_the_image_reader(tmp_path, monkeypatch, suffix):
    import ingest.readers

    calls = []
    monkeypatch.setattr(ingest.readers, "open_image", lambda *args: calls.append(args) or "opened")
    path = write(tmp_path / f"scan{suffix}", PNG)
    assert open_document(path, LIMIT, None, "the OCR setting") == "opened"
    assert calls == [(path, LIMIT, None, "the OCR setting")]
