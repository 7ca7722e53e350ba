"""Mutated files of every type the readers take (PDF, Word, Markdown, text, HTML, image) fed to the real ingest
path: never a crash; every failure is a `rejected` with a reason."""

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.pipeline import SourceFile
from tests.fixtures.pdfs import ZEBRA, make_pdf

FOLDER = Path(tempfile.mkdtemp(prefix="zhiku-fuzz-"))


def _bases() -> dict[str, bytes]:
    """One valid file of each type the readers take (an image without text: OCR finds nothing, fast)."""
    from docx import Document
    from PIL import Image

    document = Document()
    document.add_heading("Zebras", level=1)
    document.add_paragraph(ZEBRA)
    document.save(str(FOLDER / "base.docx"))
    Image.new("RGB", (64, 48), "white").save(FOLDER / "base.png")
    return {
        ".pdf": make_pdf(FOLDER / "base.pdf", ["Zebras.", ZEBRA]).read_bytes(),
        ".docx": (FOLDER / "base.docx").read_bytes(),
        ".md": f"# Zebras\n\n## Migration\n\n{ZEBRA}\n".encode(),
        ".txt": ("斑马迁徙\n\n" + ZEBRA).encode("gb18030"),
        ".html": f"<html><head><meta charset='utf-8'></head><body><h1>Zebras</h1><p>{ZEBRA}</p></body></html>".encode(),
        ".png": (FOLDER / "base.png").read_bytes(),
    }


BASES = _bases()
at = st.floats(0, 1, exclude_max=True)  # a position, as a share of the file's length
mutation = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.tuples(at, st.integers(0, 255)), max_size=40)),
    st.tuples(st.just("truncate"), at),
    st.tuples(st.just("insert"), st.tuples(at, st.binary(max_size=200))),
    st.tuples(st.just("delete"), st.tuples(at, st.integers(1, 500))),
)


def mutate(original: bytes, kind_and_args) -> bytes:
    kind, args = kind_and_args
    data = bytearray(original)

    def index(share: float) -> int:
        return int(share * len(original))

    if kind == "flip":
        for share, value in args:
            data[index(share)] = value
    elif kind == "truncate":
        del data[index(args) :]
    elif kind == "insert":
        share, blob = args
        data[index(share) : index(share)] = blob
    else:
        share, length = args
        del data[index(share) : index(share) + length]
    return bytes(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(st.tuples(st.sampled_from(sorted(BASES)), mutation), min_size=1, max_size=3))
def test_mutated_files_are_ingested_or_rejected_with_a_reason(services, tmp_path, batch):
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    sources = []
    for i, (suffix, change) in enumerate(batch):
        path = folder / f"fuzz-{i}{suffix}"
        path.write_bytes(mutate(BASES[suffix], change))
        sources.append(SourceFile(path, path.name))
    report = services.ingestor.ingest(sources)  # must not raise
    for result in report.files:
        assert result.status in {"ingested", "updated", "unchanged", "rejected"}
        if result.status == "rejected":
            assert result.reason and len(result.reason) > 5
    # the store holds exactly the chunks of the documents the registry says are ingested
    indexed = {r.name: r.chunks for r in services.registry.all() if r.status == "ingested"}
    for name, chunks in indexed.items():
        assert len(services.store.ids_for(name)) == chunks
    assert services.store.count() == sum(indexed.values())
