"""Load on the OpenAI-compatible API: 1, 4 and 16 concurrent streaming clients on loopback.

python bench/api_load.py [--docs FOLDER] [--clients 1,4,16] [--max-new-tokens 32] [--timeout 600]
Starts zhiku's real server (UI and API) on a free loopback port over a fresh data directory holding ``--docs``
(default: two small PDFs, English and Chinese, made for the run), then, for each client count, that many
threads each stream one answer (``stream: true``, the official ``openai`` client) to a different question at
once. Prints, per count: time to first token p50/p95 (to the first piece of answer text), whole answer p50/p95,
errors. One chat model answers one question at a time, so the time to first token grows with the queue; what
must not happen is an error.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from offline import enforce_offline  # noqa: E402

enforce_offline()

QUESTIONS = [
    "When do zebras cross the Mara River?",
    "长城全长多少公里？",
    "How hot is the lava of a volcano?",
    "普洱茶产于哪里？",
]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))] if ordered else float("nan")


def one_client(base_url: str, question: str, timeout: float, out: list) -> None:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=timeout)
    started = time.perf_counter()
    first = None
    try:
        for chunk in client.chat.completions.create(
            model="zhiku", messages=[{"role": "user", "content": question}], stream=True
        ):
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - started
        out.append({"ttft": first, "total": time.perf_counter() - started, "error": None})
    except Exception as exc:  # noqa: BLE001 - every failure is counted and named in the table
        out.append({"ttft": first, "total": time.perf_counter() - started, "error": f"{type(exc).__name__}: {exc}"})


def sample_docs(folder: Path) -> None:
    from tests.fixtures.pdfs import GREAT_WALL, TEA, VOLCANO, ZEBRA, make_pdf

    make_pdf(folder / "animals.pdf", [ZEBRA, VOLCANO])
    make_pdf(folder / "中国文化.pdf", [GREAT_WALL, TEA], chinese=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=Path, help="a folder of documents to ask about (default: two sample PDFs)")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=600, help="seconds one client may wait for its answer")
    args = parser.parse_args()

    from bench.ingest_bench import table
    from ingest.cli import collect_sources
    from services import build_services
    from settings import Settings
    from tests.fixtures.browser import free_port
    from ui.web import ZhikuUI, launch

    with tempfile.TemporaryDirectory() as tmp:
        docs = args.docs or Path(tmp) / "docs"
        if args.docs is None:
            docs.mkdir()
            sample_docs(docs)
        port = free_port()
        settings = Settings(data_dir=Path(tmp) / "data", port=port, max_new_tokens=args.max_new_tokens)
        services = build_services(settings, keep_uploads=True)
        sources, _ = collect_sources([str(docs)])
        services.ingestor.ingest(sources)
        blocks = ZhikuUI(services).build()
        launch(blocks, settings, block=False, services=services)
        base_url = f"http://127.0.0.1:{port}/v1"
        rows = []
        try:
            one_client(base_url, QUESTIONS[0], args.timeout, [])  # warm-up: loads the chat model
            for count in (int(c) for c in args.clients.split(",")):
                results: list = []
                threads = [
                    threading.Thread(
                        target=one_client, args=(base_url, QUESTIONS[i % len(QUESTIONS)], args.timeout, results)
                    )  # fmt: skip
                    for i in range(count)
                ]
                started = time.perf_counter()
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                wall = time.perf_counter() - started
                ttfts = [r["ttft"] for r in results if r["ttft"] is not None and r["error"] is None]
                totals = [r["total"] for r in results if r["error"] is None]
                errors = [r["error"] for r in results if r["error"]]
                rows.append([count, round(percentile(ttfts, 0.5), 2), round(percentile(ttfts, 0.95), 2),
                             round(percentile(totals, 0.5), 2), round(percentile(totals, 0.95), 2), round(wall, 1),
                             len(errors)])  # fmt: skip
                for error in errors[:3]:
                    print(f"  {count} clients: {error}", file=sys.stderr)
        finally:
            blocks.close()
            services.close()
    print(
        table(
            f"OpenAI-compatible API, streaming clients on loopback ({args.max_new_tokens} new tokens, "
            f"chat model {settings.llm_model or 'SmolLM2-135M (packaged)'})",
            ["clients", "TTFT p50 s", "TTFT p95 s", "answer p50 s", "answer p95 s", "wall s", "errors"],
            rows,
        )
    )
    return 0 if all(r[-1] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
