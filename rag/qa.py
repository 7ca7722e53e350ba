"""The question-answering flow: retrieve, decide whether there is anything to answer from, generate."""

from __future__ import annotations

import time
from collections.abc import Iterator

from models.protocols import TextGenerator
from rag.answering import Answer, AnsweringContext, Source, fit_params, stream_text
from rag.evaluation import DEPTH
from rag.prompts import NO_DOCUMENTS, NOTHING_RELEVANT, detect_language, fit_prompt
from rag.retriever import Mode
from rag.store import StoredChunk


class QAService:
    def __init__(self, context: AnsweringContext, chat_model: str = "chat") -> None:
        self.context = context
        self.chat_model = chat_model

    def ask(self, question: str, k: int | None = None, generate: bool = True, mode: Mode | None = None) -> Answer:
        """The finished answer (the last update of ``stream``)."""
        *_, answer = self.stream(question, k, generate, mode)
        return answer

    def probe(self, question: str, k: int, mode: Mode) -> tuple[list[StoredChunk], bool]:
        """For the eval: the first ``DEPTH`` chunks, and whether ``ask`` with this ``k`` would find nothing relevant."""
        retrieval = self.context.retriever.retrieve(question, max(k, DEPTH), mode)
        return retrieval.chunks, not self.context.judge(question, retrieval, retrieval.chunks[:k])

    def stream(
        self, question: str, k: int | None = None, generate: bool = True, mode: Mode | None = None
    ) -> Iterator[Answer]:
        question = question.strip()
        if not question:
            raise ValueError("The question is empty / 问题为空")
        answer = Answer(question=question, language=detect_language(question))
        started = time.perf_counter()
        retrieval, relevant = self.context.relevant(question, k, answer, mode)
        if not generate:
            answer.sources = [Source.of(c) for c in retrieval.chunks]
            answer.done = True
            yield answer
            return
        if not retrieval.chunks or not relevant:
            answer.text = (NO_DOCUMENTS if not retrieval.chunks else NOTHING_RELEVANT)[answer.language]
            answer.done = True
            yield answer
            return
        yield from self.context.generate(
            self.chat_model, answer, lambda generator: self._generate(generator, question, relevant, answer, started)
        )

    def _generate(
        self, generator: TextGenerator, question: str, relevant: list[StoredChunk], answer: Answer, started: float
    ) -> Iterator[Answer]:
        params, budget = fit_params(self.context.params, generator.context_length)
        prompt = fit_prompt(
            question, relevant, answer.language, generator.prompt_ids, generator.truncate_tokens, budget
        )
        if prompt.chunks_dropped:
            answer.notes.append(f"{prompt.chunks_dropped} retrieved chunk(s) left out to fit the model's context")
        if prompt.question_trimmed:
            answer.notes.append("the question was longer than the model's context and was shortened")
        answer.sources = [Source.of(c) for c in prompt.chunks]
        answer.grounded = True
        answer.timings["prompt_tokens"] = len(prompt.prompt_ids)
        yield from stream_text(generator, generator.stream(prompt.prompt_ids, params), answer, started)
