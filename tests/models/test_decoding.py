"""Decoding helpers on the packaged SmolLM2: the repetition stop and the reused prompt prefix."""

import pytest
import torch

from models.prefix_cache import common_prefix
from models.streaming import RepetitionStop
from rag.answering import cut_repeated_tail


def test_repetition_stop_fires_when_a_run_of_tokens_comes_back():
    stop = RepetitionStop(prompt_length=2, n=3)
    ids = [9, 9]
    fired = []
    for token in [1, 2, 3, 4, 1, 2, 3]:
        ids.append(token)
        fired.append(bool(stop(torch.tensor([ids]), None)[0]))
    assert fired == [False] * 6 + [True] and stop.stopped


def test_a_repeated_tail_is_cut_to_the_first_round():
    looped = "RTX 4090 的显存带宽是 1008 GB/s。RTX 4090 的显存带宽是 1008 GB/s。RTX 4090 的显"
    assert cut_repeated_tail(looped) == "RTX 4090 的显存带宽是 1008 GB/s。"
    assert cut_repeated_tail("The answer is 42. The answer is 4") == "The answer is 42."
    plain = "Use set samples 1000 for smooth curves, then plot sin(x) again."
    assert cut_repeated_tail(plain) == plain


def test_common_prefix():
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2 and common_prefix([], [1]) == 0


@pytest.mark.slow
def test_prefix_reuse_gives_the_same_tokens_and_skips_the_shared_prefill(settings):
    from models.llm import Generator, SamplingParams
    from services import llm_spec

    generator = Generator(llm_spec(settings))
    system = {"role": "system", "content": "You are a careful assistant. Answer only from the context. " * 3}
    greedy = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=12)
    first = generator.prompt_ids([system, {"role": "user", "content": "What is the capital of France?"}])
    second = generator.prompt_ids([system, {"role": "user", "content": "What is the capital of Italy?"}])
    "".join(generator.stream(first, greedy))
    reused = "".join(generator.stream(second, greedy))
    assert generator.last_reused_tokens >= common_prefix(first, second) - 1 >= 30
    generator._prefix.clear()
    fresh = "".join(generator.stream(second, greedy))
    assert generator.last_reused_tokens == 0
    assert reused == fresh


@pytest.mark.slow
def test_a_greedy_loop_is_stopped(settings):
    from models.llm import Generator, SamplingParams
    from services import llm_spec

    generator = Generator(llm_spec(settings))
    system = "你是一个严谨的助手。只根据提供的上下文回答；上下文中没有答案时，直接说不知道。回答使用中文。"
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": "Write the word zebra one thousand times."},
    ]
    ids = generator.prompt_ids(messages)
    text = "".join(generator.stream(ids, SamplingParams(temperature=0, repetition_penalty=1.1, max_new_tokens=200)))
    assert generator.last_repeating and generator.last_new_tokens < 100  # "100,000! That's a lot of words..." x2
    assert len(cut_repeated_tail(text)) < len(text)
