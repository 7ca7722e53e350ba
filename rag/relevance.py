"""Is a retrieved chunk about the question at all? Cosine similarity plus a lexical check.

all-MiniLM-L6-v2 is an English model: two unrelated Chinese texts still score 0.4-0.6, so a cosine
threshold alone cannot tell "nothing relevant" in Chinese. A chunk counts as relevant when its similarity
is very high, or when it is above the floor and shares at least one content term with the question
(English words, or Chinese character bigrams once question words are removed).
"""

from __future__ import annotations

import re

_EN_STOP = frozenset(
    "the a an and or of to in on at for from by with about into over under is are was were be been being "
    "do does did what which who whom whose when where why how this that these those it its as than then "
    "there their they them he she his her you your we our i me my can could should would will shall may "
    "might must not no yes any some all each most more much many please tell explain describe give list "
    "document documents file page pages".split()
)
_ZH_QUESTION_WORDS = re.compile(
    r"为什么|怎么样|怎么|如何|什么|多少|哪些|哪个|哪里|哪儿|是否|是谁|请问|请|告诉我|一下|吗|呢|吧|啊|的|了|是|有|在|和|与|及|或"
)
_WORD = re.compile(r"[a-z0-9][a-z0-9\-]{2,}")
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]+")


def content_terms(text: str) -> set[str]:
    lowered = text.lower()
    terms = {w for w in _WORD.findall(lowered) if w not in _EN_STOP}
    for run in _CJK_RUN.findall(_ZH_QUESTION_WORDS.sub(" ", lowered)):
        if len(run) == 1:
            terms.add(run)
        terms.update(run[i : i + 2] for i in range(len(run) - 1))
    return terms


def shares_terms(question_terms: set[str], text: str) -> bool:
    lowered = text.lower()
    return any(term in lowered for term in question_terms)


def relevant(question: str, texts_and_scores: list[tuple[str, float]], min_score: float, sure_score: float):
    """Indices of the chunks that are relevant to ``question``."""
    terms = content_terms(question)
    keep = []
    for i, (text, score) in enumerate(texts_and_scores):
        if score >= sure_score or (score >= min_score and shares_terms(terms, text)):
            keep.append(i)
    return keep
