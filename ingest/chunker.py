"""Cut page text into chunks that fit both the character budget and the embedder's token limit."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from langchain_text_splitters import RecursiveCharacterTextSplitter

from ingest.pdf_outline import sections_of
from ingest.pdf_reader import PdfDocument, PdfPage

# Paragraphs, lines, then Chinese and Western sentence and clause ends, then words, then characters.
SEPARATORS = ["\n\n", "\n", "。", "！", "？", "；", "!", "?", ". ", "，", ";", ",", " ", ""]


@dataclass(frozen=True)
class Chunk:
    text: str
    file: str
    page: int  # 1-based physical page
    index: int  # position in the document
    sha256: str
    section: str = ""  # the outline's section path, "" when the PDF has no outline
    location: str = ""  # where it is in a file without pages (ingest.document.Page.location)
    ocr: bool = False  # read from pixels

    @property
    def id(self) -> str:
        return chunk_id(self.sha256, self.index)

    def metadata(self) -> dict[str, str | int]:
        meta: dict[str, str | int] = {"source": self.file, "page": self.page, "chunk": self.index}
        meta["sha256"] = self.sha256
        if self.section:
            meta["section"] = self.section
        if self.location:
            meta["location"] = self.location
        if self.ocr:
            meta["ocr"] = True
        return meta


def chunk_id(sha256: str, index: int) -> str:
    return f"{sha256}:{index}"


class Chunker:
    """RecursiveCharacterTextSplitter with a length that is the larger of characters and scaled tokens.

    ``token_limit`` is the embedder's limit without special tokens; a chunk of ``chunk_size`` length units
    then never has more than ``token_limit`` tokens, so nothing is truncated away at embedding time.
    """

    def __init__(
        self, chunk_size: int, chunk_overlap: int, count_tokens: Callable[[str], int], token_limit: int
    ) -> None:
        self.chunk_size = chunk_size
        self.count_tokens = count_tokens
        self.token_limit = token_limit
        scale = chunk_size / token_limit

        def length(text: str) -> int:
            return max(len(text), math.ceil(count_tokens(text) * scale))

        self._splitter = RecursiveCharacterTextSplitter(
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            length_function=length,
            separators=SEPARATORS,
            keep_separator="end",
            strip_whitespace=True,
        )

    def split_text(self, text: str) -> list[str]:
        pieces: list[str] = []
        for piece in self._splitter.split_text(text):
            pieces.extend(self._enforce_token_limit(piece))
        return pieces

    def split_page(self, page: PdfPage, file: str, sha256: str, first_index: int) -> list[Chunk]:
        """A page's chunks, numbered from ``first_index`` (chunks never cross a page, so each has one page)."""
        texts = self.split_text(page.text)
        sections = sections_of(page.sections, texts)
        return [
            Chunk(text, file, page.number, first_index + i, sha256, section, page.location, page.ocr)
            for i, (text, section) in enumerate(zip(texts, sections, strict=True))
        ]

    def split_document(self, document: PdfDocument) -> list[Chunk]:
        chunks: list[Chunk] = []
        for page in document.pages:
            chunks += self.split_page(page, document.name, document.sha256, len(chunks))
        return chunks

    def _enforce_token_limit(self, text: str) -> list[str]:
        """Token counts of merged pieces are not exactly additive; cut the rare chunk that overflows."""
        if self.count_tokens(text) <= self.token_limit:
            return [text]
        middle = len(text) // 2
        return self._enforce_token_limit(text[:middle]) + self._enforce_token_limit(text[middle:])
