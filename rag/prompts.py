"""Bilingual RAG prompts, chosen by the question's language, and trimming to the model's context."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rag.store import StoredChunk
from rag.tokenizer import is_chinese

SYSTEM = {
    "zh": "你是一个严谨的助手。只根据提供的上下文回答；上下文中没有答案时，直接说不知道。回答使用中文。",
    "en": (
        "You are a careful assistant. Answer only from the provided context; if the context does not "
        "contain the answer, say you don't know. Answer in English."
    ),
}

USER = {
    "zh": "基于以下上下文，回答问题。引用时注明文件名和页码。\n\n上下文：\n{context}\n\n问题：{question}",
    "en": (
        "Answer the question based on the context below. Cite the file name and page you used.\n\n"
        "Context:\n{context}\n\nQuestion: {question}"
    ),
}

NO_DOCUMENTS = {
    "zh": "知识库里还没有文档。请先在“文档”页上传 PDF，或运行 python -m ingest 文件夹。",
    "en": "No documents are indexed yet. Upload PDFs on the Documents tab, or run: python -m ingest FOLDER",
}

NOTHING_RELEVANT = {
    "zh": "在你的文档中没有找到与这个问题相关的内容，所以我不作回答，以免编造。",
    "en": "I found nothing relevant to this question in your documents, so I won't make up an answer.",
}


def detect_language(text: str) -> str:
    """``zh`` when CJK characters make up a noticeable share of the letters, else ``en``."""
    return "zh" if is_chinese(text) else "en"


def format_context(chunks: Sequence[StoredChunk]) -> str:
    """Each chunk under its citation, and the section it sits under when the PDF has an outline."""

    def cite(c: StoredChunk) -> str:
        return f"({c.file}, p. {c.page}, § {c.section})" if c.section else f"({c.file}, p. {c.page})"

    return "\n\n".join(f"[{i}] {cite(c)}\n{c.text}" for i, c in enumerate(chunks, 1))


def build_messages(question: str, chunks: Sequence[StoredChunk], language: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM[language]},
        {"role": "user", "content": USER[language].format(context=format_context(chunks), question=question)},
    ]


@dataclass(frozen=True)
class FittedPrompt:
    messages: list[dict[str, str]]
    prompt_ids: list[int]
    chunks: list[StoredChunk]  # the chunks that made it into the prompt
    question_trimmed: bool
    chunks_dropped: int


def fit_prompt(
    question: str,
    chunks: Sequence[StoredChunk],
    language: str,
    encode: Callable[[list[dict[str, str]]], list[int]],
    truncate: Callable[[str, int], str],
    budget: int,
) -> FittedPrompt:
    """Drop the least relevant chunks until the prompt fits ``budget`` tokens; the question is cut last."""
    kept = list(chunks)
    while True:
        messages = build_messages(question, kept, language)
        ids = encode(messages)
        if len(ids) <= budget or not kept:
            break
        kept.pop()
    trimmed = False
    if len(ids) > budget:
        overhead = len(encode(build_messages("", [], language)))
        question = truncate(question, max(16, budget - overhead - 8))
        trimmed = True
        messages = build_messages(question, [], language)
        ids = encode(messages)
        if len(ids) > budget:  # decoding may re-tokenise differently; never exceed the window
            ids = ids[:budget]
    return FittedPrompt(messages, ids, kept, trimmed, len(chunks) - len(kept))
