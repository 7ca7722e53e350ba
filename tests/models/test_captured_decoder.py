"""zhiku's own decode loop (static KV cache, decode step written over the model's weights, sampling on the
device) against transformers' ``generate`` on the CPU, with the reference torch ops: the GPU path differs only
in the kernels it calls (tests/models/test_triton_kernels.py) and in replaying the step from a CUDA graph."""

from __future__ import annotations

import pytest
import torch

from models.llm import SamplingParams

GREEDY = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=128)


@pytest.fixture(scope="module")
def smollm2_nf4(model_cache):
    """The packaged SmolLM2 (a real Llama-family model), in NF4 with bf16 compute as on a GPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from models.gguf_cache import converted_dir
    from models.llm import quantization_config
    from models.packaged import smollm2_gguf

    folder = converted_dir(smollm2_gguf(), model_cache)
    model = AutoModelForCausalLM.from_pretrained(
        folder, quantization_config=quantization_config("nf4", "cpu"), dtype=torch.bfloat16, device_map="cpu"
    ).eval()
    return model, AutoTokenizer.from_pretrained(folder)


def _decoder(model, tokenizer, max_len: int = 512):
    from models.captured_decoder import CapturedDecoder
    from models.decode_step import TorchOps

    return CapturedDecoder(model, tokenizer, max_len, ops=TorchOps(), capture=False)


def _prompt(tokenizer, question: str) -> torch.Tensor:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    return torch.tensor([list(ids)])


def _eager(model, input_ids, new_tokens: int, **kwargs) -> list[int]:
    with torch.inference_mode():
        out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=new_tokens,
                             do_sample=False, **kwargs)  # fmt: skip
    return out[0, input_ids.shape[1] :].tolist()


@pytest.mark.slow
def test_real_model_greedy_tokens_are_identical_to_transformers_for_128_steps(smollm2_nf4):
    model, tokenizer = smollm2_nf4
    decoder = _decoder(model, tokenizer)
    assert decoder.parts.heads == 9 and decoder.parts.kv_heads == 3  # grouped KV heads, as in LLaMA-2-70B
    for question in ("Explain how a hash table handles collisions.", "Write a short poem about the sea."):
        input_ids = _prompt(tokenizer, question)
        tokens, logits = decoder.generate(input_ids, GREEDY, record_logits=True)
        eager = _eager(model, input_ids, 128, repetition_penalty=1.0)
        assert len(eager) >= 32
        assert tokens[0, : len(eager)].tolist() == eager, question
        assert len(logits) == 128 and logits[0].shape == (1, model.config.vocab_size)


@pytest.mark.slow
def test_streaming_reuses_the_cached_prompt_and_applies_the_repetition_penalty(smollm2_nf4):
    model, tokenizer = smollm2_nf4
    decoder = _decoder(model, tokenizer)
    params = SamplingParams(temperature=0, repetition_penalty=1.1, max_new_tokens=40)
    first = _prompt(tokenizer, "What is the capital of France?")
    second = _prompt(tokenizer, "What is the capital of Italy?")
    "".join(decoder.stream_inputs({"input_ids": first}, params))
    assert decoder.last_reused == 0
    text = "".join(decoder.stream_inputs({"input_ids": second}, params))
    assert decoder.last_reused >= 16  # the chat template's system header came from the static cache
    expected = tokenizer.decode(_eager(model, second, 40, repetition_penalty=1.1), skip_special_tokens=True)
    assert text == expected
    assert 0 < decoder.last_new_tokens <= 40 and decoder.last_first_token_s > 0


def test_stops_at_the_end_token_and_falls_back_when_the_prompt_outgrows_the_cache(smollm2_nf4):
    model, tokenizer = smollm2_nf4
    input_ids = _prompt(tokenizer, "Say hello.")
    first = _eager(model, input_ids, 1, repetition_penalty=1.0)[0]
    decoder = _decoder(model, tokenizer)
    decoder.eos = {first}  # the model's first word is now its end: nothing is said
    assert "".join(decoder.stream_inputs({"input_ids": input_ids}, GREEDY)) == ""
    assert decoder.last_new_tokens == 0
    short = _decoder(model, tokenizer, max_len=input_ids.shape[1])  # no room: transformers' generate answers
    params = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=6)
    text = "".join(short.stream_inputs({"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}, params))
    assert text == tokenizer.decode(_eager(model, input_ids, 6, repetition_penalty=1.0), skip_special_tokens=True)


@pytest.mark.slow
def test_a_batch_gets_a_cache_sized_to_its_call_and_a_larger_one_when_a_call_needs_more(smollm2_nf4):
    from models.captured_decoder import BATCH_POSITIONS

    model, tokenizer = smollm2_nf4
    decoder = _decoder(model, tokenizer, max_len=1024)
    input_ids = _prompt(tokenizer, "Explain how a hash table handles collisions.").repeat(3, 1)
    length = input_ids.shape[1]
    params = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=16)
    decoder._state(3)  # a cache of the whole reserve, as every batch had before
    assert decoder._states[3].max_len == 1024
    whole, _ = decoder.generate(input_ids, params)
    decoder.forget(3)
    sized, _ = decoder.generate(input_ids, params)
    assert decoder._states[3].max_len == BATCH_POSITIONS < 1024  # the prompt and 16 tokens, rounded up
    assert torch.equal(sized, whole)  # the cache's size changes no token
    assert all(torch.equal(sized[row], sized[0]) for row in (1, 2))
    longer = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=BATCH_POSITIONS - length + 8)
    tokens, _ = decoder.generate(input_ids, longer)
    assert tokens.shape == (3, longer.max_new_tokens)  # made again, larger: nothing cut short
    assert decoder._states[3].max_len == 2 * BATCH_POSITIONS
    assert torch.equal(tokens[:, :16], sized)
    assert decoder._states[1].max_len == 1024  # batch 1 (made at load) holds the governor's whole reserve


def test_greedy_choice_and_penalty_match_transformers_processors():
    from transformers import RepetitionPenaltyLogitsProcessor

    from models.sampling import choose

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 100, generator=generator) * 3
    seen_ids = torch.randint(0, 100, (3, 12), generator=generator)
    seen = torch.zeros(3, 100, dtype=torch.bool).scatter_(1, seen_ids, True)
    expected = RepetitionPenaltyLogitsProcessor(1.3)(seen_ids, logits.clone()).argmax(-1)
    one = torch.ones(1)
    assert torch.equal(choose(logits, seen, one * 1.3, one, one, greedy=True), expected)


def test_sampling_draws_only_from_the_top_p_of_the_top_k():
    from models.sampling import choose

    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 500, generator=generator) * 4
    seen = torch.zeros(1, 500, dtype=torch.bool)
    order = logits[0].softmax(-1).sort(descending=True)
    keep = int((order.values.cumsum(0) < 0.8).sum()) + 1  # the smallest set holding 80% of the mass
    allowed = set(order.indices[:keep].tolist())
    one = torch.ones(1)
    torch.manual_seed(0)
    draws = [int(choose(logits, seen, one, one, one * 0.8, greedy=False)) for _ in range(300)]
    assert set(draws) <= allowed
    assert len(set(draws)) > 1  # a draw, not a greedy pick


def test_a_model_outside_the_llama_family_is_named_and_left_to_generate():
    from transformers import GPT2Config

    from models.decode_step import unsupported

    assert "gpt2" in unsupported(GPT2Config())


def test_llava_answers_through_the_same_loop_after_its_image_prefill(tiny_llava, red_png):
    from models.captured_decoder import CapturedDecoder
    from models.decode_step import TorchOps
    from models.vision import VisionModel, VisionSpec, load_image

    vision = VisionModel(VisionSpec(str(tiny_llava), quantization="bf16", device="cpu"))
    image = load_image(red_png, 20_000_000)
    prompt = vision.prompt("What colour is this?")
    inputs = vision.processor(images=image, text=prompt, return_tensors="pt")
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    params = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=12)
    decoder = CapturedDecoder(vision.model, vision.processor.tokenizer, 256, ops=TorchOps(), capture=False)
    text = "".join(decoder.stream_inputs(dict(inputs), params))
    with torch.inference_mode():
        eager = vision.model.generate(**inputs, max_new_tokens=12, do_sample=False, repetition_penalty=1.0)
    expected = vision.processor.tokenizer.decode(eager[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text == expected and decoder.last_new_tokens > 0
    assert decoder.last_reused == 0  # an image prompt is never matched against the previous one
