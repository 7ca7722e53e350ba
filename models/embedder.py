"""The sentence-transformers embedder, also usable as a LangChain ``Embeddings``."""

from __future__ import annotations

import copy
import threading
import time

from langchain_core.embeddings import Embeddings

from models.packaged import minilm_dir
from models.streaming import on_worker

PACKAGED_NAME = "all-MiniLM-L6-v2"


class Embedder(Embeddings):
    """Wraps a SentenceTransformer; knows its token limit so chunks can be cut to fit it."""

    def __init__(self, model: str = "", device: str = "cpu", batch_size: int = 32) -> None:
        from sentence_transformers import SentenceTransformer

        source = model or str(minilm_dir())
        started = time.perf_counter()
        self._model = SentenceTransformer(source, device=device, local_files_only=True)
        self.load_seconds = time.perf_counter() - started
        self.name = model or PACKAGED_NAME
        self.batch_size = batch_size
        # A fast tokenizer keeps truncation/padding state per call, so sharing the model's one between the
        # chunking thread and the embedding thread corrupts batches: counting gets its own copy and lock.
        self._count_tokenizer = copy.deepcopy(self._model.tokenizer)
        self._count_lock = threading.Lock()
        self._lock = threading.Lock()

    @property
    def max_tokens(self) -> int:
        """Longest input in tokens, special tokens included; longer inputs are truncated by the model."""
        return int(self._model.max_seq_length)

    @property
    def dimension(self) -> int:
        return int(self._model.get_embedding_dimension())

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` without the special tokens the model adds around it."""
        with self._count_lock:
            encoded = self._count_tokenizer(text, add_special_tokens=False, truncation=False)
        return len(encoded["input_ids"])

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []

        def encode():
            with self._lock:
                return self._model.encode(
                    list(texts), batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
                )

        return on_worker(encode).tolist()  # on the thread the chat model runs on: see on_worker

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]
