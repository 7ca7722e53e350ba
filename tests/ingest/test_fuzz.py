"""Mutated PDFs fed to the real ingest path: never a crash; every failure is a `rejected` with a reason."""

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.pipeline import SourceFile
from tests.fixtures.pdfs import ZEBRA, make_pdf

BASE = make_pdf(Path(tempfile.mkdtemp(prefix="zhiku-fuzz-")) / "base.pdf", ["Zebras.", ZEBRA])
ORIGINAL = BASE.read_bytes()

mutation = st.one_of(
    st.tuples(
        st.just("flip"), st.lists(st.tuples(st.integers(0, len(ORIGINAL) - 1), st.integers(0, 255)), max_size=40)
    ),
    st.tuples(st.just("truncate"), st.integers(0, len(ORIGINAL))),
    st.tuples(st.just("insert"), st.tuples(st.integers(0, len(ORIGINAL)), st.binary(max_size=200))),
    st.tuples(st.just("delete"), st.tuples(st.integers(0, len(ORIGINAL)), st.integers(1, 500))),
)


def mutate(kind_and_args) -> bytes:
    kind, args = kind_and_args
    data = bytearray(ORIGINAL)
    if kind == "flip":
        for position, value in args:
            data[position] = value
    elif kind == "truncate":
        del data[args:]
    elif kind == "insert":
        position, blob = args
        data[position:position] = blob
    else:
        position, length = args
        del data[position : position + length]
    return bytes(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(mutation, min_size=1, max_size=3))
def test_mutated_pdfs_are_ingested_or_rejected_with_a_reason(services, tmp_path, batch):
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    sources = []
    for i, change in enumerate(batch):
        path = folder / f"fuzz-{i}.pdf"
        path.write_bytes(mutate(change))
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
