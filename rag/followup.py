"""Follow-up questions: "它的显存是多少？" after a question about the RTX 4090 is searched as a question about it.

A follow-up leans on the conversation: a pronoun ("it", "那个", "其"), an ellipsis ("and on Windows?",
"删除呢？") or a bare fragment. Such a question is rewritten into a standalone one before retrieval:
- by rule: the previous question's content words, less those the follow-up has, are put in front of it
  ("RTX 4090 带宽：它的显存是多少？"), which is what keyword and semantic search need, and costs nothing;
- by the chat model, where it is capable (``ZHIKU_FOLLOWUP_REWRITE``): asked for one standalone question;
  an empty, overlong or multi-line reply falls back to the rule.
A question that does not lean on the conversation is searched as it is.
Measured on bench/eval/followups.jsonl (docs/benchmarks.md, ``python -m rag eval --followups``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rag.tokenizer import EN_STOPWORDS, ZH_STOPWORDS, is_chinese

REWRITE_SYSTEM = (
    "Rewrite the user's last question as one standalone question that can be understood without the "
    "conversation: replace pronouns and fill in what is left out. Keep the language of the question "
    "(Chinese stays Chinese). Reply with the question only."
)
REWRITE_USER = "Conversation:\n{conversation}\n\nLast question: {question}\n\nStandalone question:"

# A question that opens with a connective continues the conversation, whatever its length; a pronoun or a
# "then"/"too" at the end does so only in a short one (a long one names its topic itself).
_EN_OPENING = re.compile(
    r"^(?:and|or|but|also|then|so|ok|okay|what about|how about|same|what if|why not|in that case)\b",
    re.IGNORECASE,
)
_EN_LEANING = re.compile(
    r"\b(?:it|its|it's|that|this|these|those|they|them|their|same|former|latter|above)\b|\b(?:then|too|instead)\W*$",
    re.IGNORECASE,
)
_ZH_OPENING = re.compile(r"^(?:还有|另外|那么|那|这|此|反过来|反之|同样)")
_ZH_LEANING = re.compile(
    r"它|这个|那个|这些|那些|这种|那种|其(?!他|它|实|中)|(?<!应)该|上述|前者|后者|同样|也是|这么|那样|对应的|呢[？?]?$"
)
_WORD = re.compile(r"[A-Za-z0-9][\w.+/\-]*|[\u3400-\u9fff]+")
_QUESTION_WORDS = frozenset(
    "how what which why when where who whom whose does do did is are can could should would will use using "
    "way ways tell explain show want need make get".split()
)
SHORT_EN, SHORT_ZH = 2, 3  # content words / characters: a fragment this bare leans on the conversation
# A pronoun leans on the conversation only in a short question: a long one names its topic itself ("how do I
# rename that file" in a question about fit logs). Words / Han characters, from the eval sets (benchmarks.md).
LONG_EN, LONG_ZH = 6, 16
_ASKS = re.compile(r"^(?:what|who|where|when|why|how|which|is|are|does|do|can|could|should)\b", re.IGNORECASE)
HISTORY_TURNS = 3  # turns of the conversation the model-based rewrite sees


@dataclass(frozen=True)
class Turn:
    """One question and answer of a conversation; ``standalone`` is the question as it was searched."""

    question: str
    answer: str = ""
    standalone: str = ""

    @property
    def searched(self) -> str:
        return self.standalone or self.question


def content_words(text: str) -> list[str]:
    """The words of ``text`` that carry its topic, in order: no function or question words."""
    words: list[str] = []
    for match in _WORD.finditer(text):
        word = match.group()
        if re.match(r"[\u3400-\u9fff]", word):
            from rjieba import cut

            words.extend(w for w in cut(word) if w not in ZH_STOPWORDS and len(w) > 1)
        elif word.lower() not in EN_STOPWORDS and word.lower() not in _QUESTION_WORDS:
            words.append(word)
    return list(dict.fromkeys(words))


def leans_on_history(question: str) -> bool:
    """Does ``question`` need the conversation to be understood?"""
    question = question.strip()
    if is_chinese(question):
        han = len(re.sub(r"[^\u3400-\u9fff]", "", question))
        if han <= SHORT_ZH or _ZH_OPENING.match(question):
            return True
        return han <= LONG_ZH and bool(_ZH_LEANING.search(question))
    words = len(content_words(question))
    if _EN_OPENING.match(question) or (words <= SHORT_EN and not _ASKS.match(question)):  # not "What is X?"
        return True
    return words <= LONG_EN and bool(_EN_LEANING.search(question))


def rule_rewrite(question: str, history: Sequence[Turn]) -> str:
    """The previous question's topic put in front of a follow-up; any other question as it is."""
    if not history or not leans_on_history(question):
        return question
    topic = " ".join(w for w in content_words(history[-1].searched) if w.lower() not in question.lower())
    if not topic:
        return question
    return f"{topic}：{question}" if is_chinese(question) else f"{topic}: {question}"


def model_rewrite(question: str, history: Sequence[Turn], generate: Callable[[list[dict[str, str]]], str]) -> str:
    """The chat model's standalone question (``generate`` answers chat messages); the rule's when it fails."""
    if not history or not leans_on_history(question):
        return question
    lines = []
    for turn in history[-HISTORY_TURNS:]:
        lines.append(f"User: {turn.question}")
        if turn.answer:
            lines.append(f"Assistant: {turn.answer[:300]}")
    messages = [
        {"role": "system", "content": REWRITE_SYSTEM},
        {"role": "user", "content": REWRITE_USER.format(conversation="\n".join(lines), question=question)},
    ]
    reply = generate(messages).strip().strip('"“”').strip()
    if not reply or "\n" in reply or len(reply) > 3 * len(question) + 120 or reply == question:
        return rule_rewrite(question, history)
    return reply
