"""Text and HTML the UI shows: sources, the documents table, ingest summaries."""

from __future__ import annotations

import html
from collections.abc import Sequence

from ingest.pipeline import IngestReport
from rag.answering import Answer, Source
from rag.registry import INGESTED, INGESTING, REJECTED, DocumentRecord

TABLE_HEADERS = ["Document / 文档", "Pages / 页数", "Chunks / 块数", "Status / 状态", "Reason / 原因"]

_STATUS = {
    INGESTED: "ingested / 已索引",
    REJECTED: "rejected / 已拒绝",
    INGESTING: "interrupted / 未完成",
    "deleting": "deleting / 删除中",
}


def document_rows(records: Sequence[DocumentRecord]) -> list[list]:
    return [[r.name, r.pages, r.chunks, _STATUS.get(r.status, r.status), r.reason or ""] for r in records]


# Which index found a source: the semantic (embedding) search, the keyword (BM25) search, or both.
_INDEX_BADGES = {
    "dense": ("semantic / 语义", "found by meaning: the embedding search / 语义检索（向量）找到"),
    "keyword": ("keyword / 关键词", "found by its words: the BM25 keyword search / 关键词检索（BM25）找到"),
}


def index_badges(found_by: Sequence[str]) -> str:
    badges = []
    for index in ("keyword", "dense"):
        if index in found_by:
            label, title = _INDEX_BADGES[index]
            badges.append(f'<span class="zhiku-badge zhiku-badge-{index}" title="{html.escape(title)}">{label}</span>')
    return "".join(badges)


def sources_html(sources: Sequence[Source]) -> str:
    """One collapsible block per source: file, page and the index that found it in the summary, the text inside."""
    if not sources:
        return ""
    items = []
    for i, source in enumerate(sources, 1):
        section = f' <span class="zhiku-section">§ {html.escape(source.section)}</span>' if source.section else ""
        items.append(
            '<details class="zhiku-source">'
            f"<summary>[{i}] {html.escape(source.file)} — p. {source.page}{section} {index_badges(source.found_by)} "
            f'<span class="zhiku-score">(similarity {source.score:.2f}, BM25 {source.keyword_score:.1f})</span>'
            f'</summary><div class="zhiku-chunk">{html.escape(source.text)}</div></details>'
        )
    return '<div class="zhiku-sources"><b>Sources / 来源</b>' + "".join(items) + "</div>"


def citation_line(sources: Sequence[Source]) -> str:
    if not sources:
        return ""
    cited = "; ".join(f"{s.file} p. {s.page}" for s in sources)
    return f"\n\n— Sources / 来源: {cited}"


def progress_text(answer: Answer) -> str:
    """What to show while an answer streams: the text so far, or what is happening before it."""
    if answer.text:
        return answer.text
    if answer.status:
        return f"⏳ {answer.status}… / 正在加载模型…"
    return "…"


def answer_notes(answer: Answer) -> str:
    return "".join(f"\n\n_{note}_" for note in answer.notes)


def ingest_summary(report: IngestReport) -> str:
    totals = report.totals()
    lines = [
        f"**{totals['files']} file(s)**: {totals['ingested']} ingested, {totals['updated']} updated, "
        f"{totals['unchanged']} unchanged, {totals['rejected']} rejected — "
        f"{totals['pages']} pages, {totals['chunks']} chunks in {totals['seconds']} s"
    ]
    for f in report.files:
        if f.status == "rejected":
            lines.append(f"- ❌ **{f.file}**: {f.reason}")
        elif f.reason:
            lines.append(f"- **{f.file}**: {f.status} ({f.reason})")
    return "\n".join(lines)
