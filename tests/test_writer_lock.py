"""One writer per data directory: real processes holding, waiting for, refused by and taking over the lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag.writer_lock import WriterBusy, WriterLock

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
HOLDER = (
    "import sys, time\n"
    "from rag.writer_lock import WriterLock\n"
    "with WriterLock(sys.argv[1]).hold('a test holding it'):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(120)\n"
)


def _env(data_dir: Path) -> dict:
    return {**os.environ, "ZHIKU_DATA_DIR": str(data_dir)}


def _holder(data_dir: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data_dir)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "held"
    return process


def _run(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, env=_env(data_dir), capture_output=True, text=True, timeout=300
    )


def test_in_one_process_a_second_thread_is_refused_and_holds_nest(tmp_path):
    import threading

    lock = WriterLock(tmp_path)
    with lock.hold("outer"):
        with lock.hold("inner"):  # the same thread: no deadlock
            assert "outer" in (tmp_path / "writer.lock").read_text()
        refused = []

        def other() -> None:
            try:
                with lock.hold("other", wait=False):
                    pass
            except WriterBusy as exc:
                refused.append(str(exc))

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert refused
    with lock.hold("again", wait=False):  # free again
        pass


def test_a_second_writer_refuses_or_waits_readers_go_on_and_a_dead_holder_is_taken_over(tmp_path):
    data = tmp_path / "data"
    first, second = tmp_path / "first.md", tmp_path / "second.md"
    first.write_text("# Pumps\n\nThe X200 pump is serviced every 90 days.\n", encoding="utf-8")
    second.write_text("# Gates\n\nThe east gate closes at 9 pm.\n", encoding="utf-8")
    assert _run("ingest", str(first), "-q", data_dir=data).returncode == 0

    holder = _holder(data)
    try:
        refused = _run("ingest", str(second), "-q", "--no-wait", data_dir=data)
        assert refused.returncode == 3
        assert f"process {holder.pid} (a test holding it" in refused.stderr
        delete = _run("rag", "delete", "first.md", "--no-wait", data_dir=data)
        assert delete.returncode == 3 and "another zhiku process is writing" in delete.stderr

        # readers go on while it is held
        found = _run("rag", "ask", "How often is the X200 pump serviced?", "--retrieve-only", "--json", data_dir=data)
        assert found.returncode == 0, found.stderr
        assert json.loads(found.stdout)["sources"][0]["file"] == "first.md"

        # a writer that may wait says for whom, and goes on once the holder is gone, even killed
        waiting = subprocess.Popen(
            [sys.executable, "-m", "ingest", str(second), "-q", "--json"],
            cwd=ROOT, env=_env(data), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        message = ""
        while "waiting for it to finish" not in message and time.monotonic() < deadline:
            message += waiting.stderr.readline()
        assert f"process {holder.pid}" in message and "waiting for it to finish" in message
        assert waiting.poll() is None  # still waiting
        holder.send_signal(signal.SIGKILL)  # no release: the kernel drops the dead process's lock
        holder.wait()
        out, _ = waiting.communicate(timeout=300)
        assert waiting.returncode == 0
        assert json.loads(out)["files"][0]["status"] == "ingested"
    finally:
        if holder.poll() is None:
            holder.kill()
    listed = _run("rag", "list", "--json", data_dir=data)
    assert sorted(d["file"] for d in json.loads(listed.stdout)) == ["first.md", "second.md"]
