"""8 users ask at once while a 100-page PDF is being ingested: every question answered, the ingest completes."""

import threading

import pytest

from ingest.pipeline import SourceFile
from tests.fixtures.pdfs import CHIP, VOLCANO, make_pdf
from tests.ui.test_web import free_port

pytestmark = pytest.mark.slow


def test_eight_clients_ask_during_a_100_page_ingest(settings, pdf_dir, english_pdf):
    from gradio_client import Client, handle_file

    from services import build_services
    from ui.web import ZhikuUI, launch

    long_pdf = make_pdf(pdf_dir / "manual.pdf", [f"Page {p}. " + (VOLCANO, CHIP)[p % 2] * 2 for p in range(100)])
    settings = settings.model_copy(update={"port": free_port()})
    services = build_services(settings, keep_uploads=True)
    services.ingestor.ingest([SourceFile(english_pdf, english_pdf.name)])
    blocks = ZhikuUI(services).build()
    launch(blocks, settings, block=False)
    url = f"http://127.0.0.1:{settings.port}/"
    try:
        uploader = Client(url, verbose=False)
        upload = uploader.submit([handle_file(str(long_pdf))], api_name="/upload")
        answers: dict[int, str] = {}
        errors: list[BaseException] = []

        def ask(i: int) -> None:
            try:
                history, _, sources = Client(url, verbose=False).predict(
                    f"When do zebras cross the Mara River? ({i})", [], 3, api_name="/ask"
                )
                answers[i] = str(history[-1]["content"])
                assert "animals.pdf" in sources
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        askers = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
        for t in askers:
            t.start()
        for t in askers:
            t.join(600)
        table, _choices, status, _ = upload.result(timeout=600)
        assert errors == []
        assert len(answers) == 8 and all(a and not a.startswith("⚠️") for a in answers.values())
        rows = {row[0]: row for row in table["data"]}
        assert rows["manual.pdf"][1] == 100 and rows["manual.pdf"][3] == "ingested / 已索引"
        assert "1 ingested" in status
    finally:
        blocks.close()
        services.close()
