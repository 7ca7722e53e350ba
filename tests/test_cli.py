"""Both commands in-process (like CliRunner) and as real subprocesses sharing one data directory."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.cli import main as ingest_main
from rag.cli import main as rag_main
from tests.fixtures.pdfs import make_png_named_pdf

ROOT = Path(__file__).resolve().parents[1]


def test_ingest_folder_json(pdf_dir, english_pdf, chinese_pdf, capsys):
    (pdf_dir / "nested").mkdir()
    make_png_named_pdf(pdf_dir / "nested" / "fake.PDF")
    (pdf_dir / "notes.xyz").write_text("a type zhiku does not read: not picked up from a folder")
    code = ingest_main([str(pdf_dir), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1  # one rejected, the others ingested
    files = {f["file"]: f for f in out["files"]}
    assert set(files) == {"animals.pdf", "中国文化.pdf", "fake.PDF"}
    assert files["animals.pdf"] == {
        "file": "animals.pdf",
        "status": "ingested",
        "reason": None,
        "pages": 3,
        "chunks": files["animals.pdf"]["chunks"],
    }
    assert files["fake.PDF"]["status"] == "rejected"
    assert files["fake.PDF"]["reason"] == "not a PDF: the content is a PNG image"
    assert out["totals"]["ingested"] == 2 and out["totals"]["rejected"] == 1
    assert out["totals"]["chunks"] == files["animals.pdf"]["chunks"] + files["中国文化.pdf"]["chunks"]

    assert ingest_main([str(english_pdf), "--json", "-q"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["files"][0]["status"] == "unchanged"


def test_ingest_table_and_usage_errors(english_pdf, tmp_path, capsys):
    assert ingest_main([str(english_pdf)]) == 0
    captured = capsys.readouterr()
    assert "animals.pdf" in captured.out and "ingested" in captured.out
    assert "1 file(s): 1 ingested" in captured.out
    assert ingest_main([str(tmp_path / "missing.pdf")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert ingest_main([]) == 2
    assert ingest_main(["--bogus", str(english_pdf)]) == 2


def test_ask_json_and_retrieve_only(english_pdf, chinese_pdf, capsys):
    ingest_main([str(english_pdf), str(chinese_pdf), "-q"])
    capsys.readouterr()
    assert rag_main(["ask", "长城全长多少公里？", "--retrieve-only", "--json", "--k", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer"] is None
    assert len(out["sources"]) == 2
    assert out["sources"][0]["file"] == "中国文化.pdf" and out["sources"][0]["page"] == 2
    keys = {"file", "page", "score", "text", "found_by", "keyword_score", "section", "evidence", "location", "ocr"}
    assert set(out["sources"][0]) == keys
    best = out["sources"][0]["evidence"][0]
    assert out["sources"][0]["text"][best["start"] : best["end"]] == best["text"] and "公里" in best["text"]
    assert "keyword" in out["sources"][0]["found_by"] and out["retrieval_mode"] == "hybrid"
    assert "embed_ms" in out["timings"]
    for mode, index in [("keyword", "keyword"), ("dense", "dense")]:
        assert rag_main(["ask", "长城全长多少公里？", "--retrieve-only", "--json", "--mode", mode]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["retrieval_mode"] == mode and {tuple(s["found_by"]) for s in out["sources"]} == {(index,)}
    assert rag_main(["ask", "长城全长多少公里？", "--answer-mode", "extract", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer_mode"] == "extract" and out["model"] is None and "两万一千多公里" in out["answer"]
    assert out["extract"][0]["file"] == "中国文化.pdf" and out["extract"][0]["page"] == 2
    assert rag_main(["ask", "长城全长多少公里？", "--answer-mode", "extract"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("From your documents / 来自你的文档:\n  > ") and "中国文化.pdf p. 2" in text
    assert rag_main(["ask", "question", "--mode", "fuzzy"]) == 2
    assert rag_main(["ask", "question", "--k", "0"]) == 2
    assert rag_main(["ask"]) == 2


@pytest.mark.slow
def test_ask_generates_with_sources(english_pdf, capsys):
    ingest_main([str(english_pdf), "-q"])
    capsys.readouterr()
    assert rag_main(["ask", "When do zebras cross the Mara River?", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer"]
    assert out["sources"][0] == {**out["sources"][0], "file": "animals.pdf", "page": 2}
    assert out["timings"]["first_token_ms"] > 0
    assert rag_main(["ask", "When do zebras cross the Mara River?"]) == 0
    text = capsys.readouterr().out
    assert "Sources:" in text and "animals.pdf, p. 2" in text


def test_list_and_delete(english_pdf, capsys):
    ingest_main([str(english_pdf), "-q"])
    capsys.readouterr()
    assert rag_main(["list", "--json"]) == 0
    assert [d["file"] for d in json.loads(capsys.readouterr().out)] == ["animals.pdf"]
    assert rag_main(["delete", "animals.pdf"]) == 0
    assert rag_main(["delete", "animals.pdf"]) == 1
    capsys.readouterr()
    rag_main(["list"])
    assert capsys.readouterr().out.strip() == "no documents"


def run(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ZHIKU_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_commands_as_subprocesses_share_the_data_dir(pdf_dir, english_pdf, chinese_pdf, tmp_path):
    shared = tmp_path / "shared-data"
    empty = pdf_dir / "empty.pdf"
    empty.write_bytes(b"")
    ingested = run("ingest", str(pdf_dir), "--json", data_dir=shared)
    assert ingested.returncode == 1, ingested.stderr
    summary = json.loads(ingested.stdout)
    assert {f["file"]: f["status"] for f in summary["files"]} == {
        "animals.pdf": "ingested",
        "中国文化.pdf": "ingested",
        "empty.pdf": "rejected",
    }
    assert "files" in ingested.stderr  # the progress bar went to stderr

    asked = run("rag", "ask", "When do zebras cross the Mara River?", "--json", data_dir=shared)
    assert asked.returncode == 0, asked.stderr
    answer = json.loads(asked.stdout)
    assert answer["answer"] and answer["sources"][0]["file"] == "animals.pdf"

    empty.unlink()
    again = run("ingest", str(pdf_dir), "--json", "-q", data_dir=shared)
    assert again.returncode == 0
    assert {f["status"] for f in json.loads(again.stdout)["files"]} == {"unchanged"}


def test_changed_embedder_is_refused_with_a_clear_message(english_pdf, monkeypatch, capsys):
    from models.packaged import minilm_dir

    assert ingest_main([str(english_pdf), "-q"]) == 0
    monkeypatch.setenv("ZHIKU_EMBED_MODEL", str(minilm_dir()))  # another model id than the store was built with
    capsys.readouterr()
    assert rag_main(["ask", "zebras", "--retrieve-only"]) == 2
    err = capsys.readouterr().err
    assert "built with the embedder 'all-MiniLM-L6-v2'" in err and "ZHIKU_DATA_DIR" in err
