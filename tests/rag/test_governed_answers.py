"""Answers go through the governor: out-of-memory retry, status, and telemetry records."""

import json

import pytest

from ingest.pipeline import SourceFile
from models.footprint import Footprint
from models.llm import Generator
from rag.cli import main as rag_main
from services import CHAT_MODEL, llm_spec

pytestmark = pytest.mark.slow


class OutOfMemoryOnce:
    """The real generator whose first generation fails like a CUDA out-of-memory (impossible on this CPU)."""

    def __init__(self, real: Generator) -> None:
        self.real = real
        self.failures = 0

    def stream(self, prompt_ids, params):
        if self.failures == 0:
            self.failures += 1
            raise MemoryError("simulated out of memory")
        yield from self.real.stream(prompt_ids, params)

    def __getattr__(self, name):
        return getattr(self.real, name)


class IdleModel:
    unloaded = False

    def unload(self) -> None:
        self.unloaded = True


def test_out_of_memory_evicts_idle_models_and_retries_once(services, english_pdf):
    services.ingestor.ingest([SourceFile(english_pdf, english_pdf.name)])
    spec = llm_spec(services.settings)
    services.governor.register(CHAT_MODEL, lambda: OutOfMemoryOnce(Generator(spec)), Footprint(1, 0, 0))
    idle = IdleModel()
    services.governor.adopt("spare", idle, measured=1, pinned=False)

    answer = services.qa.ask("When do zebras cross the Mara River?")
    assert answer.done and answer.text
    assert "ran out of memory; idle models were unloaded and the answer retried" in answer.notes
    assert idle.unloaded and not services.governor.loaded("spare")
    assert services.governor.loaded("embedder")  # pinned: never evicted
    assert any("out of memory while chat was running" in e for e in services.governor.events)


def test_answers_are_recorded_for_the_system_panel(services, english_pdf):
    services.ingestor.ingest([SourceFile(english_pdf, english_pdf.name)])
    services.qa.ask("When do zebras cross the Mara River?")
    record = services.telemetry.generations[-1]
    assert record.model == CHAT_MODEL and record.first_token_ms > 0 and record.tokens > 0
    state = services.governor.state()
    chat = next(m for m in state.models if m.name == CHAT_MODEL)
    assert chat.resident and chat.loads == 1 and chat.measured is not None
    assert state.budget > 0 and state.device == "cpu (RAM)"


def test_status_command(capsys):
    assert rag_main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["device"] == "cpu (RAM)"
    assert {m["name"] for m in status["models"]} == {"embedder", "chat"}
    assert status["gpu"]["memory_used"] is None and status["gpu"]["temperature_c"] is None  # absent, not faked
    chat = next(m for m in status["models"] if m["name"] == "chat")
    assert chat["resident"] is False and chat["estimate"] > 100 * 1024**2
    assert rag_main(["status"]) == 0
    text = capsys.readouterr().out
    assert "GPU: none (no NVIDIA driver)" in text and "embedder" in text
