"""Test pages for OCR, rendered from known text, and the score that compares OCR output with that text.

The OCR bench (bench/ocr_bench.py) and the OCR tests (tests/ingest/test_ocr.py) share it: a page is drawn with
Pillow in a CJK-capable font (Debian: fonts-noto-cjk, which .ci/browser-packages.sh installs; fonts-wqy-microhei
or fonts-arphic-* work too), then optionally degraded the way scans are (a slight skew, blur, noise). Because the
text is known, character accuracy needs no hand-made ground truth.
"""

from __future__ import annotations

import shutil
import subprocess
import unicodedata
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

A4_200DPI = (1654, 2339)
CONDITIONS = ("clean", "rotated", "blurred", "noisy")
NO_LINE_START = set("，。、；：！？）」』")  # Chinese punctuation hangs at the end of a line, never starts one

ENGLISH = [
    "Offline question answering starts with reading every document the user owns.",
    "Scanned contracts, photographed receipts and old manuals often have no text layer at all.",
    "An OCR engine turns their pixels back into characters before the text is cut into chunks.",
    "Each chunk is embedded, stored in a local index and later retrieved to answer a question.",
    "Accuracy matters more than speed, because a wrong digit in an invoice number cannot be found.",
    "The engine must run on two CPU cores, without a network, and load its models from disk.",
    "Page 42 of the 2019 report lists 17 suppliers, 3 warehouses and 1,250 open orders.",
    "Please contact the archive team before 5:30 pm if the scan quality looks poor.",
]

CHINESE = [
    "离线问答系统首先要读懂用户自己的每一份文档。",
    "扫描的合同、拍照的发票和旧的说明书往往根本没有文字层。",
    "文字识别引擎把这些像素重新变成字符，然后文本才被切成小块。",
    "每一块都会被转换成向量，存入本地索引，之后用来回答问题。",
    "准确率比速度更重要，因为发票号码里错一个数字就再也找不到了。",
    "引擎必须在两个处理器核心上运行，不联网，从磁盘加载模型。",
    "二零一九年报告的第四十二页列出了十七家供应商和三个仓库。",
    "如果扫描质量很差，请在下午五点半之前联系档案室的同事。",
]


@lru_cache(maxsize=1)
def cjk_font_file() -> tuple[str, int]:
    """(path, face index) of a font with Simplified Chinese glyphs; FileNotFoundError names the Debian package."""
    candidates: list[str] = []
    if shutil.which("fc-match"):
        found = subprocess.run(
            ["fc-match", "-f", "%{file}", ":lang=zh-cn"], capture_output=True, text=True, check=False
        ).stdout.strip()
        candidates.append(found)
    candidates += [
        "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
        "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
        "/usr/share/fonts/truetype/arphic/uming.ttc",
    ]
    for path in candidates:
        if not path or not Path(path).is_file():
            continue
        index = _simplified_face(path)
        if index is not None:
            return path, index
    raise FileNotFoundError("no font with Chinese glyphs: install fonts-noto-cjk (or fonts-wqy-microhei) with apt")


def _simplified_face(path: str) -> int | None:
    """The face of a font file that draws Chinese, preferring the Simplified Chinese ("SC") one of a collection."""
    faces = []
    for index in range(16):
        try:
            font = ImageFont.truetype(path, 20, index=index)
        except OSError:
            break  # no more faces in the collection
        if _draws(font, "中"):
            faces.append((index, font.getname()[0]))
    if not faces:
        return None
    return next((i for i, family in faces if family.endswith(" SC")), faces[0][0])


def _draws(face: ImageFont.FreeTypeFont, char: str) -> bool:
    """Whether the face has a glyph for ``char`` (a missing one is drawn as the same box as a private-use code)."""
    drawn = face.getmask(char)
    missing = face.getmask("\U0010fffd")
    return drawn.getbbox() is not None and (drawn.size, bytes(drawn)) != (missing.size, bytes(missing))


def font(size_px: int) -> ImageFont.FreeTypeFont:
    path, index = cjk_font_file()
    return ImageFont.truetype(path, size_px, index=index)


def wrap(sentences: list[str], face: ImageFont.FreeTypeFont, width: int, max_lines: int) -> list[str]:
    """Lines no wider than ``width`` px, filled from the sentences (cycled) until ``max_lines``.

    English breaks between words, Chinese between any two characters. The text is deterministic.
    """
    lines: list[str] = []
    current = ""
    i = 0
    while len(lines) < max_lines:
        sentence = sentences[i % len(sentences)]
        i += 1
        spaced = " " in sentence
        for piece in sentence.split(" ") if spaced else sentence:
            trial = f"{current} {piece}" if spaced and current else current + piece
            if current and piece not in NO_LINE_START and face.getlength(trial) > width:
                lines.append(current)
                current = piece
            else:
                current = trial
    return lines[:max_lines]


def render_page(
    language: str, size: tuple[int, int] = A4_200DPI, font_px: int = 32, max_lines: int | None = None
) -> tuple[Image.Image, str]:
    """A white RGB page of black text in ``language`` ("en" or "zh") and the text drawn, lines joined by "\\n".

    At 200 dpi a 32 px font is about 11.5 pt; the margins are 1/10 of the page width.
    """
    sentences = {"en": ENGLISH, "zh": CHINESE}[language]
    width, height = size
    margin = width // 10
    face = font(font_px)
    pitch = int(font_px * 1.6)
    fit = (height - 2 * margin) // pitch
    lines = wrap(sentences, face, width - 2 * margin, min(fit, max_lines or fit))
    page = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(page)
    for row, line in enumerate(lines):
        draw.text((margin, margin + row * pitch), line, font=face, fill="black")
    return page, "\n".join(lines)


def degrade(page: Image.Image, condition: str, seed: int = 0) -> Image.Image:
    """The page as a poor scan: ``rotated`` 1.5 degrees, ``blurred`` (Gaussian, radius 1) or ``noisy``.

    ``noisy`` adds Gaussian noise (sigma 25 of 255) and 1 % salt-and-pepper pixels. ``clean`` returns it as is.
    """
    if condition == "clean":
        return page
    if condition == "rotated":
        return page.rotate(1.5, resample=Image.Resampling.BICUBIC, expand=False, fillcolor="white")
    if condition == "blurred":
        return page.filter(ImageFilter.GaussianBlur(radius=1))
    if condition == "noisy":
        rng = np.random.default_rng(seed)
        pixels = np.asarray(page.convert("L"), dtype=np.float32)
        pixels = pixels + rng.normal(0.0, 25.0, pixels.shape)
        flip = rng.random(pixels.shape)
        pixels[flip < 0.005] = 0
        pixels[flip > 0.995] = 255
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("RGB")
    raise ValueError(f"unknown condition {condition!r}; expected one of {CONDITIONS}")


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions); one numpy row per character of ``a``.

    Insertions chain along a row: ``row[j] = min(candidate[j], row[j-1] + 1)`` is a running minimum of
    ``candidate - j``, plus ``j``, so each row is a few vector operations (a 3,000-character page takes ~0.1 s).
    """
    if not a or not b:
        return max(len(a), len(b))
    codes = np.fromiter(map(ord, b), dtype=np.int64, count=len(b))
    steps = np.arange(len(b) + 1)
    row = steps.copy()
    for i, char in enumerate(a, 1):
        candidate = np.empty_like(row)
        candidate[0] = i
        candidate[1:] = np.minimum(row[1:] + 1, row[:-1] + (codes != ord(char)))
        row = np.minimum.accumulate(candidate - steps) + steps
    return int(row[-1])


def normalise(text: str) -> str:
    """Text as compared: NFKC (full-width ，；： and their ASCII forms are the same sign), no whitespace."""
    return "".join(unicodedata.normalize("NFKC", text).split())


def char_accuracy(reference: str, hypothesis: str) -> float:
    """1 - edit distance / reference length, on normalised text; below 0 when the output is mostly wrong."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    return 1.0 - levenshtein(ref, hyp) / max(1, len(ref))
