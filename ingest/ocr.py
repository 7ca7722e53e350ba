"""OCR for images and text-less PDF pages, Chinese and English, offline: PP-OCRv6 text detection and recognition
on ONNX Runtime, CPU.

Two model sizes (setting ``ZHIKU_OCR_MODEL``):
- ``tiny`` (the default): PP-OCRv6 tiny through the ``faster-paddle`` wheel (a Rust pipeline with ONNX Runtime
  linked in and the tiny and small models inside the wheel). On an A4 page at 200 dpi it reads ~1.5 pages/s on 2
  cores at 99.6-100 % character accuracy (bench/ocr_bench.py).
- ``small``: PP-OCRv6 small through the ``rapidocr`` wheel (its models are inside it too): ~0.3 pages/s, for a
  second opinion on a hard scan.

No network, ever: faster-paddle downloads only its ``medium`` model, which zhiku never asks for; RapidOCR downloads a
model only when its ``model_path`` is unset (or a character table when the recognition model lacks one), so this
module passes the packaged files explicitly and refuses to start (``OcrUnavailable``) if one is missing or the
recognition model has no character table.

The engine loads once, lazily, on the first ``read`` (well under a second), under a lock; ``read`` calls are
serialised by a second lock, because the engine already uses ``threads`` cores for one page and RapidOCR's
pipeline object keeps per-call settings on itself (it is not safe to share between threads).
"""

from __future__ import annotations

import io
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

OCR_MODELS = ("tiny", "small")
MAX_SIDE = 2500  # read_image_file downscales larger images: more pixels only slow detection down
DETECT_SIDE = 960  # text detection runs on the image scaled to this longer side
MODEL_FILES = {"Det": "PP-OCRv6_det_small.onnx", "Rec": "PP-OCRv6_rec_small.onnx"}
_CJK = "\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef\u3000-\u303f"  # CJK ideographs, kana, full-width forms, CJK punctuation
_SPACE_BETWEEN_CJK = re.compile(f"(?<=[{_CJK}])\\s+(?=[{_CJK}])")


class OcrUnavailable(RuntimeError):
    """The OCR engine cannot run here (package or packaged model missing); ``reason`` says what to install."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class OcrResult:
    """Text read from one image: lines top to bottom (left to right within a row), joined with "\\n"."""

    text: str
    confidence: float  # mean recognition score of the text boxes, 0..1 (0 when nothing was read)
    lines: int


class Ocr:
    """PP-OCRv6 of ``model`` size (``OCR_MODELS``) with its packaged files, ``threads`` threads; load on first use."""

    def __init__(self, threads: int = 2, model: str = "tiny", models: dict[str, Path] | None = None) -> None:
        if model not in OCR_MODELS:
            raise ValueError(f"OCR model must be one of {', '.join(OCR_MODELS)}, not {model!r}")
        self.threads = max(1, threads)
        self.model = model
        self.models = models or {}  # small: "Det"/"Rec" -> another ONNX file than the packaged one (benchmarks)
        self._engine = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self.load_seconds: float | None = None

    def read(self, image: Image.Image) -> OcrResult:
        """OCR one image (any Pillow mode; converted to RGB)."""
        engine = self._load()
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        with self._run_lock:
            boxes, scores = engine(rgb)
        if not boxes:
            return OcrResult(text="", confidence=0.0, lines=0)
        rows = order_lines(boxes)
        return OcrResult(text="\n".join(rows), confidence=sum(scores) / len(scores), lines=len(rows))

    def _load(self):
        if self._engine is not None:
            return self._engine
        with self._load_lock:
            if self._engine is None:
                started = time.perf_counter()
                if self.model == "tiny":
                    self._engine = _tiny_engine(self.threads)
                else:
                    self._engine = _small_engine(_build_engine(self.threads, self.models))
                self.load_seconds = time.perf_counter() - started
        return self._engine


def _tiny_engine(threads: int):
    """PP-OCRv6 tiny from the faster-paddle wheel: image -> ([(corners, text)], scores)."""
    try:
        from faster_paddle import OcrEngine
    except ImportError as exc:
        raise OcrUnavailable(
            f"the OCR engine is not installed ({exc}); install zhiku's requirements (faster-paddle)"
        ) from exc
    # detection on the page scaled to DETECT_SIDE, as for the small model (measured: same accuracy, 25 % faster)
    engine = OcrEngine(model_size="tiny", threads=threads, det_max_side=DETECT_SIDE)

    def read(image: Image.Image):
        encoded = io.BytesIO()
        image.save(encoded, format="BMP")  # uncompressed: ~10 ms for an A4 page, where PNG takes ~150 ms
        found = engine.ocr(encoded.getvalue())
        boxes, scores = [], []
        for box in found.get("bounds", {}).values():
            (x0, y0), (x1, y1) = box["topLeftCoord"], box["bottomRightCoord"]
            boxes.append(([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], box["text"]))
            scores.append(float(box["confidence"]))
        return boxes, scores

    return read


def _small_engine(rapid):
    """RapidOCR's pipeline as image -> ([(corners, text)], scores)."""

    def read(image: Image.Image):
        output = rapid(image)
        boxes, texts = getattr(output, "boxes", None), getattr(output, "txts", None)
        if boxes is None or texts is None or len(texts) == 0:
            return [], []
        return list(zip(boxes.tolist(), texts)), [float(s) for s in output.scores]

    return read


def _build_engine(threads: int, models: dict[str, Path] | None = None):
    """A RapidOCR pipeline pinned to the wheel's own model files (or ``models``' files for a stage);
    OcrUnavailable if any is missing."""
    try:
        import rapidocr
        from rapidocr import RapidOCR
    except ImportError as exc:
        raise OcrUnavailable(
            f"the OCR engine is not installed ({exc}); install zhiku's requirements (rapidocr)"
        ) from exc
    packaged = Path(rapidocr.__file__).resolve().parent / "models"
    params: dict = {
        # RapidOCR logs to stderr through its own handler; at "warning" every blank page prints "The text
        # detection result is empty" (a blank page is normal: read() returns an empty result for it).
        "Global.log_level": "error",
        # The 180-degree line classifier is off: on clean English pages it flipped whole lines (score > 0.9),
        # turning them into garbage; document text lines are upright (a page scanned upside down is a page-level
        # problem this classifier would not solve anyway).
        "Global.use_cls": False,
        # Detection on the page scaled to 960 px on its longer side (RapidOCR's default scales its shorter side to
        # >= 736, i.e. detects on the whole 2000-px page): 5x less detection time on an A4 page, and text of 6.5 pt
        # at 200 dpi was still read at 99.7-100 % (bench/ocr_pages.py pages, 18 px font). Lines are still cut for
        # recognition from the image at up to 2000 px (RapidOCR's Global.max_side_len), so recognition is unchanged.
        "Det.limit_type": "max",
        "Det.limit_side_len": DETECT_SIDE,
        # One line per recognition run, with ONNX Runtime's memory arena: 15 % faster on an A4 page than batches of
        # 6 without it (RapidOCR's default: a batch is padded to its widest line), and half the peak memory
        # (~0.5 GB over the process instead of ~0.95 GB).
        "Rec.rec_batch_num": 1,
        "EngineConfig.onnxruntime.enable_cpu_mem_arena": True,
        "EngineConfig.onnxruntime.intra_op_num_threads": threads,
        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
    }
    for stage, name in MODEL_FILES.items():
        given = (models or {}).get(stage)
        path = Path(given or packaged / name)
        if given and not path.is_file():
            raise OcrUnavailable(f"the OCR model file {path} does not exist")
        if not path.is_file():
            raise OcrUnavailable(
                f"RapidOCR's packaged model {name} is missing from {packaged}; zhiku never downloads models: "
                "reinstall the rapidocr version that requirements.txt names"
            )
        params[f"{stage}.model_path"] = str(path)
    engine = RapidOCR(params=params)
    recogniser = engine._load_rec_model()  # loads now, not on the first page; the table must be in the model
    if not recogniser.session.have_key():
        raise OcrUnavailable(f"{MODEL_FILES['Rec']} carries no character table; RapidOCR would download one")
    engine._load_det_model()
    return engine


def order_lines(boxes: list[tuple[list[list[float]], str]]) -> list[str]:
    """Text boxes (four corner points, text) as rows: top to bottom, then left to right within a row.

    Boxes whose vertical centres lie within half a box height of a row's first box join that row; pieces of a
    row are joined by a space, except where both neighbouring characters are Chinese (no spurious spaces).
    """
    placed = []
    for points, text in boxes:
        ys = [p[1] for p in points]
        xs = [p[0] for p in points]
        placed.append(((min(ys) + max(ys)) / 2, max(ys) - min(ys), min(xs), text.strip()))
    placed.sort(key=lambda b: (b[0], b[2]))
    rows: list[list[tuple[float, float, float, str]]] = []
    for box in placed:
        if rows and abs(box[0] - rows[-1][0][0]) <= max(box[1], rows[-1][0][1]) / 2:
            rows[-1].append(box)
        else:
            rows.append([box])
    out = []
    for row in rows:
        pieces = [b[3] for b in sorted(row, key=lambda b: b[2]) if b[3]]
        line = " ".join(pieces)
        line = _SPACE_BETWEEN_CJK.sub("", line)
        if line:
            out.append(line)
    return out


_shared: Ocr | None = None
_shared_lock = threading.Lock()


def shared_ocr() -> Ocr:
    """The process-wide engine (created on first use), so the models load once for all files."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Ocr()
        return _shared


def read_image_file(path: str | Path, ocr: Ocr | None = None) -> OcrResult:
    """OCR a png/jpg/webp (any format Pillow decodes): EXIF orientation applied, RGB, longer side <= MAX_SIDE px.

    ValueError if the file is not an image Pillow can decode (FileNotFoundError if it is missing). ``ocr``
    defaults to ``shared_ocr()``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as exc:
        raise ValueError(f"{path.name} is not an image that can be read ({exc})") from exc
    longest = max(image.size)
    if longest > MAX_SIDE:
        scale = MAX_SIDE / longest
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return (ocr or shared_ocr()).read(image)
