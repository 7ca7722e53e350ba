"""OCR engines on rendered pages: character accuracy and speed, zhiku's ingest.ocr (PP-OCRv6 tiny and small) vs
Debian's Tesseract.

Run from the repository root (Tesseract: ``apt-get install tesseract-ocr tesseract-ocr-chi-sim tesseract-ocr-eng``)::

    python bench/ocr_bench.py [--engines tiny,small,tesseract,tesseract-lang] [--repeats 2] [--threads 2]

Pages are A4 at 200 dpi (1654 x 2339 px), 39 lines of known English or Chinese text (bench/ocr_pages.py), each
clean, rotated 1.5 degrees, blurred (Gaussian, radius 1) and noisy (Gaussian sigma 25 + 1 % salt and pepper).
Accuracy = 1 - edit distance / reference length, on NFKC text without whitespace. Seconds per page: the mean
of ``--repeats`` reads after one warm-up read of the same page (model loads are reported apart).

Engines: ``tiny`` and ``small`` are ``ingest.ocr.Ocr`` as zhiku runs it with that model (``ZHIKU_OCR_MODEL``;
tiny, the default, through faster-paddle; small through RapidOCR); ``tesseract`` runs the ``tesseract`` CLI with
``chi_sim+eng`` (what zhiku would have to run, not knowing a page's language); ``tesseract-lang`` gives it the
page's own language (its best case). Threads are pinned: ONNX Runtime intra-op threads, OMP_NUM_THREADS and
OMP_THREAD_LIMIT (Tesseract's OpenMP).
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ingest_bench import CpuWatch, table, wait_quiet  # noqa: E402
from bench.ocr_pages import A4_200DPI, CONDITIONS, char_accuracy, degrade, render_page  # noqa: E402
from offline import enforce_offline  # noqa: E402

enforce_offline()

TARGET = {"en": 0.95, "zh": 0.90}
TARGET_PAGES_PER_S = 1.0
TESSERACT_LANG = {"en": "eng", "zh": "chi_sim"}


MODELS: dict = {}  # --det-model / --rec-model: other ONNX files for RapidOCR's stages (the small model)


def zhiku_engine(threads: int, model: str) -> tuple[Callable, float]:
    """zhiku's product OCR with ``model`` (tiny: faster-paddle; small: RapidOCR); (read image -> text, load s)."""
    from ingest.ocr import Ocr

    ocr = Ocr(threads=threads, model=model, models=MODELS)
    ocr._load()
    return (lambda image, language: ocr.read(image).text), ocr.load_seconds or 0.0


def tesseract_engine(threads: int, own_language: bool) -> tuple[Callable, float]:
    """The tesseract CLI on a PNG through stdin (as pytesseract does); it loads its model on every call."""
    env = {**os.environ, "OMP_THREAD_LIMIT": str(threads), "OMP_NUM_THREADS": str(threads)}

    def read(image, language: str) -> str:
        png = io.BytesIO()
        image.save(png, format="PNG")
        langs = TESSERACT_LANG[language] if own_language else "chi_sim+eng"
        done = subprocess.run(
            ["tesseract", "stdin", "stdout", "-l", langs, "--psm", "3"],
            input=png.getvalue(),
            capture_output=True,
            env=env,
            check=True,
        )
        return done.stdout.decode("utf-8")

    return read, 0.0


ENGINES = {
    "tiny": lambda threads: zhiku_engine(threads, "tiny"),
    "small": lambda threads: zhiku_engine(threads, "small"),
    "tesseract": lambda threads: tesseract_engine(threads, own_language=False),
    "tesseract-lang": lambda threads: tesseract_engine(threads, own_language=True),
}


def bench_engine(name: str, threads: int, repeats: int, quiet: bool) -> tuple[list[list], float]:
    read, load_s = ENGINES[name](threads)
    rows = []
    for language in ("en", "zh"):
        page, reference = render_page(language, A4_200DPI)
        for condition in CONDITIONS:
            image = degrade(page, condition, seed=1)
            wait_quiet(quiet, f"{name} {language} {condition}")
            text = read(image, language)  # warm-up (first-run allocations), and the text scored
            started = time.perf_counter()
            for _ in range(repeats):
                read(image, language)
            per_page = (time.perf_counter() - started) / repeats
            rows.append([name, language, condition, round(100 * char_accuracy(reference, text), 2), per_page])
            print(f"  {name} {language} {condition}: {rows[-1][3]} % in {per_page:.2f} s", file=sys.stderr)
    return rows, load_s


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--engines", default="tiny,small,tesseract,tesseract-lang", help="comma-separated: " + ",".join(ENGINES)
    )
    p.add_argument("--repeats", type=int, default=2, help="timed reads per page after a warm-up read (default 2)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads per engine (default 2)")
    p.add_argument("--no-wait-quiet", action="store_true", help="do not wait for other processes to go below 10%% CPU")
    p.add_argument("--det-model", type=Path, help="small: this detection ONNX file instead of the packaged one")
    p.add_argument("--rec-model", type=Path, help="small: this recognition ONNX file instead of the packaged one")
    args = p.parse_args(argv)
    MODELS.update({k: v for k, v in (("Det", args.det_model), ("Rec", args.rec_model)) if v})
    os.environ["OMP_NUM_THREADS"] = os.environ["OMP_THREAD_LIMIT"] = str(args.threads)
    rows, loads = [], []
    watch = CpuWatch()
    for name in args.engines.split(","):
        engine_rows, load_s = bench_engine(name.strip(), args.threads, args.repeats, not args.no_wait_quiet)
        rows += engine_rows
        loads.append(f"{name} {load_s:.2f} s")
    for row in rows:
        row.append(1.0 / row[4])
    summary = []
    for name in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == name]
        accuracy = {lang: min(r[3] for r in mine if r[1] == lang) for lang in ("en", "zh")}
        speed = min(r[5] for r in mine)
        met = all(accuracy[lang] >= 100 * TARGET[lang] for lang in TARGET) and speed >= TARGET_PAGES_PER_S
        summary.append(
            f"{name}: worst accuracy en {accuracy['en']} %, zh {accuracy['zh']} %; slowest {speed:.2f} pages/s -> "
            + ("targets met" if met else "targets NOT met")
        )
    print(
        table(
            f"OCR on A4 pages at 200 dpi ({A4_200DPI[0]}x{A4_200DPI[1]} px), {args.threads} threads",
            ["engine", "language", "condition", "char accuracy %", "s/page", "pages/s"],
            rows,
            f"model load: {', '.join(loads)}; other processes used {watch.other_pct()}% of the CPU meanwhile\n"
            f"targets: accuracy >= 95 % en, >= 90 % zh; >= {TARGET_PAGES_PER_S:g} page/s\n" + "\n".join(summary),
        )
    )


if __name__ == "__main__":
    main()
