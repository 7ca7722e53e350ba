"""The prompt's pass written out for capture (``models.prefill_step``), on the CPU against the model's own forward:
the same logits and cache, at the prompt's length and padded to its bucket; and the decoder's choice between
it and the model's own prefill of a reused prompt. On a GPU the same step is replayed from graphs
(tests/gpu/test_captured_decode.py)."""

from __future__ import annotations

import pytest
import torch

from models.llm import SamplingParams
from models.prefill_step import bucket_for, buckets, prefill_step


def _tiny_llama(attention: str, layers: int, seed: int):
    """A random bf16 Llama with grouped KV heads and the given attention implementation, and a word-level tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from bench.random_checkpoints import word_tokenizer

    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=64, intermediate_size=160, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=300, max_position_embeddings=512, attn_implementation=attention,
    )  # fmt: skip
    return LlamaForCausalLM(config).to(torch.bfloat16).eval(), word_tokenizer(300)


@pytest.fixture(scope="module")
def tiny_llama():
    return _tiny_llama("sdpa", layers=3, seed=0)


def _state(model, max_len: int, batch: int = 1):
    from models.decode_step import DecodeState, LlamaParts

    parts = LlamaParts.of(model)
    parts.rotary_tables(max_len)
    return parts, DecodeState.new(parts, batch, max_len)


def _eager(model, ids):
    """The model's own prefill: last-position logits and the keys and values of every layer."""
    from transformers import DynamicCache

    cache = DynamicCache()
    with torch.inference_mode():
        logits = model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1].float()
    return logits, [(layer.keys, layer.values) for layer in cache.layers]


def test_buckets_cover_every_prompt_the_cache_holds_with_little_padding():
    sizes = buckets(4096)
    assert sizes[0] == 128 and sizes[-1] == 4096 and sizes == sorted(set(sizes))
    assert all(b - a <= 256 for a, b in zip(sizes, sizes[1:], strict=False))
    assert bucket_for(1502, sizes) == 1536 and bucket_for(1, sizes) == 128 and bucket_for(4097, sizes) is None
    assert buckets(100) == [100] and buckets(1100) == [128 * i for i in range(1, 9)] + [1100]
    for length in range(1, 4097, 7):  # padding at most 127 tokens up to 1,024, 255 beyond
        assert 0 <= bucket_for(length, sizes) - length < (128 if length <= 1024 else 256)


def test_prefill_step_gives_the_models_logits_and_cache_at_the_prompts_length_and_padded(tiny_llama):
    from models.decode_step import TorchOps

    model, _ = tiny_llama
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 300, (1, 37), generator=generator)
    logits, cache = _eager(model, ids)
    for size in (37, 64):  # exact, and padded with other tokens after the prompt
        parts, state = _state(model, 128)
        state.prompt[:, :37] = ids
        state.prompt[:, 37:size] = torch.randint(3, 300, (1, size - 37), generator=generator)
        state.last.fill_(36)
        with torch.inference_mode():
            prefill_step(parts, TorchOps(), state, state.prompt[:, :size], state.last)
        # at the prompt's length the same bits; padded, the products' sums are grouped otherwise: bf16 rounding
        same = torch.equal if size == 37 else lambda a, b: torch.allclose(a.float(), b.float(), atol=8e-3, rtol=0)
        assert same(state.logits, logits), size
        assert state.logits.abs().max() > 0.1  # logits, not zeros
        for i, (keys, values) in enumerate(cache):
            assert same(state.cache_k[i][:, :, :37], keys), (size, i)
            assert same(state.cache_v[i][:, :, :37], values), (size, i)


def test_prefill_step_keeps_each_rows_own_last_position(tiny_llama):
    from models.decode_step import TorchOps

    model, _ = tiny_llama
    generator = torch.Generator().manual_seed(2)
    a, b = torch.randint(3, 300, (1, 20), generator=generator), torch.randint(3, 300, (1, 29), generator=generator)
    parts, state = _state(model, 64, batch=2)
    state.prompt[0, :20], state.prompt[1, :29] = a[0], b[0]
    state.last.copy_(torch.tensor([19, 28]))
    with torch.inference_mode():
        prefill_step(parts, TorchOps(), state, state.prompt[:, :32], state.last)
    for row, ids in enumerate((a, b)):
        assert torch.allclose(state.logits[row], _eager(model, ids)[0][0], atol=8e-3, rtol=0), row


def test_decoder_prefills_whole_unless_the_reused_start_is_most_of_the_prompt(tiny_llama):
    """A prompt whose start the cache holds, but less than half of it, prefills whole through the step (a
    captured graph on a GPU beats the model's own forward over the rest); most of it reused: only the rest, eagerly.
    Either way the answer is the model's own greedy answer."""
    from models.captured_decoder import CapturedDecoder
    from models.decode_step import TorchOps

    model, tokenizer = tiny_llama
    decoder = CapturedDecoder(model, tokenizer, 256, ops=TorchOps(), capture=False)
    params = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=12)
    generator = torch.Generator().manual_seed(3)
    start = torch.randint(3, 300, (1, 40), generator=generator)
    prompts = {
        "fresh": torch.cat([start, torch.randint(3, 300, (1, 60), generator=generator)], dim=1),
        "reused start, less than half": torch.cat([start, torch.randint(3, 300, (1, 50), generator=generator)], 1),
        "reused start, most of it": torch.cat([start, torch.randint(3, 300, (1, 10), generator=generator)], 1),
    }
    reused = {}
    for name, ids in prompts.items():
        text = "".join(decoder.stream_inputs({"input_ids": ids}, params))
        with torch.inference_mode():
            eager = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
        assert text == tokenizer.decode(eager[0, ids.shape[1] :], skip_special_tokens=True), name
        assert text, name
        reused[name] = decoder.last_reused
    assert reused == {"fresh": 0, "reused start, less than half": 0, "reused start, most of it": 40}


def test_with_graphs_every_prompt_a_bucket_holds_replays_one_even_when_its_start_is_reused():
    from models.prefill_step import prefill_length

    sizes = buckets(4096)
    assert prefill_length(1502, 0, sizes) == 1536
    assert prefill_length(1502, 1501, sizes) == 1536  # a graph's 85 ms beat the model's own 80-490 ms
    assert prefill_length(4096, 0, sizes) == 4096 and prefill_length(4097, 0, sizes) is None
    assert prefill_length(90, 40, None) == 90  # no graphs (CPU): less than half reused, the step over all of it
    assert prefill_length(50, 40, None) is None  # most of it reused: only the rest, by the model


def test_a_model_whose_attention_needs_a_mask_prefills_through_the_model_itself():
    """transformers' eager attention is causal only through the mask ``prefill_step`` does not pass: such a model
    keeps its own prefill (and its answers stay the model's)."""
    from models.captured_decoder import CapturedDecoder
    from models.decode_step import TorchOps
    from models.prefill_step import supported

    model, tokenizer = _tiny_llama("eager", layers=2, seed=5)
    assert "eager" in supported(model)
    decoder = CapturedDecoder(model, tokenizer, 128, ops=TorchOps(), capture=False)
    ids = torch.randint(3, 300, (1, 30), generator=torch.Generator().manual_seed(6))
    params = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=8)
    tokens, logits = decoder.generate(ids, params, record_logits=True)
    assert decoder.last_prefill_size is None and not decoder.prefill_steps
    with torch.inference_mode():
        assert torch.allclose(logits[0], model(ids).logits[:, -1].float(), atol=8e-3, rtol=0)
        eager = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)
    expected = eager[0, 30:].tolist()  # (eager stops at the end token; ``generate`` here does not)
    assert expected and tokens[0, : len(expected)].tolist() == expected
