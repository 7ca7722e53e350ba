"""What the text and image answers share: the Answer record, relevant retrieval, governed streaming."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from models.governor import is_out_of_memory
from models.protocols import ModelProvider
from models.streaming import SamplingParams
from rag.citations import place
from rag.evidence import EvidenceFinder, Quote, Span
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
    evidence: tuple[Span, ...] = ()  # the sentences of ``text`` that answer the question, best first
    location: str = ""  # where it is in a file without pages, "" for a page
    ocr: bool = False  # its text was read by OCR

    @property
    def place(self) -> str:
        return place(self.page, self.location, self.ocr)

    @classmethod
    def of(cls, chunk: StoredChunk, evidence: Sequence[Span] = ()) -> Source:
        score = round(chunk.keyword_score, 3)
        return cls(
            chunk.file, chunk.page, chunk.score, chunk.text, chunk.found_by, score, chunk.section, tuple(evidence),
            chunk.location, chunk.ocr,
        )  # fmt: skip

    def as_dict(self) -> dict:
        return {**asdict(self), "evidence": [span.as_dict() for span in self.evidence]}


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
    extract: list[Quote] = field(default_factory=list)  # the best evidence sentences: the extractive answer
    model: str | None = None  # the model that generated ``text``; None for an extractive or refusing answer
    unsupported: list[str] = field(default_factory=list)  # numbers, names, quoted terms found in no source
    standalone: str | None = None  # a follow-up question as searched, rewritten with the conversation
    answer_mode: str | None = None  # generate, extract or both

    def as_dict(self) -> dict:
        return {
            "answer": self.text,
            "model": self.model,
            "answer_mode": self.answer_mode,
            "extract": [q.as_dict() for q in self.extract],
            "unsupported": self.unsupported,
            "standalone_question": self.standalone,
            "sources": [s.as_dict() for s in self.sources],
            "timings": {k: round(v, 2) for k, v in self.timings.items()},
            "language": self.language,
            "retrieval_mode": self.retrieval_mode,
            "notes": self.notes,
        }


SMALL_MODEL = 1_000_000_000  # parameters: a model below this gets a short prompt, a short answer, greedy decoding
SMALL_PROMPT_TOKENS = 768  # ~0.7 s of prefill for SmolLM2-135M on 2 cores (docs/benchmarks.md, section 5)
SMALL_ANSWER_TOKENS = 160  # ~7 s of decoding at ~22 tokens/s


def is_small(parameters: int | None) -> bool:
    return parameters is not None and parameters < SMALL_MODEL


def fit_params(
    params: SamplingParams, context_length: int, parameters: int | None = None
) -> tuple[SamplingParams, int]:
    """Sampling parameters and the prompt's token budget for a model's context and size.

    A model whose context is too short for ``max_new_tokens`` gets half of it for the answer. A small model
    (under ``SMALL_MODEL`` parameters) gets a prompt of at most ``SMALL_PROMPT_TOKENS``, an answer of at most
    ``SMALL_ANSWER_TOKENS`` and greedy decoding: it is no better for reading more, rambles when it writes
    long, and sampling only adds invention.
    """
    small = is_small(parameters)
    if small:
        params = replace(params, temperature=0.0, max_new_tokens=min(params.max_new_tokens, SMALL_ANSWER_TOKENS))
    budget = context_length - params.max_new_tokens
    if budget < 64:
        params = replace(params, max_new_tokens=context_length // 2)
        budget = context_length - params.max_new_tokens
    return params, min(budget, SMALL_PROMPT_TOKENS) if small else budget


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
        chinese = is_chinese(question)
        keep = relevant_indices(retrieval.question_terms, retrieval.stats, chunks, chinese, self.relevance)
        return [chunks[i] for i in keep]

    def evidence(
        self, question: str, retrieval: Retrieval, chunks: list[StoredChunk], asked: str = ""
    ) -> list[list[Span]]:
        """The sentences of each of ``chunks`` that answer ``question`` (a follow-up's rewrite of what was
        ``asked``), best first (``rag.evidence``)."""
        finder = EvidenceFinder(self.retriever.embeddings)
        terms, chinese = retrieval.question_terms, is_chinese(question)
        return finder.find(question, terms, retrieval.stats, chunks, chinese, retrieval.vector, asked)

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
            now = time.perf_counter()
            answer.timings["first_text_ms"] = (now - gen_started) * 1000
            answer.timings["question_to_text_ms"] = (now - started) * 1000  # what the user waits for
        answer.text += piece
        yield answer
    elapsed = time.perf_counter() - gen_started
    first = model.last_first_token_s or 0.0
    tokens = model.last_new_tokens
    answer.text = answer.text.strip()
    if getattr(model, "last_repeating", False):
        answer.text = cut_repeated_tail(answer.text)
        answer.notes.append("the model began repeating itself and was stopped / 模型开始重复，已停止")
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


def cut_repeated_tail(text: str, least: int = 8, longest: int = 600) -> str:
    """``text`` without its repeating tail: a loop stopped part way through a later round leaves the first
    round, more rounds and a piece of one; only the first round stays. The tail cut is the longest that
    repeats, character for character, the ``p`` characters before it, for any period ``p`` up to ``longest``."""
    n = n_best = len(text)
    for p in range(1, min(longest, n - least) + 1):
        i = n
        while i - 1 - p >= 0 and text[i - 1] == text[i - 1 - p]:
            i -= 1
        if n - i >= least and i < n_best:
            n_best = i
    return text[:n_best].rstrip()
