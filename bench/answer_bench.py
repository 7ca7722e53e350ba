"""How long a user waits for an answer on this machine: evidence, first words, whole answer.

    python bench/answer_bench.py --data-dir D [--questions bench/eval/questions.jsonl] [--n 20] [--k 5]

D holds ingested documents (bench/eval/prepare_docs.sh, then python -m ingest --data-dir D DOCS). A spread of
n questions (half English, half Chinese) is answered with the configured chat model (the packaged SmolLM2 by
default) and answer mode; the first answer, which loads the model, is not counted. Targets (issue 10): the
model's first words within 2 s of the question, the whole answer within 10 s, on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingest_bench import git_state, machine_info, percentile, table  # noqa: E402

from offline import enforce_offline  # noqa: E402

FIGURES = [
    ("question_to_evidence_ms", "question → evidence shown (ms)"),
    ("question_to_text_ms", "question → model's first words (ms)"),
    ("total_ms", "question → whole answer (ms)"),
    ("prompt_tokens", "prompt tokens"),
    ("reused_prompt_tokens", "prompt tokens reused from the last prompt"),
    ("answer_tokens", "answer tokens"),
    ("tokens_per_s", "decode tokens/s"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--questions", default=str(ROOT / "bench/eval/questions.jsonl"))
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--k", type=int, default=5)
    args = p.parse_args()
    enforce_offline()
    os.environ.setdefault("ZHIKU_PRELOAD_LLM", "false")
    from rag.answer_eval import run_answers, spread
    from rag.evaluation import load_questions
    from services import build_services
    from settings import Settings

    services = build_services(Settings(data_dir=Path(args.data_dir)))
    try:
        mode = services.qa.answer_mode()
        outcomes = run_answers(services.qa, spread(load_questions(Path(args.questions)), args.n), args.k)
    finally:
        services.close()
    rows = []
    for key, label in FIGURES:
        values = [o.timings[key] for o in outcomes if key in o.timings]
        if values:
            rows.append([label, percentile(values, 50), percentile(values, 95), max(values)])
    first = [o.timings["question_to_text_ms"] for o in outcomes if "question_to_text_ms" in o.timings]
    total = [o.timings["total_ms"] for o in outcomes if "total_ms" in o.timings]
    machine = machine_info()
    note = (
        f"{len(outcomes)} questions, k={args.k}, answer mode {mode}; "
        f"targets: first words p95 ≤ 2000 ms ({'met' if first and percentile(first, 95) <= 2000 else 'NOT met'}), "
        f"whole answer p95 ≤ 10000 ms ({'met' if total and percentile(total, 95) <= 10000 else 'NOT met'})\n"
        f"machine: {machine.get('cpu_model', '?')}, {os.cpu_count()} cores; commit {git_state().get('commit')}"
    )
    print(table("Answer latency (CPU default)", ["figure", "p50", "p95", "max"], rows, note))


if __name__ == "__main__":
    main()
