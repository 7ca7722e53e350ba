"""The Image tab: a question about an image, answered by the vision model (or, without one, by the chat model
from the image's text read by OCR), optionally with the documents."""

from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr

from models.vision import RejectedImage, load_image
from rag.image_qa import VISION_NOT_CONFIGURED, ImageQuestionError
from ui.render import answer_notes, citation_line, progress_text, sources_html

READS_AS_TEXT_NOTE = (
    "No vision model is configured: the image is read as text (OCR) and the chat model answers from that text. "
    "/ 未配置视觉模型：图片先用文字识别（OCR）读成文字，再由对话模型回答。"
)

log = logging.getLogger(__name__)


class ImagePanel:
    def __init__(self, services) -> None:
        self.services = services

    def ask(self, image_path: str | None, question: str, search_documents: bool):
        if not image_path:
            yield "Add an image first. / 请先上传图片。", ""
            return
        if not (question or "").strip():
            yield "Type a question about the image. / 请输入关于图片的问题。", ""
            return
        answer = None
        try:
            for answer in self.services.image_qa.stream(question, image_path, search_documents):
                yield progress_text(answer), ""
        except ImageQuestionError as exc:
            yield f"⚠️ {exc}", ""
            return
        except Exception as exc:  # noqa: BLE001 - shown to the user, logged in full
            log.exception("image question failed")
            yield f"⚠️ Error / 出错: {type(exc).__name__}: {exc}", ""
            return
        final = (answer.text or "") + citation_line(answer.sources) + answer_notes(answer)
        yield final, sources_html(answer.sources)

    def preview(self, image_path: str | None):
        """Show the image if it passes the checks; otherwise say why, naming the file."""
        if not image_path:
            return None, ""
        try:
            load_image(Path(image_path), self.services.image_qa.max_image_bytes)
        except RejectedImage as exc:
            return None, f"⚠️ {Path(image_path).name}: {exc.reason}"
        return image_path, ""

    def build(self) -> None:
        if not self.services.image_qa.available:
            gr.Markdown(
                f"### Image questions are off / 图片问答未启用\n\n{VISION_NOT_CONFIGURED}", elem_id="vision-off"
            )
            return
        with gr.Row():
            with gr.Column():
                # a file input, not gr.Image: a broken or mislabelled file must reach zhiku's own checks, which
                # name the file and the reason, instead of failing inside Gradio's image decoding
                image = gr.File(
                    label="Drop an image / 拖放图片 (PNG, JPEG, WebP)",
                    file_types=[".png", ".jpg", ".jpeg", ".webp"],
                    type="filepath",
                    elem_id="image",
                )
                preview = gr.Image(label="Preview / 预览", interactive=False, height=300, elem_id="image-preview")
            with gr.Column():
                question = gr.Textbox(
                    label="Question / 问题",
                    placeholder="What does this chart show? 这张图说明了什么？",
                    elem_id="image-q",
                )
                search = gr.Checkbox(label="Also search my documents / 同时检索我的文档", elem_id="image-docs")
                if self.services.image_qa.reads_as_text:
                    gr.Markdown(READS_AS_TEXT_NOTE, elem_id="image-ocr-note")
                ask = gr.Button("Ask / 提问", variant="primary", elem_id="image-ask")
        answer = gr.Markdown(elem_id="image-answer")
        sources = gr.HTML(elem_id="image-sources")
        image.change(self.preview, [image], [preview, answer], api_name=False)
        ask.click(self.ask, [image, question, search], [answer, sources], api_name="ask_image")
        question.submit(self.ask, [image, question, search], [answer, sources], api_name=False)
