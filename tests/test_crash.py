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


def kept_copies(data_dir: Path) -> set[str]:
    uploads = data_dir / "uploads"
    return {str(p.relative_to(uploads)) for p in uploads.rglob("*") if p.is_file()}


def test_sigkill_mid_ingest_then_rerun_equals_a_clean_run(tmp_path):
    folder = tmp_path / "pdfs"
    texts = [ZEBRA, VOLCANO, CHIP]
    for i in range(5):
        make_pdf(folder / f"doc-{i}.pdf", [f"Document {i}, page {p}. " + texts[(i + p) % 3] * 3 for p in range(25)])

    clean_dir = tmp_path / "clean"
    clean = ingest(folder, clean_dir)
    assert clean.wait(timeout=600) == 0, clean.stderr.read()
    expected_ids, expected_rows = stored(clean_dir)
    assert len(expected_rows) == 5 and len(expected_ids) >= 5 * 25

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
    ids, rows = stored(crashed_dir)
    assert ids == expected_ids  # no duplicates, none missing
    assert rows == expected_rows
    assert {row[0] for row in rows.values()} == {"ingested"}


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


def rag(data_dir: Path, *args: str, harness: str | None = None) -> subprocess.CompletedProcess:
    module = ["-m", "tests.crash_harness", harness] if harness else ["-m", "rag"]
    env = {**os.environ, "ZHIKU_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, *module, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


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
    victim = rag(crashed_dir, "delete", "doc-1.pdf", harness=point)
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
    assert stored(crashed_dir) == (expected_ids, expected_rows)
    assert kept_copies(crashed_dir) == kept_copies(clean_dir) and len(kept_copies(clean_dir)) == 2
