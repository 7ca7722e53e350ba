"""LLaMA-2-13B (random weights, full config) in NF4 through zhiku's own loader and VRAM governor.

Run on a CUDA machine with bitsandbytes:  python bench/gpu_bench.py [--dir /dev/shm/llama2-13b-random]
Measures, per budget (24, 12, 6 GiB): the governor's decision, resident bytes (allocator delta), load time;
then time to first token for a ~1,500-token RAG prompt, decode tokens/s at batch 1 and 4, and peak memory.
Prints a table and writes JSON next to it (--out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.footprint import GIB  # noqa: E402
from offline import enforce_offline  # noqa: E402

enforce_offline()


def build_prompt(generator, tokens: int, vocab: int) -> list[int]:
    """A RAG-shaped prompt (system, five context chunks, question) of about ``tokens`` tokens."""
    from bench.random_checkpoints import random_words

    chunk_words = max(1, (tokens - 60) // 5)
    context = "\n\n".join(f"[{i}] (paper.pdf, p. {i})\n{random_words(chunk_words, vocab, seed=i)}" for i in range(5))
    messages = [
        {"role": "system", "content": "Answer only from the context. " + random_words(10, vocab, 99)},
        {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {random_words(20, vocab, 7)}"},
    ]
    return generator.prompt_ids(messages)


def timed_cuda(fn, repeats: int = 5) -> list[float]:
    import torch

    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def measure(generator, vocab: int, new_tokens: int, rounds: int = 6) -> dict:
    import torch

    from models.llm import SamplingParams

    model = generator.model
    ids = build_prompt(generator, 1500, vocab)
    input_ids = torch.tensor([ids], device="cuda")
    result: dict = {"prompt_tokens": len(ids)}
    with torch.inference_mode():
        model(input_ids[:, :64])  # warm-up: kernels, allocator
        prefill = timed_cuda(lambda: model(input_ids, logits_to_keep=1), repeats=5)
    result["prefill_ms_median"] = statistics.median(prefill) * 1000

    # batch 1: zhiku's streaming path and plain generate, interleaved (decode speed drifts over time)
    params = SamplingParams(temperature=0, max_new_tokens=new_tokens, repetition_penalty=1.0)
    torch.cuda.reset_peak_memory_stats()
    ttfts, rates, text_ttfts, plain = [], [], [], []
    for _ in range(rounds):
        started = time.perf_counter()
        first_text = None
        for piece in generator.stream(ids, params):
            if piece and first_text is None:
                first_text = time.perf_counter() - started
        total = time.perf_counter() - started
        first = generator.last_first_token_s
        tokens = generator.last_new_tokens
        ttfts.append(first)
        text_ttfts.append(first_text or total)
        rates.append((tokens - 1) / (total - first) if tokens > 1 else 0.0)
        with torch.inference_mode():
            torch.cuda.synchronize()
            start = time.perf_counter()
            out = model.generate(
                input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
            )  # fmt: skip
            torch.cuda.synchronize()
        produced = out.shape[1] - input_ids.shape[1]
        plain.append((produced - 1) / (time.perf_counter() - start - statistics.median(prefill)))
    result["new_tokens_streamed"] = generator.last_new_tokens
    result["ttft_ms"] = [round(t * 1000, 1) for t in ttfts]
    result["ttft_ms_median"] = statistics.median(ttfts) * 1000
    result["first_text_ms_median"] = statistics.median(text_ttfts) * 1000
    result["decode_tok_s_batch1"] = [round(r, 1) for r in rates]
    result["decode_tok_s_batch1_median"] = statistics.median(rates)
    result["decode_tok_s_batch1_plain_generate"] = [round(r, 1) for r in plain]
    result["decode_tok_s_batch1_plain_generate_median"] = statistics.median(plain)
    result["peak_allocated_batch1_gib"] = torch.cuda.max_memory_allocated() / GIB

    # batch 4 with plain generate on the same model (same 1,500-token prompts)
    torch.cuda.reset_peak_memory_stats()
    batch = input_ids.repeat(4, 1)
    with torch.inference_mode():
        torch.cuda.synchronize()
        start = time.perf_counter()
        model.generate(
            batch,
            attention_mask=torch.ones_like(batch),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
        )
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    prefill4 = statistics.median(prefill) * 4
    result["decode_tok_s_batch4_total"] = 4 * new_tokens / max(1e-6, elapsed - prefill4)
    result["decode_tok_s_batch4_per_sequence"] = result["decode_tok_s_batch4_total"] / 4
    result["peak_allocated_batch4_gib"] = torch.cuda.max_memory_allocated() / GIB
    return result


def run_budget(folder: Path, budget_gib: float, vocab: int, new_tokens: int, full: bool) -> dict:
    import torch

    from models.governor import DoesNotFit, Governor
    from models.llm import Generator, LlmSpec, SamplingParams, estimate_footprint
    from models.memory import CudaMemory
    from models.telemetry import Nvml

    spec = LlmSpec(model=str(folder), quantization="nf4", device="cuda")
    memory = CudaMemory()
    governor = Governor(memory, int(budget_gib * GIB))
    footprint = estimate_footprint(spec, context_tokens=4096)
    governor.register("llama-2-13b", lambda: Generator(spec), estimate=footprint)
    row: dict = {
        "budget_gib": budget_gib,
        "estimate_gib": footprint.total / GIB,
        "estimate": footprint.describe(),
    }
    torch.cuda.reset_peak_memory_stats()
    baseline = memory.allocated_bytes()
    try:
        with governor.acquire("llama-2-13b") as generator:
            state = governor.state().models[0]
            row.update(
                decision="loaded",
                load_s=state.load_seconds,
                resident_gib=state.measured / GIB,
                counted_gib=state.footprint / GIB,
                nvml_used_gib=(Nvml().read().memory_used or 0) / GIB,
            )
            row["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / GIB  # the load itself
            if full:
                row.update(measure(generator, vocab, new_tokens))
            else:  # one short answer, so the peak covers generation too
                list(
                    generator.stream(
                        build_prompt(generator, 1500, vocab), SamplingParams(temperature=0, max_new_tokens=16)
                    )
                )
            peak = max(torch.cuda.max_memory_allocated(), int(row["peak_allocated_gib"] * GIB))
            row["peak_allocated_gib"] = max(row["peak_allocated_gib"], row.get("peak_allocated_batch1_gib", 0))
            row["peak_within_budget"] = peak <= budget_gib * GIB
    except DoesNotFit as exc:
        row.update(decision="refused", message=str(exc))
    governor.unload("llama-2-13b")
    row["allocated_after_unload_gib"] = memory.allocated_bytes() / GIB
    row["freed_to_baseline"] = memory.allocated_bytes() <= baseline + 128 * 1024**2  # cuBLAS workspaces stay
    row["events"] = list(governor.events)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path("/dev/shm/llama2-13b-random"))
    parser.add_argument("--budgets", default="24,12,6")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "gpu_bench.json")
    args = parser.parse_args()

    import torch
    import transformers

    from bench.random_checkpoints import LLAMA2_13B, save_random_llama

    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    started = time.perf_counter()
    if not (args.dir / "config.json").is_file():
        save_random_llama(args.dir)
    build_s = time.perf_counter() - started
    device = torch.cuda.get_device_name(0)
    results = {
        "device": device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "bitsandbytes": __import__("bitsandbytes").__version__,
        "checkpoint_build_s": build_s,
        "budgets": [],
    }
    budgets = [float(b) for b in args.budgets.split(",")]
    for i, budget in enumerate(budgets):
        row = run_budget(args.dir, budget, LLAMA2_13B["vocab_size"], args.new_tokens, full=(i == 0))
        results["budgets"].append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "events"}, default=str), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))

    print(f"\ndevice: {device}; torch {torch.__version__}; transformers {transformers.__version__}")
    header = f"{'budget':>7} {'decision':>9} {'estimate':>9} {'resident':>9} {'load s':>7} {'peak':>7} {'freed':>6}"
    print(header)
    for r in results["budgets"]:
        print(
            f"{r['budget_gib']:>5.0f}Gi {r['decision']:>9} {r['estimate_gib']:>7.2f}Gi "
            f"{r.get('resident_gib', float('nan')):>7.2f}Gi {r.get('load_s') or float('nan'):>7.1f} "
            f"{r.get('peak_allocated_gib', float('nan')):>5.2f}Gi {str(r['freed_to_baseline']):>6}"
        )
    first = results["budgets"][0]
    if "prefill_ms_median" in first:
        print(
            f"\nprompt {first['prompt_tokens']} tokens: prefill {first['prefill_ms_median']:.0f} ms, "
            f"TTFT {first['ttft_ms_median']:.0f} ms (first text {first['first_text_ms_median']:.0f} ms); "
            f"decode batch 1 {first['decode_tok_s_batch1_median']:.1f} tok/s streamed, "
            f"{first['decode_tok_s_batch1_plain_generate_median']:.1f} plain generate; "
            f"batch 4 {first['decode_tok_s_batch4_total']:.1f} tok/s total "
            f"({first['decode_tok_s_batch4_per_sequence']:.1f} per sequence); peak batch 1 "
            f"{first['peak_allocated_batch1_gib']:.2f} GiB, batch 4 {first['peak_allocated_batch4_gib']:.2f} GiB"
        )
    for r in results["budgets"]:
        if r["decision"] == "refused":
            print(f"\n{r['budget_gib']:.0f} GiB refused: {r['message']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
