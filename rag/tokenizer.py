"""Words for the keyword index: Chinese cut with jieba (rjieba), Latin script lower-cased and stemmed (Snowball).

The same function cuts chunks and questions, so a question matches the text whatever its width, case or
inflection ("plotting" finds "plots"; Snowball measured against plurals-only stemming in docs/benchmarks.md).
Full-width letters and CJK radicals are folded (NFKC), Chinese runs go through jieba's search mode (words and
the shorter words inside them: "文本编辑器" gives 文本, 编辑, 文本编辑, 编辑器...), identifiers keep their
whole form and their parts ("vim-tiny": vim-tiny, vim, tiny). Function words and question words ("the",
"how", "什么", "多少") are dropped, in both languages.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable

# Simplified-Chinese radicals that fonts map to the "CJK Radicals Supplement" block, which NFKC leaves alone
# (Unicode's EquivalentUnifiedIdeograph.txt); the Kangxi radicals (U+2F00-U+2FD5) NFKC maps itself.
RADICALS = str.maketrans(
    {
        "⺟": "母", "⺠": "民", "⺦": "丬", "⺮": "竹", "⺰": "纟", "⺼": "肉", "⺾": "艹", "⻄": "西", "⻅": "见",
        "⻆": "角", "⻈": "讠", "⻉": "贝", "⻊": "足", "⻋": "车", "⻌": "辶", "⻐": "钅", "⻓": "长", "⻔": "门",
        "⻗": "雨", "⻘": "青", "⻙": "韦", "⻚": "页", "⻛": "风", "⻜": "飞", "⻝": "食", "⻠": "饣", "⻢": "马",
        "⻣": "骨", "⻤": "鬼", "⻥": "鱼", "⻦": "鸟", "⻧": "卤", "⻨": "麦", "⻩": "黄", "⻪": "黾", "⻬": "齐",
        "⻮": "齿", "⻰": "龙", "⻳": "龟",
    }
)  # fmt: skip
# Kangxi radicals, CJK compatibility ideographs, full-width ASCII letters and digits, Latin ligatures.
_NFKC_CHARS = re.compile(r"[\u2f00-\u2fdf\uf900-\ufaff\uff10-\uff19\uff21-\uff3a\uff41-\uff5a\ufb00-\ufb06]")


def fold_characters(text: str) -> str:
    """Radicals to the ideographs they stand for, full-width letters and digits and ligatures to plain ones.

    CJK punctuation is kept (NFKC would turn "，" into ","): this is for text that is shown, too.
    """
    return _NFKC_CHARS.sub(lambda m: unicodedata.normalize("NFKC", m.group()), text).translate(RADICALS)


# Bump when the rules change: stored tokens made by another version are made again from the chunk texts.
TOKENIZER_VERSION = 2

_HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_WORD = re.compile(r"[a-z0-9]+(?:[._+\-'/][a-z0-9]+)*\+*")
_PART = re.compile(r"[a-z]+|[0-9]+")  # letters and digits apart: "rtx4090" has the parts rtx, 4090

EN_STOPWORDS = frozenset(
    """a about above after again all also am an and any are as at be been before being below between both but by
    can could did do does doing done down during each either else etc every few for from further get gets got had
    has have having he her here hers him his how i if in into is it its itself just let lets me more most my
    myself neither no nor not now of off on once one only or other our out over own please same shall she should
    so some such than that the their them then there these they this those through to too under until up upon us
    very via was way we were what when where whether which while who whom whose why will with within without
    would yes yet you your""".split()
)
# Function words and the words questions are asked with; content words, even common ones, stay.
ZH_STOPWORDS = frozenset(
    """的 地 得 了 着 过 是 在 和 与 及 或 或者 并 并且 而 而且 但 但是 也 就 都 又 还 再 才 被 把 将 让 给
    对 对于 向 从 自 到 于 以 为 为了 之 其 该 此 这 那 这个 那个 这些 那些 这样 那样 这里 那里 个 种 些
    一个 一些 一下 一种 有 没 没有 不 很 非常 吗 呢 吧 啊 呀 哦 嘛 么 啥 咋 什么 怎么 怎样 怎么样 如何
    为什么 为啥 为何 哪 哪个 哪些 哪里 哪儿 多少 几 是否 能否 可否 能不能 可不可以 是不是 有没有 请问 请
    告诉 我 你 您 他 她 它 我们 你们 他们 自己 吗 要 想 应该 应当 需要 可以 能 能够 会 用 怎 等 等等 即
    如 如果 则 所 所以 因为 由于 以及 通过 进行 一 下 上 中 里 时 时候""".split()
)


@functools.cache
def _stemmer():
    import Stemmer  # PyStemmer: the Snowball English stemmer, in C

    return Stemmer.Stemmer("english")


_IRREGULAR = {"axes": "axis", "indices": "index", "matrices": "matrix", "vertices": "vertex"}  # Snowball misses


def _stem(word: str) -> str:
    """Snowball's English stem ("plotting", "plots" -> "plot"); words with digits are left alone."""
    if len(word) <= 3 or not word.isalpha():
        return word
    return _stemmer().stemWord(_IRREGULAR.get(word, word))


def _latin_tokens(text: str) -> Iterable[str]:
    for match in _WORD.finditer(text):
        word = match.group().strip("'")
        parts = [p for p in _PART.findall(word) if len(p) > 1 and p not in EN_STOPWORDS]
        if len(parts) > 1 or (parts and parts[0] != word):  # an identifier, a path, "rtx4090": whole, then parts
            yield word
            yield from (_stem(p) for p in parts)
        elif word not in EN_STOPWORDS:
            yield _stem(word)


def _han_tokens(run: str) -> Iterable[str]:
    from rjieba import cut_for_search

    for word in cut_for_search(run):
        if word not in ZH_STOPWORDS:
            yield word


def tokenize(text: str) -> list[str]:
    """The index terms of ``text``, in order (repeats kept: BM25 counts them)."""
    text = unicodedata.normalize("NFKC", text).translate(RADICALS).lower()
    tokens: list[str] = []
    position = 0
    for run in _HAN_RUN.finditer(text):
        tokens.extend(_latin_tokens(text[position : run.start()]))
        tokens.extend(_han_tokens(run.group()))
        position = run.end()
    tokens.extend(_latin_tokens(text[position:]))
    return tokens


def is_chinese(text: str) -> bool:
    """Chinese characters make up a noticeable share of the letters (the question's script)."""
    han = sum(len(run) for run in _HAN_RUN.findall(text))
    letters = sum(1 for ch in text if ch.isalpha())
    return bool(han) and han * 4 >= letters
