"""The OpenAI-compatible API on the real server, called with the official ``openai`` client: models, a
completion with its sources, a streamed one, a follow-up with the conversation, bad requests and the login."""

from urllib.parse import quote

import pytest

from ingest.pipeline import SourceFile
from tests.ui.test_web import free_port

pytestmark = pytest.mark.slow
openai = pytest.importorskip("openai")


@pytest.fixture
def api(settings, english_pdf, chinese_pdf):
    from services import build_services
    from ui.web import ZhikuUI, launch

    settings = settings.model_copy(
        update={"port": free_port(), "auth_user": "ana", "auth_password": "知库-pw", "max_new_tokens": 24}
    )
    services = build_services(settings, keep_uploads=True)
    services.ingestor.ingest([SourceFile(english_pdf, english_pdf.name), SourceFile(chinese_pdf, chinese_pdf.name)])
    blocks = ZhikuUI(services).build()
    launch(blocks, settings, block=False, services=services)
    yield f"http://127.0.0.1:{settings.port}/v1", quote(settings.auth_password)  # headers are ASCII
    blocks.close()
    services.close()


def test_models_completion_stream_and_follow_up_with_the_openai_client(api):
    base_url, password = api
    client = openai.OpenAI(base_url=base_url, api_key=password, max_retries=0, timeout=300)
    assert [m.id for m in client.models.list()] == ["zhiku"]

    completion = client.chat.completions.create(
        model="zhiku", messages=[{"role": "user", "content": "长城全长多少公里？"}]
    )
    assert completion.choices[0].message.content.strip()
    sources = completion.model_extra["zhiku"]["sources"]
    assert sources[0]["file"] == "中国文化.pdf" and sources[0]["page"] >= 1 and sources[0]["text"]

    pieces, last = [], None
    for chunk in client.chat.completions.create(
        model="zhiku", messages=[{"role": "user", "content": "When do zebras cross the Mara River?"}], stream=True
    ):
        pieces.append(chunk.choices[0].delta.content or "")
        last = chunk
    assert len([p for p in pieces if p]) >= 2  # streamed in pieces, not at once
    assert last.choices[0].finish_reason == "stop"
    assert last.model_extra["zhiku"]["sources"][0]["file"] == "animals.pdf"

    follow_up = client.chat.completions.create(
        model="zhiku",
        messages=[
            {"role": "system", "content": "ignored: zhiku's own prompt answers from the documents"},
            {"role": "user", "content": "When do zebras cross the Mara River?"},
            {"role": "assistant", "content": "".join(pieces)},
            {"role": "user", "content": "Why do they cross it?"},
        ],
    )
    extra = follow_up.model_extra["zhiku"]
    assert "zebra" in (extra["standalone_question"] or "").lower()  # searched with the conversation
    assert extra["sources"][0]["file"] == "animals.pdf"


def test_bad_requests_and_a_missing_login_are_refused(api):
    base_url, password = api
    wrong = openai.OpenAI(base_url=base_url, api_key="not the password", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    client = openai.OpenAI(base_url=base_url, api_key=password, max_retries=0)
    with pytest.raises(openai.BadRequestError, match="last message must be the user's question"):
        client.chat.completions.create(model="zhiku", messages=[{"role": "assistant", "content": "hello"}])
    with pytest.raises(openai.BadRequestError, match="non-empty list"):
        client.chat.completions.create(model="zhiku", messages=[])
