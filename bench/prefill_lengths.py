"""Time to the first token for prompt lengths the model has not seen yet, LLaMA-2-13B NF4 (random weights).

Run on a CUDA machine with bitsandbytes:  python bench/prefill_lengths.py [--dir /dev/shm/llama2-13b-random]
Each length gets two different prompts of exactly that many tokens (random ids, so nothing is reused): the first
shows what a new length costs, the second what the same length costs once seen; with each, how many segments the
memory allocator had to add and how many full garbage collections ran. Two new lengths are also profiled, first
and again: the kernels' summed time against their span (first start to last end); time between kernels is the
host's, since the eager prefill launches ~2,500 kernels from Python.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from offline import enforce_offline  # noqa: E402

enforce_offline()


def first_token_ms(generator, length: int, seed: int) -> tuple[float, float, int, int]:
    """(host ms to the first token, GPU ms of the model's forward, new allocator segments, full garbage collections)
    of a fresh prompt of ``length`` tokens."""
    import random

    import torch

    from models.llm import SamplingParams

    rng = random.Random(seed)
    ids = [rng.randrange(100, 32000) for _ in range(length)]
    segments = torch.cuda.memory_stats()["segment.all.allocated"]
    full = gc.get_stats()[2]["collections"]
    list(generator.stream(ids, SamplingParams(temperature=0, max_new_tokens=1, repetition_penalty=1.0)))
    segments = torch.cuda.memory_stats()["segment.all.allocated"] - segments  # memory the allocator had to ask for
    full = gc.get_stats()[2]["collections"] - full  # full garbage collections meanwhile
    model_ms = generator.decoder.last_prefill_phases_ms.get("model", 0.0)
    return generator.last_first_token_s * 1000, model_ms, segments, full


def profiled(generator, length: int, seed: int) -> dict:
    """Kernel time by name, the kernels' summed time and their span (first start to last end, µs) of one fresh
    prompt: where a slow first prompt spends its time, in kernels or between them."""
    import collections
    import tempfile

    import torch

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        first_token_ms(generator, length, seed)
    with tempfile.NamedTemporaryFile(suffix=".json") as trace:
        prof.export_chrome_trace(trace.name)
        events = [e for e in json.loads(Path(trace.name).read_text())["traceEvents"] if e.get("cat") == "kernel"]
    by_name: dict = collections.defaultdict(float)
    for e in events:
        by_name[e["name"][:70]] += e["dur"]
    span = max(e["ts"] + e["dur"] for e in events) - min(e["ts"] for e in events) if events else 0.0
    return {"by_name": dict(by_name), "kernels_us": sum(by_name.values()), "span_us": span, "count": len(events)}


def compare_profiles(generator, length: int, seed: int) -> dict:
    """A new length profiled, then a second prompt of that length; the kernels that took longer the first time."""
    from bench.ingest_bench import table

    first, again = profiled(generator, length, seed), profiled(generator, length, seed + 1)
    for label, p in (("first", first), ("again", again)):
        busy, span = p["kernels_us"] / 1000, p["span_us"] / 1000
        print(f"{label}: {p['count']} kernels, {busy:.1f} ms in kernels, span {span:.1f} ms")
    names = sorted(first["by_name"], key=lambda n: -(first["by_name"][n] - again["by_name"].get(n, 0.0)))[:10]
    rows = [[n, f"{first['by_name'][n]:.0f}", f"{again['by_name'].get(n, 0.0):.0f}"] for n in names]
    print(table(f"kernels of a new {length}-token prompt, first vs again (µs)", ["kernel", "first", "again"], rows))
    return {"first": first, "again": again}


def measure(generator, lengths: list[int], label: str, seed: int) -> list[dict]:
    """For each length: a first prompt of it, then a second one (different tokens)."""
    rows = []
    for i, length in enumerate(lengths):
        first = first_token_ms(generator, length, seed + 2 * i)
        again = first_token_ms(generator, length, seed + 2 * i + 1)
        rows.append({"when": label, "tokens": length, "first_ttft_ms": first[0], "first_model_ms": first[1],
                     "first_segments": first[2], "first_gc": first[3], "again_ttft_ms": again[0],
                     "again_model_ms": again[1], "again_segments": again[2], "again_gc": again[3]})  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def main() -> int:
    from bench.gpu_measure import random_13b_generator, random_13b_parser

    args = random_13b_parser(__doc__, ROOT / "bench" / "out" / "prefill_lengths.json").parse_args()

    import torch

    from bench.ingest_bench import table

    generator = random_13b_generator(args.dir)
    if generator is None:
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    rows = measure(generator, [1502, 1478, 1200, 917, 1304, 1301, 1103, 1656, 733, 2047], "new", seed=1)
    profiles = [compare_profiles(generator, length, seed=51 + 2 * i) for i, length in enumerate((1333, 1444))]
    result = {"device": torch.cuda.get_device_name(0), "load_s": generator.load_seconds,
              "allocator": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""), "rows": rows,
              "profiles": profiles}  # fmt: skip
    columns = ["when", "tokens", "first_ttft_ms", "first_model_ms", "first_segments", "first_gc", "again_ttft_ms",
               "again_model_ms", "again_segments", "again_gc"]  # fmt: skip
    cells = [[r[c] if isinstance(r[c], (str, int)) else f"{r[c]:.1f}" for c in columns] for r in rows]
    print(table("fresh prompts of a new length: first and second of that length (ms)", columns, cells))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
