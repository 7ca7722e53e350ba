"""A store damaged beyond repair: zhiku says so (never crashes) and rebuilds it from the documents it knows."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.pdfs import GREAT_WALL, VOLCANO, make_pdf

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
MANY_PAGES = 1100  # over Chroma's sync threshold (1,000), so the HNSW index files are written to disk


def hnsw_file(data_dir: Path, name: str) -> Path:
    (segment,) = [p for p in (data_dir / "chroma").iterdir() if p.is_dir()]
    return segment / name


def overwrite_with_noise(path: Path, size: int | None = None) -> None:
    path.write_bytes(os.urandom(path.stat().st_size if size is None else size))


DAMAGE = {
    "chroma.sqlite3 overwritten": lambda d: overwrite_with_noise(d / "chroma" / "chroma.sqlite3", 8192),
    "chroma.sqlite3 truncated": lambda d: os.truncate(d / "chroma" / "chroma.sqlite3", 100_000),
    "HNSW vectors randomised (crashes Chroma's reader)": lambda d: overwrite_with_noise(
        hnsw_file(d, "data_level0.bin")
    ),
    "HNSW header randomised": lambda d: overwrite_with_noise(hnsw_file(d, "header.bin")),
    "HNSW metadata randomised": lambda d: overwrite_with_noise(hnsw_file(d, "index_metadata.pickle"), 5000),
    "registry overwritten": lambda d: overwrite_with_noise(d / "registry.sqlite3", 8192),
}


@pytest.fixture(scope="module")
def healthy(tmp_path_factory) -> Path:
    """Three documents: an upload whose copy is kept, a Chinese file ingested in place, and one whose file is gone."""
    from ingest.pipeline import SourceFile
    from services import build_services
    from settings import Settings

    root = tmp_path_factory.mktemp("healthy")
    data = root / "data"
    notes = [f"Note {i}: zebras cross the Mara river." for i in range(MANY_PAGES)]
    many = make_pdf(root / "upload" / "notes.pdf", notes)
    chinese = make_pdf(root / "pdfs" / "长城简介.pdf", [GREAT_WALL * 3, GREAT_WALL], chinese=True)
    gone = make_pdf(root / "pdfs" / "volcano.pdf", [VOLCANO * 2])
    for keep, files in ((True, [many]), (False, [chinese, gone])):
        services = build_services(Settings(data_dir=data), keep_uploads=keep)
        try:
            assert services.ingestor.ingest([SourceFile(f, f.name) for f in files]).ok
        finally:
            services.close()
    gone.unlink()
    assert hnsw_file(data, "data_level0.bin").stat().st_size > 0
    return data


def snapshot(data_dir: Path) -> tuple[set[str], dict[str, tuple]]:
    from services import build_services
    from settings import Settings

    services = build_services(Settings(data_dir=data_dir))
    try:
        ids = set(services.store._vectors.get(include=[])["ids"])
        return ids, {r.name: (r.status, r.sha256, r.chunks) for r in services.registry.all()}
    finally:
        services.close()


def damaged_copy(healthy: Path, tmp_path: Path, damage: str) -> Path:
    data = tmp_path / "damaged"
    shutil.copytree(healthy, data)
    DAMAGE[damage](data)
    return data


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_store_is_reported_not_crashed(healthy, tmp_path, damage):
    from rag.damage import StoreDamaged
    from services import build_services
    from settings import Settings

    data = damaged_copy(healthy, tmp_path, damage)
    with pytest.raises(StoreDamaged) as caught:
        build_services(Settings(data_dir=data))  # this very process survives, even the reader crash
    part = "document registry" if damage.startswith("registry") else "chunk store"
    assert caught.value.part == part
    message = str(caught.value)
    assert f"the {part} in {data}" in message and "python -m ingest --rebuild" in message
    if "crashes" in damage:
        assert "SIGSEGV" in message


def run(module: str, data_dir: Path, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "ZHIKU_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_commands_say_the_store_is_damaged_then_rebuild_restores_it(healthy, tmp_path):
    data = damaged_copy(healthy, tmp_path, "HNSW vectors randomised (crashes Chroma's reader)")
    listing = run("rag", Path(data.name), "list", cwd=data.parent)  # a data dir relative to another folder
    assert listing.returncode == 2
    assert "chunk store" in listing.stderr and "damaged" in listing.stderr and "Traceback" not in listing.stderr

    rebuilt = run("ingest", data, "--rebuild", "--json", "-q")
    assert rebuilt.returncode == 1, rebuilt.stderr  # one document cannot come back: its file is gone
    result = json.loads(rebuilt.stdout)
    statuses = {f["file"]: (f["status"], f["reason"]) for f in result["files"]}
    assert statuses["notes.pdf"] == ("ingested", None) and statuses["长城简介.pdf"] == ("ingested", None)
    assert statuses["volcano.pdf"][0] == "rejected" and "no longer at" in statuses["volcano.pdf"][1]
    (aside,) = result["set_aside"]
    assert Path(aside).name.startswith("chroma.damaged-") and (Path(aside) / "chroma.sqlite3").is_file()

    ids, rows = snapshot(data)
    healthy_ids, healthy_rows = snapshot(healthy)
    gone_sha = healthy_rows["volcano.pdf"][1]
    assert ids == {i for i in healthy_ids if not i.startswith(gone_sha)}  # the same chunks, the lost one's aside
    assert rows["notes.pdf"] == healthy_rows["notes.pdf"] and rows["长城简介.pdf"] == healthy_rows["长城简介.pdf"]
    assert rows["volcano.pdf"][0] == "rejected"

    answer = run("rag", data, "ask", "长城全长多少公里？", "--retrieve-only", "--json")
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["sources"][0]["file"] == "长城简介.pdf"
    again = run("ingest", data, "--rebuild")
    assert again.returncode == 0 and "nothing to rebuild" in again.stdout


def test_a_lost_registry_is_refilled_from_uploads_and_the_chunk_store(healthy, tmp_path):
    from ingest.rebuild import known_documents, rebuild
    from rag.damage import StoreDamaged
    from services import build_services
    from settings import Settings

    data = damaged_copy(healthy, tmp_path, "registry overwritten")
    settings = Settings(data_dir=data)
    assert [d.name for d in known_documents(settings)] == ["notes.pdf"]  # only the kept upload is known for sure

    def power_cut():
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):  # the first attempt stops once the registry is aside
        rebuild(settings, power_cut)
    (aside,) = [p for p in data.iterdir() if p.name.startswith("registry.damaged-")]
    assert (aside / "registry.sqlite3").is_file()  # one folder, the database under its own name
    with pytest.raises(StoreDamaged, match="a rebuild was started and did not finish"):
        build_services(settings)  # the half-filled store is refused, not served as if complete
    assert "notes.pdf" in [d.name for d in known_documents(settings)]

    result = rebuild(settings, lambda: build_services(settings, keep_uploads=True, rebuilding=True))
    try:
        assert [f.file for f in result.report.files] == ["notes.pdf"]  # read again from its kept copy
        assert sorted(result.registered) == ["volcano.pdf", "长城简介.pdf"]  # their chunks were intact
        assert result.set_aside == []  # the first attempt set it aside already
    finally:
        result.services.close()
    ids, rows = snapshot(data)
    healthy_ids, healthy_rows = snapshot(healthy)
    assert ids == healthy_ids and rows == healthy_rows


def test_a_forced_rebuild_embeds_every_document_again(data_dir, pdf_dir):
    from ingest.pipeline import SourceFile
    from ingest.rebuild import rebuild
    from services import build_services
    from settings import Settings

    settings = Settings(data_dir=data_dir)
    files = [make_pdf(pdf_dir / "volcano.pdf", [VOLCANO]), make_pdf(pdf_dir / "长城.pdf", [GREAT_WALL], chinese=True)]
    services = build_services(settings)
    try:
        assert services.ingestor.ingest([SourceFile(f, f.name) for f in files]).ok
    finally:
        services.close()
    before = snapshot(data_dir)

    result = rebuild(settings, lambda: build_services(settings, rebuilding=True), force=True)
    try:
        assert sorted(f.file for f in result.report.files) == ["volcano.pdf", "长城.pdf"]
        assert result.set_aside == []  # every document came back: the replaced store is not kept
    finally:
        result.services.close()
    assert snapshot(data_dir) == before
    assert sorted(p.name for p in data_dir.iterdir()) == ["chroma", "keyword", "registry.sqlite3", "writer.lock"]
