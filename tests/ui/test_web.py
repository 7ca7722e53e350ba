"""The real Gradio server on 127.0.0.1, driven over HTTP with gradio_client: upload, ask, delete."""

import socket

import pytest

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(settings):
    from services import build_services
    from ui.web import ZhikuUI, launch

    settings = settings.model_copy(update={"port": free_port()})
    services = build_services(settings, keep_uploads=True)
    blocks = ZhikuUI(services).build()
    launch(blocks, settings, block=False, services=services)
    yield services, f"http://127.0.0.1:{settings.port}/"
    blocks.close()
    services.close()


@pytest.fixture
def client(server):
    from gradio_client import Client

    return Client(server[1], verbose=False)


def rows(table: dict) -> list[list]:
    return table["data"]


def test_upload_ask_delete(server, client, english_pdf, chinese_pdf, pdf_dir):
    from gradio_client import handle_file

    services, _ = server
    bad = pdf_dir / "broken.pdf"
    bad.write_bytes(b"%PDF-1.4 this is not really a pdf")
    table, _choices, status, _files = client.predict(
        [handle_file(str(english_pdf)), handle_file(str(chinese_pdf)), handle_file(str(bad))], api_name="/upload"
    )
    listed = {row[0]: row for row in rows(table)}
    assert listed["animals.pdf"][1:4] == [3, listed["animals.pdf"][2], "ingested / 已索引"]
    assert listed["中国文化.pdf"][3] == "ingested / 已索引"
    assert listed["broken.pdf"][3] == "rejected / 已拒绝" and "corrupt" in listed["broken.pdf"][4]
    assert "2 ingested" in status and "broken.pdf" in status
    # uploads are kept under the data dir (so an interrupted ingest can resume)
    kept = services.ingestor.file_of(services.registry.get("中国文化.pdf").path)
    assert kept.is_file() and kept.name == "中国文化.pdf"
    assert services.settings.uploads_dir.resolve() in kept.resolve().parents

    job = client.submit("When do zebras cross the Mara River?", [], 5, api_name="/ask")
    updates = list(job)
    history, question_box, sources = job.result()
    assert len(updates) >= 3  # streamed
    assert question_box == ""
    reply = history[-1]["content"]
    assert "animals.pdf p. 2" in str(reply)
    assert "<details" in sources and "animals.pdf" in sources and "Mara River" in sources
    assert "zhiku-badge-keyword" in sources and "zhiku-badge-dense" in sources  # found by both indexes
    assert '<mark class="zhiku-evidence">' in sources  # the sentence that answers, highlighted
    assert "From your documents / 来自你的文档" in str(reply) and "(generated / 模型生成)" in str(reply)
    assert "/zhiku/pdf/animals.pdf#page=2" in sources  # the kept upload opens at the cited page

    table, _choices, status = client.predict("animals.pdf", api_name="/delete")
    assert "animals.pdf" not in {row[0] for row in rows(table)}
    assert "Deleted" in status
    assert services.store.ids_for("animals.pdf") == []


def test_documents_listed_on_load_and_empty_store_answer(server, client):
    table, _choices = client.predict(api_name="/documents")
    assert table["data"] == []
    assert table["headers"][0] == "Document / 文档"
    history, _, sources = client.predict("What is in my documents?", [], 5, api_name="/ask")
    assert "No documents are indexed yet" in str(history[-1]["content"])
    assert sources == ""


def test_system_tab_lists_models_and_unloads(server, client, english_pdf):
    from gradio_client import handle_file

    services, _ = server
    client.predict([handle_file(str(english_pdf))], api_name="/upload")
    client.predict("When do zebras cross the Mara River?", [], 5, api_name="/ask")
    summary, models, _choice, events, vram, temperature, power, speed = client.predict(api_name="/system")
    assert "device: cpu (RAM)" in summary and "GPU: none" in summary
    rows = {row[0]: row for row in models["data"]}
    assert rows["chat"][1] == "yes" and rows["embedder"][2] == "yes"  # chat resident, embedder pinned
    assert "loaded chat" in events
    assert vram["data"] == [] and temperature["data"] == []  # no GPU: no points, never zeros
    assert len(speed["data"]) == 1 and speed["data"][0][1] > 0  # tokens/s of the answer above

    assert "Unloaded **chat**" in client.predict("chat", api_name="/unload_model")
    assert not services.governor.loaded("chat")
    assert "Pinned **chat**" in client.predict("chat", api_name="/pin_model")
    assert next(m for m in services.governor.state().models if m.name == "chat").pinned


def test_image_tab_says_images_are_read_as_text_without_a_vision_model(server):
    import urllib.request

    config = urllib.request.urlopen(server[1] + "config", timeout=30).read().decode()
    assert "read as text (OCR)" in config and "Image questions are off" not in config


def test_image_question_in_the_browser_api(settings, tiny_llava, red_png, english_pdf, tmp_path):
    from gradio_client import Client, handle_file

    from services import build_services
    from ui.web import ZhikuUI, launch

    settings = settings.model_copy(update={"port": free_port(), "vision_model": str(tiny_llava)})
    services = build_services(settings, keep_uploads=True)
    blocks = ZhikuUI(services).build()
    launch(blocks, settings, block=False)
    try:
        client = Client(f"http://127.0.0.1:{settings.port}/", verbose=False)
        client.predict([handle_file(str(english_pdf))], api_name="/upload")
        job = client.submit(handle_file(str(red_png)), "Does this show zebras?", True, api_name="/ask_image")
        updates = list(job)
        answer, sources = job.result()
        assert any("loading the vision model" in u[0] for u in updates)  # the UI shows which model loads
        assert answer and "animals.pdf p. 2" in answer
        assert "<details" in sources and "animals.pdf" in sources
        bad = tmp_path / "notes.png"
        bad.write_text("not an image")
        answer, _ = client.predict(handle_file(str(bad)), "What is this?", False, api_name="/ask_image")
        assert answer.startswith("⚠️") and "not an image" in answer
    finally:
        blocks.close()
        services.close()


def test_sources_show_which_index_found_each():
    from rag.answering import Source
    from ui.render import sources_html

    html = sources_html(
        [
            Source("a.pdf", 2, 0.61, "both", ("dense", "keyword"), 7.25),
            Source("显卡.pdf", 1, 0.2, "数字", ("keyword",), 3.0),
            Source("c.pdf", 5, 0.7, "meaning", ("dense",), 0.0, "Axes › <Minor> tick marks"),
        ]
    )
    items = html.split("<details")[1:]
    assert "keyword / 关键词" in items[0] and "semantic / 语义" in items[0] and "BM25 7.2" in items[0]
    assert "keyword / 关键词" in items[1] and "semantic" not in items[1] and "显卡.pdf — p. 1" in items[1]
    assert "semantic / 语义" in items[2] and "keyword /" not in items[2] and "similarity 0.70" in items[2]
    assert 'c.pdf — p. 5 <span class="zhiku-section">§ Axes › &lt;Minor&gt; tick marks</span>' in items[2]
    assert "zhiku-section" not in items[0]  # no outline, no heading


def test_a_follow_up_is_answered_from_the_sources_of_its_rewritten_question(server, client, pdf_dir):
    from gradio_client import handle_file

    from tests.fixtures.pdfs import make_pdf

    gpu = make_pdf(
        pdf_dir / "显卡.pdf",
        [
            "目录",
            "显卡参数。RTX 4090 的显存带宽是 1008 GB/s。RTX 4090 的显存容量是 24 GB，类型为 GDDR6X。",
            "显卡散热。RTX 3060 使用双风扇散热，满载时温度约七十度。",
        ],
        chinese=True,
    )
    client.predict([handle_file(str(gpu))], api_name="/upload")
    history, _, first = client.predict("RTX 4090 的显存带宽是多少？", [], 5, api_name="/ask")
    assert "显卡.pdf — p. 2" in first
    history, _, second = client.predict("它的显存容量呢？", history, 5, api_name="/ask")
    reply = str(history[-1]["content"])
    assert "Searched for / 检索: RTX 4090" in reply  # rewritten with the first question
    summary = second.split("<details")[1]
    assert "显卡.pdf — p. 2" in summary and "24 GB" in summary.split("zhiku-quote")[1].split("</div>")[0]
    client.predict(api_name="/clear")  # a new conversation: the same words are no longer a follow-up of it
    history, _, _ = client.predict("它的显存容量呢？", [], 5, api_name="/ask")
    assert "Searched for" not in str(history[-1]["content"])


def test_pdf_links_serve_only_kept_copies(server, client, english_pdf, pdf_dir):
    import urllib.error
    import urllib.request

    from gradio_client import handle_file

    services, url = server
    client.predict([handle_file(str(english_pdf))], api_name="/upload")
    pdf = urllib.request.urlopen(url + "zhiku/pdf/animals.pdf", timeout=30)
    assert pdf.headers["Content-Type"] == "application/pdf" and pdf.read() == english_pdf.read_bytes()
    in_place = make_in_place(services, pdf_dir)
    outside = services.settings.data_dir.parent / "secret.pdf"
    outside.write_bytes(b"%PDF-1.4 secret")
    for name in (in_place, "../secret.pdf", "%2E%2E%2Fsecret.pdf", str(outside), "registry.sqlite3", "nope.pdf"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url + "zhiku/pdf/" + name, timeout=30)
        assert refused.value.code == 404, name


def make_in_place(services, pdf_dir) -> str:
    """A document ingested from its folder (python -m ingest DIR): zhiku keeps no copy of it."""
    from ingest.pipeline import SourceFile
    from tests.fixtures.pdfs import make_pdf

    folder_pdf = make_pdf(pdf_dir / "in-place.pdf", ["Kept where it is."])
    services.ingestor.keep_copies = False
    services.ingestor.ingest([SourceFile(folder_pdf, folder_pdf.name)])
    assert services.registry.get("in-place.pdf").status == "ingested"
    return "in-place.pdf"


def test_pdf_links_need_the_login(settings, english_pdf):
    import http.cookiejar
    import urllib.error
    import urllib.parse
    import urllib.request

    from ingest.pipeline import SourceFile
    from services import build_services
    from ui.web import ZhikuUI, launch

    settings = settings.model_copy(update={"port": free_port(), "auth_user": "ana", "auth_password": "pw-1234"})
    services = build_services(settings, keep_uploads=True)
    services.ingestor.ingest([SourceFile(english_pdf, english_pdf.name)])
    blocks = ZhikuUI(services).build()
    launch(blocks, settings, block=False, services=services)
    url = f"http://127.0.0.1:{settings.port}/"
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url + "zhiku/pdf/animals.pdf", timeout=30)
        assert refused.value.code == 401
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        form = urllib.parse.urlencode({"username": "ana", "password": "pw-1234"}).encode()
        opener.open(url + "login", form, timeout=30)
        assert opener.open(url + "zhiku/pdf/animals.pdf", timeout=30).read() == english_pdf.read_bytes()
    finally:
        blocks.close()
        services.close()


def test_the_answer_shows_evidence_first_and_flags_what_no_source_holds():
    from rag.answering import Answer, Source
    from rag.evidence import Quote, Span
    from ui.render import answer_markdown, sources_html

    text = "EUV light <is> 13.5 nm. It prints transistors."
    span = Span("EUV light <is> 13.5 nm.", 0, 23, 0.9)
    source = Source("chips.pdf", 4, 0.7, text, ("dense",), 0.0, "", (span,))
    answer = Answer("What wavelength?", "en", text="It uses 193 nm, or 13.5 nm.", sources=[source], done=True)
    answer.model, answer.unsupported = "SmolLM2", ["193"]
    answer.extract = [Quote(span, 0, "chips.pdf", 4)]
    shown = answer_markdown(answer)
    assert shown.index("From your documents") < shown.index("> EUV light <is> 13.5 nm. — [1] chips.pdf p. 4")
    assert shown.index("[1] chips.pdf p. 4") < shown.index("**SmolLM2** (generated / 模型生成)")
    assert "It uses 193 ⚠️ nm, or 13.5 nm." in shown and "文档中未找到: `193`" in shown
    html = sources_html([source], lambda s: f"/zhiku/pdf/{s.file}#page={s.page}")
    assert '<mark class="zhiku-evidence">EUV light &lt;is&gt; 13.5 nm.</mark> It prints transistors.' in html
    assert 'href="/zhiku/pdf/chips.pdf#page=4"' in html
