"""The question-answering flow: retrieve, decide whether there is anything to answer from, generate."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

from models.governor import is_out_of_memory
from models.llm import SamplingParams
from models.protocols import ModelProvider, TextGenerator
from rag.prompts import NO_DOCUMENTS, NOTHING_RELEVANT, detect_language, fit_prompt
from rag.relevance import relevant as relevant_chunks
from rag.retriever import Retriever
from rag.store import StoredChunk


@dataclass(frozen=True)
class Source:
    file: str
    page: int
    score: float
    text: str

    @classmethod
    def of(cls, chunk: StoredChunk) -> Source:
        return cls(chunk.file, chunk.page, chunk.score, chunk.text)


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

    def as_dict(self) -> dict:
        return {
            "answer": self.text,
            "sources": [asdict(s) for s in self.sources],
            "timings": {k: round(v, 2) for k, v in self.timings.items()},
            "language": self.language,
            "notes": self.notes,
        }


class QAService:
    def __init__(
        self,
        retriever: Retriever,
        models: ModelProvider,
        params: SamplingParams,
        top_k: int,
        min_score: float,
        sure_score: float = 0.65,
        chat_model: str = "chat",
        on_generation: Callable[[str, dict[str, float]], None] | None = None,
    ) -> None:
        self.retriever = retriever
        self.models = models
        self.params = params
        self.top_k = top_k
        self.min_score = min_score
        self.sure_score = sure_score
        self.chat_model = chat_model
        self.on_generation = on_generation

    def ask(self, question: str, k: int | None = None, generate: bool = True) -> Answer:
        """The finished answer (the last update of ``stream``)."""
        *_, answer = self.stream(question, k, generate)
        return answer

    def stream(self, question: str, k: int | None = None, generate: bool = True) -> Iterator[Answer]:
        question = question.strip()
        if not question:
            raise ValueError("The question is empty / 问题为空")
        answer = Answer(question=question, language=detect_language(question))
        started = time.perf_counter()
        retrieval = self.retriever.retrieve(question, k or self.top_k)
        answer.timings.update(embed_ms=retrieval.embed_ms, search_ms=retrieval.search_ms)

        if not generate:
            answer.sources = [Source.of(c) for c in retrieval.chunks]
            answer.done = True
            yield answer
            return
        scored = [(c.text, c.score) for c in retrieval.chunks]
        relevant = [retrieval.chunks[i] for i in relevant_chunks(question, scored, self.min_score, self.sure_score)]
        if not retrieval.chunks or not relevant:
            answer.text = (NO_DOCUMENTS if not retrieval.chunks else NOTHING_RELEVANT)[answer.language]
            answer.done = True
            yield answer
            return

        for attempt in (1, 2):
            load_started = time.perf_counter()
            try:
                with self.models.acquire(self.chat_model) as generator:
                    answer.timings["load_ms"] = (time.perf_counter() - load_started) * 1000
                    yield from self._generate(generator, question, relevant, answer, started)
                break
            except Exception as exc:
                # acquire() has already unloaded the idle models on out-of-memory: retry once, if nothing
                # was shown to the user yet
                if attempt == 2 or answer.text or not is_out_of_memory(exc):
                    raise
                answer.notes.append("ran out of memory; idle models were unloaded and the answer retried")
        if self.on_generation is not None:
            self.on_generation(self.chat_model, answer.timings)

    def _generate(
        self, generator: TextGenerator, question: str, relevant: list[StoredChunk], answer: Answer, started: float
    ) -> Iterator[Answer]:
        params = self.params
        budget = generator.context_length - params.max_new_tokens
        if budget < 64:
            params = SamplingParams(**{**asdict(params), "max_new_tokens": generator.context_length // 2})
            budget = generator.context_length - params.max_new_tokens
        prompt = fit_prompt(
            question, relevant, answer.language, generator.prompt_ids, generator.truncate_tokens, budget
        )
        if prompt.chunks_dropped:
            answer.notes.append(f"{prompt.chunks_dropped} retrieved chunk(s) left out to fit the model's context")
        if prompt.question_trimmed:
            answer.notes.append("the question was longer than the model's context and was shortened")
        answer.sources = [Source.of(c) for c in prompt.chunks]
        answer.grounded = True
        answer.text = ""
        answer.timings["prompt_tokens"] = len(prompt.prompt_ids)
        gen_started = time.perf_counter()
        pieces = 0
        for piece in generator.stream(prompt.prompt_ids, params):
            if not piece:
                continue
            if pieces == 0:
                answer.timings["first_text_ms"] = (time.perf_counter() - gen_started) * 1000
            pieces += 1
            answer.text += piece
            yield answer
        elapsed = time.perf_counter() - gen_started
        first = generator.last_first_token_s or 0.0
        tokens = generator.last_new_tokens
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
