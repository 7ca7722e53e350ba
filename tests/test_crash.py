"""A real crash: `python -m ingest` killed with SIGKILL midway, then run again, ends exactly like a clean run."""

import os
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
        rows = {r.name: (r.status, r.chunks, r.sha256) for r in services.registry.all()}
        return ids, rows
    finally:
        services.close()


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
    assert rows == {name: row for name, row in expected_rows.items()}
    assert {status for status, _, _ in rows.values()} == {"ingested"}
