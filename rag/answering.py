"""What the text and image answers share: the Answer record, relevant retrieval, governed streaming."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from models.governor import is_out_of_memory
from models.protocols import ModelProvider
from models.streaming import SamplingParams
from rag.relevance import RelevanceRule
from rag.relevance import relevant as relevant_indices
from rag.retriever import Mode, Retrieval, Retriever
from rag.store import StoredChunk
from rag.tokenizer import is_chinese


@dataclass(frozen=True)
class Source:
    file: str
    page: int
    score: float  # cosine similarity to the question
    text: str
    found_by: tuple[str, ...] = ()  # the indexes that found it: "dense" (semantic), "keyword" (BM25)
    keyword_score: float = 0.0
    section: str = ""  # the PDF outline's section path, "" when the PDF has no outline

    @classmethod
    def of(cls, chunk: StoredChunk) -> Source:
        score = round(chunk.keyword_score, 3)
        return cls(chunk.file, chunk.page, chunk.score, chunk.text, chunk.found_by, score, chunk.section)


@dataclass
class Answer:
    """Grows while streaming: ``text`` gains tokens until ``done``."""

    question: str
    language: str
    text: str | None = None
    sources: list[Source] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    grounded: bool = False  # True when the text was generated from retrieved chunks
    done: bool = False
    status: str | None = None  # what is happening before the first token, e.g. a model loading
    retrieval_mode: str | None = None  # hybrid, keyword or dense

    def as_dict(self) -> dict:
        return {
            "answer": self.text,
            "sources": [asdict(s) for s in self.sources],
            "timings": {k: round(v, 2) for k, v in self.timings.items()},
            "language": self.language,
            "retrieval_mode": self.retrieval_mode,
            "notes": self.notes,
        }


def fit_params(params: SamplingParams, context_length: int) -> tuple[SamplingParams, int]:
    """Sampling parameters and the prompt's token budget for a model's context; a model whose context is
    too short for ``max_new_tokens`` gets half of it for the answer."""
    budget = context_length - params.max_new_tokens
    if budget < 64:
        params = replace(params, max_new_tokens=context_length // 2)
        budget = context_length - params.max_new_tokens
    return params, budget


@dataclass(frozen=True)
class AnsweringContext:
    """What the text and image answer flows share: where chunks come from, how relevance is judged, which
    governor hands out the models, how they sample, and who hears about finished generations."""

    retriever: Retriever
    models: ModelProvider
    params: SamplingParams
    top_k: int
    relevance: RelevanceRule
    on_generation: Callable[[str, dict[str, float]], None] | None = None

    def relevant(
        self, question: str, k: int | None, answer: Answer, mode: Mode | None = None
    ) -> tuple[Retrieval, list[StoredChunk]]:
        """The top ``k`` chunks, and those of them relevant enough to answer from; timings go into ``answer``."""
        retrieval = self.retriever.retrieve(question, k or self.top_k, mode)
        answer.timings.update(embed_ms=retrieval.embed_ms, search_ms=retrieval.search_ms)
        answer.retrieval_mode = retrieval.mode
        return retrieval, self.judge(question, retrieval, retrieval.chunks)

    def judge(self, question: str, retrieval: Retrieval, chunks: list[StoredChunk]) -> list[StoredChunk]:
        """Those of ``chunks`` that are relevant to ``question`` (an empty list means "nothing relevant")."""
        stats = self.retriever.store.keyword.term_stats(retrieval.question_terms)
        keep = relevant_indices(retrieval.question_terms, stats, chunks, is_chinese(question), self.relevance)
        return [chunks[i] for i in keep]

    def generate(self, name: str, answer: Answer, produce: Callable[[Any], Iterator[Answer]]) -> Iterator[Answer]:
        """``produce(model)`` with model ``name`` held through the governor, then report the timings."""
        yield from governed(self.models, name, answer, produce)
        if self.on_generation is not None:
            self.on_generation(name, answer.timings)


def governed(
    models: ModelProvider, name: str, answer: Answer, produce: Callable[[Any], Iterator[Answer]]
) -> Iterator[Answer]:
    """Run ``produce(model)`` holding ``name`` through the governor; say when the model must load first.

    On out-of-memory, acquire() has already unloaded the idle models: retry once if nothing was shown yet.
    """
    if not models.loaded(name):
        answer.status = f"loading the {name} model"
        yield answer
    for attempt in (1, 2):
        load_started = time.perf_counter()
        try:
            with models.acquire(name) as model:
                answer.timings["load_ms"] = (time.perf_counter() - load_started) * 1000
                answer.status = None
                yield from produce(model)
            return
        except Exception as exc:
            if attempt == 2 or answer.text or not is_out_of_memory(exc):
                raise
            answer.notes.append("ran out of memory; idle models were unloaded and the answer retried")


def stream_text(model, pieces: Iterator[str], answer: Answer, started: float) -> Iterator[Answer]:
    """Append generated ``pieces`` to ``answer``, then record first-token time and decode speed."""
    answer.text = ""
    gen_started = time.perf_counter()
    for piece in pieces:
        if not piece:
            continue
        if "first_text_ms" not in answer.timings:
            answer.timings["first_text_ms"] = (time.perf_counter() - gen_started) * 1000
        answer.text += piece
        yield answer
    elapsed = time.perf_counter() - gen_started
    first = model.last_first_token_s or 0.0
    tokens = model.last_new_tokens
    answer.text = answer.text.strip()
    answer.timings.update(
        first_token_ms=first * 1000,
        generate_ms=elapsed * 1000,
        answer_tokens=tokens,
        # decode speed: the tokens after the first, over the time after the first
        tokens_per_s=(tokens - 1) / (elapsed - first) if tokens > 1 and elapsed > first else 0.0,
        total_ms=(time.perf_counter() - started) * 1000,
    )
    answer.done = True
    yield answer
