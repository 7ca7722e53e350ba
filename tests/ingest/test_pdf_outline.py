"""Section names from a PDF's outline: read from real PDFs, carried by the chunks, searched by both indexes."""

import shutil

import pytest

from ingest.chunker import Chunker
from ingest.pdf_outline import Outline, PageSections, read_outline, sections_of
from ingest.pdf_reader import open_pdf
from ingest.pipeline import SourceFile
from rag.store import ChunkStore
from rag.tokenizer import tokenize
from tests.fixtures.pdfs import make_pdf

PAGES = [
    "Plotting functions. The plot command draws curves from expressions and from data files.",
    "Ranges follow the data unless they are given explicitly, and autoscaling rounds them outward to the "
    "nearest whole steps.\n"
    "Axes\n"
    "Minor tick marks\n"
    "Between two labelled marks, smaller marks without labels can be drawn.",
    "Their number per interval is set by a frequency argument; on logarithmic scales they are off unless asked.",
]
OUTLINE = [("Plotting", 0, 0), ("Axes", 1, 0), ("Minor tick marks", 1, 1)]


@pytest.fixture
def manual(tmp_path):
    return make_pdf(tmp_path / "manual.pdf", PAGES, outline=OUTLINE)


def test_the_outline_says_which_section_is_open_and_which_start_on_a_page(manual):
    pdf = open_pdf(manual, 10**7)
    assert len(pdf.outline) == 3
    pages = list(pdf.pages())
    assert pages[0].sections == PageSections("", (("Plotting", "Plotting"),))
    starting = (("Axes", "Axes"), ("Minor tick marks", "Axes › Minor tick marks"))
    assert pages[1].sections == PageSections("Plotting", starting)
    assert pages[2].sections == PageSections("Axes › Minor tick marks")


def test_a_chunk_moves_to_a_section_once_its_title_appears():
    page = PageSections("Plotting", (("Axes", "Axes"), ("Minor tick marks", "Axes › Minor tick marks")))
    texts = ["ranges are given.", "Minor  tick\nMARKS between labelled marks", "frequency argument"]
    assert sections_of(page, texts) == ["Plotting", "Axes › Minor tick marks", "Axes › Minor tick marks"]
    chinese = PageSections("", (("11.2. 如何提供对硬件外设的访问？", "第 11 章 › 11.2. 如何提供对硬件外设的访问？"),))
    assert sections_of(chinese, ["目录", "11.2. 如 何 提 供 对 硬 件 外 设 的 访 问 ？ 许多设备文件"]) == [
        "",
        "第 11 章 › 11.2. 如何提供对硬件外设的访问？",
    ]
    assert sections_of(PageSections(), ["no outline"]) == [""]


def test_chunks_carry_their_section_in_the_metadata(manual, tmp_path):
    from models.embedder import Embedder

    embedder = Embedder()
    chunker = Chunker(120, 20, embedder.count_tokens, embedder.max_tokens - 2)
    pdf = open_pdf(manual, 10**7)
    chunks = [c for page in pdf.pages() for c in chunker.split_page(page, pdf.name, pdf.sha256, 0)]
    page_2 = [c for c in chunks if c.page == 2]
    assert page_2[0].metadata()["section"] == "Plotting"  # the page starts before its own headings
    assert page_2[-1].metadata()["section"] == "Axes › Minor tick marks"
    frequency = next(c for c in chunks if "frequency argument" in c.text)
    assert frequency.metadata()["section"] == "Axes › Minor tick marks"  # the section goes on over the page
    without = make_pdf(tmp_path / "plain.pdf", PAGES)
    plain = open_pdf(without, 10**7)
    assert all("section" not in c.metadata() for p in plain.pages() for c in chunker.split_page(p, "p", "s", 0))


def test_both_indexes_see_the_section_name_and_sources_show_the_text_alone(services, settings, manual):
    assert services.ingestor.ingest([SourceFile(manual, manual.name)]).ok
    question = "minor tick"  # words of the section title only: page 3's own text does not have them
    hits = services.store.keyword.search(tokenize(question), 3)
    found = services.store.get_chunks([h.id for h in hits], services.embedder.embed_query(question))
    chunk = next(c for c in found if c.page == 3)
    assert "minor" not in chunk.text.lower()
    assert chunk.section == "Axes › Minor tick marks"
    assert not chunk.text.startswith("Axes")  # what the user reads is the page's text
    # the vector stored is the embedding of heading + text, not of the text alone
    with_heading, plain = services.embedder.embed_documents([f"{chunk.section}\n{chunk.text}", chunk.text])
    assert services.store.get_chunks([chunk.id], with_heading)[0].score > 0.999
    assert services.store.get_chunks([chunk.id], plain)[0].score < 0.99
    answer = services.qa.ask("How many minor tick marks per interval?", generate=False)
    assert (answer.sources[0].page, answer.sources[0].section) == (3, "Axes › Minor tick marks")
    # a keyword index made again from Chroma's texts keeps the section words
    services.close()
    shutil.rmtree(settings.keyword_dir)
    store = ChunkStore(settings.chroma_dir, services.embedder, services.embedder.name, settings.keyword_dir)
    try:
        assert store.keyword_notice
        assert chunk.id in [h.id for h in store.keyword.search(tokenize(question), 3)]
    finally:
        store.close()


class BrokenOutlineReader:
    """pypdf's reader as a damaged PDF presents it: one entry points nowhere, or the outline cannot be read."""

    def __init__(self, raise_on_outline: bool) -> None:
        self.raise_on_outline = raise_on_outline

    @property
    def outline(self):
        if self.raise_on_outline:
            raise ValueError("broken /Outlines dictionary")
        return [
            Entry("Good", 0),
            [Entry("Child", 1), Entry("Dangling", -99)],
            Entry("", 2),
            Entry("Lost", -99),
            [Entry("Orphan", 3)],
        ]

    def get_destination_page_number(self, entry):
        if entry.page == -99:
            raise KeyError("/Dest")
        return entry.page


class Entry:
    def __init__(self, title, page):
        self.title, self.page = title, page


def test_a_broken_outline_costs_the_sections_never_the_document(caplog):
    outline = read_outline(BrokenOutlineReader(raise_on_outline=False), "x.pdf")
    assert len(outline) == 3  # the dangling and the untitled entries are skipped, their children kept
    assert outline.page(2) == PageSections("Good", (("Child", "Good › Child"),))
    assert outline.page(4) == PageSections("Good › Child", (("Orphan", "Lost › Orphan"),))
    assert len(read_outline(BrokenOutlineReader(raise_on_outline=True), "x.pdf")) == 0
    assert "x.pdf: the outline could not be read" in caplog.text
    assert Outline(()).page(1) == PageSections()
