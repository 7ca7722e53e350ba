"""The page zhiku serves instead of the app when its store is damaged: what happened, and a Rebuild button.

The rebuild itself is handed in (``rebuild(progress) -> summary``); when it is done the app replaces this page
with the normal one on the same address. From the click on, the page watches the server's config and reloads
itself once the normal app answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import gradio as gr

log = logging.getLogger(__name__)

TITLE = "zhiku 知库 · rebuild"

# Poll the server's config until it is the normal app's (another title), then reload into it (30 min at most).
RELOAD_WHEN_BACK = """
() => {
  // started, not awaited: the click's other listener (the rebuild) must not wait for this watch
  (async () => {
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    for (let i = 0; i < 1800; i++) {
      await sleep(1000);
      try {
        const reply = await fetch("config", { cache: "no-store" });
        if (reply.ok && !(await reply.json()).title.includes("rebuild")) { location.reload(); return; }
      } catch (e) { /* the server is between the two pages */ }
    }
  })();
}
"""


class RepairUI:
    def __init__(self, damage: Exception, documents: list, rebuild: Callable[[Callable], str]) -> None:
        self.damage = damage
        self.documents = documents  # ingest.rebuild.KnownDocument
        self._rebuild = rebuild
        self.done = False

    def explanation(self) -> str:
        missing = sum(not d.available for d in self.documents)
        lines = [
            "## The document store is damaged / 文档库已损坏",
            f"zhiku could not open its store: {self.damage}",
            "",
            "zhiku 无法打开文档库。可以根据已知的文档重建索引：损坏的文件会被保留在一旁，不会删除。",
            "",
            f"**Rebuild** reads the {len(self.documents)} document(s) below again and makes a new index. "
            "Questions can be asked again when it is done.",
        ]
        if missing:
            lines.append(
                f"{missing} of them can no longer be found on disk: they will be listed as rejected, to be "
                f"added again. / 其中 {missing} 个文件已不存在，重建后需重新上传。"
            )
        return "\n".join(lines)

    def rows(self) -> list[list[str]]:
        return [
            [d.name, "found / 可恢复" if d.available else "missing / 文件不存在", str(d.file or "")]
            for d in self.documents
        ]

    def rebuild(self, progress=gr.Progress()):
        if self.done:  # a second click, queued behind the first (one rebuild at a time)
            return "Already rebuilt; the app is restarting. / 已重建，正在重启。"

        def on_progress(event) -> None:
            if event.phase in ("pages", "chunks"):
                progress((event.done, event.total), desc=f"{event.file}: {event.phase}", unit=event.phase)

        try:
            summary = self._rebuild(on_progress)
        except Exception as exc:  # noqa: BLE001 - shown on the page, logged in full
            log.exception("rebuilding the store failed")
            return f"⚠️ The rebuild failed / 重建失败: {type(exc).__name__}: {exc}"
        self.done = True
        return summary + "\n\nThe app is restarting; this page reloads by itself. / 应用正在重启，页面将自动刷新。"

    def build(self) -> gr.Blocks:
        with gr.Blocks(title=TITLE) as blocks:
            gr.Markdown("# zhiku 知库")
            gr.Markdown(self.explanation(), elem_id="damage")
            gr.Dataframe(
                value=self.rows(),
                headers=["document / 文档", "file / 文件", "path / 路径"],
                interactive=False,
                wrap=True,
                elem_id="known-documents",
            )
            button = gr.Button("Rebuild / 重建索引", variant="primary", elem_id="rebuild")
            status = gr.Markdown(elem_id="rebuild-status")
            # The reload watch starts with the click, so it does not depend on the answer reaching the page.
            button.click(None, None, None, js=RELOAD_WHEN_BACK)
            button.click(self.rebuild, None, status, api_name="rebuild", concurrency_limit=1)
        return blocks
