"""Follow-up questions: rewritten with the conversation before retrieval, by rule or by the chat model."""

import pytest

from ingest.pipeline import SourceFile
from rag.followup import Turn, leans_on_history, model_rewrite, rule_rewrite
from tests.fixtures.pdfs import make_pdf

GPU = "显卡参数。RTX 4090 的显存带宽是 1008 GB/s。RTX 4090 的显存容量是 24 GB，类型为 GDDR6X。"
OTHER = "显卡散热。RTX 3060 使用双风扇散热，满载时温度约七十度。"
PRINT = "Printing. To print the current figure on Linux use the print command with the -dpdf option."
WIN = "Windows notes. On Windows, figures are printed through the Ghostscript driver gswin64c."


@pytest.mark.parametrize(
    ("question", "leans"),
    [
        ("它的显存是多少？", True),
        ("那 Windows 上呢？", True),
        ("and on Windows?", True),
        ("what about its memory?", True),
        ("What is the memory bandwidth of the RTX 4090?", False),
        ("Debian 上 umask 设成 0002 为啥不算危险？", False),
        ("其他发行版的默认 umask 是多少？", False),
    ],
)
def test_which_questions_lean_on_the_conversation(question, leans):
    assert leans_on_history(question) is leans


def test_rule_rewrite_puts_the_previous_topic_in_front():
    history = [Turn("RTX 4090 的显存带宽是多少？", "1008 GB/s")]
    assert (
        rule_rewrite("它的显存是多少？", history) == "RTX 4090 带宽：它的显存是多少？"
    )  # words it already has are not repeated
    history = [Turn("How do I print a figure to PDF in Octave?", "Use print -dpdf.")]
    assert rule_rewrite("and on Windows?", history) == "print figure PDF Octave: and on Windows?"
    assert rule_rewrite("What is a stratovolcano?", history) == "What is a stratovolcano?"  # a new topic
    assert rule_rewrite("它的显存是多少？", []) == "它的显存是多少？"


def test_model_rewrite_takes_a_good_reply_and_falls_back_on_a_bad_one():
    history = [Turn("How do I print a figure to PDF in Octave?", "Use print -dpdf.")]
    seen = []

    def reply(text):
        def generate(messages):
            seen.append(messages)
            return text

        return generate

    assert model_rewrite("and on Windows?", history, reply("How do I print a figure on Windows?")) == (
        "How do I print a figure on Windows?"
    )
    assert "User: How do I print a figure to PDF in Octave?" in seen[0][1]["content"]
    for bad in ("", "line one\nline two", "x" * 400):
        assert model_rewrite("and on Windows?", history, reply(bad)) == rule_rewrite("and on Windows?", history)


def test_a_follow_up_finds_the_sources_of_its_rewritten_question(services, pdf_dir):
    gpu = make_pdf(pdf_dir / "显卡.pdf", ["目录", GPU, OTHER], chinese=True)
    octave = make_pdf(pdf_dir / "octave.pdf", ["Contents", PRINT, WIN])
    services.ingestor.ingest([SourceFile(gpu, gpu.name), SourceFile(octave, octave.name)])
    first = services.qa.ask("RTX 4090 的显存带宽是多少？", generate=False)
    alone = services.qa.ask("它的显存容量呢？", generate=False)
    follow = services.qa.ask("它的显存容量呢？", generate=False, history=[Turn(first.question, "1008 GB/s")])
    assert follow.standalone and "RTX 4090" in follow.standalone
    assert (follow.sources[0].file, follow.sources[0].page) == ("显卡.pdf", 2)
    assert "24 GB" in follow.sources[0].evidence[0].text
    assert alone.standalone is None
    history = [Turn("How do I print a figure to PDF in Octave?", "print -dpdf")]
    follow = services.qa.ask("and on Windows?", generate=False, history=history)
    assert (follow.sources[0].file, follow.sources[0].page) == ("octave.pdf", 3)
