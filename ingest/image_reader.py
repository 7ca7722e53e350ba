"""Images (.png, .jpg, .webp) as documents of one page, read by OCR."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ingest.document import OcrSetting, Page, ProgressFn, RejectedFile, check_size, file_sha256, short_error
from ingest.text_clean import clean_page_text

MAX_PIXELS = 60_000_000  # a photo of 60 MP is plenty; more is a decompression bomb or a mistake
MIN_CHARS = 3


@dataclass
class OpenedImage:
    path: Path
    name: str
    sha256: str
    size: int
    ocr: OcrSetting
    page_count: int = 1

    def pages(self, on_page: ProgressFn | None = None) -> Iterator[Page]:
        """The image's text as page 1; RejectedFile if OCR finds none."""
        from ingest.ocr import OcrUnavailable, read_image_file

        on_page = on_page or (lambda _done, _total: None)
        on_page(0, 1)
        try:
            text = clean_page_text(read_image_file(self.path, self.ocr.engine).text)
        except ValueError as exc:
            raise RejectedFile(f"not a readable image ({short_error(exc)})") from exc
        except OcrUnavailable as exc:
            raise RejectedFile(f"images are read by OCR, which cannot run here: {exc.reason}") from exc
        on_page(1, 1)
        if len(text) < MIN_CHARS:
            raise RejectedFile("OCR found no text in the image")
        yield Page(1, text, ocr=True)


def open_image(path: Path, max_bytes: int, name: str | None = None, ocr: OcrSetting | None = None) -> OpenedImage:
    """Check an image file and open it for OCR; RejectedFile when OCR is off, or the file is empty, too big,
    not a PNG, JPEG or WebP image (whatever its suffix says), corrupt, or has too many pixels (the checks the
    Image tab makes, ``models.vision.load_image``)."""
    from models.vision import RejectedImage, load_image

    name = name or path.name
    if ocr is None or not ocr.enabled:
        raise RejectedFile("images are read by OCR, which is off (setting ZHIKU_OCR)")
    size = check_size(path, max_bytes)
    try:
        load_image(path, max_bytes, max_pixels=MAX_PIXELS)
    except RejectedImage as exc:
        raise RejectedFile(exc.reason) from exc
    return OpenedImage(path, name, file_sha256(path), size, ocr)
