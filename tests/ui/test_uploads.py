"""Uploads: names sanitised, copies kept under the data dir only, oversized files refused."""

import pytest

from tests.fixtures.pdfs import ZEBRA, make_pdf
from tests.ui.test_web import free_port
from ui.uploads import upload_name


@pytest.mark.parametrize(
    "raw, safe",
    [
        ("../../etc/evil.pdf", "evil.pdf"),
        ("/abs/path/报告.pdf", "报告.pdf"),
        ("C:\\Users\\me\\季度报告.pdf", "季度报告.pdf"),
        ("bad\x00name\x07.pdf", "bad_name_.pdf"),
        ('what?*<>|".pdf', "what______.pdf"),
        ("..", "document.pdf"),
        ("  .hidden.pdf. ", "hidden.pdf"),
    ],
)
def test_upload_names_are_base_names_without_unsafe_characters(raw, safe):
    assert upload_name(raw) == safe


@pytest.mark.slow
def test_oversized_upload_is_refused_and_nothing_is_stored(settings, pdf_dir):
    from gradio_client import Client, handle_file

    from services import build_services
    from ui.web import ZhikuUI, launch

    big = make_pdf(pdf_dir / "big.pdf", [ZEBRA * 20 for _ in range(30)])
    settings = settings.model_copy(update={"port": free_port(), "max_file_mb": big.stat().st_size / 2e6})
    services = build_services(settings, keep_uploads=True)
    blocks = ZhikuUI(services).build()
    launch(blocks, settings, block=False)
    try:
        client = Client(f"http://127.0.0.1:{settings.port}/", verbose=False)
        with pytest.raises(Exception, match="(?i)size|large|exceed"):  # noqa: B017 - Gradio's own refusal
            client.predict([handle_file(str(big))], api_name="/upload")
        assert services.registry.all() == [] and services.store.count() == 0
        assert not settings.uploads_dir.exists() or not any(settings.uploads_dir.rglob("*.pdf"))
    finally:
        blocks.close()
        services.close()
