"""Real crashes: `python -m ingest` or a delete killed with SIGKILL midway, then run again, ends like a clean run."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.pdfs import CHIP, VOLCANO, ZEBRA, make_pdf

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def ingest(folder: Path, data_dir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "ZHIKU_DATA_DIR": str(data_dir)}
    return subprocess.Popen(
        [sys.executable, "-m", "ingest", str(folder), "--json", "-q", *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def statuses(data_dir: Path) -> dict[str, str]:
    path = data_dir / "registry.sqlite3"
    if not path.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as conn:
            return dict(conn.execute("SELECT name, status FROM documents").fetchall())
    except sqlite3.OperationalError:
        return {}


def stored(data_dir: Path) -> tuple[set[str], dict]:
    from services import build_services
    from settings import Settings

    services = build_services(Settings(data_dir=data_dir))
    try:
        ids = set(services.store._vectors.get(include=[])["ids"])
        rows = {r.name: (r.status, r.chunks, r.sha256, r.path) for r in services.registry.all()}
        return ids, rows
    finally:
        services.close()


def stored_ids(data_dir: Path) -> tuple[set[str], set[str]]:
    """Chunk ids in Chroma and in the keyword token table, read without zhiku's code (which would bring the
    keyword index in step on open): what the killed and re-run processes left."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.PersistentClient(str(data_dir / "chroma"), settings=ChromaSettings(anonymized_telemetry=False))
    try:
        chroma = set(client.get_collection("zhiku_chunks").get(include=[])["ids"])
    finally:
        client.close()
    with sqlite3.connect(f"file:{data_dir / 'keyword' / 'tokens.sqlite3'}?mode=ro", uri=True) as conn:
        tokens = {row[0] for row in conn.execute("SELECT id FROM chunks")}
    return chroma, tokens


def matrix_ids(data_dir: Path) -> set[str]:
    """Chunk ids in the saved BM25 matrix, which must reflect the token table's latest change."""
    import numpy as np

    keyword = data_dir / "keyword"
    with sqlite3.connect(f"file:{keyword / 'tokens.sqlite3'}?mode=ro", uri=True) as conn:
        generation = int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
    stamp = json.loads((keyword / "bm25" / "zhiku.json").read_text())
    assert stamp["generation"] == generation, "the saved BM25 matrix is stale"
    return set(np.load(keyword / "bm25" / "ids.npy").tolist())


def assert_indexes_hold(data_dir: Path, expected_ids: set[str]) -> None:
    chroma, tokens = stored_ids(data_dir)
    assert chroma == expected_ids
    assert tokens == expected_ids, (len(tokens - expected_ids), len(expected_ids - tokens))
    assert matrix_ids(data_dir) == expected_ids


def kept_copies(data_dir: Path) -> set[str]:
    uploads = data_dir / "uploads"
    return {str(p.relative_to(uploads)) for p in uploads.rglob("*") if p.is_file()}


def _other_types(folder: Path, texts: list[str]) -> None:
    """A Markdown, a GBK text and a Word file of some length, named to come before the PDFs."""
    from docx import Document

    sections = [f"## Part {p}\n\n" + texts[p % 3] * 3 for p in range(30)]
    (folder / "a-guide.md").write_text("# Guide\n\n" + "\n\n".join(sections), encoding="utf-8")
    (folder / "b-notes.txt").write_bytes(("笔记\n\n" + "\n\n".join(t * 3 for t in texts * 10)).encode("gbk"))
    document = Document()
    for p in range(30):
        document.add_heading(f"Chapter {p}", level=1)
        document.add_paragraph(texts[(p + 1) % 3] * 3)
    document.save(str(folder / "c-report.docx"))


def test_sigkill_mid_ingest_then_rerun_equals_a_clean_run(tmp_path):
    folder = tmp_path / "pdfs"
    texts = [ZEBRA, VOLCANO, CHIP]
    for i in range(5):
        make_pdf(folder / f"doc-{i}.pdf", [f"Document {i}, page {p}. " + texts[(i + p) % 3] * 3 for p in range(25)])
    _other_types(folder, texts)  # first in the folder's order: their readers are in the run that is killed

    clean_dir = tmp_path / "clean"
    clean = ingest(folder, clean_dir)
    assert clean.wait(timeout=600) == 0, clean.stderr.read()
    expected_ids, expected_rows = stored(clean_dir)
    assert len(expected_rows) == 8 and len(expected_ids) >= 5 * 25

    crashed_dir = tmp_path / "crashed"
    victim = ingest(folder, crashed_dir)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # kill once one file is done and another is being written
        seen = statuses(crashed_dir)
        if "ingested" in seen.values() and "ingesting" in seen.values():
            break
        assert victim.poll() is None, "the ingest finished before it could be killed"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    interrupted = statuses(crashed_dir)
    assert "ingesting" in interrupted.values()

    rerun = ingest(folder, crashed_dir)
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    assert_indexes_hold(crashed_dir, expected_ids)  # both indexes: no duplicates, none missing
    ids, rows = stored(crashed_dir)
    assert ids == expected_ids
    assert rows == expected_rows
    assert {row[0] for row in rows.values()} == {"ingested"}


@pytest.fixture(scope="module")
def three_documents(tmp_path_factory) -> tuple[Path, set[str]]:
    """A folder of three PDFs and the chunk ids a clean ingest of it stores."""
    root = tmp_path_factory.mktemp("three")
    texts = [ZEBRA, VOLCANO, CHIP]
    for i in range(3):
        make_pdf(root / "pdfs" / f"doc-{i}.pdf", [f"Document {i}, page {p}. " + texts[(i + p) % 3] for p in range(30)])
    clean = ingest(root / "pdfs", root / "clean")
    assert clean.wait(timeout=600) == 0, clean.stderr.read()
    ids = stored_ids(root / "clean")[0]
    assert_indexes_hold(root / "clean", ids)
    return root / "pdfs", ids


@pytest.mark.parametrize("point", ["between-indexes", "mid-refresh"])
def test_sigkill_between_the_two_indexes_then_rerun_holds_the_same_ids_in_both(three_documents, tmp_path, point):
    folder, expected_ids = three_documents
    crashed_dir = tmp_path / "crashed"
    victim = harness(crashed_dir, point, str(folder), "--json", "-q")
    assert victim.returncode == -signal.SIGKILL, victim.stderr
    chroma, tokens = stored_ids(crashed_dir)
    if point == "between-indexes":
        assert chroma < tokens  # the killed batch reached the keyword index only
    else:
        assert chroma == tokens == expected_ids  # all stored, the new matrix never swapped in

    again = ingest(folder, crashed_dir)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert_indexes_hold(crashed_dir, expected_ids)


@pytest.fixture(scope="module")
def uploaded(tmp_path_factory) -> Path:
    """Three documents ingested as the app does it (copies kept under uploads/), the store closed."""
    from ingest.pipeline import SourceFile
    from services import build_services
    from settings import Settings

    root = tmp_path_factory.mktemp("uploaded")
    texts = [ZEBRA, VOLCANO, CHIP]
    files = [
        make_pdf(root / "pdfs" / f"doc-{i}.pdf", [f"Document {i}, page {p}. " + texts[(i + p) % 3] for p in range(40)])
        for i in range(3)
    ]
    services = build_services(Settings(data_dir=root / "data"), keep_uploads=True)
    try:
        report = services.ingestor.ingest([SourceFile(f, f.name) for f in files])
        assert report.ok and all(f.chunks >= 40 for f in report.files)
    finally:
        services.close()
    return root / "data"


@pytest.fixture(scope="module")
def clean_delete(uploaded, tmp_path_factory) -> tuple[Path, set[str], dict, set[str]]:
    """A copy of ``uploaded`` after an uninterrupted delete of doc-1.pdf: its folder, ids and rows; ids before."""
    from services import build_services
    from settings import Settings

    clean_dir = tmp_path_factory.mktemp("clean") / "data"
    shutil.copytree(uploaded, clean_dir)
    services = build_services(Settings(data_dir=clean_dir))
    try:
        assert services.ingestor.delete("doc-1.pdf")
    finally:
        services.close()
    return clean_dir, *stored(clean_dir), stored(uploaded)[0]


def rag(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return _run(data_dir, "-m", "rag", *args)


def harness(data_dir: Path, point: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m rag ARGS`` or ``python -m ingest ARGS`` that SIGKILLs itself at ``point`` (tests.crash_harness)."""
    return _run(data_dir, "-m", "tests.crash_harness", point, *args)


def _run(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ZHIKU_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "point, rerun",
    [
        ("before-chunks", ["delete", "doc-1.pdf"]),
        ("mid-chunks", ["delete", "doc-1.pdf"]),
        ("mid-chunks", ["list", "--json"]),  # any command finishes the delete, not only a second delete
        ("before-registry", ["delete", "doc-1.pdf"]),
    ],
)
def test_sigkill_during_a_delete_then_rerun_equals_a_clean_delete(uploaded, clean_delete, tmp_path, point, rerun):
    clean_dir, expected_ids, expected_rows, before_ids = clean_delete
    assert set(expected_rows) == {"doc-0.pdf", "doc-2.pdf"} and expected_ids < before_ids

    crashed_dir = tmp_path / "crashed"
    shutil.copytree(uploaded, crashed_dir)
    victim = harness(crashed_dir, point, "delete", "doc-1.pdf")
    assert victim.returncode == -signal.SIGKILL, victim.stderr
    assert statuses(crashed_dir)["doc-1.pdf"] == "deleting"
    doomed = before_ids - expected_ids
    left = stored(crashed_dir)[0] - expected_ids  # the reopened store is readable, part way through
    assert {"before-chunks": left == doomed, "mid-chunks": 0 < len(left) < len(doomed)}.get(point, left == set())
    copy_left = any(name.endswith("/doc-1.pdf") for name in kept_copies(crashed_dir))
    assert copy_left == (point != "before-registry")  # the copy goes after the chunks, before the row

    again = rag(crashed_dir, *rerun)
    assert again.returncode == 0, again.stderr
    assert "finished the interrupted delete of doc-1.pdf" in again.stderr
    if rerun[0] == "delete":
        assert "deleted doc-1.pdf" in again.stdout
    else:
        assert [row["file"] for row in json.loads(again.stdout)] == ["doc-0.pdf", "doc-2.pdf"]
    assert_indexes_hold(crashed_dir, expected_ids)
    assert stored(crashed_dir) == (expected_ids, expected_rows)
    assert kept_copies(crashed_dir) == kept_copies(clean_dir) and len(kept_copies(clean_dir)) == 2
