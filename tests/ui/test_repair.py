"""A damaged store in the browser: the app says so, lists what it can restore, rebuilds, and reloads into itself."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fixtures.browser import browser_session
from tests.fixtures.pdfs import GREAT_WALL, ZEBRA, make_pdf

pytestmark = pytest.mark.slow
REBUILD_TIMEOUT_MS = 180_000


def damaged_store(data_dir: Path, pdf_dir: Path) -> None:
    """Two uploads whose copies are kept, then the chunk store's database overwritten with noise."""
    from ingest.pipeline import SourceFile
    from services import build_services
    from settings import Settings

    files = [
        make_pdf(pdf_dir / "zebras.pdf", ["Introduction.", ZEBRA]),
        make_pdf(pdf_dir / "长城简介.pdf", [GREAT_WALL], chinese=True),
    ]
    services = build_services(Settings(data_dir=data_dir), keep_uploads=True)
    try:
        assert services.ingestor.ingest([SourceFile(f, f.name) for f in files]).ok
    finally:
        services.close()
    database = data_dir / "chroma" / "chroma.sqlite3"
    database.write_bytes(os.urandom(database.stat().st_size))


def test_the_app_offers_to_rebuild_a_damaged_store_then_serves_it(
    chromium_path, data_dir, pdf_dir, tmp_path, screenshot_dir
):
    from playwright.sync_api import expect

    from tests.fixtures.browser import app_process

    damaged_store(data_dir, pdf_dir)
    with app_process(data_dir, tmp_path) as url, browser_session(chromium_path, url) as session:
        page = session.page
        damage = page.locator("#damage")
        expect(damage).to_contain_text("The document store is damaged / 文档库已损坏")
        expect(damage).to_contain_text("chunk store")
        rows = page.locator("#known-documents [role=row]")
        for name in ("zebras.pdf", "长城简介.pdf"):
            expect(rows.filter(has_text=name)).to_contain_text("found / 可恢复")
        page.screenshot(path=screenshot_dir / "rebuild.png", full_page=True)

        page.locator("#rebuild").click()
        expect(page.locator("#rebuild-status")).to_contain_text("2 document(s) ingested again", timeout=60_000)
        # the rebuild page hands over to the normal app on the same address, and the page reloads into it
        expect(page.get_by_role("tab", name="Documents / 文档")).to_be_visible(timeout=REBUILD_TIMEOUT_MS)
        page.get_by_role("tab", name="Documents / 文档").click()
        table = page.locator("#documents [role=row]")
        for name in ("zebras.pdf", "长城简介.pdf"):
            expect(table.filter(has_text=name)).to_contain_text("ingested / 已索引")
        assert session.outside_requests() == [] and session.errors == []
    assert [p.name.split(".damaged-")[0] for p in data_dir.iterdir() if ".damaged-" in p.name] == ["chroma"]
