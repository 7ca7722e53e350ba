"""Evidence: the sentences of the retrieved chunks that answer the question, with offsets into each chunk.

A sentence scores by
- the question's words it holds, weighted by idf (the keyword index's), numbers and names counted double
  ("4090", "NOPASSWD", "set_xtics"): ``coverage``; words of the chunk's section heading count half, since a
  sentence under "set samples" is about samples even when it does not repeat the word;
- for a Chinese question, the share of the question's character pairs it holds, which catches a user's
  wording that jieba cuts differently from the manual's;
- its embedding's cosine with the question's (the embedder used for retrieval). all-MiniLM-L6-v2 is an
  English model, so for Chinese this weighs little (see rag.relevance).
A sentence that introduces what follows ("For example:", a heading) takes the next sentence with it.
After generation, ``support`` adds the sentences that hold the answer's numbers and names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from langchain_core.embeddings import Embeddings

from rag.citations import place
from rag.grounding import specifics
from rag.keyword_index import TermStats
from rag.sentences import split_sentences
from rag.store import StoredChunk
from rag.tokenizer import ZH_STOPWORDS, fold_characters, tokenize

PER_SOURCE = 3  # evidence sentences shown per source
EXTRACT = 3  # sentences in the extractive answer
KEY_WEIGHT = 2.0  # numbers and names in the question weigh this much more than other words
SECTION_WEIGHT = 0.5
SPECIFIC_BONUS = 0.1  # a sentence with a number or a name the question does not have is likely an answer
MAX_SPAN = 400  # characters: a span takes its next sentence along when both fit
EMBEDDED = 24  # sentences embedded per question, the best by their words: ~0.15 s on 2 cores
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_LEADS_ON = re.compile(r"[:：]$|^(?:for example|e\.g\.|例如|比如)", re.IGNORECASE)
_SHORT = 25  # a sentence this short (a heading, a label) takes the next one with it


@dataclass(frozen=True)
class Span:
    """A sentence of a chunk: ``text == chunk.text[start:end]``."""

    text: str
    start: int
    end: int
    score: float

    def as_dict(self) -> dict:
        return {"text": self.text, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class Quote:
    """An evidence sentence with where it comes from: the extractive answer is a list of these."""

    span: Span
    source: int  # index into the answer's sources
    file: str
    page: int
    location: str = ""  # as Source.location
    ocr: bool = False

    @property
    def place(self) -> str:
        return place(self.page, self.location, self.ocr)

    def as_dict(self) -> dict:
        where = {"location": self.location} if self.location else {}
        return {**self.span.as_dict(), "source": self.source + 1, "file": self.file, "page": self.page, **where}


def key_terms(text: str) -> set[str]:
    """The index terms of the numbers and names in ``text``."""
    return {t for word in specifics(text) for t in tokenize(word)}


def _bigrams(text: str) -> set[str]:
    han = "".join(ch for ch in fold_characters(text) if _HAN.match(ch) and ch not in ZH_STOPWORDS)
    return {han[i : i + 2] for i in range(len(han) - 1)}


class EvidenceFinder:
    def __init__(self, embeddings: Embeddings) -> None:
        self.embeddings = embeddings

    def find(
        self,
        question: str,
        question_terms: Sequence[str],
        stats: TermStats,
        chunks: Sequence[StoredChunk],
        chinese: bool,
        question_vector: Sequence[float] | None = None,
        asked: str = "",
    ) -> list[list[Span]]:
        """The best ``PER_SOURCE`` sentences of each chunk for ``question``, best first. For a follow-up
        rewritten into ``question``, the words the user ``asked`` weigh double: the rewrite's topic words
        brought the page, the asked ones pick the sentence on it."""
        keys = key_terms(question) | set(tokenize(asked))
        weights = {t: stats.idf.get(t, 0.0) * (KEY_WEIGHT if t in keys else 1.0) for t in set(question_terms)}
        total = math.fsum(weights.values())
        pairs = _bigrams(question) if chinese else set()
        semantic = 0.2 if chinese else 0.5
        # Words first, for every sentence (cheap); then the embedder for the best EMBEDDED of them only.
        units = [_units(chunk.text) for chunk in chunks]
        rows = []  # (chunk index, start, end, score without similarity)
        for i, chunk in enumerate(chunks):
            heading = set(tokenize(chunk.section)) if chunk.section else set()
            for start, end in units[i]:
                text = chunk.text[start:end]
                terms = set(tokenize(text))
                held = math.fsum(w for t, w in weights.items() if t in terms)
                held += SECTION_WEIGHT * math.fsum(w for t, w in weights.items() if t in heading and t not in terms)
                lexical = held / total if total > 0 else 0.0
                if pairs:
                    lexical = max(lexical, len(pairs & _bigrams(text)) / len(pairs))
                score = (1 - semantic) * lexical
                if key_terms(text) - set(question_terms):  # a number or name the question lacks: an answer?
                    score += SPECIFIC_BONUS
                rows.append((i, start, end, score))
        best = sorted(range(len(rows)), key=lambda r: -rows[r][3])[:EMBEDDED]
        texts = [chunks[rows[r][0]].text[rows[r][1] : rows[r][2]] for r in best]
        similarity = dict(zip(best, self._similarity(question, question_vector, texts), strict=True))
        scored: list[list[tuple[float, int, int]]] = [[] for _ in chunks]
        for r, (i, start, end, score) in enumerate(rows):
            score += semantic * max(0.0, float(similarity.get(r, 0.0)))
            scored[i].append((round(score, 4), start, end))
        return [self._pick(chunk.text, scored[i], units[i]) for i, chunk in enumerate(chunks)]

    @staticmethod
    def _pick(text: str, scored: list[tuple[float, int, int]], units: list[tuple[int, int]]) -> list[Span]:
        """The best units that do not overlap, each with the sentence after it when that one is short enough
        to read along (the answer is often the next sentence: "The dumb terminal ... The default is 79 by 24.")."""
        ends = {start: end for start, end in units}
        chosen: list[Span] = []
        for score, start, end in sorted(scored, key=lambda s: -s[0]):
            following = next((ends[s] for s in sorted(ends) if s >= end), None)
            if following is not None and following - start <= MAX_SPAN:
                end = following
            if any(start < c.end and c.start < end for c in chosen):
                continue
            chosen.append(Span(text[start:end], start, end, score))
            if len(chosen) == PER_SOURCE:
                break
        return chosen

    def _similarity(self, question: str, vector: Sequence[float] | None, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        q = np.asarray(vector if vector is not None else self.embeddings.embed_query(question))
        return np.asarray(self.embeddings.embed_documents(texts)) @ q


def support(evidence: list[list[Span]], chunks: Sequence[StoredChunk], claims: Sequence[str]) -> list[list[Span]]:
    """``evidence`` plus, per chunk, the best sentence holding the answer's numbers and names (``claims``)."""
    wanted = {t for claim in claims for t in tokenize(claim)}
    if not wanted:
        return evidence
    grown = []
    for spans, chunk in zip(evidence, chunks, strict=True):
        held = [
            (len(wanted & set(tokenize(chunk.text[s:e]))), s, e)
            for s, e in _units(chunk.text)
            if not any(span.start <= s < span.end for span in spans)
        ]
        best = max(held, default=(0, 0, 0))
        if best[0]:
            _, s, e = best
            spans = [*spans, Span(chunk.text[s:e], s, e, 0.0)]
        grown.append(spans)
    return grown


def extract(evidence: list[list[Span]], chunks: Sequence[StoredChunk], limit: int = EXTRACT) -> list[Quote]:
    """The best sentences over all sources, best first, without repeats: the extractive answer."""
    quotes = [
        Quote(span, i, chunks[i].file, chunks[i].page, chunks[i].location, chunks[i].ocr)
        for i, spans in enumerate(evidence)
        for span in spans
    ]
    quotes.sort(key=lambda q: -q.span.score)
    chosen: list[Quote] = []
    seen: set[str] = set()
    for quote in quotes:
        key = re.sub(r"\s+", "", quote.span.text).casefold()
        if key in seen or quote.span.score <= 0:
            continue
        seen.add(key)
        chosen.append(quote)
        if len(chosen) == limit:
            break
    return chosen


def _units(text: str) -> list[tuple[int, int]]:
    """Sentences, a short or introducing one joined with the next."""
    sentences = split_sentences(text)
    units = []
    for i, (start, end) in enumerate(sentences):
        piece = text[start:end]
        if i + 1 < len(sentences) and (len(piece) < _SHORT or _LEADS_ON.search(piece)):
            end = sentences[i + 1][1]
        units.append((start, end))
    return units
