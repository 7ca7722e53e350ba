"""The question-answering flow: rewrite a follow-up, retrieve, decide whether there is anything to answer
from, show the evidence at once, generate, then check the generated text against the sources."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Literal

from models.protocols import GeneratorUnavailable, TextGenerator
from models.streaming import SamplingParams
from rag.answering import Answer, AnsweringContext, Source, fit_params, is_small, stream_text
from rag.evaluation import DEPTH
from rag.evidence import extract, support
from rag.followup import Turn, model_rewrite, rule_rewrite
from rag.grounding import claims, unsupported
from rag.prompts import NO_DOCUMENTS, NOTHING_RELEVANT, detect_language, fit_prompt, focused
from rag.retriever import Mode
from rag.store import StoredChunk

AnswerMode = Literal["generate", "extract", "both"]
RewriteMode = Literal["rules", "model", "off"]
REWRITE_TOKENS = 64


class QAService:
    def __init__(
        self,
        context: AnsweringContext,
        chat_model: str = "chat",
        answer_mode: Callable[[], AnswerMode] = lambda: "generate",
        rewrite: Callable[[], RewriteMode] = lambda: "rules",
    ) -> None:
        self.context = context
        self.chat_model = chat_model
        self.answer_mode = answer_mode  # a callable: "auto" looks at the chat model's size, once
        self.rewrite = rewrite

    def ask(self, question: str, **options) -> Answer:
        """The finished answer (the last update of ``stream``, which takes the same options)."""
        *_, answer = self.stream(question, **options)
        return answer

    def probe(self, question: str, k: int, mode: Mode) -> tuple[list[StoredChunk], bool]:
        """For the eval: the first ``DEPTH`` chunks, and whether ``ask`` with this ``k`` would find nothing relevant."""
        retrieval = self.context.retriever.retrieve(question, max(k, DEPTH), mode)
        return retrieval.chunks, not self.context.judge(question, retrieval, retrieval.chunks[:k])

    def standalone(self, question: str, history: Sequence[Turn]) -> str:
        """``question`` as it is searched: a follow-up rewritten with the conversation."""
        how = self.rewrite() if history else "off"
        if how == "model":
            return model_rewrite(question, history, self._complete)
        if how == "rules":
            return rule_rewrite(question, history)
        return question

    def stream(
        self,
        question: str,
        k: int | None = None,
        generate: bool = True,
        mode: Mode | None = None,
        history: Sequence[Turn] = (),
        given: Sequence[StoredChunk] = (),
        search: bool = True,
    ) -> Iterator[Answer]:
        """The answer as it grows. ``given``: chunks to answer from ahead of the retrieved ones (an image's text
        read by OCR); with ``search`` False, only from them."""
        question = question.strip()
        if not question:
            raise ValueError("The question is empty / 问题为空")
        answer = Answer(question=question, language=detect_language(question))
        started = time.perf_counter()
        try:
            searched = self.standalone(question, history)
        except GeneratorUnavailable as exc:  # the chat model would have rewritten it: the rules do instead
            searched = rule_rewrite(question, history)
            answer.notes.append(f"the follow-up was completed by rules, not the model: {exc}")
        asked = ""
        if searched != question:
            answer.standalone, asked = searched, question
        retrieval, relevant = self.context.relevant(searched, k, answer, mode)
        if given:  # the retrieval still gives the question's terms and vector, which the evidence needs
            found_chunks = retrieval.chunks if search else []
            retrieval = replace(retrieval, chunks=[*given, *found_chunks])
            relevant = [*given, *(relevant if search else [])]
        if not generate:
            evidence = self.context.evidence(searched, retrieval, retrieval.chunks, asked)
            answer.sources = [Source.of(c, e) for c, e in zip(retrieval.chunks, evidence, strict=True)]
            answer.done = True
            yield answer
            return
        if not retrieval.chunks or not relevant:
            answer.text = (NO_DOCUMENTS if not retrieval.chunks else NOTHING_RELEVANT)[answer.language]
            answer.done = True
            yield answer
            return
        found = time.perf_counter()
        evidence = self.context.evidence(searched, retrieval, relevant, asked)
        answer.timings["evidence_ms"] = (time.perf_counter() - found) * 1000
        answer.sources = [Source.of(c, e) for c, e in zip(relevant, evidence, strict=True)]
        answer.grounded = True
        answer.answer_mode = self.answer_mode()
        if answer.answer_mode != "generate":
            answer.extract = extract(evidence, relevant)
        if answer.answer_mode == "extract":
            answer.text = extract_text(answer)
            answer.timings["total_ms"] = (time.perf_counter() - started) * 1000
            answer.done = True
            yield answer
            return
        answer.timings["question_to_evidence_ms"] = (time.perf_counter() - started) * 1000
        yield answer  # the sources, their evidence and the extractive answer, before the model starts
        try:
            yield from self.context.generate(
                self.chat_model,
                answer,
                lambda generator: self._generate(generator, searched, relevant, history, answer, started),
            )
        except GeneratorUnavailable as exc:  # a chat server down or too slow: the evidence still answers
            yield self._without_model(answer, evidence, relevant, str(exc), started)
            return
        self._check(answer, question, relevant, evidence)
        yield answer  # the same answer, with its unsupported claims and the evidence that backs the rest

    def _generate(
        self,
        generator: TextGenerator,
        question: str,
        relevant: list[StoredChunk],
        history: Sequence[Turn],
        answer: Answer,
        started: float,
    ) -> Iterator[Answer]:
        params, budget = fit_params(self.context.params, generator.context_length, generator.parameters)
        chunks = relevant
        if is_small(generator.parameters):  # a small model reads the evidence and what surrounds it, not pages
            chunks = [focused(c, [s.start for s in src.evidence]) for c, src in zip(relevant, answer.sources)]
        prompt = fit_prompt(
            question, chunks, answer.language, generator.prompt_ids, generator.truncate_tokens, budget, history
        )
        if prompt.chunks_dropped:
            answer.notes.append(f"{prompt.chunks_dropped} retrieved chunk(s) left out to fit the model's context")
        if prompt.question_trimmed:
            answer.notes.append("the question was longer than the model's context and was shortened")
        if prompt.turns_dropped:
            answer.notes.append(f"{prompt.turns_dropped} earlier turn(s) of the conversation left out to fit")
        answer.model = generator.name
        answer.timings["prompt_tokens"] = len(prompt.prompt_ids)
        yield from stream_text(generator, generator.stream(prompt.prompt_ids, params), answer, started)
        answer.timings["reused_prompt_tokens"] = getattr(generator, "last_reused_tokens", 0)

    def chat(self, messages: list[dict[str, str]], params: SamplingParams) -> Iterator[str]:
        """The chat model's own reply to ``messages``, no documents involved: what the API serves as
        ``zhiku-llm``, so that another zhiku (or any tool) can use this one's model. ValueError if the messages
        and ``params.max_new_tokens`` do not fit its context."""
        with self.context.models.acquire(self.chat_model) as generator:
            prompt = generator.prompt_ids(messages)
            if len(prompt) + params.max_new_tokens > generator.context_length:
                raise ValueError(
                    f"the messages ({len(prompt)} tokens) and max_tokens ({params.max_new_tokens}) exceed the "
                    f"model's context of {generator.context_length} tokens"
                )
            yield from generator.stream(prompt, params)

    def _without_model(self, answer: Answer, evidence, relevant: list[StoredChunk], why: str, started: float):
        """The answer when the chat model cannot give one: what it wrote so far, else the evidence sentences."""
        answer.status = None
        if answer.text:
            answer.notes.append(f"the answer was cut off: {why} / 回答中断")
        else:
            answer.extract = answer.extract or extract(evidence, relevant)
            answer.text = extract_text(answer)
            answer.model = None
            answer.notes.append(
                f"no model answer: {why}; the passages that answer it are shown / 模型不可用，仅显示出处原文"
            )
        answer.timings["total_ms"] = (time.perf_counter() - started) * 1000
        answer.done = True
        return answer

    def _check(self, answer: Answer, question: str, relevant: list[StoredChunk], evidence) -> None:
        """Mark the answer's claims no source holds; add the sentences that hold the others to the evidence."""
        if not answer.text:
            return
        said = claims(answer.text)
        answer.unsupported = unsupported(answer.text, [question, *(c.text for c in relevant)], said)
        grown = support(evidence, relevant, [c for c in said if c not in answer.unsupported])
        answer.sources = [replace(s, evidence=tuple(e)) for s, e in zip(answer.sources, grown, strict=True)]

    def _complete(self, messages: list[dict[str, str]]) -> str:
        """A short greedy completion by the chat model (for rewriting follow-ups)."""
        params = SamplingParams(temperature=0.0, repetition_penalty=1.0, max_new_tokens=REWRITE_TOKENS)
        with self.context.models.acquire(self.chat_model) as generator:
            return "".join(generator.stream(generator.prompt_ids(messages), params))


def extract_text(answer: Answer) -> str:
    """The evidence sentences as the answer's text, each with its file and place."""
    return "\n".join(f"{q.span.text} ({q.file}, {q.place})" for q in answer.extract)
