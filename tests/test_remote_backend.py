"""A remote chat model (``ZHIKU_LLM_BACKEND=openai``): a second zhiku, started as its own process, generates for
this one through its OpenAI-compatible API (``zhiku-llm``); and what a user sees when that server is down, too
slow, refuses the key or lacks the model."""

from __future__ import annotations

import socket
import time

import pytest

from ingest.pipeline import SourceFile
from services import ChatServerNotSet, build_services
from tests.fixtures.browser import app_process, free_port

pytestmark = pytest.mark.slow
QUESTION = "When do zebras cross the Mara River?"


def front_end(settings, url: str, **changes):
    """Services of a zhiku whose chat model is the server at ``url``."""
    update = {"llm_backend": "openai", "llm_base_url": url, "temperature": 0.0, "max_new_tokens": 24, **changes}
    return build_services(settings.model_copy(update=update))


@pytest.fixture
def chat_server(tmp_path, monkeypatch):
    """A second zhiku (python app.py, packaged SmolLM2) with a login, serving its chat model as ``zhiku-llm``."""
    monkeypatch.setenv("ZHIKU_AUTH_USER", "team")
    monkeypatch.setenv("ZHIKU_AUTH_PASSWORD", "server-pw")
    logs = tmp_path / "server-logs"
    logs.mkdir()
    with app_process(tmp_path / "server-data", logs) as url:
        monkeypatch.delenv("ZHIKU_AUTH_USER")  # the front end built in the test has no login of its own
        monkeypatch.delenv("ZHIKU_AUTH_PASSWORD")
        yield f"{url}v1"


def test_a_second_zhiku_generates_the_answer_and_nothing_is_held_here(settings, chat_server, english_pdf):
    services = front_end(settings, chat_server, llm_api_key="server-pw", llm_model="zhiku-llm")
    try:
        services.ingestor.ingest([SourceFile(english_pdf, english_pdf.name)])
        texts = [a.text for a in services.qa.stream(QUESTION) if a.text]
        answer = services.qa.ask(QUESTION)
        assert answer.model == f"zhiku-llm at {chat_server}"
        assert answer.text and not any("no model answer" in n for n in answer.notes)
        assert len(set(texts)) >= 2  # it arrived in pieces
        assert answer.sources[0].file == "animals.pdf"  # the documents are this front end's
        assert answer.timings["first_token_ms"] > 0 and answer.timings["answer_tokens"] >= 1
        chat = next(m for m in services.governor.state().models if m.name == "chat")
        assert chat.resident and chat.measured == 0 and chat.footprint == 0  # the model lives on the server
        # greedy on both sides: the server's own answer to the same messages is the same text
        generator_text = "".join(services.qa.chat([{"role": "user", "content": "Say hello."}], _greedy(services)))
        import openai

        client = openai.OpenAI(base_url=chat_server, api_key="server-pw", max_retries=0, timeout=120)
        direct = client.chat.completions.create(
            model="zhiku-llm", messages=[{"role": "user", "content": "Say hello."}], temperature=0, max_tokens=24
        )
        assert generator_text == direct.choices[0].message.content and generator_text.strip()
    finally:
        services.close()

    wrong = front_end(settings, chat_server, llm_api_key="wrong", llm_model="zhiku-llm")
    try:
        answer = wrong.qa.ask(QUESTION)
        assert any(f"the chat server at {chat_server} refused the API key (401)" in n for n in answer.notes)
        assert "Mara" in answer.text and answer.model is None  # the evidence answers instead
    finally:
        wrong.close()

    unknown = front_end(settings, chat_server, llm_api_key="server-pw", llm_model="llama-70b")
    try:
        notes = unknown.qa.ask(QUESTION).notes
        assert any("has no model 'llama-70b' (it has: zhiku, zhiku-llm)" in n for n in notes), notes
    finally:
        unknown.close()


def _greedy(services):
    from dataclasses import replace

    return replace(services.qa.context.params, temperature=0.0, max_new_tokens=24)


def test_a_server_that_is_down_leaves_the_evidence_and_a_clear_note(settings, english_pdf):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    services = front_end(settings, url)
    try:
        services.ingestor.ingest([SourceFile(english_pdf, english_pdf.name)])
        answer = services.qa.ask(QUESTION)
        assert answer.done and answer.model is None
        assert "Mara" in answer.text and "animals.pdf" in answer.text  # the evidence sentence, cited
        assert any(f"the chat server at {url} is not reachable" in n for n in answer.notes), answer.notes
        assert services.qa.ask("长城全长多少公里？").text  # still answering (nothing relevant here, said so)
    finally:
        services.close()


def test_a_server_that_never_answers_times_out_in_the_configured_time(settings, english_pdf):
    with socket.socket() as silent:  # accepts connections (the kernel does) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        services = front_end(settings, url, llm_timeout_s=1.5)
        try:
            services.ingestor.ingest([SourceFile(english_pdf, english_pdf.name)])
            started = time.perf_counter()
            answer = services.qa.ask(QUESTION)
            assert time.perf_counter() - started < 15
            assert any(f"the chat server at {url} did not answer within 1.5 s" in n for n in answer.notes), answer.notes
            assert "Mara" in answer.text
        finally:
            services.close()


def test_the_remote_backend_without_a_server_is_refused_at_start(settings):
    with pytest.raises(ChatServerNotSet, match="ZHIKU_LLM_BACKEND=openai needs ZHIKU_LLM_BASE_URL"):
        build_services(settings.model_copy(update={"llm_backend": "openai"}))
