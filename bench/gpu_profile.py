"""Where a decode step's time goes: each kernel of zhiku's step for LLaMA-2-13B NF4 (random weights), per token.

Run on a CUDA machine with bitsandbytes:  python bench/gpu_profile.py [--dir /dev/shm/llama2-13b-random]
    [--batches 1,4] [--context 1500]
For each batch size the step runs eagerly (kernel for kernel what the CUDA graph replays) under the PyTorch
profiler at a cache of ``--context`` tokens; kernels are grouped by name and grid and printed as microseconds
per step with their share, next to the replayed graph's time per step (the difference is launch gaps). Also
times the phases of the first token (model forward, cache copy, choice) for a fresh and a reused prompt.
Where the kernels overlap through programmatic dependent launch (``models.grid_overlap``), the graph is also
captured and timed without it.
"""

from __future__ import annotations

import collections
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gpu_measure import replay_us  # noqa: E402
from offline import enforce_offline  # noqa: E402

enforce_offline()


def kernel_table(decoder, batch: int, context: int, steps: int = 3) -> tuple[list[dict], float, float]:
    """Rows (kernel, grid, calls per step, µs per step), the summed kernel µs and the graph's µs per step. The
    kernels are profiled launched the ordinary way, so that each one's time is its own."""
    import torch

    from models.decode_step import decode_step

    graph_us = replay_us(decoder, batch, context)
    state = decoder._state(batch)

    def at_context(fn):
        state.pos.fill_(context)
        fn()

    overlap, decoder.ops.pdl = decoder.ops.pdl, False  # each kernel's own time, not time spent waiting in one
    with torch.inference_mode():
        at_context(lambda: decode_step(decoder.parts, decoder.ops, state, True))
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                at_context(lambda: decode_step(decoder.parts, decoder.ops, state, True))
            torch.cuda.synchronize()
    decoder.ops.pdl = overlap
    with tempfile.NamedTemporaryFile(suffix=".json") as trace:
        prof.export_chrome_trace(trace.name)
        events = json.loads(Path(trace.name).read_text())["traceEvents"]
    groups: dict = collections.defaultdict(lambda: [0, 0.0])
    for e in events:
        if e.get("cat") != "kernel":
            continue
        key = (e["name"][:60], str(e.get("args", {}).get("grid", "")))
        groups[key][0] += 1
        groups[key][1] += e["dur"]
    rows = [
        {"kernel": name, "grid": grid, "calls": calls / steps, "us": dur / steps}
        for (name, grid), (calls, dur) in groups.items()
    ]
    rows.sort(key=lambda r: -r["us"])
    return rows, sum(r["us"] for r in rows), graph_us


def replay_us_without_overlap(decoder, batch: int, context: int) -> float:
    """The same, captured again with every kernel launched the ordinary way; the overlap restored after."""
    decoder.ops.pdl = False
    decoder.forget(batch)
    try:
        return replay_us(decoder, batch, context)
    finally:
        decoder.ops.pdl = True
        decoder.forget(batch)


def prefill_phases(generator, vocab: int) -> list[dict]:
    """First-token phases of two fresh prompts and one reused one (GPU ms), with the host's time to first token."""
    from bench.gpu_bench import build_prompt
    from models.llm import SamplingParams

    params = SamplingParams(temperature=0, max_new_tokens=2, repetition_penalty=1.0)
    out = []
    prompts = [build_prompt(generator, 1500, vocab, seed=s) for s in (11, 12)]
    for label, prompt in (("fresh", prompts[0]), ("fresh", prompts[1]), ("reused", prompts[1])):
        list(generator.stream(prompt, params))
        phases = generator.decoder.last_prefill_phases_ms
        out.append({"prompt": label, "ttft_ms": generator.last_first_token_s * 1000, **phases})
    return out


def main() -> int:
    from bench.gpu_measure import random_13b_generator, random_13b_parser

    parser = random_13b_parser(__doc__, ROOT / "bench" / "out" / "gpu_profile.json")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--context", type=int, default=1500)
    args = parser.parse_args()

    import torch

    from bench.ingest_bench import table
    from bench.random_checkpoints import LLAMA2_13B

    generator = random_13b_generator(args.dir)
    if generator is None:
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    result: dict = {"device": torch.cuda.get_device_name(0), "load_s": generator.load_seconds}
    result["prefill"] = prefill_phases(generator, LLAMA2_13B["vocab_size"])
    headers = ["prompt", "ttft ms", "model ms", "cache copy ms", "first token ms"]
    print(table("first token of a 1,500-token prompt (GPU ms per phase)", headers,
                [[p["prompt"], f"{p['ttft_ms']:.1f}", f"{p.get('model', 0):.1f}", f"{p.get('cache_copy', 0):.2f}",
                  f"{p.get('first_token', 0):.2f}"] for p in result["prefill"]]))  # fmt: skip
    for batch in (int(b) for b in args.batches.split(",")):
        rows, kernels_us, graph_us = kernel_table(generator.decoder, batch, args.context)
        result[f"batch{batch}"] = {"rows": rows, "kernels_us": kernels_us, "graph_us": graph_us}
        print(f"\nbatch {batch}, cache {args.context} tokens: graph replay {graph_us:.0f} µs per step, kernels "
              f"{kernels_us:.0f} µs (the rest is gaps between kernels)")  # fmt: skip
        if generator.decoder.ops.pdl:
            plain = replay_us_without_overlap(generator.decoder, batch, args.context)
            result[f"batch{batch}"]["graph_us_without_overlap"] = plain
            print(f"graph replay with overlapped launches {graph_us:.0f} µs, without {plain:.0f} µs per step")
        print(table(f"kernels of one step, batch {batch}", ["kernel", "grid", "calls", "µs/step", "share"],
                    [[r["kernel"], r["grid"], f"{r['calls']:.0f}", f"{r['us']:.0f}",
                      f"{100 * r['us'] / kernels_us:.1f}%"] for r in rows[:24]]))  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
