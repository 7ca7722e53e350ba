import pytest

from ingest.chunker import Chunker
from ingest.pdf_reader import read_pdf


@pytest.fixture(scope="module")
def embedder():
    from models.embedder import Embedder

    return Embedder()


@pytest.fixture(scope="module")
def chunker(embedder):
    return Chunker(1000, 200, embedder.count_tokens, embedder.max_tokens - 2)


def test_english_chunks_respect_characters_and_tokens(chunker, embedder):
    text = " ".join(f"Sentence number {i} talks about retrieval augmented generation." for i in range(300))
    chunks = chunker.split_text(text)
    assert len(chunks) > 5
    for chunk in chunks:
        assert len(chunk) <= 1000
        assert embedder.count_tokens(chunk) <= embedder.max_tokens - 2


def test_chinese_chunks_fit_the_embedder(chunker, embedder):
    text = "知识库把文档切成小块。每一块都要能被向量模型完整读取，不能被截断！这样检索才准确；否则信息会丢失。" * 80
    chunks = chunker.split_text(text)
    assert len(chunks) > 3
    for chunk in chunks:
        assert embedder.count_tokens(chunk) <= embedder.max_tokens - 2
    # cut at Chinese sentence ends, not in the middle of a sentence
    assert sum(c.endswith(("。", "！", "；")) for c in chunks[:-1]) >= len(chunks[:-1]) - 1


def test_overlap_between_consecutive_chunks(chunker):
    text = "\n".join(f"Line {i}: the quick brown fox jumps over the lazy dog." for i in range(200))
    first, second = chunker.split_text(text)[:2]
    assert first[-60:].split("\n")[-1] in second


def test_no_text_is_lost(chunker):
    words = [f"w{i}" for i in range(3000)]
    chunks = chunker.split_text(" ".join(words))
    seen = set(" ".join(chunks).split())
    assert seen == set(words)


def test_document_chunks_carry_page_index_and_hash(chunker, chinese_pdf):
    document = read_pdf(chinese_pdf, 10**9)
    chunks = chunker.split_document(document)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert {c.page for c in chunks} == {1, 2, 3}
    for chunk in chunks:
        assert chunk.file == "中国文化.pdf"
        assert chunk.id == f"{document.sha256}:{chunk.index}"
        assert chunk.metadata() == {
            "source": "中国文化.pdf",
            "page": chunk.page,
            "chunk": chunk.index,
            "sha256": document.sha256,
        }
