"""zhiku's search as a LangChain retriever, for using a zhiku index in one's own chain.

``ZhikuRetriever`` wraps ``rag.retriever.Retriever`` (hybrid, keyword or dense search over zhiku's store) as a
``langchain_core`` ``BaseRetriever``: ``invoke(question)`` gives the ``k`` best chunks as ``Document`` objects,
one per page, best first, with what a citation needs in their metadata. ``invoke(question, k=3)`` overrides
``k`` for one call. ``Services.langchain_retriever()`` builds one over an opened data directory (README,
"Using zhiku's index in your own LangChain chain").

It returns the top ``k`` as LangChain retrievers do; zhiku's own answers also drop chunks that do not share
enough of the question's words (``rag.relevance``), and that judgement is not applied here.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import Field

from rag.retriever import MODES, Retriever
from rag.store import StoredChunk


class ZhikuRetriever(BaseRetriever):
    """The ``k`` best chunks of zhiku's index for a question, as LangChain documents."""

    retriever: Retriever = Field(description="zhiku's retriever over an opened store (Services.qa.context.retriever)")
    k: int = Field(5, ge=1, le=50, description="Documents returned per question.")
    mode: str | None = Field(None, description="hybrid, keyword or dense; None = the retriever's own (settings).")

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        k = int(kwargs.pop("k", self.k))
        mode = kwargs.pop("mode", self.mode)
        if kwargs:
            raise TypeError(f"ZhikuRetriever takes k and mode, not {', '.join(sorted(kwargs))}")
        if mode is not None and mode not in MODES:
            raise ValueError(f"unknown retrieval mode {mode!r}; choose one of {', '.join(MODES)}")
        retrieval = self.retriever.retrieve(query, k, mode)
        return [as_document(chunk) for chunk in retrieval.chunks[:k]]


def as_document(chunk: StoredChunk) -> Document:
    """A chunk as a LangChain document: its text, and its file, page and scores as metadata."""
    metadata: dict[str, Any] = {
        "source": chunk.file,
        "page": chunk.page,  # 1-based, as zhiku cites it
        "place": chunk.place,  # "p. 3", "lines 12-40", "p. 2 (OCR)": what zhiku shows next to a citation
        "chunk_index": chunk.index,
        "score": chunk.score,  # cosine similarity to the question
        "keyword_score": chunk.keyword_score,  # BM25 of the question's words
        "found_by": list(chunk.found_by),
    }
    if chunk.section:
        metadata["section"] = chunk.section
    if chunk.ocr:
        metadata["ocr"] = True
    return Document(id=chunk.id or None, page_content=chunk.text, metadata=metadata)
