"""Evidence spans: the sentences of each source that answer the question, with offsets into its text."""

import json

import pytest

from ingest.pipeline import SourceFile
from rag.sentences import split_sentences
from tests.fixtures.pdfs import make_pdf

SAFARI = (
    "Planning a safari. Most lodges open in June. Every July more than a million wildebeest and two hundred "
    "thousand zebras cross the Mara River. Guides recommend long lenses for photographs. Bring a warm jacket "
    "for the early morning drives."
)
CHIPS = (
    "光刻技术概述。极紫外光刻使用波长为 13.5 纳米的光来印刷最小的晶体管结构。这种光源由锡等离子体产生。"
    "光刻机的价格非常昂贵。晶圆在光刻之后还要经过刻蚀和清洗。"
)


@pytest.fixture
def indexed(services, pdf_dir):
    english = make_pdf(pdf_dir / "safari.pdf", ["Contents", SAFARI])
    chinese = make_pdf(pdf_dir / "光刻.pdf", ["目录", CHIPS], chinese=True)
    report = services.ingestor.ingest([SourceFile(english, english.name), SourceFile(chinese, chinese.name)])
    assert report.ok, report.as_dict()
    return services


def test_sentences_split_chinese_and_english_with_offsets():
    text = (
        "4.2 Plotting\nThe plot command draws data, e.g. from files. It also reads CSV!\n\n长城很长。它在中国；很有名"
    )
    spans = [text[s:e] for s, e in split_sentences(text)]
    assert spans == [
        "4.2 Plotting",
        "The plot command draws data, e.g. from files.",
        "It also reads CSV!",
        "长城很长。",
        "它在中国；",
        "很有名",
    ]
    long = "a, " * 400
    assert all(e - s <= 300 for s, e in split_sentences(long))


@pytest.mark.parametrize(
    ("question", "file", "fact"),
    [
        ("When do the zebras cross the Mara River?", "safari.pdf", "Every July more than a million wildebeest"),
        ("极紫外光刻用的光波长是多少？", "光刻.pdf", "波长为 13.5 纳米"),
    ],
)
def test_evidence_offsets_point_at_the_sentence_that_answers(indexed, question, file, fact):
    answer = indexed.qa.ask(question, generate=False)
    source = answer.sources[0]
    assert source.file == file and source.page == 2
    best = source.evidence[0]
    assert source.text[best.start : best.end] == best.text
    assert fact in best.text
    assert len(best.text) < 0.7 * len(source.text)  # a sentence (with the next one), not the page
    assert "Planning a safari" not in best.text and "光刻技术概述" not in best.text
    shown = json.loads(json.dumps(answer.as_dict(), ensure_ascii=False))["sources"][0]["evidence"][0]
    assert shown == {"text": best.text, "start": best.start, "end": best.end}


def test_extract_mode_answers_from_the_evidence_without_loading_a_model(indexed, settings):
    from services import build_services

    indexed.close()
    services = build_services(settings.model_copy(update={"answer_mode": "extract"}))
    try:
        answer = services.qa.ask("When do the zebras cross the Mara River?")
        assert not services.governor.loaded("chat")
        assert answer.answer_mode == "extract" and answer.model is None and answer.done
        assert "Every July" in answer.extract[0].span.text and answer.extract[0].file == "safari.pdf"
        assert "Every July" in answer.text and "(safari.pdf, p. 2)" in answer.text
        assert answer.as_dict()["extract"][0]["page"] == 2
    finally:
        services.close()
