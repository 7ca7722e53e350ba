"""Questions about an image, answered by the vision model; optionally with chunks from the documents."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from models.vision import RejectedImage, load_image
from rag.answering import Answer, AnsweringContext, Source, fit_params, stream_text
from rag.prompts import detect_language, format_context
from rag.store import StoredChunk

IMAGE_SYSTEM = {
    "zh": "你是一个严谨的助手。根据图片回答问题；如果给出了文档上下文，也可以参考，并注明文件名和页码。回答使用中文。",
    "en": (
        "You are a careful assistant. Answer the question about the image; if document context is given, you "
        "may use it and cite the file name and page. Answer in English."
    ),
}
IMAGE_WITH_CONTEXT = {
    "zh": "文档上下文：\n{context}\n\n问题：{question}",
    "en": "Context from the documents:\n{context}\n\nQuestion: {question}",
}

VISION_NOT_CONFIGURED = (
    "No vision model is configured, so image questions are off. Set ZHIKU_VISION_MODEL to a local LLaVA folder "
    "or a cached hub id (for example llava-hf/llava-1.5-13b-hf) and restart. / 未配置视觉模型：请设置 "
    "ZHIKU_VISION_MODEL（例如 llava-hf/llava-1.5-13b-hf 的本地路径）后重启。"
)


class VisionNotConfigured(RuntimeError):
    pass


class ImageQuestionError(ValueError):
    """A bad image or question; the message names the file and the reason."""


class ImageQAService:
    def __init__(self, context: AnsweringContext, max_image_bytes: int, vision_model: str | None = "vision") -> None:
        self.context = context
        self.max_image_bytes = max_image_bytes
        self.vision_model = vision_model

    @property
    def available(self) -> bool:
        return self.vision_model is not None

    def ask(self, question: str, image_path: Path, search_documents: bool = False, k: int | None = None) -> Answer:
        *_, answer = self.stream(question, image_path, search_documents, k)
        return answer

    def stream(
        self, question: str, image_path: Path, search_documents: bool = False, k: int | None = None
    ) -> Iterator[Answer]:
        if self.vision_model is None:
            raise VisionNotConfigured(VISION_NOT_CONFIGURED)
        question = question.strip()
        if not question:
            raise ImageQuestionError("The question is empty / 问题为空")
        try:
            image = load_image(Path(image_path), self.max_image_bytes)
        except RejectedImage as exc:
            raise ImageQuestionError(f"{Path(image_path).name}: {exc.reason}") from exc
        answer = Answer(question=question, language=detect_language(question))
        started = time.perf_counter()
        relevant: list[StoredChunk] = []
        if search_documents:
            _, relevant = self.context.relevant(question, k, answer)
        yield from self.context.generate(
            self.vision_model, answer, lambda model: self._generate(model, image, question, relevant, answer, started)
        )

    def _generate(self, model, image, question: str, chunks: list[StoredChunk], answer: Answer, started: float):
        system = IMAGE_SYSTEM[answer.language]
        kept = list(chunks)
        params, budget = fit_params(self.context.params, model.context_length)
        while True:  # leave out the least relevant chunks until the prompt (image tokens included) fits
            text = (
                IMAGE_WITH_CONTEXT[answer.language].format(context=format_context(kept), question=question)
                if kept
                else question
            )
            prompt = model.prompt(text, system)
            length = model.prompt_length(image, prompt)
            if length <= budget or not kept:
                break
            kept.pop()
        if length > budget:  # the question alone is too long: shorten it, never the image
            over = length - budget
            question = model.truncate_tokens(question, max(16, model.count_tokens(question) - over - 8))
            prompt = model.prompt(question, system)
            length = model.prompt_length(image, prompt)
            answer.notes.append("the question was longer than the model's context and was shortened")
        if len(kept) < len(chunks):
            answer.notes.append(f"{len(chunks) - len(kept)} retrieved chunk(s) left out to fit the model's context")
        answer.sources = [Source.of(c) for c in kept]
        answer.grounded = bool(kept)
        answer.timings["prompt_tokens"] = length
        yield from stream_text(model, model.stream(image, prompt, params), answer, started)
