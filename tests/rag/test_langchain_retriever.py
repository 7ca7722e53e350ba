"""zhiku's retriever as a LangChain ``BaseRetriever``: LangChain's own standard tests, the documents' citations,
and the README's example chain run as written, over a real index of PDFs made here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_tests.integration_tests import RetrieversIntegrationTests

from ingest.pipeline import SourceFile
from rag.langchain_retriever import ZhikuRetriever
from settings import Settings
from tests.fixtures.pdfs import make_corpus

README = Path(__file__).resolve().parents[2] / "README.md"
QUESTIONS = {  # question -> (file, page, a phrase of the page)
    "When do zebras cross the Mara River?": ("wildlife.pdf", 3, "Mara"),
    "What wavelength does EUV lithography use?": ("chips.pdf", 4, "13.5"),
    "长城全长多少公里？": ("文化.pdf", 2, "两万一千多公里"),
    "普洱茶产于哪个省？": ("文化.pdf", 3, "云南省"),
}


def index_corpus(services, folder: Path) -> None:
    make_corpus(folder)
    report = services.ingestor.ingest([SourceFile(p, p.name) for p in sorted(folder.glob("*.pdf"))])
    assert report.ok


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, model_cache):
    """One real index (Chroma, BM25, MiniLM) for the module's tests."""
    from services import build_services

    root = tmp_path_factory.mktemp("langchain")
    services = build_services(Settings(data_dir=root / "data", model_cache_dir=model_cache))
    index_corpus(services, root / "pdfs")
    yield services
    services.close()


class TestZhikuRetrieverStandard(RetrieversIntegrationTests):
    """LangChain's standard retriever tests (k in the constructor and per call, invoke and ainvoke)."""

    @pytest.fixture(autouse=True)
    def _index(self, indexed) -> None:
        self.services = indexed

    @property
    def retriever_constructor(self) -> type[ZhikuRetriever]:
        return ZhikuRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"retriever": self.services.qa.context.retriever}

    @property
    def retriever_query_example(self) -> str:
        return "What wavelength does EUV lithography use?"


@pytest.mark.parametrize("question", list(QUESTIONS))
def test_documents_carry_what_a_citation_needs(indexed, question):
    file, page, phrase = QUESTIONS[question]
    docs = indexed.langchain_retriever(k=3).invoke(question)
    assert len(docs) == 3 and all(isinstance(d, Document) for d in docs)
    top = docs[0]
    assert (top.metadata["source"], top.metadata["page"], top.metadata["place"]) == (file, page, f"p. {page}")
    assert phrase in top.page_content
    assert top.id and top.id.count(":") == 1  # zhiku's chunk id, sha256:index
    assert top.metadata["score"] >= docs[-1].metadata["score"] or top.metadata["keyword_score"] > 0
    assert len({(d.metadata["source"], d.metadata["page"]) for d in docs}) == 3  # one chunk per page


def test_modes_and_bad_arguments(indexed):
    retriever = indexed.langchain_retriever()
    assert retriever.k == indexed.settings.top_k
    for mode in ("hybrid", "keyword", "dense"):
        docs = retriever.invoke("长城全长多少公里？", k=2, mode=mode)
        assert [d.metadata["source"] for d in docs][:1] == ["文化.pdf"], mode
    with pytest.raises(ValueError, match="unknown retrieval mode 'fuzzy'"):
        retriever.invoke("zebras", mode="fuzzy")
    with pytest.raises(TypeError, match="takes k and mode, not top_n"):
        retriever.invoke("zebras", top_n=2)


def readme_example() -> str:
    """The Python block under the README's heading on LangChain chains."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### Using zhiku's index in your own LangChain chain", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_chain_runs_as_written(services, pdf_dir):
    index_corpus(services, pdf_dir)  # into ZHIKU_DATA_DIR, which the example reads through Settings()
    code = readme_example()
    assert len([line for line in code.splitlines() if line and not line.startswith(("from ", "import "))]) <= 4
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the documented example, as a user runs it
    for question in ("长城全长多少公里？", "What wavelength does EUV lithography use?"):
        file, page, phrase = QUESTIONS[question]
        prompt = namespace["chain"].invoke(question).to_string()
        assert f"[{file}, p. {page}]" in prompt and phrase in prompt and question in prompt
