"""Text and HTML the UI shows: sources, the documents table, ingest summaries."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence

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


def highlighted(text: str, spans: Sequence) -> str:
    """``text`` escaped, with the evidence ``spans`` (offsets into it) in ``<mark>``."""
    out, position = [], 0
    for span in sorted(spans, key=lambda s: s.start):
        if span.start < position:  # overlapping spans: the earlier one is already marked
            continue
        out.append(html.escape(text[position : span.start]))
        out.append(f'<mark class="zhiku-evidence">{html.escape(text[span.start : span.end])}</mark>')
        position = span.end
    out.append(html.escape(text[position:]))
    return "".join(out)


def sources_html(sources: Sequence[Source], link: Callable[[Source], str | None] = lambda s: None) -> str:
    """One collapsible block per source: file, page, section and the index that found it in the summary; the
    evidence sentences above the text, which shows them highlighted; a link that opens the PDF at the page."""
    if not sources:
        return ""
    items = []
    for i, source in enumerate(sources, 1):
        section = f' <span class="zhiku-section">§ {html.escape(source.section)}</span>' if source.section else ""
        href = link(source)
        opener = (
            f' <a class="zhiku-open" href="{html.escape(href)}" target="_blank" rel="noopener">open / 打开</a>'
            if href
            else ""
        )
        quotes = "".join(f'<div class="zhiku-quote">“{html.escape(e.text)}”</div>' for e in source.evidence[:1])
        items.append(
            '<details class="zhiku-source">'
            f"<summary>[{i}] {html.escape(source.file)} — {html.escape(source.place)}{section} "
            f"{index_badges(source.found_by)} "
            f'<span class="zhiku-score">(similarity {source.score:.2f}, BM25 {source.keyword_score:.1f})</span>'
            f"{opener}{quotes}</summary>"
            f'<div class="zhiku-chunk">{highlighted(source.text, source.evidence)}</div></details>'
        )
    return '<div class="zhiku-sources"><b>Sources / 来源</b>' + "".join(items) + "</div>"


def marked(text: str, unsupported: Sequence[str]) -> str:
    """The answer with each claim no source holds flagged where it occurs."""
    for claim in sorted(unsupported, key=len, reverse=True):
        text = re.sub(rf"(?<![\w⚠]){re.escape(claim)}(?![\w])", lambda m: f"{m.group()} ⚠️", text)
    return text


def answer_markdown(answer: Answer) -> str:
    """The chat message: the evidence first ("From your documents"), then the model's answer under its name,
    with unsupported claims flagged; while streaming, whatever has arrived."""
    parts = []
    if answer.standalone:
        parts.append(f"_Searched for / 检索: {answer.standalone}_")
    if answer.extract:
        quotes = "\n".join(  # one line each: a PDF's line breaks would split the quote
            f"> {' '.join(q.span.text.split())} — [{q.source + 1}] {q.file} {q.place}" for q in answer.extract
        )
        parts.append(f"**From your documents / 来自你的文档**\n{quotes}")
    if answer.model and answer.text is not None:
        parts.append(f"**{answer.model}** (generated / 模型生成)\n\n{marked(answer.text, answer.unsupported)}")
    elif answer.text and not answer.extract:  # a refusal, or the answer of a model not yet named
        parts.append(answer.text)
    if answer.unsupported:
        parts.append("⚠️ Not found in your documents / 文档中未找到: " + ", ".join(f"`{c}`" for c in answer.unsupported))
    if not answer.done and not answer.text:
        parts.append(f"⏳ {answer.status}… / 正在加载模型…" if answer.status else "…")
    return "\n\n".join(parts)


def citation_line(sources: Sequence[Source]) -> str:
    if not sources:
        return ""
    cited = "; ".join(f"{s.file} {s.place}" for s in sources)
    return f"\n\n— Sources / 来源: {cited}"


def progress_text(answer: Answer) -> str:
    """What to show while an image answer streams: the text so far, or what is happening before it."""
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
