"""Read a Word .docx file section by section, refusing bad files with a reason a user can act on.

Sections start at headings: the Title style and Heading 1–3 (by style name, "heading 1" in the file whatever
the language Word runs in; WPS's "标题 1"), or a paragraph whose outline level is 1–3. A part is located as
"section: Install › Linux" ("… (paragraphs 40–55)" when a long section took several parts); a document
without headings is cut by size, its parts located "paragraphs 1–12". Paragraphs are counted as a reader
sees them: those with text, a table counting as one. Tables come in document order, a row to a line, its
cells joined with " | ". Content controls, tracked insertions and text boxes are read; deleted text,
field codes, tables of contents, headers and footers are not.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from pathlib import Path

from ingest.document import RejectedFile, binary_kind, check_size, file_sha256, short_error
from ingest.parts import Block, OpenedParts, Section, opened_parts, paragraph_range, section_parts, split_block
from ingest.text_reader import decode_text

__all__ = ["open_docx"]

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
_P, _TBL, _TR, _TC, _SDT, _SDT_CONTENT = (f"{_W}{tag}" for tag in ("p", "tbl", "tr", "tc", "sdt", "sdtContent"))
_WRAPPERS = {f"{_W}{tag}" for tag in ("customXml", "ins", "moveTo", "smartTag", "hyperlink", "fldSimple")}
_TEXT = {f"{_W}t": None, f"{_W}tab": "\t", f"{_W}br": "\n", f"{_W}cr": "\n", f"{_W}noBreakHyphen": "-"}
_MAX_HEADING_LEVEL = 3
_HEADING_NAME = re.compile(r"(?:heading|标题)\s*(\d)")
_UNPACKED_PER_BYTE = 40  # word/document.xml may unpack to this many times the size limit, not more
PASSWORD_OR_DOC = "password-protected or old-format .doc Word file: save it as .docx without a password"
NO_TEXT = "no text found (the Word document has no paragraphs or tables with text; text in pictures is not read)"


def open_docx(path: Path, max_bytes: int, name: str | None = None) -> OpenedParts:
    """Check, open and cut a .docx file; raises RejectedFile for empty, oversized, non-Word, corrupt,
    password-protected or textless files."""
    size = check_size(path, max_bytes)
    with path.open("rb") as handle:
        head = handle.read(1024)
    if head.startswith(b"\xd0\xcf\x11\xe0"):  # OLE: a .doc, or a .docx that Word encrypted with a password
        raise RejectedFile(PASSWORD_OR_DOC)
    if not head.startswith(b"PK\x03\x04"):
        raise RejectedFile(f"not a Word document ({_what_instead(head)})")
    _check_package(path, max_bytes)
    sha = file_sha256(path)
    body, styles = _load(path)
    if body is None:
        raise RejectedFile(NO_TEXT)
    parts = section_parts(_sections(body, styles), paragraph_range, prefix="section: ")
    return opened_parts(path, name, sha, size, parts, NO_TEXT)


def _what_instead(head: bytes) -> str:
    kind = binary_kind(head)
    if kind:
        return f"the content is {kind}"
    try:
        decode_text(head[: len(head) - 4] if len(head) == 1024 else head)  # a cut character at the end is fine
    except RejectedFile:
        return "no ZIP header: the content is not a .docx package"
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return "the content is an HTML page"
    if head.startswith(b"{\\rtf"):
        return "the content is an RTF document: save it as .docx"
    return "the content is plain text"


def _check_package(path: Path, max_bytes: int) -> None:
    """The ZIP opens and holds a Word document, not unpacking to far more than the limit."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            mimetype = archive.read("mimetype")[:100].decode("ascii", "replace") if "mimetype" in names else ""
            main = archive.getinfo("word/document.xml") if "word/document.xml" in names else None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as exc:
        raise RejectedFile(f"corrupt or truncated Word file ({short_error(exc)})") from exc
    if main is None and not any(name.startswith("word/") for name in names):
        raise RejectedFile(f"not a Word document (it is {_other_package(names, mimetype)})")
    if main is not None and main.file_size > _UNPACKED_PER_BYTE * max_bytes:
        raise RejectedFile(
            f"the Word file unpacks to {main.file_size / 1e6:.3g} MB of document markup, too much to read"
        )


def _other_package(names: set[str], mimetype: str) -> str:
    if "xl/workbook.xml" in names:
        return "an Excel workbook, .xlsx"
    if "ppt/presentation.xml" in names:
        return "a PowerPoint presentation, .pptx"
    opendocument = {
        "application/vnd.oasis.opendocument.text": "an OpenDocument text, .odt: save it as .docx",
        "application/vnd.oasis.opendocument.spreadsheet": "an OpenDocument spreadsheet, .ods",
        "application/vnd.oasis.opendocument.presentation": "an OpenDocument presentation, .odp",
        "application/epub+zip": "an EPUB e-book",
    }
    return opendocument.get(mimetype.strip(), "a ZIP archive")


def _load(path: Path):
    """The document's body element and its paragraph styles, as {style id: (name, outline level, based on)}."""
    from docx import Document
    from docx.opc.exceptions import PackageNotFoundError
    from lxml.etree import LxmlError

    try:
        document = Document(str(path))
        body = document.element.body
        styles = {}
        for style in document.styles.element.iterchildren(f"{_W}style"):
            outline = style.find(f"{_W}pPr/{_W}outlineLvl")
            based = style.find(f"{_W}basedOn")
            styles[style.get(f"{_W}styleId")] = (
                (_val(style.find(f"{_W}name")) or "").lower(),
                _int(_val(outline)),
                _val(based),
            )
    except ValueError as exc:
        if "content type" in str(exc):
            kind = "a macro-enabled .docm" if "macroEnabled" in str(exc) else "a Word template or another format"
            raise RejectedFile(f"not a Word document (it is {kind}: save it as .docx)") from exc
        raise RejectedFile(f"corrupt or truncated Word file ({short_error(exc)})") from exc
    except (
        PackageNotFoundError,
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        OSError,
        KeyError,
        LxmlError,
        SyntaxError,
        AttributeError,
        TypeError,
        IndexError,
        RecursionError,
    ) as exc:
        raise RejectedFile(f"corrupt or truncated Word file ({short_error(exc)})") from exc
    return body, styles


def _val(element) -> str | None:
    return None if element is None else element.get(f"{_W}val")


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _heading_level(paragraph, styles: dict) -> int | None:
    """1–3 for a heading (Title counts as 1), None for body text."""
    outline = _int(_val(paragraph.find(f"{_W}pPr/{_W}outlineLvl")))
    style_id = _val(paragraph.find(f"{_W}pPr/{_W}pStyle"))
    if style_id is not None and style_id in styles:
        name, style_outline, based = styles[style_id]
        if name == "title":
            return 1
        if name.startswith(("toc ", "目录")):
            return None
        match = _HEADING_NAME.fullmatch(name)
        if match:
            level = int(match.group(1))
            return level if 1 <= level <= _MAX_HEADING_LEVEL else None
        seen = {style_id}
        while outline is None and style_outline is None and based in styles and based not in seen:
            seen.add(based)
            _name, style_outline, based = styles[based]
        outline = style_outline if outline is None else outline
    if outline is not None and 0 <= outline < _MAX_HEADING_LEVEL:
        return outline + 1
    return None


def _is_toc(paragraph, styles: dict) -> bool:
    style_id = _val(paragraph.find(f"{_W}pPr/{_W}pStyle"))
    return style_id in styles and styles[style_id][0].startswith(("toc ", "目录"))


def _items(container):
    """Paragraphs and tables in document order, looking into content controls and other wrappers."""
    for child in container.iterchildren():
        if child.tag in (_P, _TBL):
            yield child
        elif child.tag == _SDT:
            content = child.find(_SDT_CONTENT)
            if content is not None:
                yield from _items(content)
        elif child.tag in _WRAPPERS:
            yield from _items(child)


def paragraph_text(paragraph) -> str:
    """A paragraph's text: runs, hyperlinks, fields' results, insertions, text boxes; not deleted text."""
    out: list[str] = []
    for element in paragraph.iter(_P, *_TEXT):
        if element is paragraph or next(element.iterancestors(_MC_FALLBACK), None) is not None:
            continue  # Word's copy of a text box for older readers: the same text again
        if element.tag == _P:
            out.append("\n")  # a paragraph of a text box inside this one
        else:
            out.append((element.text or "") if _TEXT[element.tag] is None else _TEXT[element.tag])
    return "".join(out).strip()


def table_text(table) -> str:
    """A row to a line, its cells joined with " | "; a merged cell once."""
    rows = []
    for row in _rows(table):
        cells = [_cell_text(cell) for cell in _cells(row)]
        while cells and not cells[-1]:
            cells.pop()
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)


def _rows(table):
    for child in table.iterchildren():
        if child.tag == _TR:
            yield child
        elif child.tag == _SDT or child.tag in _WRAPPERS:
            yield from _rows(child.find(_SDT_CONTENT) if child.tag == _SDT else child)


def _cells(row):
    for child in row.iterchildren():
        if child.tag == _TC:
            yield child
        elif child.tag == _SDT or child.tag in _WRAPPERS:
            content = child.find(_SDT_CONTENT) if child.tag == _SDT else child
            if content is not None:
                yield from _cells(content)


def _cell_text(cell) -> str:
    texts = []
    for item in _items(cell):
        text = paragraph_text(item) if item.tag == _P else table_text(item).replace("\n", "; ")
        if text:
            texts.append(text)
    return re.sub(r"\s+", " ", " ".join(texts)).strip()


def _sections(body, styles: dict) -> list[Section]:
    sections = [Section((), 0)]
    path: list[tuple[int, str]] = []
    number = 0
    for item in _items(body):
        if item.tag == _P:
            if _is_toc(item, styles):
                continue
            text = paragraph_text(item)
            if not text:
                continue
            number += 1
            level = _heading_level(item, styles)
            if level is not None:
                while path and path[-1][0] >= level:
                    path.pop()
                path.append((level, re.sub(r"\s+", " ", text)))
                sections.append(Section(tuple(title for _level, title in path), level, [Block(number, number, text)]))
                continue
            blocks = [Block(number, number, text)]
        else:
            text = table_text(item)
            if not text:
                continue
            number += 1
            blocks = split_block(Block(number, number, text))
        sections[-1].blocks += blocks
        sections[-1].body = True
    return sections
