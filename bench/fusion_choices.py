"""How the retrieval design was chosen: stemming, fusion rule and weights, one chunk per page, measured.

    python bench/fusion_choices.py bench/eval/questions.jsonl --data-dir DATA_DIR

DATA_DIR holds the eval documents, ingested (bench/eval/prepare_docs.sh, then python -m ingest). Every chunk
and its vector are read from the store once; BM25 is built in memory for each tokenizer variant, and each
variant ranks all chunks exactly (no HNSW), so the table compares rules, not index approximations. Recall@k
counts a question when the gold page is among the first k chunks, as ``python -m rag eval`` does.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.ingest_bench import table  # noqa: E402
from offline import enforce_offline  # noqa: E402

enforce_offline()

from rag import tokenizer  # noqa: E402
from rag.evaluation import load_questions  # noqa: E402
from rag.retriever import POOL  # noqa: E402
from rag.store import StoredChunk, indexed_text  # noqa: E402
from rag.tokenizer import is_chinese  # noqa: E402


def stemmed_by(stem):
    def tokenize(text: str) -> list[str]:
        saved, tokenizer._stem = tokenizer._stem, stem
        try:
            return tokenizer.tokenize(text)
        finally:
            tokenizer._stem = saved

    return tokenize


def plurals(word: str) -> str:
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "ses")):
        return word[:-2]
    return word[:-1] if word.endswith("s") and not word.endswith(("ss", "us", "is")) else word


def linear(w_en: float, w_zh: float):
    """The shipped rule (rag.fusion): w * cosine + (1 - w) * BM25 / best BM25, over both pools."""

    def rank(cos, bm25, chinese):
        pool = np.union1d(np.argsort(-cos)[:POOL], np.argsort(-bm25)[:POOL])
        w = w_zh if chinese else w_en
        score = np.full(len(cos), -np.inf)
        score[pool] = w * cos[pool] + (1 - w) * bm25[pool] / (bm25[pool].max() or 1.0)
        return score

    return rank


def rrf(w_en: float, w_zh: float, k: int = 60):
    def rank(cos, bm25, chinese):
        w = w_zh if chinese else w_en
        score = np.zeros(len(cos))
        score[np.argsort(-cos)[:POOL]] += w / (k + np.arange(1, POOL + 1))
        top = np.argsort(-bm25)[:POOL]
        top = top[bm25[top] > 0]
        score[top] += (1 - w) / (k + np.arange(1, len(top) + 1))
        return score

    return rank


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("questions")
    p.add_argument("--data-dir", required=True)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import bm25s
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    from models.embedder import Embedder

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    client = chromadb.PersistentClient(str(Path(args.data_dir) / "chroma"), ChromaSettings(anonymized_telemetry=False))
    got = client.get_collection("zhiku_chunks").get(include=["documents", "metadatas", "embeddings"])
    texts, metas = got["documents"], got["metadatas"]
    vectors = np.asarray(got["embeddings"], dtype=np.float32)
    chunks = [StoredChunk(t, m["source"], int(m["page"]), 0, 0.0) for t, m in zip(texts, metas)]
    questions = [q for q in load_questions(Path(args.questions)) if q.answerable]
    asked = np.asarray(Embedder().embed_documents([q.question for q in questions]), dtype=np.float32)

    def measure(tokenize, rank, one_per_page=False):
        index = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
        index.index([tokenize(indexed_text(t, m)) for t, m in zip(texts, metas)], show_progress=False)
        hits = {"en": [], "zh": []}
        for q, vector in zip(questions, asked):
            words = [index.vocab_dict[t] for t in tokenize(q.question) if t in index.vocab_dict]
            bm25 = index.get_scores(words) if words else np.zeros(len(texts))
            order, pages = np.argsort(-rank(vectors @ vector, bm25, is_chinese(q.question))), set()
            if one_per_page:
                order = [i for i in order[:300] if (key := (metas[i]["source"], metas[i]["page"])) not in pages
                         and not pages.add(key)]  # fmt: skip
            hits[q.lang].append(any(q.answered_by(chunks[i]) for i in order[:5]))
        return [round(sum(v) / len(v), 3) for v in hits.values()]

    dense, keyword = (lambda cos, bm25, zh: cos), (lambda cos, bm25, zh: bm25)
    snowball, plain = tokenizer.tokenize, stemmed_by(lambda w: w)
    rows = [
        ["dense alone", *measure(snowball, dense)],
        ["BM25 alone, no stemming", *measure(plain, keyword)],
        ["BM25 alone, plurals only", *measure(stemmed_by(plurals), keyword)],
        ["BM25 alone, Snowball (shipped)", *measure(snowball, keyword)],
        ["hybrid linear 0.6/0.2, no stemming", *measure(plain, linear(0.6, 0.2))],
        ["RRF, equal weights", *measure(snowball, rrf(0.5, 0.5))],
        ["RRF, Chinese dense weight 0.1", *measure(snowball, rrf(0.5, 0.1))],
        *[[f"linear {we}/{wz}", *measure(snowball, linear(we, wz))] for we, wz in [(0.5, 0.5), (0.5, 0.2), (0.7, 0.2)]],
        ["linear 0.6/0.2", *measure(snowball, linear(0.6, 0.2))],
        ["linear 0.6/0.2, one chunk per page (shipped)", *measure(snowball, linear(0.6, 0.2), one_per_page=True)],
    ]
    counts = {lang: sum(q.lang == lang for q in questions) for lang in ("en", "zh")}
    print(table("Recall@5 by design choice", ["variant", f"en ({counts['en']})", f"zh ({counts['zh']})"], rows))


if __name__ == "__main__":
    main()
