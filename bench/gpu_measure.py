"""Measuring helpers shared by the GPU benchmarks: copy bandwidth, timings, graph replays, NF4 bytes read.

Tables are printed with ``bench.ingest_bench.table``, like the other benchmarks."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

RANDOM_13B = Path("/dev/shm/llama2-13b-random")  # where the random-weight LLaMA-2-13B checkpoint is built


def copy_bandwidth(gigabytes: float = 2.0, repeats: int = 20) -> float:
    """Device-to-device copy, bytes read + written per second (the memory ceiling the floors are taken over)."""
    import torch

    n = int(gigabytes * 1e9 / 2)
    src = torch.empty(n, dtype=torch.bfloat16, device="cuda").normal_()
    dst = torch.empty_like(src)
    seconds = median_cuda(lambda: dst.copy_(src), repeats=repeats)
    return 2 * n * 2 / seconds


def floor_tok_s(bandwidth: float, weights: int, kv: int, batch: int = 1) -> float:
    """Tokens a second (all sequences together) if a decode step only read its bytes at ``bandwidth``: the weights
    once, each sequence's KV cache (``kv`` bytes) once. Batch 4 / batch 1 at the floors is then 4 (w + kv) / (w + 4 kv):
    below 3 where the caches are large (2.69 x for the 13B at 1,630 tokens)."""
    return batch * bandwidth / (weights + batch * kv)


def ratio_at_floors(weights: int, kv: int, batch: int) -> float:
    """Batch ``batch``'s tokens a second over batch 1's if both ran at their floors (``floor_tok_s``)."""
    return floor_tok_s(1.0, weights, kv, batch) / floor_tok_s(1.0, weights, kv)


def timed_cuda(fn, repeats: int = 5) -> list[float]:
    """Host-clock seconds of ``fn()``, synchronized before and after (for work that includes host steps)."""
    import time

    import torch

    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def median_cuda(fn, repeats: int = 20, warmup: int = 3) -> float:
    """Median seconds of ``fn()`` on the current stream, timed with CUDA events."""
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times)


def graph_seconds(fn, repeats: int = 20) -> float:
    """Median seconds of one replay of ``fn`` captured in a CUDA graph (launch gaps gone)."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return median_cuda(graph.replay, repeats=repeats)


def replay_us(decoder, batch: int, context: int) -> float:
    """µs of one replay of ``decoder``'s greedy step graph at ``batch`` and a cache of ``context`` tokens (captured
    first where it is not)."""
    state = decoder._state(batch, context + 1)
    graph = state.graphs[True]

    def replay():
        state.pos.fill_(context)
        graph.replay()

    return median_cuda(replay, repeats=20) * 1e6


def nf4_bytes(module) -> int:
    """Bytes a bitsandbytes 4-bit Linear reads per product: packed codes and (nested) scales."""
    weight = module.weight
    state = weight.quant_state
    total = weight.data.numel() * weight.data.element_size() + state.absmax.numel() * state.absmax.element_size()
    if state.nested:
        total += state.state2.absmax.numel() * 4 + state.state2.code.numel() * 4
    return total


def bytes_per_token(model, context: int) -> tuple[int, int]:
    """Weight bytes one decode step reads (NF4 linears with their scales, the bf16 head, norms) and KV bytes."""
    from bitsandbytes.nn import Linear4bit

    from models.footprint import kv_cache_bytes

    weights = 0
    for name, module in model.named_modules():
        if isinstance(module, Linear4bit):
            weights += nf4_bytes(module)
        elif name.endswith("norm"):
            weights += module.weight.numel() * module.weight.element_size()
    head = model.get_output_embeddings().weight
    return weights + head.numel() * head.element_size(), kv_cache_bytes(model.config, context, 1)


def random_13b_generator(folder):
    """zhiku's generator over the random-weight LLaMA-2-13B in ``folder`` (built there first if missing), NF4, a
    4,096-token cache; None without a CUDA GPU (the caller says so)."""
    import torch

    from bench.random_checkpoints import save_random_llama
    from models.llm import Generator, LlmSpec

    if not torch.cuda.is_available():
        return None
    if not (folder / "config.json").is_file():
        save_random_llama(folder)
    return Generator(LlmSpec(model=str(folder), quantization="nf4", device="cuda", context_tokens=4096))


def random_13b_parser(description: str, out: Path) -> argparse.ArgumentParser:
    """The options every bench over the random 13B takes: ``--dir`` (its checkpoint) and ``--out`` (the JSON)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dir", type=Path, default=RANDOM_13B)
    parser.add_argument("--out", type=Path, default=out)
    return parser
