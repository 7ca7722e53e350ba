import pytest

from ingest.pipeline import SourceFile
from rag.prompts import NO_DOCUMENTS, NOTHING_RELEVANT
from rag.retriever import MODES, Retriever


@pytest.fixture
def indexed(services, pdf_dir, corpus):
    paths = sorted(pdf_dir.glob("*.pdf"))
    report = services.ingestor.ingest([SourceFile(p, p.name) for p in paths])
    assert report.ok
    return corpus


def test_right_file_and_page_come_first(services, indexed):
    for question, (file, page) in indexed.items():
        answer = services.qa.ask(question, generate=False)
        top = answer.sources[0]
        assert (top.file, top.page) == (file, page), question
        assert answer.text is None
        assert len(answer.sources) == 5


def test_k_sets_how_many_chunks(services, indexed):
    assert len(services.qa.ask("zebras", k=2, generate=False).sources) == 2


@pytest.mark.parametrize(
    "question, language",
    [
        ("How do I bake sourdough bread?", "en"),
        ("What is the capital of France?", "en"),
        ("量子力学的基本原理是什么？", "zh"),
        ("相对论是谁提出的？", "zh"),
    ],
)
def test_nothing_relevant_says_so_without_generating(services, indexed, question, language):
    answer = services.qa.ask(question)
    assert answer.text == NOTHING_RELEVANT[language]
    assert answer.sources == []
    assert not services.governor.loaded("chat")  # no model call for an answer that cannot be grounded


def test_empty_store_says_so(services):
    answer = services.qa.ask("What is in my documents?")
    assert answer.text == NO_DOCUMENTS["en"]
    assert services.qa.ask("我的文档里有什么？").text == NO_DOCUMENTS["zh"]


def test_scores_are_cosine_similarities_best_first(services, indexed):
    sources = services.qa.ask("Which volcano in Sicily is the most active in Europe?", generate=False).sources
    scores = [s.score for s in sources]
    assert scores == sorted(scores, reverse=True)
    assert 0.5 < scores[0] <= 1.0


def test_every_mode_finds_nothing_in_an_empty_store_and_after_the_last_delete(services, pdf_dir, corpus):
    retriever = Retriever(services.store, services.embedder)
    assert all(retriever.retrieve("zebras", 5, mode).chunks == [] for mode in MODES)
    path = sorted(pdf_dir.glob("*.pdf"))[0]
    assert services.ingestor.ingest([SourceFile(path, path.name)]).ok
    assert retriever.retrieve("zebras", 5, "dense").chunks
    assert services.ingestor.delete(path.name)
    assert all(retriever.retrieve("zebras", 5, mode).chunks == [] for mode in MODES)
