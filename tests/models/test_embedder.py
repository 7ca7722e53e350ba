import threading

from models.embedder import Embedder


def test_embeds_normalised_vectors_offline():
    embedder = Embedder()
    vectors = embedder.embed_documents(["zebra migration", "斑马迁徙"])
    assert len(vectors) == 2 and len(vectors[0]) == embedder.dimension == 384
    assert abs(sum(x * x for x in vectors[0]) - 1.0) < 1e-4
    assert embedder.max_tokens == 256


def test_counting_tokens_while_embedding_in_another_thread():
    """Ingest counts tokens in its reading thread while another thread embeds; a shared fast tokenizer's
    padding state then flips under the batch ("Unable to create tensor"), failing at once without the fix."""
    embedder = Embedder(batch_size=8)
    texts = ["word " * (i + 1) for i in range(8)]  # different lengths: the batch needs padding
    stop = threading.Event()
    counts: list[int] = []

    def count() -> None:
        while not stop.is_set():
            counts.append(embedder.count_tokens("a b"))

    worker = threading.Thread(target=count)
    worker.start()
    try:
        for _ in range(30):
            assert len(embedder.embed_documents(texts)) == len(texts)
    finally:
        stop.set()
        worker.join()
    assert counts and set(counts) == {2}
