"""zhiku's Gradio Blocks: a Chat tab and a Documents tab. Building blocks is separate from launching."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import gradio as gr

from ingest.pipeline import Progress, SourceFile
from ingest.readers import READS, SUFFIXES
from rag.followup import Turn
from ui.image_tab import ImagePanel
from ui.openai_api import add_openai_routes
from ui.pdf_links import add_pdf_route, pdf_link
from ui.render import (
    TABLE_HEADERS,
    answer_markdown,
    answer_notes,
    citation_line,
    document_rows,
    ingest_summary,
    sources_html,
)
from ui.system import SystemPanel
from ui.uploads import upload_name

log = logging.getLogger(__name__)

CSS = """
.zhiku-sources details { border: 1px solid var(--border-color-primary); border-radius: 6px;
  padding: 4px 8px; margin: 4px 0; }
.zhiku-sources summary { cursor: pointer; }
.zhiku-score { color: var(--body-text-color-subdued); font-size: 0.85em; }
.zhiku-section { font-style: italic; }
.zhiku-chunk { white-space: pre-wrap; font-size: 0.9em; margin-top: 4px; }
.zhiku-evidence { background: #fde68a; color: inherit; padding: 0 1px; }
.zhiku-quote { font-size: 0.9em; margin: 2px 0 0 1.2em; color: var(--body-text-color-subdued); }
.zhiku-open { margin-left: 8px; font-size: 0.85em; }
.zhiku-badge { font-size: 0.75em; border-radius: 4px; padding: 0 5px; margin-left: 4px; color: #fff; }
.zhiku-badge-keyword { background: #b45309; }
.zhiku-badge-dense { background: #1d4ed8; }
"""


class ZhikuUI:
    def __init__(self, services) -> None:
        self.services = services
        self.settings = services.settings

    # -- handlers ---------------------------------------------------------------------------------------

    def documents(self):
        self.services.store.catch_up()  # with a shared Chroma server: what other front-ends stored or deleted
        records = self.services.registry.all()
        names = [r.name for r in records]
        return document_rows(records), gr.update(choices=names, value=None)

    def upload(self, files, progress=gr.Progress()):
        paths = [Path(f if isinstance(f, str) else f.name) for f in (files or [])]
        if not paths:
            rows, names = self.documents()
            return rows, names, "No file received. / 没有收到文件。", None
        sources = [SourceFile(p, upload_name(p.name)) for p in paths]

        def on_progress(event: Progress) -> None:
            prefix = f"{event.file_index + 1}/{event.file_count} {event.file}"
            if event.phase == "pages":
                progress((event.done, event.total), desc=f"{prefix}: reading pages / 读取页面", unit="pages")
            elif event.phase == "chunks":
                progress((event.done, event.total), desc=f"{prefix}: embedding chunks / 向量化", unit="chunks")

        report = self.services.ingestor.ingest(sources, progress=on_progress)
        rows, names = self.documents()
        return rows, names, ingest_summary(report), None

    def delete(self, name: str | None):
        if not name:
            rows, names = self.documents()
            return rows, names, "Choose a document to delete. / 请选择要删除的文档。"
        removed = self.services.ingestor.delete(name)
        rows, names = self.documents()
        message = f"Deleted **{name}**. / 已删除。" if removed else f"**{name}** is not in the index."
        return rows, names, message

    def link(self, source) -> str | None:
        """Where the source's PDF opens at its page, when zhiku keeps a copy of it (other types get no link)."""
        if not source.file.lower().endswith(".pdf") or self.services.ingestor.stored_file(source.file) is None:
            return None
        return pdf_link(source.file, source.page)

    def ask(self, question: str, history: list | None, k: float, turns: list | None):
        """Answer in the chat; ``turns`` (per browser session) holds the conversation that follow-ups lean on."""
        history, turns = list(history or []), list(turns or [])
        question = (question or "").strip()
        if not question:
            yield history, "", "", turns
            return
        history.append({"role": "user", "content": question})
        history.append({"role": "assistant", "content": "…"})
        yield history, "", "", turns
        conversation = [Turn(**t) for t in turns]
        try:
            answer, shown, panel = None, None, ""
            for answer in self.services.qa.stream(question, k=int(k), history=conversation):
                history[-1] = {"role": "assistant", "content": answer_markdown(answer)}
                if answer.sources is not shown:  # rendered when they change, not at every token
                    shown, panel = answer.sources, sources_html(answer.sources, self.link)
                yield history, "", panel, turns
        except Exception as exc:  # noqa: BLE001 - shown to the user, logged in full
            log.exception("answering failed")
            history[-1] = {"role": "assistant", "content": f"⚠️ Error / 出错: {type(exc).__name__}: {exc}"}
            yield history, "", "", turns
            return
        assert answer is not None
        final = answer_markdown(answer) + citation_line(answer.sources) + answer_notes(answer)
        history[-1] = {"role": "assistant", "content": final}
        said = answer.text if answer.model else " ".join(q.span.text for q in answer.extract)
        turns.append({"question": question, "answer": said or "", "standalone": answer.standalone or ""})
        yield history, "", sources_html(answer.sources, self.link), turns

    # -- layout -----------------------------------------------------------------------------------------

    def build(self) -> gr.Blocks:
        with gr.Blocks(title="zhiku 知库") as blocks:
            gr.Markdown("# zhiku 知库\nLocal, offline question answering over your documents. 本地离线文档问答。")
            with gr.Tabs():
                with gr.Tab("Chat / 问答", id="chat"):
                    chatbot = gr.Chatbot(label="zhiku", height=480, elem_id="chatbot")
                    with gr.Row():
                        question = gr.Textbox(
                            placeholder="Ask about your documents… 输入你的问题…",
                            show_label=False,
                            scale=8,
                            elem_id="question",
                        )
                        send = gr.Button("Ask / 提问", variant="primary", scale=1, elem_id="ask")
                    sources = gr.HTML(elem_id="sources")
                    turns = gr.State([])
                    with gr.Accordion("Options / 选项", open=False):
                        k = gr.Slider(1, 20, value=self.settings.top_k, step=1, label="Chunks to retrieve (k)")
                        clear = gr.Button("Clear chat / 清空")
                with gr.Tab("Documents / 文档", id="documents"):
                    files = gr.File(
                        label=f"Drop files here / 拖放文件到这里 ({READS})",
                        file_count="multiple",
                        file_types=sorted(SUFFIXES),
                        elem_id="upload",
                    )
                    status = gr.Markdown(elem_id="ingest-status")
                    table = gr.Dataframe(
                        headers=TABLE_HEADERS,
                        datatype=["str", "number", "number", "str", "str"],
                        interactive=False,
                        wrap=True,
                        elem_id="documents",
                    )
                    with gr.Row():
                        chosen = gr.Dropdown(label="Document / 文档", choices=[], scale=4, elem_id="doc-choice")
                        delete = gr.Button("Delete / 删除", variant="stop", scale=1, min_width=140, elem_id="delete")
                with gr.Tab("Image / 图片", id="image"):
                    ImagePanel(self.services).build()
                with gr.Tab("System / 系统", id="system"):
                    system = SystemPanel(self.services)
                    system.build()

            ask_inputs = [question, chatbot, k, turns]
            ask_outputs = [chatbot, question, sources, turns]
            send.click(self.ask, ask_inputs, ask_outputs, api_name="ask")
            question.submit(self.ask, ask_inputs, ask_outputs, api_name=False)
            clear.click(lambda: ([], "", []), None, [chatbot, sources, turns], api_name="clear")
            files.upload(self.upload, [files], [table, chosen, status, files], api_name="upload")
            delete.click(self.delete, [chosen], [table, chosen, status], api_name="delete")
            blocks.load(self.documents, None, [table, chosen], api_name="documents")
            blocks.load(system.refresh, None, system.outputs, api_name="system")
        return blocks


class UnsafeBind(RuntimeError):
    """Serving beyond this machine without a password."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(settings) -> None:
    """Refuse to serve the documents to the network unless a user and password are configured."""
    if is_loopback(settings.host) or (settings.auth_user and settings.auth_password):
        return
    raise UnsafeBind(
        f"refusing to listen on {settings.host}: that would let other machines read your documents. Set "
        "ZHIKU_AUTH_USER and ZHIKU_AUTH_PASSWORD to require a login, or bind to 127.0.0.1 (the default)."
    )


def launch(blocks: gr.Blocks, settings, *, block: bool = True, services=None):
    """Serve on settings.host:port (127.0.0.1 by default) with a bounded queue; a login when configured.
    With ``services``, the kept PDFs are served too (``ui.pdf_links``), and the OpenAI-compatible API
    (``ui.openai_api``)."""
    check_bind(settings)
    auth = (settings.auth_user, settings.auth_password) if settings.auth_user and settings.auth_password else None
    blocks.queue(default_concurrency_limit=settings.queue_concurrency, max_size=64)
    launched = blocks.launch(
        auth=auth,
        auth_message="zhiku 知库" if auth else None,
        server_name=settings.host,
        server_port=settings.port,
        share=False,
        show_error=True,
        max_file_size=int(settings.max_file_mb * 1_000_000),
        footer_links=["settings"],
        css=CSS,
        quiet=not block,
        prevent_thread_lock=True,
    )
    if services is not None:
        add_pdf_route(blocks.app, services.ingestor.stored_file, settings.data_dir)
        add_openai_routes(blocks.app, services.qa, auth)
    if block:
        blocks.block_thread()
    return launched
