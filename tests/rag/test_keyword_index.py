"""The keyword index beside Chroma: in step through every change, made again from Chroma when lost or damaged."""

import json
import shutil
import sqlite3

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings

from ingest.pipeline import SourceFile
from rag.keyword_index import KeywordIndex
from rag.store import ChunkStore
from rag.tokenizer import TOKENIZER_VERSION, tokenize
from tests.fixtures.pdfs import CHIP, GREAT_WALL, TEA, VOLCANO, ZEBRA, make_pdf


class CountingEmbeddings(Embeddings):
    """The real embedder, counting the texts it is asked to embed (to prove nothing is embedded again)."""

    def __init__(self, inner) -> None:
        self.inner, self.embedded = inner, 0

    def embed_documents(self, texts):
        self.embedded += len(texts)
        return self.inner.embed_documents(texts)

    def embed_query(self, text):
        return self.inner.embed_query(text)


def chroma_ids(store: ChunkStore) -> set[str]:
    return set(store._vectors._collection.get(include=[])["ids"])


def matrix_ids(keyword_dir) -> set[str]:
    assert (keyword_dir / "bm25" / "zhiku.json").is_file()  # the stamp is written last: the folder is complete
    return set(np.load(keyword_dir / "bm25" / "ids.npy").tolist())


def assert_in_step(services) -> set[str]:
    """Chroma, the token table and the saved BM25 matrix hold the same chunk ids; returns them."""
    ids = chroma_ids(services.store)
    assert services.store.keyword.ids() == ids
    assert matrix_ids(services.settings.keyword_dir) == ids
    return ids


def ingest(services, *paths):
    report = services.ingestor.ingest([SourceFile(p, p.name) for p in paths])
    assert report.ok, report.as_dict()
    return report


def top_file_pages(services, question: str, k: int = 3) -> list[tuple[str, int]]:
    hits = services.store.keyword.search(tokenize(question), k)
    chunks = services.store.get_chunks([h.id for h in hits], services.embedder.embed_query(question))
    return [(c.file, c.page) for c in chunks]


def test_in_step_after_ingest_update_and_delete(services, pdf_dir):
    wildlife = make_pdf(pdf_dir / "wildlife.pdf", ["Overview.", ZEBRA])
    culture = make_pdf(pdf_dir / "文化.pdf", [GREAT_WALL, TEA], chinese=True)
    ingest(services, wildlife, culture)
    first = assert_in_step(services)
    assert top_file_pages(services, "普洱茶产于哪个省？")[0] == ("文化.pdf", 2)

    make_pdf(wildlife, ["Overview.", VOLCANO, CHIP])  # a new version under the same name
    assert ingest(services, wildlife).files[0].status == "updated"
    second = assert_in_step(services)
    assert first - second and second - first  # old version's chunks gone, new ones in
    assert top_file_pages(services, "Mount Etna stratovolcano")[0] == ("wildlife.pdf", 2)
    assert "wildlife.pdf" not in {f for f, _ in top_file_pages(services, "wildebeest zebras Mara")}

    assert services.ingestor.delete("文化.pdf")
    assert_in_step(services)
    assert top_file_pages(services, "普洱茶产于哪个省？") == []


def test_in_step_after_a_forced_rebuild(services, settings, pdf_dir):
    from ingest.rebuild import rebuild
    from services import build_services

    ingest(services, make_pdf(pdf_dir / "geology.pdf", [VOLCANO, "Sedimentary rocks form in layers."]))
    before = assert_in_step(services)
    services.close()
    result = rebuild(settings, lambda: build_services(settings, rebuilding=True), force=True)
    try:
        assert result.report.ok
        assert assert_in_step(result.services) == before
    finally:
        result.services.close()


@pytest.fixture
def closed_store(services, settings, pdf_dir):
    """Two documents ingested, the services closed: (settings, chunk ids, counting embedder)."""
    ingest(
        services,
        make_pdf(pdf_dir / "wildlife.pdf", ["Overview.", ZEBRA]),
        make_pdf(pdf_dir / "文化.pdf", [GREAT_WALL, TEA], chinese=True),
    )
    ids = assert_in_step(services)
    embedder = CountingEmbeddings(services.embedder)
    services.close()
    return settings, ids, embedder


def reopen(settings, embeddings) -> ChunkStore:
    return ChunkStore(settings.chroma_dir, embeddings, "all-MiniLM-L6-v2", settings.keyword_dir)


def test_a_missing_keyword_index_is_made_from_the_stored_texts_without_embedding(closed_store, caplog):
    settings, ids, embedder = closed_store
    shutil.rmtree(settings.keyword_dir)
    store = reopen(settings, embedder)
    try:
        assert embedder.embedded == 0
        assert "did not exist yet" in store.keyword_notice and f"{len(ids)} chunk(s) added" in store.keyword_notice
        assert store.keyword.ids() == chroma_ids(store) == ids == matrix_ids(settings.keyword_dir)
        assert store.keyword.search(tokenize("长城全长多少公里？"), 1)
    finally:
        store.close()
    assert "keyword index was out of step" in caplog.text


def test_a_damaged_token_table_is_set_aside_and_made_again(closed_store):
    settings, ids, embedder = closed_store
    table = settings.keyword_dir / "tokens.sqlite3"
    for suffix in ("-wal", "-shm"):
        table.with_name(table.name + suffix).unlink(missing_ok=True)
    table.write_bytes(b"SQLite format 3\x00" + b"\x07" * 4096)
    store = reopen(settings, embedder)
    try:
        assert "could not be read" in store.keyword_notice
        assert store.keyword.ids() == ids and embedder.embedded == 0
        assert list(settings.keyword_dir.glob("tokens.sqlite3.damaged-*"))  # set aside, not deleted
    finally:
        store.close()


def test_a_damaged_or_stale_bm25_matrix_is_built_again_from_the_token_table(closed_store):
    settings, ids, embedder = closed_store
    (settings.keyword_dir / "bm25" / "data.csc.index.npy").write_bytes(b"not numpy")
    store = reopen(settings, embedder)
    try:
        assert store.keyword_notice is None  # the token table was fine: nothing to say
        assert store.keyword.search(tokenize("zebras Mara River"), 1)
        assert matrix_ids(settings.keyword_dir) == ids
    finally:
        store.close()
    with sqlite3.connect(settings.keyword_dir / "tokens.sqlite3") as conn:  # another process changed the rows
        conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
    store = reopen(settings, embedder)
    try:
        stamp = json.loads((settings.keyword_dir / "bm25" / "zhiku.json").read_text())
        assert stamp["generation"] == store.keyword.generation()
    finally:
        store.close()


def test_a_new_tokenizer_version_makes_the_words_again(closed_store, monkeypatch):
    settings, ids, embedder = closed_store
    monkeypatch.setattr("rag.keyword_index.TOKENIZER_VERSION", 999)
    store = reopen(settings, embedder)
    try:
        assert f"tokenizer version {TOKENIZER_VERSION}, this is 999" in store.keyword_notice
        assert store.keyword.ids() == ids and embedder.embedded == 0
    finally:
        store.close()


def test_chunks_without_a_single_word_are_indexed_and_score_nothing(tmp_path):
    """A corpus of stop words and punctuation only (a mangled PDF) must not break the build; words come later."""
    index = KeywordIndex(tmp_path / "keyword")
    try:
        index.add(["a", "b"], ["the of and …", "!!! ——"], [{"source": "x.pdf"}, {"source": "x.pdf"}])
        index.refresh()
        assert matrix_ids(tmp_path / "keyword") == {"a", "b"}
        assert index.search(tokenize("zebras"), 5) == []
        assert index.term_stats(tokenize("zebras")).chunks == 2
        index.add(["c"], [ZEBRA], [{"source": "y.pdf"}])
        index.refresh()
        assert [hit.id for hit in index.search(tokenize("zebras Mara River"), 5)] == ["c"]
    finally:
        index.close()
    reopened = KeywordIndex(tmp_path / "keyword")  # the saved matrix loads back
    try:
        reopened.refresh()
        assert [hit.id for hit in reopened.search(tokenize("zebras"), 5)] == ["c"]
    finally:
        reopened.close()
