from rag.prompts import USER, build_messages, detect_language, fit_prompt
from rag.store import StoredChunk


def chunk(text: str, page: int = 1) -> StoredChunk:
    return StoredChunk(text=text, file="a.pdf", page=page, index=page, score=0.5)


def test_detect_language():
    assert detect_language("长城有多长？") == "zh"
    assert detect_language("What does 长城 mean in the Great Wall paper?") == "en"
    assert detect_language("GPU 显存不够怎么办") == "zh"
    assert detect_language("How long is it?") == "en"


def test_chinese_template_and_citations():
    messages = build_messages("长城有多长？", [chunk("长城全长两万多公里。", 2)], "zh")
    assert messages[1]["content"].startswith("基于以下上下文，回答问题")
    assert "(a.pdf, p. 2)" in messages[1]["content"]
    under = StoredChunk(text="全长两万多公里。", file="a.pdf", page=3, index=3, score=0.5, section="第 2 章 › 长城")
    prompt = build_messages("长城有多长？", [under], "zh")[1]["content"]
    assert "[1] (a.pdf, p. 3, § 第 2 章 › 长城)\n全长两万多公里。" in prompt
    assert messages[1]["content"].endswith("问题：长城有多长？")
    assert USER["en"].startswith("Answer the question based on the context below")


def test_fit_prompt_drops_least_relevant_chunks_first():
    encode = lambda messages: list(" ".join(m["content"] for m in messages))  # one "token" per character
    truncate = lambda text, n: text[:n]
    chunks = [chunk("x" * 300, page) for page in range(1, 6)]
    fitted = fit_prompt("short question?", chunks, "en", encode, truncate, budget=1000)
    assert len(fitted.prompt_ids) <= 1000
    assert [c.page for c in fitted.chunks] == [1, 2]
    assert fitted.chunks_dropped == 3 and not fitted.question_trimmed


def test_fit_prompt_trims_the_question_last():
    encode = lambda messages: list(" ".join(m["content"] for m in messages))
    truncate = lambda text, n: text[:n]
    fitted = fit_prompt("why " * 1000, [chunk("context")], "en", encode, truncate, budget=600)
    assert fitted.question_trimmed and fitted.chunks == []
    assert len(fitted.prompt_ids) <= 600
