"""The answer path with the real packaged SmolLM2 model (converted from GGUF once per session)."""

import pytest

from ingest.pipeline import SourceFile

pytestmark = pytest.mark.slow


@pytest.fixture
def indexed(services, english_pdf, chinese_pdf):
    services.ingestor.ingest([SourceFile(english_pdf, english_pdf.name), SourceFile(chinese_pdf, chinese_pdf.name)])
    return services


def test_streams_a_grounded_answer_with_sources(indexed):
    updates, first_sources = [], None
    for answer in indexed.qa.stream("When do the zebras cross the Mara River?"):
        updates.append((answer.text, answer.done, answer.status))
        first_sources = first_sources if first_sources is not None else list(answer.sources)
    # the sources and their evidence come before the model loads; then the UI says a model is loading
    assert updates[0] == (None, False, None) and first_sources and first_sources[0].evidence
    assert updates[1] == (None, False, "loading the chat model")
    texts = [t for t, done, _ in updates if not done and t is not None]
    assert len(texts) >= 3  # token by token
    assert all(len(a) <= len(b) for a, b in zip(texts, texts[1:]))
    assert answer.done and answer.grounded and answer.text
    assert answer.sources[0].file == "animals.pdf" and answer.sources[0].page == 2
    for key in ("embed_ms", "search_ms", "first_token_ms", "generate_ms", "tokens_per_s"):
        assert answer.timings[key] > 0
    assert answer.timings["answer_tokens"] <= 24 + 1


def test_chinese_question_uses_chinese_prompt(indexed):
    answer = indexed.qa.ask("长城全长多少公里？")
    assert answer.language == "zh" and answer.grounded
    assert answer.sources[0].file == "中国文化.pdf" and answer.sources[0].page == 2


def test_question_longer_than_the_context_is_trimmed(indexed):
    with indexed.governor.acquire("chat") as generator:
        question = "Tell me about zebras and the Mara River crossing. " * (generator.context_length // 6)
        assert generator.count_tokens(question) > generator.context_length
    answer = indexed.qa.ask(question)
    assert answer.done and answer.text is not None
    assert "the question was longer than the model's context and was shortened" in answer.notes
    assert answer.timings["prompt_tokens"] <= generator.context_length - indexed.settings.max_new_tokens


def test_generator_loads_from_the_converted_cache(settings, model_cache):
    from models.llm import Generator, SamplingParams
    from services import llm_spec

    generator = Generator(llm_spec(settings))
    assert list(model_cache.glob("models/SmolLM2-135M-Instruct.Q4_1-*/model.safetensors"))
    assert generator.context_length == 8192
    ids = generator.prompt_ids([{"role": "user", "content": "What is the capital of France?"}])
    text = "".join(generator.stream(ids, SamplingParams(temperature=0, max_new_tokens=8)))
    assert "Paris" in text
