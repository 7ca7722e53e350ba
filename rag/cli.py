"""The headless question command (and document listing/removal)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_BUSY = 0, 1, 2, 3
MODES = ("hybrid", "keyword", "dense")  # rag.retriever.MODES, without importing the models to parse arguments


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rag", description="Ask zhiku questions about your documents.")
    p.add_argument("--data-dir", help="data directory (default: setting ZHIKU_DATA_DIR, else ./data)")
    sub = p.add_subparsers(dest="command", required=True)
    ask = sub.add_parser("ask", help="answer a question from the indexed documents")
    ask.add_argument("question")
    ask.add_argument("--k", type=int, default=None, help="chunks to retrieve (default: setting top_k, 5)")
    ask.add_argument("--retrieve-only", action="store_true", help="skip generation; answer is null")
    ask.add_argument("--image", help="ask about this image (PNG, JPEG, WebP) with the vision model")
    ask.add_argument(
        "--with-documents", action="store_true", help="with --image: add the most relevant document chunks"
    )
    ask.add_argument(
        "--mode",
        choices=MODES,
        default=None,
        help="hybrid (keyword + semantic, fused), keyword (BM25) or dense (semantic); default: setting "
        "ZHIKU_RETRIEVAL_MODE, hybrid",
    )
    ask.add_argument(
        "--answer-mode",
        choices=("generate", "extract", "both"),
        default=None,
        help="extract = the evidence sentences only (no model), both = evidence then the model's answer; "
        "default: setting ZHIKU_ANSWER_MODE (auto: both for models under 1B parameters)",
    )
    ask.add_argument("--json", action="store_true", help="print a machine-readable result")
    ask.add_argument("--max-new-tokens", type=int, default=None, help="longest answer in tokens")
    ask.add_argument("--temperature", type=float, default=None, help="sampling temperature, 0 = greedy")
    ls = sub.add_parser("list", help="list the indexed documents")
    ls.add_argument("--json", action="store_true")
    rm = sub.add_parser("delete", help="remove a document and its chunks")
    rm.add_argument("name", help="document name as listed")
    rm.add_argument(
        "--no-wait",
        action="store_true",
        help="if another zhiku process is writing to the data directory, stop (exit 3) instead of waiting",
    )
    st = sub.add_parser("status", help="models, memory budget and GPU readings")
    st.add_argument("--json", action="store_true")
    ev = sub.add_parser(
        "eval",
        help="measure retrieval on a question file (JSONL): recall@1/@k/@10, MRR, 'nothing relevant', latency",
        description='Each line: {"question", "lang": "en"|"zh", "source", "pages": [1-based], '
        '"answer_any": [...]}; a line without "source" expects \'nothing relevant\'. The documents must be '
        "ingested into the data directory first.",
    )
    ev.add_argument("questions", help="the question file (JSON Lines)")
    ev.add_argument("--k", type=int, default=None, help="chunks an answer is given (default: setting top_k, 5)")
    ev.add_argument("--mode", choices=(*MODES, "all"), default="all", help="retrieval mode(s) to measure (all)")
    ev.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    ev.add_argument(
        "--pages-only",
        action="store_true",
        help="a chunk on a gold page answers even without the answer's words (page-level recall)",
    )
    ev.add_argument(
        "--answers",
        action="store_true",
        help="answer each question (generating, in the answer mode set): gold strings in the evidence, the "
        "extract and the answer, unsupported numbers, time to first token",
    )
    ev.add_argument("--limit", type=int, default=None, help="with --answers: a spread of N questions")
    ev.add_argument(
        "--followups",
        action="store_true",
        help='the file holds follow-ups ("history", "standalone"): recall as asked, rewritten by rule, by the '
        "chat model, and as the gold standalone question",
    )
    ev.add_argument("--no-model", action="store_true", help="with --followups: skip the chat model's rewrite")
    for command in (ask, ls, rm, st, ev):
        command.add_argument("--data-dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_OK
    if args.command in ("ask", "eval") and args.k is not None and not 1 <= args.k <= 50:
        print("error: --k must be between 1 and 50", file=sys.stderr)
        return EXIT_USAGE
    from settings import Settings

    overrides = {"data_dir": args.data_dir} if args.data_dir else {}
    if args.command == "ask":
        if args.max_new_tokens is not None:
            overrides["max_new_tokens"] = args.max_new_tokens
        if args.temperature is not None:
            overrides["temperature"] = args.temperature
        if args.answer_mode is not None:
            overrides["answer_mode"] = args.answer_mode
    settings = Settings(**overrides)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from rag.writer_lock import WriterBusy, command_lock
    from services import StartupError, build_services

    writes = args.command == "delete"
    writer = command_lock(settings.data_dir, wait=not getattr(args, "no_wait", False))
    try:
        services = build_services(settings, writer=writer)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        # what a killed delete left half done; a command that only reads skips it while another process writes
        finished = services.ingestor.finish_deletes(wait=writes and writer.wait)
        for name in finished:
            print(f"finished the interrupted delete of {name}", file=sys.stderr)
        if args.command == "list":
            return _list(services, args.json)
        if args.command == "status":
            return _status(services, args.json)
        if args.command == "eval":
            return _eval(services, args)
        if args.command == "delete":
            if args.name in finished or services.ingestor.delete(args.name):
                print(f"deleted {args.name}")
                return EXIT_OK
            print(f"error: no document named {args.name!r}", file=sys.stderr)
            return EXIT_ERROR
        return _ask(services, args)
    except WriterBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BUSY
    finally:
        services.close()


def _ask(services, args) -> int:
    from rag.image_qa import VisionNotConfigured

    if args.image and args.retrieve_only:
        print("error: --retrieve-only does not go with --image", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.image:
            updates = services.image_qa.stream(args.question, Path(args.image), args.with_documents, args.k)
        else:
            updates = services.qa.stream(args.question, k=args.k, generate=not args.retrieve_only, mode=args.mode)
        answer, printed, quoted = None, 0, False
        for answer in updates:
            if args.json:
                continue
            if answer.extract and not quoted:  # the evidence, before the model's first word
                quoted = True
                print("From your documents / 来自你的文档:")
                for q in answer.extract:
                    print(f"  > {q.span.text} — [{q.source + 1}] {q.file} {q.place}")
                print()
            if answer.text and (answer.model or not answer.extract):
                if not printed and answer.model:
                    print(f"{answer.model} (generated / 模型生成):")
                sys.stdout.write(answer.text[printed:])
                sys.stdout.flush()
                printed = len(answer.text)
        if printed:
            print()
    except VisionNotConfigured as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except ValueError as exc:  # an empty question, a bad image (the message names the file)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(answer.as_dict(), ensure_ascii=False, indent=2))
        return EXIT_OK
    if args.retrieve_only:
        print("(retrieval only: no answer generated)")
    if answer.unsupported:
        print("not found in your documents / 文档中未找到: " + ", ".join(answer.unsupported))
    if answer.standalone:
        print(f"searched for / 检索: {answer.standalone}")
    if answer.sources:
        print("\nSources:")
        for i, source in enumerate(answer.sources, 1):
            snippet = " ".join((source.evidence[0].text if source.evidence else source.text).split())[:100]
            found = "+".join(source.found_by) or "?"
            section = f", § {source.section}" if source.section else ""
            print(
                f"  [{i}] {source.file}, {source.place}{section} ({found}; similarity {source.score:.2f}, "
                f"BM25 {source.keyword_score:.1f}): {snippet}"
            )
    for note in answer.notes:
        print(f"note: {note}")
    return EXIT_OK


def _eval(services, args) -> int:
    from rag.evaluation import BadQuestionFile, format_summary, load_questions, pages_only, run, summarise
    from rag.followup_eval import load_followups

    try:
        questions = (load_followups if args.followups else load_questions)(Path(args.questions))
    except BadQuestionFile as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if services.store.count() == 0:
        print(
            f"error: no documents in {services.settings.data_dir}; ingest them first (python -m ingest)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    k = args.k or services.settings.top_k
    if args.followups:
        return _eval_followups(services, args, questions, k)
    if args.answers:
        return _eval_answers(services, args, questions, k)
    modes = MODES if args.mode == "all" else (args.mode,)
    if args.pages_only:
        questions = pages_only(questions)
    summary = summarise(run(services.qa.probe, questions, modes, k), k)
    missing = sorted({q.source for q in questions if q.source} - {r.name for r in services.registry.all()})
    if missing:
        summary["documents_not_indexed"] = missing
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
    else:
        print(format_summary(summary))
        if missing:
            print(f"\nwarning: these sources are not indexed, so their questions cannot be found: {', '.join(missing)}")
    return EXIT_OK


def _eval_answers(services, args, questions, k: int) -> int:
    from rag.answer_eval import format_answers, run_answers, spread, summarise_answers

    mode = services.qa.answer_mode()
    model = "none (extract)" if mode == "extract" else (services.settings.llm_model or "SmolLM2-135M-Instruct")
    summary = summarise_answers(run_answers(services.qa, spread(questions, args.limit), k), model, mode)
    print(json.dumps(summary, ensure_ascii=False, indent=2) if args.json else format_answers(summary))
    return EXIT_OK


def _eval_followups(services, args, cases, k: int) -> int:
    from rag.followup_eval import format_followups, run_followups

    summary = run_followups(services.qa, cases, k, not args.no_model)
    print(json.dumps(summary, ensure_ascii=False, indent=2) if args.json else format_followups(summary))
    return EXIT_OK


def _list(services, as_json: bool) -> int:
    records = services.registry.all()
    if as_json:
        rows = [
            {"file": r.name, "status": r.status, "pages": r.pages, "chunks": r.chunks, "reason": r.reason}
            for r in records
        ]
        print(json.dumps(rows, ensure_ascii=False, indent=2))
    elif not records:
        print("no documents")
    else:
        for r in records:
            print(f"{r.name}\t{r.status}\t{r.pages} pages\t{r.chunks} chunks\t{r.reason or ''}")
    return EXIT_OK


def _status(services, as_json: bool) -> int:
    from rag.status import status_dict, status_lines

    state = services.governor.state()
    reading = services.telemetry.sample()
    if as_json:
        print(json.dumps(status_dict(state, reading), ensure_ascii=False, indent=2))
    else:
        print("\n".join(status_lines(state, reading)))
    return EXIT_OK
