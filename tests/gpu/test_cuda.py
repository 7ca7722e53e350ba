"""On a real GPU (skipped elsewhere): zhiku's loader in NF4 on CUDA, and the governor freeing memory."""

import pytest

pytestmark = pytest.mark.requires_gpu


def test_nf4_on_cuda_through_the_governor_and_unload_frees(small_llama):
    import torch
    from bitsandbytes.nn import Linear4bit

    from models.footprint import GIB
    from models.governor import Governor
    from models.llm import Generator, LlmSpec, SamplingParams, estimate_footprint
    from models.memory import CudaMemory

    spec = LlmSpec(model=str(small_llama), quantization="auto", device="cuda")
    memory = CudaMemory()
    governor = Governor(memory, 8 * GIB)
    governor.register("small", lambda: Generator(spec), estimate=estimate_footprint(spec, 2048))
    baseline = memory.allocated_bytes()
    with governor.acquire("small") as generator:
        layers = [m for m in generator.model.modules() if isinstance(m, Linear4bit)]
        assert len(layers) == 8 * 7
        assert layers[0].weight.quant_state.nested  # double quant
        assert layers[0].compute_dtype == torch.bfloat16
        ids = generator.prompt_ids([{"role": "system", "content": "w5"}, {"role": "user", "content": "w7 w8"}])
        assert ids[0] == 1  # <s> from the Llama-2 fallback template
        text = "".join(generator.stream(ids, SamplingParams(temperature=0, max_new_tokens=8)))
        assert text
    state = governor.state().models[0]
    estimate = estimate_footprint(spec, 2048)
    assert abs(state.measured - estimate.weights) / estimate.weights < 0.25  # estimate within 25% of measured
    assert governor.unload("small")
    # the weights are gone; what stays is CUDA's per-thread cuBLAS workspace, created once per process
    assert memory.allocated_bytes() - baseline < 128 * 1024**2
    after_first = memory.allocated_bytes()
    with governor.acquire("small") as generator:
        "".join(generator.stream(ids, SamplingParams(temperature=0, max_new_tokens=8)))
    assert governor.unload("small")
    assert memory.allocated_bytes() == after_first  # the allocator's figure comes back exactly


def test_budget_too_small_refuses_with_sizes(small_llama):
    from models.governor import DoesNotFit, Governor
    from models.llm import Generator, LlmSpec, estimate_footprint
    from models.memory import CudaMemory

    spec = LlmSpec(model=str(small_llama), quantization="nf4", device="cuda")
    governor = Governor(CudaMemory(), 64 * 1024**2)
    governor.register("small", lambda: Generator(spec), estimate=estimate_footprint(spec, 2048))
    with pytest.raises(DoesNotFit, match="needs .* GiB but the memory budget is 0.06 GiB"):
        with governor.acquire("small"):
            pass


def test_nvml_reads_the_gpu():
    from models.telemetry import Nvml

    reading = Nvml().read()
    assert reading.gpu_name and reading.memory_total and reading.memory_total > 0
    assert reading.temperature_c is not None and reading.power_w is not None
