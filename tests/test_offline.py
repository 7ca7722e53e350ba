"""Ingest, ask and the UI with every outbound connection blocked except loopback: zero attempts."""

import pytest

from ingest.pipeline import SourceFile
from tests.ui.test_web import free_port

pytestmark = pytest.mark.slow


def test_guard_catches_an_outbound_connection(no_network):
    import socket

    with pytest.raises(OSError):
        socket.create_connection(("huggingface.co", 443), timeout=2)
    assert no_network  # the guard saw it


def test_ingest_ask_and_ui_make_no_outbound_connection(no_network, settings, english_pdf, chinese_pdf):
    from gradio_client import Client, handle_file

    from services import build_services
    from ui.web import ZhikuUI, launch

    settings = settings.model_copy(update={"port": free_port()})
    services = build_services(settings, keep_uploads=True)
    blocks = ZhikuUI(services).build()
    try:
        services.ingestor.ingest([SourceFile(english_pdf, english_pdf.name)])
        assert services.qa.ask("When do zebras cross the Mara River?").text
        launch(blocks, settings, block=False)
        client = Client(f"http://127.0.0.1:{settings.port}/", verbose=False)
        client.predict([handle_file(str(chinese_pdf))], api_name="/upload")
        history, _, sources = client.predict("长城全长多少公里？", [], 5, api_name="/ask")
        assert "中国文化.pdf" in sources
    finally:
        blocks.close()
        services.close()
    assert no_network == []
