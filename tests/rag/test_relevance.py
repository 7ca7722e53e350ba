"""The "nothing relevant" rule: most of the question's words, or two distinctive ones, or (English) meaning."""

from rag.keyword_index import TermStats
from rag.relevance import RelevanceRule, evidence, relevant
from rag.store import StoredChunk
from rag.tokenizer import tokenize

# 1,000 chunks: a word in at most 50 of them is distinctive.
COUNTS = {"长城": 3, "公里": 40, "全长": 30, "sourdough": 0, "bread": 2, "bake": 300, "zebra": 4, "mara": 2}
COUNTS |= {"journalctl": 4, "systemd": 48, "服务": 227, "日志": 39, "实时": 2, "跟踪": 47, "好烦": 0, "开机": 1}
STATS = TermStats(1000, COUNTS, {t: 8.0 if n == 0 else 7.0 - n / 50 for t, n in COUNTS.items()})
RULE = RelevanceRule()


def chunk(text: str, score: float, section: str = "") -> StoredChunk:
    return StoredChunk(text=text, file="a.pdf", page=1, index=0, score=score, section=section)


def keeps(question: str, chunks: list[StoredChunk], chinese: bool) -> list[int]:
    return relevant(tokenize(question), STATS, chunks, chinese, RULE)


def test_evidence_weighs_words_by_idf_and_counts_distinctive_ones():
    found = evidence(tokenize("长城全长多少公里？"), STATS, "长城全长两万一千多公里")
    assert found.coverage == 1.0 and found.distinctive == 3
    found = evidence(tokenize("How do I bake sourdough bread?"), STATS, "Bake the bread for an hour.")
    assert round(found.coverage, 3) == 0.499 and found.distinctive == 1  # "bake" is too common to count
    assert evidence([], STATS, "anything") == evidence(["unknown"], TermStats(0, {}, {}), "unknown")


def test_a_colloquial_chinese_question_is_kept_on_two_distinctive_words():
    question = "怎么用 journalctl 实时跟踪某个 systemd 服务这次开机后的日志？好烦"
    text = "journalctl -b -u $unit -f 可以查看 systemd 单元的日志。"
    found = evidence(tokenize(question), STATS, text)
    assert found.coverage < RULE.min_coverage and found.distinctive == 3  # journalctl, systemd, 日志
    assert keeps(question, [chunk(text, 0.3)], chinese=True) == [0]


def test_chinese_similarity_alone_vouches_for_nothing():
    chunks = [chunk("长城全长两万一千多公里", 0.45), chunk("普洱茶产于云南", 0.9), chunk("长城", 0.1)]
    assert keeps("长城全长多少公里？", chunks, chinese=True) == [0]  # MiniLM's 0.9 on Chinese means little


def test_english_questions_can_lean_on_similarity():
    chunks = [
        chunk("Every July zebras cross the Mara River.", 0.7),  # words and meaning
        chunk("The great migration of the herds in East Africa.", 0.7),  # meaning alone, very similar
        chunk("A zebra and a Mara gazelle.", 0.3),  # two distinctive words
        chunk("Mara is a name.", 0.15),  # a word, but not similar at all
        chunk("Sourdough needs a starter.", 0.3),
        chunk("The zebra is striped.", 0.55),  # fairly similar, one distinctive word
        chunk("The zebra is striped.", 0.45),  # less similar, one distinctive word
    ]
    assert keeps("When do zebras cross the Mara River?", chunks, chinese=False) == [0, 1, 2, 5]


def test_a_question_from_outside_the_documents_is_refused():
    chunks = [chunk("Bake the bread for an hour.", 0.45), chunk("Bread prices rose.", 0.3)]
    assert keeps("How do I bake sourdough bread?", chunks, chinese=False) == []


def test_words_of_the_section_heading_count_as_the_chunk_s_own():
    """A chunk found through its heading (the keyword index holds heading + text) is judged on both."""
    question = "长城全长多少公里？"
    body = chunk("两万一千多公里，东起山海关。", 0.3)
    assert keeps(question, [body], chinese=True) == []
    under = chunk("两万一千多公里，东起山海关。", 0.3, section="第 2 章 › 长城全长")
    assert keeps(question, [under], chinese=True) == [0]
