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
    assert [m.id for m in client.models.list()] == ["zhiku", "zhiku-llm"]

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


def test_the_chat_model_itself_as_zhiku_llm(api):
    """``zhiku-llm``: the messages go to the chat model as they are (no documents); what another zhiku uses as
    its remote generator (tests/test_remote_backend.py)."""
    base_url, password = api
    client = openai.OpenAI(base_url=base_url, api_key=password, max_retries=0, timeout=300)
    messages = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Name a colour."}]
    whole = client.chat.completions.create(model="zhiku-llm", messages=messages, temperature=0, max_tokens=12)
    assert whole.model == "zhiku-llm" and whole.choices[0].message.content.strip()
    assert "zhiku" not in (whole.model_extra or {})  # no sources: no documents were searched
    pieces = [
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="zhiku-llm", messages=messages, temperature=0, max_tokens=12, stream=True
        )
    ]
    assert "".join(pieces) == whole.choices[0].message.content  # greedy: the same text, streamed
    with pytest.raises(openai.BadRequestError, match="'temperature' must be a number of at least 0"):
        client.chat.completions.create(model="zhiku-llm", messages=messages, temperature=-1)
    with pytest.raises(openai.BadRequestError, match="exceed the model's context"):
        client.chat.completions.create(model="zhiku-llm", messages=messages, max_tokens=10**6)
    with pytest.raises(openai.BadRequestError, match="role of system, user or assistant"):
        client.chat.completions.create(model="zhiku-llm", messages=[{"role": "tool", "content": "x"}])
