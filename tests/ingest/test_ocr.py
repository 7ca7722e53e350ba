"""OCR (ingest.ocr): pages rendered from known text are read back, offline; non-images are refused."""

from __future__ import annotations

import pytest
from PIL import Image

from bench.ocr_pages import char_accuracy, cjk_font_file, render_page
from ingest import ocr as ocr_module
from ingest.ocr import OCR_MODELS, Ocr, OcrResult, OcrUnavailable, order_lines, read_image_file

SMALL_PAGE = (1000, 700)


@pytest.fixture(scope="module")
def font_available():
    try:
        cjk_font_file()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def page(language: str) -> tuple[Image.Image, str]:
    return render_page(language, SMALL_PAGE, font_px=28, max_lines=5)


@pytest.mark.parametrize("model", OCR_MODELS)
def test_english_page_is_read_without_network(font_available, no_network, model):
    image, reference = page("en")
    result = Ocr(threads=2, model=model).read(image)  # loads the models inside the guard too
    assert char_accuracy(reference, result.text) >= 0.95, result.text
    assert result.lines == 5
    assert 0.5 < result.confidence <= 1.0
    assert no_network == []


def test_the_tiny_model_is_the_default_and_an_unknown_one_is_refused():
    assert Ocr().model == "tiny"
    with pytest.raises(ValueError, match="tiny, small"):
        Ocr(model="medium")  # faster-paddle would download it


def test_chinese_page_has_no_spurious_spaces(font_available, tmp_path):
    image, reference = page("zh")
    path = tmp_path / "页面.jpg"
    image.save(path, quality=90)
    engine = Ocr(threads=2)
    result = read_image_file(path, engine)
    assert char_accuracy(reference, result.text) >= 0.90, result.text
    assert " " not in result.text
    assert result.text.count("\n") == 4
    # a blank page (greyscale, as PDF pages are rendered) is no error: it has no text
    assert engine.read(Image.new("L", (600, 400), 255)) == OcrResult("", 0.0, 0)


def test_read_image_file_refuses_a_non_image(tmp_path):
    fake = tmp_path / "scan.png"
    fake.write_text("%PDF-1.7 not a picture at all")
    with pytest.raises(ValueError, match="scan.png is not an image"):
        read_image_file(fake)


def test_read_image_file_downscales_large_images(tmp_path):
    class Recorder:
        def read(self, image: Image.Image) -> OcrResult:
            self.image = image
            return OcrResult("", 0.0, 0)

    path = tmp_path / "big.webp"
    Image.new("L", (5000, 1000), 255).save(path)
    recorder = Recorder()
    read_image_file(path, recorder)  # type: ignore[arg-type]
    assert recorder.image.size == (ocr_module.MAX_SIDE, 500)
    assert recorder.image.mode == "RGB"


def test_missing_packaged_model_is_reported_not_downloaded(monkeypatch):
    monkeypatch.setitem(ocr_module.MODEL_FILES, "Det", "no-such-model.onnx")
    with pytest.raises(OcrUnavailable, match="never downloads"):
        Ocr(model="small").read(Image.new("RGB", (64, 64), "white"))


def test_a_model_file_given_for_a_stage_must_exist(tmp_path):
    missing = tmp_path / "rec.onnx"
    with pytest.raises(OcrUnavailable, match="rec.onnx does not exist"):
        Ocr(threads=1, model="small", models={"Rec": missing}).read(Image.new("RGB", (64, 32), "white"))


def test_lines_are_ordered_and_chinese_is_not_spaced():
    def box(x0, y0, x1, y1):
        return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]

    boxes = [
        (box(300, 100, 500, 130), "world"),
        (box(10, 50, 200, 80), "第二段文字"),
        (box(10, 102, 280, 128), "hello"),
        (box(210, 48, 400, 82), "继续"),
        (box(10, 0, 200, 30), "Title"),
    ]
    assert order_lines(boxes) == ["Title", "第二段文字继续", "hello world"]


def test_the_tiny_engine_opens_no_socket(font_available, tmp_path):
    """faster-paddle is native code (its own TLS client, for a model zhiku never asks for), so the Python socket
    guard cannot see it: the whole process is traced for connect() calls instead."""
    import shutil
    import subprocess
    import sys

    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed")
    image, _ = page("zh")
    path = tmp_path / "page.png"
    image.save(path)
    log = tmp_path / "trace.log"
    script = (
        "from ingest.ocr import Ocr; from PIL import Image; "
        f"print(Ocr(model='tiny').read(Image.open({str(path)!r})).lines)"
    )
    done = subprocess.run(
        [strace, "-f", "-qq", "-e", "trace=connect", "-o", str(log), sys.executable, "-c", script],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if done.returncode != 0 and "ptrace" in done.stderr:
        pytest.skip(f"strace cannot trace here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5"
    calls = [line for line in log.read_text().splitlines() if "connect(" in line]
    assert not [c for c in calls if "AF_INET" in c], calls  # local (AF_UNIX) sockets only, if any
