"""Questions about an image, answered by the vision model; optionally with chunks from the documents.

Without a vision model, the image is read by OCR and the chat model answers from that text, like a document
of one page (``rag.qa`` with the text as a given chunk); the answer says so. With a vision model, the OCR text
can go into its prompt too (``ZHIKU_VISION_OCR``)."""

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

READ_AS_TEXT = {
    "zh": "未配置视觉模型：图片已用文字识别（OCR）读成文字，由对话模型根据这些文字回答。",
    "en": "no vision model is configured: the image was read as text by OCR, and the chat model answered from it",
}
NO_TEXT_IN_IMAGE = {
    "zh": "图片中没有识别出文字，而没有视觉模型就无法回答关于图片内容的问题（设置 ZHIKU_VISION_MODEL）。",
    "en": (
        "No text could be read in the image, and without a vision model zhiku cannot answer about what it shows "
        "(set ZHIKU_VISION_MODEL)."
    ),
}
OCR_IN_PROMPT = {"zh": "图片中的文字（OCR）：\n{text}\n\n{rest}", "en": "Text in the image (OCR):\n{text}\n\n{rest}"}

VISION_NOT_CONFIGURED = (
    "No vision model is configured and OCR is off (ZHIKU_OCR=off), so image questions are off. Set ZHIKU_OCR=auto "
    "to answer from the text in images, or ZHIKU_VISION_MODEL to a local LLaVA folder "
    "or a cached hub id (for example llava-hf/llava-1.5-13b-hf) and restart. / 未配置视觉模型：请设置 "
    "ZHIKU_VISION_MODEL（例如 llava-hf/llava-1.5-13b-hf 的本地路径）后重启。"
)


class VisionNotConfigured(RuntimeError):
    pass


class ImageQuestionError(ValueError):
    """A bad image or question; the message names the file and the reason."""


class ImageQAService:
    def __init__(
        self,
        context: AnsweringContext,
        max_image_bytes: int,
        vision_model: str | None = "vision",
        text_qa=None,
        ocr=None,
        ocr_with_vision: bool = False,
    ) -> None:
        self.context = context
        self.max_image_bytes = max_image_bytes
        self.vision_model = vision_model
        self.text_qa = text_qa  # rag.qa.QAService: answers from an image's OCR text when there is no vision model
        self.ocr = ocr  # ingest.ocr.Ocr, or None when OCR is off
        self.ocr_with_vision = ocr_with_vision and ocr is not None

    @property
    def available(self) -> bool:
        return self.vision_model is not None or self.reads_as_text

    @property
    def reads_as_text(self) -> bool:
        """No vision model, but OCR and the chat model: images are answered from their text."""
        return self.vision_model is None and self.ocr is not None and self.text_qa is not None

    def ask(self, question: str, image_path: Path, search_documents: bool = False, k: int | None = None) -> Answer:
        *_, answer = self.stream(question, image_path, search_documents, k)
        return answer

    def stream(
        self, question: str, image_path: Path, search_documents: bool = False, k: int | None = None
    ) -> Iterator[Answer]:
        if not self.available:
            raise VisionNotConfigured(VISION_NOT_CONFIGURED)
        question = question.strip()
        if not question:
            raise ImageQuestionError("The question is empty / 问题为空")
        try:
            image = load_image(Path(image_path), self.max_image_bytes)
        except RejectedImage as exc:
            raise ImageQuestionError(f"{Path(image_path).name}: {exc.reason}") from exc
        if self.reads_as_text:
            yield from self._from_text(question, Path(image_path).name, image, search_documents, k)
            return
        answer = Answer(question=question, language=detect_language(question))
        started = time.perf_counter()
        relevant: list[StoredChunk] = []
        if search_documents:
            _, relevant = self.context.relevant(question, k, answer)
        asked = question
        if self.ocr_with_vision:  # the text in the image, read by OCR, ahead of the question in the prompt
            text = self.ocr.read(image).text.strip()
            if text:
                asked = OCR_IN_PROMPT[answer.language].format(text=text, rest=question)
        yield from self.context.generate(
            self.vision_model, answer, lambda model: self._generate(model, image, asked, relevant, answer, started)
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

    def _from_text(self, question: str, name: str, image, search_documents: bool, k: int | None) -> Iterator[Answer]:
        """The chat model's answer from the image's OCR text (and the documents, if asked)."""
        language = detect_language(question)
        started = time.perf_counter()
        text = self.ocr.read(image).text.strip()
        read_ms = (time.perf_counter() - started) * 1000
        if not text:
            answer = Answer(question=question, language=language, text=NO_TEXT_IN_IMAGE[language], done=True)
            answer.timings["ocr_ms"] = read_ms
            yield answer
            return
        page = StoredChunk(text=text, file=name, page=1, index=0, score=1.0, found_by=("ocr",), ocr=True)
        answer = None
        for answer in self.text_qa.stream(question, k=k, given=[page], search=search_documents):
            answer.timings["ocr_ms"] = read_ms
            if READ_AS_TEXT[language] not in answer.notes:
                answer.notes.append(READ_AS_TEXT[language])
            yield answer
