"""LLaVA-1.5-13B and LLaMA-2-13B (random weights, full configs, NF4) sharing one GPU through zhiku's governor.

Run on a CUDA machine with bitsandbytes:  python bench/vision_bench.py [--budgets 24,12] [--rounds 10]
For each budget, alternates text and image questions (``--rounds`` of each) through zhiku's own loaders and
governor and reports: peak allocated memory (must stay under the budget), swaps and their time, time to first
token and decode speed per question type, and the models' resident sizes. Prints a table, writes JSON (--out).
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


def run_budget(text_dir: Path, vision_dir: Path, budget_gib: float, rounds: int, new_tokens: int) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from bench.gpu_bench import build_prompt
    from bench.random_checkpoints import LLAMA2_13B, random_words
    from models.governor import Governor
    from models.llm import Generator, LlmSpec, SamplingParams, estimate_footprint
    from models.memory import CudaMemory
    from models.vision import VisionModel, VisionSpec, estimate_vision

    text_spec = LlmSpec(model=str(text_dir), quantization="nf4", device="cuda")
    vision_spec = VisionSpec(str(vision_dir), quantization="nf4", device="cuda")
    governor = Governor(CudaMemory(), int(budget_gib * GIB))
    governor.register("chat", lambda: Generator(text_spec), estimate=estimate_footprint(text_spec, 4096))
    governor.register("vision", lambda: VisionModel(vision_spec), estimate=estimate_vision(vision_spec, 4096))
    params = SamplingParams(temperature=0, max_new_tokens=new_tokens, repetition_penalty=1.0)
    rng = np.random.default_rng(0)
    torch.cuda.reset_peak_memory_stats()
    questions = []
    for i in range(rounds):
        for kind in ("text", "image"):
            started = time.perf_counter()
            with governor.acquire("chat" if kind == "text" else "vision") as model:
                acquired = time.perf_counter() - started
                if kind == "text":
                    ids = build_prompt(model, 512, LLAMA2_13B["vocab_size"])
                    pieces = list(model.stream(ids, params))
                else:
                    image = Image.fromarray(rng.integers(0, 255, (336, 336, 3), dtype=np.uint8))
                    prompt = model.prompt(random_words(20, 32000, seed=i))
                    pieces = list(model.stream(image, prompt, params))
                total = time.perf_counter() - started - acquired
                first = model.last_first_token_s
                tokens = model.last_new_tokens
            questions.append(
                dict(
                    kind=kind,
                    acquire_s=acquired,
                    ttft_ms=first * 1000,
                    decode_tok_s=(tokens - 1) / (total - first) if tokens > 1 else 0.0,
                    tokens=tokens,
                    text_chars=len("".join(pieces)),
                    allocated_gib=torch.cuda.memory_allocated() / GIB,
                )
            )
    state = {m.name: m for m in governor.state().models}
    events = list(governor.events)
    swaps = sum(1 for e in events if "evicted" in e)
    reloads = [q["acquire_s"] for q in questions if q["acquire_s"] > 0.5][2:]  # after the two first loads
    peak = torch.cuda.max_memory_allocated()
    for name in ("chat", "vision"):
        governor.unload(name)

    def median(kind: str, key: str) -> float:
        return statistics.median(q[key] for q in questions if q["kind"] == kind)

    return {
        "budget_gib": budget_gib,
        "peak_allocated_gib": peak / GIB,
        "peak_within_budget": peak <= budget_gib * GIB,
        "swaps": swaps,
        "swap_load_s_median": statistics.median(reloads) if reloads else None,
        "estimate_gib": {n: state[n].estimate / GIB for n in state},
        "resident_gib": {n: (state[n].measured or 0) / GIB for n in state},
        "loads": {n: state[n].loads for n in state},
        "ttft_ms_text": median("text", "ttft_ms"),
        "ttft_ms_image": median("image", "ttft_ms"),
        "decode_tok_s_text": median("text", "decode_tok_s"),
        "decode_tok_s_image": median("image", "decode_tok_s"),
        "questions": questions,
        "events": events,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--text-dir", type=Path, default=Path("/dev/shm/llama2-13b-random"))
    parser.add_argument("--vision-dir", type=Path, default=Path("/dev/shm/llava-1.5-13b-random"))
    parser.add_argument("--budgets", default="24,12")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "vision_bench.json")
    args = parser.parse_args()

    import torch
    import transformers

    from bench.random_checkpoints import save_random_llama, save_random_llava

    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    started = time.perf_counter()
    if not (args.text_dir / "config.json").is_file():
        save_random_llama(args.text_dir)
    if not (args.vision_dir / "config.json").is_file():
        save_random_llava(args.vision_dir)
    results = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "checkpoints_build_s": time.perf_counter() - started,
        "budgets": [],
    }
    for budget in (float(b) for b in args.budgets.split(",")):
        row = run_budget(args.text_dir, args.vision_dir, budget, args.rounds, args.new_tokens)
        results["budgets"].append(row)
        summary = {k: v for k, v in row.items() if k not in ("questions", "events")}
        print(json.dumps(summary, default=str), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\ndevice: {results['device']}; {args.rounds} text + {args.rounds} image questions, alternating")
    print(f"{'budget':>7} {'peak':>8} {'within':>6} {'swaps':>5} {'swap s':>6} {'TTFT text':>9} {'TTFT img':>8} "
          f"{'tok/s text':>10} {'tok/s img':>9}")  # fmt: skip
    for r in results["budgets"]:
        swap = r["swap_load_s_median"]
        print(
            f"{r['budget_gib']:>5.0f}Gi {r['peak_allocated_gib']:>6.2f}Gi {str(r['peak_within_budget']):>6} "
            f"{r['swaps']:>5} {'-' if swap is None else f'{swap:.1f}':>6} {r['ttft_ms_text']:>7.0f}ms "
            f"{r['ttft_ms_image']:>6.0f}ms {r['decode_tok_s_text']:>10.1f} {r['decode_tok_s_image']:>9.1f}"
        )
    first = results["budgets"][0]
    print(f"resident: {first['resident_gib']}; estimates: {first['estimate_gib']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
