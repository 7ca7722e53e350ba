"""Image questions through services, the CLI and the governor, with the tiny LLaVA the tests build."""

import json

import pytest

from ingest.pipeline import SourceFile
from rag.cli import main as rag_main
from rag.image_qa import ImageQuestionError, VisionNotConfigured

pytestmark = pytest.mark.slow


@pytest.fixture
def vision_services(settings, tiny_llava):
    from services import build_services

    built = build_services(settings.model_copy(update={"vision_model": str(tiny_llava)}))
    yield built
    built.close()


def test_image_question_streams_an_answer(vision_services, red_png):
    statuses = []
    for answer in vision_services.image_qa.stream("What colour is this chart?", red_png):
        statuses.append(answer.status)  # the same Answer object grows: record as it goes
    assert statuses[0] == "loading the vision model" and statuses[-1] is None
    assert answer.done and answer.text and answer.sources == []
    assert answer.timings["first_token_ms"] > 0 and answer.timings["answer_tokens"] > 0
    assert vision_services.governor.loaded("vision")


def test_image_question_with_documents_cites_them(vision_services, english_pdf, red_png):
    vision_services.ingestor.ingest([SourceFile(english_pdf, english_pdf.name)])
    answer = vision_services.image_qa.ask("Does this chart show the zebra migration?", red_png, search_documents=True)
    assert answer.done and answer.grounded
    assert answer.sources and answer.sources[0].file == "animals.pdf" and answer.sources[0].page == 2


def test_text_and_image_questions_alternate(vision_services, english_pdf, red_png):
    vision_services.ingestor.ingest([SourceFile(english_pdf, english_pdf.name)])
    for _ in range(2):
        assert vision_services.qa.ask("When do zebras cross the Mara River?").text
        assert vision_services.image_qa.ask("What is in the picture?", red_png).text
    state = {m.name: m for m in vision_services.governor.state().models}
    assert state["chat"].resident and state["vision"].resident  # both fit: no swapping
    assert state["chat"].loads == 1 and state["vision"].loads == 1


def test_bad_image_names_the_file(vision_services, tmp_path):
    bad = tmp_path / "扫描件.png"
    bad.write_text("not an image")
    with pytest.raises(ImageQuestionError, match="扫描件.png: not an image"):
        vision_services.image_qa.ask("What is this?", bad)
    assert not vision_services.governor.loaded("vision")  # refused before any model was loaded


def test_without_a_vision_model_and_with_ocr_off_it_says_how_to_configure(settings, red_png):
    from services import build_services

    built = build_services(settings.model_copy(update={"ocr": "off"}))
    try:
        assert not built.image_qa.available
        with pytest.raises(VisionNotConfigured, match="ZHIKU_VISION_MODEL"):
            built.image_qa.ask("What is this?", red_png)
    finally:
        built.close()


def _notice(path, lines):
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (900, 80 + 60 * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((40, 40 + 60 * i), line, fill="black", font=ImageFont.load_default(size=36))
    image.save(path)
    return path


def test_without_a_vision_model_the_chat_model_answers_from_the_images_text(services, english_pdf, tmp_path):
    """The CPU default: the image is read by OCR; the answer cites it as a page read by OCR and says so."""
    notice = _notice(tmp_path / "notice.png", ["Staff meeting on Friday at 3 pm", "in room 204 of the library."])
    assert services.image_qa.available and services.image_qa.reads_as_text
    answer = services.image_qa.ask("When is the staff meeting?", notice)
    assert answer.done and answer.text
    image_source = answer.sources[0]
    assert image_source.file == "notice.png" and image_source.ocr and image_source.place == "p. 1 (OCR)"
    assert "Friday" in image_source.text and "204" in image_source.text
    assert any("read as text by OCR" in note for note in answer.notes)
    assert answer.timings["ocr_ms"] > 0
    assert answer.extract and "Friday" in answer.extract[0].span.text  # the evidence comes from the image's text
    # "also search my documents": the documents' chunks follow the image's text
    services.ingestor.ingest([SourceFile(english_pdf, english_pdf.name)])
    both = services.image_qa.ask("When do zebras cross the Mara River?", notice, search_documents=True)
    assert [s.file for s in both.sources][:1] == ["notice.png"]
    assert "animals.pdf" in {s.file for s in both.sources}


def test_the_vision_model_can_be_given_the_images_text_too(settings, tiny_llava, tmp_path):
    from services import build_services

    notice = _notice(tmp_path / "notice.png", ["Staff meeting on Friday at 3 pm"])
    lengths = {}
    for with_text in (False, True):
        update = {"vision_model": str(tiny_llava), "vision_ocr": with_text}
        built = build_services(settings.model_copy(update=update))
        try:
            answer = built.image_qa.ask("When is the meeting?", notice)
            lengths[with_text] = answer.timings["prompt_tokens"]
        finally:
            built.close()
    assert lengths[True] > lengths[False] + 5  # the text read by OCR went into the vision model's prompt


def test_an_image_without_text_and_no_vision_model_says_so(services, red_png):
    answer = services.image_qa.ask("What is this?", red_png)
    assert answer.done and "No text could be read in the image" in answer.text and answer.sources == []


def test_cli_image_question(monkeypatch, tiny_llava, red_png, tmp_path, capsys):
    monkeypatch.setenv("ZHIKU_OCR", "off")
    assert rag_main(["ask", "What is this?", "--image", str(red_png)]) == 1  # no vision model, no OCR
    assert "ZHIKU_VISION_MODEL" in capsys.readouterr().err
    monkeypatch.setenv("ZHIKU_OCR", "auto")
    monkeypatch.setenv("ZHIKU_VISION_MODEL", str(tiny_llava))
    assert rag_main(["ask", "What is this?", "--image", str(red_png), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer"] and out["sources"] == [] and out["timings"]["first_token_ms"] > 0
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    assert rag_main(["ask", "What is this?", "--image", str(broken)]) == 2
    assert "broken.jpg: broken or truncated image" in capsys.readouterr().err


def test_short_context_model_gets_half_its_context_for_the_answer(settings, tiny_llava, red_png):
    """The tiny LLaVA has 512 positions: with the default 512 new tokens nothing would fit the prompt."""
    from services import build_services

    built = build_services(settings.model_copy(update={"vision_model": str(tiny_llava), "max_new_tokens": 512}))
    try:
        answer = built.image_qa.ask("What colour is this chart?", red_png)
        assert answer.notes == []  # the question was not cut
        assert answer.timings["prompt_tokens"] + answer.timings["answer_tokens"] <= 512
    finally:
        built.close()
