"""Bilingual RAG prompts, chosen by the question's language, and trimming to the model's context."""

from __future__ import annotations

from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass

from rag.followup import Turn
from rag.sentences import split_sentences
from rag.store import StoredChunk
from rag.tokenizer import is_chinese

ANSWER_CHARS = 600  # of an earlier answer, in the conversation the model sees
FOCUS_CHARS = 700  # of a chunk, around its evidence, for a small model

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
        return f"({c.file}, {c.place}, § {c.section})" if c.section else f"({c.file}, {c.place})"

    return "\n\n".join(f"[{i}] {cite(c)}\n{c.text}" for i, c in enumerate(chunks, 1))


def focused(chunk: StoredChunk, evidence_starts: Sequence[int]) -> StoredChunk:
    """``chunk`` cut down to its evidence sentences, then their neighbours, within ``FOCUS_CHARS``."""
    sentences = split_sentences(chunk.text)
    if len(chunk.text) <= FOCUS_CHARS or not sentences:
        return chunk
    hits = [next((i for i, (s, e) in enumerate(sentences) if s <= start < e), 0) for start in evidence_starts]
    wanted = list(dict.fromkeys([*hits, *(j for i in hits for j in (i + 1, i - 1)), 0]))
    chosen, used = [], 0
    for i in wanted:
        if 0 <= i < len(sentences):
            s, e = sentences[i]
            if not chosen or used + e - s <= FOCUS_CHARS:
                chosen.append(i)
                used += e - s
    text, last = "", None
    for i in sorted(chosen):
        s, e = sentences[i]
        text += ("" if last is None else " " if i == last + 1 else " … ") + chunk.text[s:e]
        last = i
    return chunk.with_scores(text=text)


def build_messages(
    question: str, chunks: Sequence[StoredChunk], language: str, history: Sequence[Turn] = ()
) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": SYSTEM[language]}]
    for turn in history:
        messages.append({"role": "user", "content": turn.question})
        messages.append({"role": "assistant", "content": turn.answer[:ANSWER_CHARS] or "…"})
    messages.append(
        {"role": "user", "content": USER[language].format(context=format_context(chunks), question=question)}
    )
    return messages


@dataclass(frozen=True)
class FittedPrompt:
    messages: list[dict[str, str]]
    prompt_ids: Sized  # token ids, or a remote model's messages (``models.protocols.TextGenerator``)
    chunks: list[StoredChunk]  # the chunks that made it into the prompt
    question_trimmed: bool
    chunks_dropped: int
    turns_dropped: int = 0


def fit_prompt(
    question: str,
    chunks: Sequence[StoredChunk],
    language: str,
    encode: Callable[[list[dict[str, str]]], Sized],
    truncate: Callable[[str, int], str],
    budget: int,
    history: Sequence[Turn] = (),
) -> FittedPrompt:
    """Fit ``budget`` tokens: drop the oldest turns of the conversation, then the least relevant chunks; the
    question is cut last."""
    kept, turns = list(chunks), list(history)
    while True:
        messages = build_messages(question, kept, language, turns)
        ids = encode(messages)
        if len(ids) <= budget or (not kept and not turns):
            break
        if turns:
            turns.pop(0)
        else:
            kept.pop()
    trimmed = False
    if len(ids) > budget:
        overhead = len(encode(build_messages("", [], language)))
        question = truncate(question, max(16, budget - overhead - 8))
        trimmed = True
        messages = build_messages(question, [], language)
        ids = encode(messages)
        if len(ids) > budget and isinstance(ids, list):  # decoding may re-tokenise differently; never exceed
            ids = ids[:budget]  # the window (a remote model's prompt is messages: its question was cut above)
    return FittedPrompt(messages, ids, kept, trimmed, len(chunks) - len(kept), len(history) - len(turns))
