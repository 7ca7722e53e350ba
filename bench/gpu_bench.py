"""LLaMA-2-13B (random weights, full config) in NF4 through zhiku's own loader and VRAM governor.

Run on a CUDA machine with bitsandbytes:  python bench/gpu_bench.py [--dir /dev/shm/llama2-13b-random]
    [--decode auto|eager] [--nf4-kernel bitsandbytes|triton|zhiku]
Measures, per budget (24, 12, 6 GiB): the governor's decision, weights and the decoder's held memory (static
cache, graph pool) against the estimate, load time; then, for a ~1,500-token RAG prompt and 256 new tokens:
time to first token, decode tokens/s at batch 1 and 4 as "N% of floor" (the bytes a step must read over the
copy bandwidth measured in the same run), the captured step's logits against transformers' eager steps, and
peak memory. Prints a table and writes JSON next to it (--out).
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


def build_prompt(generator, tokens: int, vocab: int, seed: int = 0) -> list[int]:
    """A RAG-shaped prompt (system, five context chunks, question) of about ``tokens`` tokens."""
    from bench.random_checkpoints import random_words

    chunk_words = max(1, (tokens - 60) // 5)
    context = "\n\n".join(
        f"[{i}] (paper.pdf, p. {i})\n{random_words(chunk_words, vocab, seed=100 * seed + i)}" for i in range(5)
    )
    messages = [
        {"role": "system", "content": "Answer only from the context. " + random_words(10, vocab, 99)},
        {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {random_words(20, vocab, 7 + seed)}"},
    ]
    return generator.prompt_ids(messages)


def decode_rate(decoder, input_ids, new_tokens: int) -> float:
    """Tokens/s of the decode loop alone: the time of ``new_tokens`` more tokens than a 16-token run, over them."""
    from bench.gpu_measure import timed_cuda
    from models.llm import SamplingParams

    def run(n: int) -> float:
        return statistics.median(
            timed_cuda(lambda: decoder.generate(input_ids, SamplingParams(0, 1.0, 1.0, n)), repeats=3)
        )

    short, long = run(16), run(16 + new_tokens)
    return input_ids.shape[0] * new_tokens / (long - short)


def eager_step_logits(model, input_ids, tokens):
    """Logits of transformers' own decode steps (the bitsandbytes GEMV path), fed ``tokens`` one at a time."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache()
    with torch.inference_mode():
        out = model(input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        logits = [out.logits[0, -1].float()]
        for token in tokens[:-1]:
            out = model(token.view(1, 1), past_key_values=cache, use_cache=True)
            logits.append(out.logits[0, -1].float())
    return torch.stack(logits)


def agreement(generator, vocab: int, prompts: int = 5, steps: int = 128) -> dict:
    """Cosine of the captured step's logits against transformers' eager decode steps on the same tokens; and,
    for scale, of those eager steps against the eager model's one-pass forward over the same tokens."""
    import torch

    from models.llm import SamplingParams

    decoder, model = generator.decoder, generator.model
    cosines, baseline, same = [], [], 0
    for seed in range(prompts):
        ids = torch.tensor([build_prompt(generator, 1500, vocab, seed=seed)], device="cuda")
        tokens, logits = decoder.generate(ids, SamplingParams(0, 1.0, 1.0, steps + 1), record_logits=True)
        tokens = tokens.to(ids.device)[0]
        captured = torch.cat(logits)[1:]  # [steps, V]: one per captured step (the first came from the prefill)
        eager = eager_step_logits(model, ids, tokens)[1:]
        with torch.inference_mode():
            forced = model(torch.cat([ids, tokens[None, :-1]], dim=1), logits_to_keep=steps + 1).logits[0, 1:].float()
        cosines += torch.nn.functional.cosine_similarity(captured, eager, dim=-1).tolist()
        baseline += torch.nn.functional.cosine_similarity(forced, eager, dim=-1).tolist()
        same += int((captured.argmax(-1) == eager.argmax(-1)).sum())
    return {
        "agreement_steps": len(cosines),
        "agreement_cosine_min": min(cosines),
        "agreement_cosine_mean": statistics.fmean(cosines),
        "agreement_argmax_same": same / len(cosines),
        "eager_vs_one_pass_cosine_min": min(baseline),
        "eager_vs_one_pass_cosine_mean": statistics.fmean(baseline),
    }


def measure(generator, vocab: int, new_tokens: int, bandwidth: float, rounds: int = 3) -> dict:
    import torch

    from bench.gpu_measure import bytes_per_token, floor_tok_s, ratio_at_floors, timed_cuda
    from models.llm import SamplingParams

    model = generator.model
    ids = build_prompt(generator, 1500, vocab)
    input_ids = torch.tensor([ids], device="cuda")
    result: dict = {"prompt_tokens": len(ids), "decode_path": generator.decode_path}
    with torch.inference_mode():
        model(input_ids[:, :64])  # warm-up: kernels, allocator
        prefill = timed_cuda(lambda: model(input_ids, logits_to_keep=1), repeats=5)
    result["prefill_ms_median"] = statistics.median(prefill) * 1000

    # batch 1 through zhiku's streaming path (what the chat gets): time to first token and to first text, for
    # ``rounds`` different prompts (nothing to reuse), then the last prompt again (its keys and values reused where
    # the decoder reuses them: transformers' generate; the captured decoder replays its prefill graph whatever)
    params = SamplingParams(temperature=0, max_new_tokens=new_tokens, repetition_penalty=1.0)
    torch.cuda.reset_peak_memory_stats()
    prompts = [ids] + [build_prompt(generator, 1500, vocab, seed=r) for r in range(1, rounds)]
    ttfts, text_ttfts, rates, prefills, reused, phases, sizes = [], [], [], [], [], [], []
    for prompt in prompts + prompts[-1:]:
        started = time.perf_counter()
        first_text = None
        for piece in generator.stream(prompt, params):
            if piece and first_text is None:
                first_text = time.perf_counter() - started
        total = time.perf_counter() - started
        first, tokens = generator.last_first_token_s, generator.last_new_tokens
        ttfts.append(first)
        prefills.append(getattr(generator.decoder, "last_prefill_s", 0.0) * 1000)
        phases.append({k: round(v, 1) for k, v in getattr(generator.decoder, "last_prefill_phases_ms", {}).items()})
        reused.append(generator.last_reused_tokens)
        sizes.append(getattr(generator.decoder, "last_prefill_size", None))
        text_ttfts.append(first_text or total)
        rates.append((tokens - 1) / (total - first) if tokens > 1 else 0.0)
    result.update(
        new_tokens_streamed=generator.last_new_tokens,
        ttft_ms=[round(t * 1000, 1) for t in ttfts],
        stream_prefill_ms=[round(t, 1) for t in prefills],
        stream_prefill_phases_ms=phases,
        stream_reused_tokens=reused,
        stream_prefill_sizes=sizes,
        ttft_ms_median=statistics.median(ttfts[:-1]) * 1000,
        ttft_reused_ms=ttfts[-1] * 1000,
        first_text_ms_median=statistics.median(text_ttfts[:-1]) * 1000,
        decode_tok_s_streamed_median=statistics.median(rates),
        peak_allocated_batch1_gib=torch.cuda.max_memory_allocated() / GIB,
    )
    if generator.decode_path == "captured":  # the first prompt's captured prefill + first token (after the rounds:
        # it leaves its prompt in the cache, which the first round would have reused)
        one = SamplingParams(temperature=0, max_new_tokens=1, repetition_penalty=1.0)
        captured = timed_cuda(lambda: generator.decoder.generate(input_ids, one), repeats=5)
        result["prefill_captured_ms_median"] = statistics.median(captured) * 1000
        result["prefill_bucket"] = generator.decoder.last_prefill_size
    weights, kv = bytes_per_token(model, len(ids) + new_tokens // 2)
    floor = floor_tok_s(bandwidth, weights, kv)
    result.update(bytes_weights_gb=weights / 1e9, bytes_kv_gb=kv / 1e9, floor_tok_s=floor)
    if generator.decode_path == "captured":
        decoder = generator.decoder
        result["decode_tok_s_batch1"] = decode_rate(decoder, input_ids, new_tokens)
        result["pct_of_floor"] = 100 * result["decode_tok_s_batch1"] / floor
        torch.cuda.reset_peak_memory_stats()
        batch = input_ids.repeat(4, 1)
        decoder.generate(batch, SamplingParams(0, 1.0, 1.0, 4))  # captures the batch-4 step
        result["decode_tok_s_batch4_total"] = decode_rate(decoder, batch, new_tokens)
        result["batch4_over_batch1"] = result["decode_tok_s_batch4_total"] / result["decode_tok_s_batch1"]
        result["floor_tok_s_batch4"] = floor_tok_s(bandwidth, weights, kv, 4)
        result["pct_of_floor_batch4"] = 100 * result["decode_tok_s_batch4_total"] / result["floor_tok_s_batch4"]
        result["batch4_over_batch1_at_floors"] = ratio_at_floors(weights, kv, 4)
        result["peak_allocated_batch4_gib"] = torch.cuda.max_memory_allocated() / GIB
        decoder.forget(4)
        result.update(agreement(generator, vocab))
    else:
        result["decode_tok_s_batch1"] = result["decode_tok_s_streamed_median"]
        result["pct_of_floor"] = 100 * result["decode_tok_s_batch1"] / floor

    # transformers' own generate on the same model, for comparison (one short round: it is slow)
    with torch.inference_mode():
        runs = {}
        for n in (4, 36):
            torch.cuda.synchronize()
            start = time.perf_counter()
            model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, pad_token_id=0)  # fmt: skip
            torch.cuda.synchronize()
            runs[n] = time.perf_counter() - start
    result["decode_tok_s_transformers_generate"] = 32 / (runs[36] - runs[4])
    return result


def run_budget(
    folder: Path,
    budget_gib: float,
    vocab: int,
    new_tokens: int,
    full: bool,
    bandwidth: float,
    decode: str,
    nf4_kernel: str,
) -> dict:
    import torch

    from models.governor import DoesNotFit, Governor
    from models.llm import Generator, LlmSpec, SamplingParams, estimate_footprint
    from models.memory import CudaMemory
    from models.telemetry import Nvml

    spec = LlmSpec(
        model=str(folder), quantization="nf4", device="cuda", context_tokens=4096, decode=decode, nf4_kernel=nf4_kernel
    )
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
                held_gib=generator.reserved_bytes / GIB,
                counted_gib=state.footprint / GIB,
                within_estimate=state.measured + generator.reserved_bytes <= footprint.total,
                nvml_used_gib=(Nvml().read().memory_used or 0) / GIB,
            )
            row["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / GIB  # the load itself
            if full:
                row.update(measure(generator, vocab, new_tokens, bandwidth))
            else:  # one short answer, so the peak covers generation too
                list(
                    generator.stream(
                        build_prompt(generator, 1500, vocab), SamplingParams(temperature=0, max_new_tokens=16)
                    )
                )
            row["peak_allocated_gib"] = max(row["peak_allocated_gib"], row.get("peak_allocated_batch1_gib", 0))
            peak = max(row["peak_allocated_gib"] * GIB, 0 if full else torch.cuda.max_memory_allocated())
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
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--decode", choices=["auto", "eager"], default="auto")
    parser.add_argument("--nf4-kernel", choices=["bitsandbytes", "triton", "zhiku"], default="zhiku")
    parser.add_argument("--tiling", type=Path, help="gpu_kernels.py's JSON: use the NF4 kernel tiling it found fastest")
    parser.add_argument("--mma-from-batch", type=int, help="the smallest batch on the tensor-core NF4 kernel (1-9)")
    parser.add_argument("--mma-config", type=json.loads, help='JSON over nf4_cuda.MMA_CONFIG, e.g. {"DEPTH": 4}')
    parser.add_argument("--mma-residual-config", type=json.loads, help="the same over MMA_RESIDUAL_CONFIG (o, down)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "gpu_bench.json")
    args = parser.parse_args()

    import torch
    import transformers

    from bench.gpu_measure import copy_bandwidth
    from bench.random_checkpoints import LLAMA2_13B, save_random_llama

    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    started = time.perf_counter()
    if not (args.dir / "config.json").is_file():
        save_random_llama(args.dir)
    build_s = time.perf_counter() - started
    tiling = None
    if args.tiling:  # the kernel's tiling is not a user setting: the fastest one measured on this GPU
        from models import nf4_gemv

        rows = json.loads(args.tiling.read_text())["layers"]
        tiling = min((r for r in rows if r["kernel"] == "zhiku" and r["B"] == 1), key=lambda r: r["ms"])["tiling"]
        # overlapped launches: the decoder decides; the kernel: the CUDA one where it fits, this tiling elsewhere
        tiling = {k: v for k, v in tiling.items() if k not in ("PDL", "KERNEL")}
        batch4 = [r for r in rows if r["kernel"] == "zhiku" and r["B"] == 4 and "DOT" in (r["tiling"] or {})]
        if batch4:  # batches on the tensor cores or not: as the faster of the two measured
            tiling = dict(tiling, DOT=min(batch4, key=lambda r: r["ms"])["tiling"]["DOT"])
        nf4_gemv.DEFAULT_CONFIG.update(tiling)
    from models import nf4_cuda

    if args.mma_from_batch is not None:  # which batches the tensor-core kernel takes (nf4_cuda.default_config)
        nf4_cuda.MMA_FROM_BATCH = args.mma_from_batch
    nf4_cuda.MMA_CONFIG.update(args.mma_config or {})  # the tensor-core kernel's tilings (gpu_kernels.py --products)
    nf4_cuda.MMA_RESIDUAL_CONFIG.update(args.mma_residual_config or {})
    device = torch.cuda.get_device_name(0)
    bandwidth = copy_bandwidth()
    results = {
        "device": device,
        "copy_bandwidth_TBps": bandwidth / 1e12,
        "nf4_kernel": args.nf4_kernel,
        "nf4_tiling": tiling,
        "nf4_mma_from_batch": nf4_cuda.MMA_FROM_BATCH,
        "nf4_mma_config": nf4_cuda.MMA_CONFIG,
        "nf4_mma_residual_config": nf4_cuda.MMA_RESIDUAL_CONFIG,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "bitsandbytes": __import__("bitsandbytes").__version__,
        "checkpoint_build_s": build_s,
        "budgets": [],
    }
    budgets = [float(b) for b in args.budgets.split(",")]
    for i, budget in enumerate(budgets):
        row = run_budget(
            args.dir,
            budget,
            LLAMA2_13B["vocab_size"],
            args.new_tokens,
            (i == 0),
            bandwidth,
            args.decode,
            args.nf4_kernel,
        )
        results["budgets"].append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "events"}, default=str), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))

    print(f"\ndevice: {device}; torch {torch.__version__}; transformers {transformers.__version__}")
    print(f"copy bandwidth {bandwidth / 1e12:.2f} TB/s")
    header = (
        f"{'budget':>7} {'decision':>9} {'estimate':>9} {'weights':>9} {'held':>7} {'in est':>6} {'load s':>7} "
        f"{'peak':>7} {'freed':>6}"
    )
    print(header)
    for r in results["budgets"]:
        print(
            f"{r['budget_gib']:>5.0f}Gi {r['decision']:>9} {r['estimate_gib']:>7.2f}Gi "
            f"{r.get('resident_gib', float('nan')):>7.2f}Gi {r.get('held_gib', float('nan')):>5.2f}Gi "
            f"{str(r.get('within_estimate', '')):>6} {r.get('load_s') or float('nan'):>7.1f} "
            f"{r.get('peak_allocated_gib', float('nan')):>5.2f}Gi {str(r['freed_to_baseline']):>6}"
        )
    first = results["budgets"][0]
    if "prefill_ms_median" in first:
        print(
            f"\nprompt {first['prompt_tokens']} tokens, {args.new_tokens} new, decode path {first['decode_path']}: "
            f"prefill {first['prefill_ms_median']:.0f} ms (the model's own; captured, padded to "
            f"{first.get('prefill_bucket')}: {first.get('prefill_captured_ms_median', float('nan')):.0f} ms), "
            f"TTFT {first['ttft_ms_median']:.0f} ms "
            f"(first text {first['first_text_ms_median']:.0f} ms; the same prompt again: "
            f"{first['ttft_reused_ms']:.0f} ms)\n"
            f"floor: {first['bytes_weights_gb']:.2f} GB weights + {first['bytes_kv_gb']:.2f} GB KV per token "
            f"-> {first['floor_tok_s']:.0f} tok/s\n"
            f"decode batch 1: {first['decode_tok_s_batch1']:.1f} tok/s = {first['pct_of_floor']:.0f}% of floor "
            f"(streamed {first['decode_tok_s_streamed_median']:.1f}; transformers generate "
            f"{first['decode_tok_s_transformers_generate']:.1f})"
        )
        if "decode_tok_s_batch4_total" in first:
            print(
                f"decode batch 4: {first['decode_tok_s_batch4_total']:.1f} tok/s total "
                f"= {first['batch4_over_batch1']:.2f}x batch 1 = {first['pct_of_floor_batch4']:.0f}% of its floor "
                f"{first['floor_tok_s_batch4']:.0f} tok/s (at the floors batch 4 would be "
                f"{first['batch4_over_batch1_at_floors']:.2f}x batch 1); peak batch 1 "
                f"{first['peak_allocated_batch1_gib']:.2f} GiB, batch 4 {first['peak_allocated_batch4_gib']:.2f} GiB\n"
                f"captured vs eager logits, {first['agreement_steps']} steps: cosine min "
                f"{first['agreement_cosine_min']:.5f}, mean {first['agreement_cosine_mean']:.5f}; "
                f"same argmax {100 * first['agreement_argmax_same']:.1f}% (eager steps vs the eager one-pass "
                f"forward: cosine min {first['eager_vs_one_pass_cosine_min']:.5f}, "
                f"mean {first['eager_vs_one_pass_cosine_mean']:.5f})"
            )
    for r in results["budgets"]:
        if r["decision"] == "refused":
            print(f"\n{r['budget_gib']:.0f} GiB refused: {r['message']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
