"""One store for a team: a real ``chroma run`` on loopback, two zhiku front-ends with their own data directories
(registry, keyword index) sharing it through ``ZHIKU_CHROMA_URL``; what one stores or deletes, the other sees
without a restart. And the failures: the server down at start, another embedder, a rebuild from a front-end."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ingest.pipeline import SourceFile
from rag.chroma_client import ChromaServerUnavailable
from tests.fixtures.browser import free_port

pytestmark = pytest.mark.slow
ZEBRAS = "When do zebras cross the Mara River?"


@contextmanager
def running_chroma(folder: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """``chroma run`` (the CLI in chromadb's wheel) on a free loopback port: its URL and process once it answers."""
    port = free_port()
    log = (folder / "chroma.log").open("wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("chroma")), "run", "--path", str(folder / "server-store"),
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                with opener.open(f"{url}/api/v2/heartbeat", timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"chroma run did not start: {(folder / 'chroma.log').read_text(errors='replace')}")
                time.sleep(0.2)
        yield url, process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=15)
        log.close()


@pytest.fixture
def chroma_server(tmp_path):
    with running_chroma(tmp_path) as (url, _):
        yield url


def front_end(settings, tmp_path: Path, name: str, url: str):
    from services import build_services

    return build_services(settings.model_copy(update={"data_dir": tmp_path / name, "chroma_url": url}))


def test_two_front_ends_share_one_store_without_a_restart(settings, tmp_path, chroma_server, english_pdf, chinese_pdf):
    a = front_end(settings, tmp_path, "front-a", chroma_server)
    b = front_end(settings, tmp_path, "front-b", chroma_server)
    try:
        assert b.qa.ask(ZEBRAS, generate=False).sources == []  # nothing stored yet
        report = a.ingestor.ingest(
            [SourceFile(english_pdf, english_pdf.name), SourceFile(chinese_pdf, chinese_pdf.name)]
        )
        assert report.ok
        assert not (tmp_path / "front-a" / "chroma").exists()  # the chunks went to the server
        answer = b.qa.ask(ZEBRAS, generate=False)  # B, open all along, sees A's documents
        assert (answer.sources[0].file, answer.sources[0].page) == ("animals.pdf", 2)
        chinese = b.qa.ask("长城全长多少公里？", generate=False).sources[0]
        assert chinese.file == "中国文化.pdf" and "公里" in chinese.text
        assert {r.name for r in b.registry.all()} == {"animals.pdf", "中国文化.pdf"}  # B's registry follows
        row = b.registry.get("animals.pdf")
        assert row.status == "ingested" and row.pages == 3 and row.chunks == a.registry.get("animals.pdf").chunks
        stored = set(b.store._vectors._collection.get(include=[])["ids"])
        assert b.store.keyword.ids() == stored  # B's keyword index holds exactly the shared chunks

        assert a.ingestor.delete("animals.pdf")
        sources = b.qa.ask(ZEBRAS, generate=False).sources
        assert all(s.file != "animals.pdf" for s in sources)
        assert {r.name for r in b.registry.all()} == {"中国文化.pdf"}
        assert b.store.keyword.ids() == set(b.store._vectors._collection.get(include=[])["ids"])
    finally:
        a.close()
        b.close()


def test_a_front_end_started_later_finds_the_documents(settings, tmp_path, chroma_server, english_pdf):
    a = front_end(settings, tmp_path, "front-a", chroma_server)
    try:
        a.ingestor.ingest([SourceFile(english_pdf, english_pdf.name)])
    finally:
        a.close()
    late = front_end(settings, tmp_path, "late", chroma_server)
    try:
        assert [r.name for r in late.registry.all()] == ["animals.pdf"]
        assert late.qa.ask(ZEBRAS, generate=False).sources[0].file == "animals.pdf"
    finally:
        late.close()


def test_a_server_that_is_down_another_embedder_and_a_rebuild_are_refused(
    settings, tmp_path, chroma_server, monkeypatch, capsys
):
    down = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ChromaServerUnavailable, match=f"The Chroma server at {down} is not reachable"):
        front_end(settings, tmp_path, "front-down", down)

    from rag.store import ChunkStore, EmbedderMismatch

    a = front_end(settings, tmp_path, "front-a", chroma_server)
    try:
        with pytest.raises(EmbedderMismatch, match="was built with the embedder"):
            ChunkStore(tmp_path / "other" / "chroma", a.embedder, "another-embedder", server_url=chroma_server)
    finally:
        a.close()

    from ingest.cli import EXIT_USAGE, main

    monkeypatch.setenv("ZHIKU_CHROMA_URL", chroma_server)
    assert main(["--rebuild", "--data-dir", str(tmp_path / "front-a")]) == EXIT_USAGE
    assert "other front-ends share" in capsys.readouterr().err


def test_a_server_that_stops_is_named_at_the_next_question(settings, tmp_path, english_pdf):
    with running_chroma(tmp_path) as (url, process):
        a = front_end(settings, tmp_path, "front-a", url)
        try:
            a.ingestor.ingest([SourceFile(english_pdf, english_pdf.name)])
            process.terminate()
            process.wait(timeout=15)
            with pytest.raises(ChromaServerUnavailable, match=f"The Chroma server at {url} stopped answering"):
                a.qa.ask(ZEBRAS, generate=False)
        finally:
            a.close()
