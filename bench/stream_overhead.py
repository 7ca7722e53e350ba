"""Where does streaming lose decode speed? Batch-1 decode of the random LLaMA-2-13B NF4 four ways.

python bench/stream_overhead.py [--dir /dev/shm/llama2-13b-random]  (CUDA + bitsandbytes; builds the checkpoint)
(a) generate in the calling thread; (b) generate in a worker thread, caller joins; (c) generate with a
streamer that only counts, calling thread; (d) zhiku's Generator.stream (worker thread + text streamer);
(e) one long-lived worker thread, reused.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from offline import enforce_offline  # noqa: E402

enforce_offline()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path("/dev/shm/llama2-13b-random"))
    parser.add_argument("--new-tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    import torch
    from transformers.generation.streamers import BaseStreamer

    from bench.gpu_bench import build_prompt
    from bench.random_checkpoints import LLAMA2_13B, save_random_llama
    from models.llm import Generator, LlmSpec, SamplingParams

    if not (args.dir / "config.json").is_file():
        save_random_llama(args.dir)
    generator = Generator(LlmSpec(model=str(args.dir), quantization="nf4", device="cuda"))
    model = generator.model
    ids = build_prompt(generator, 512, LLAMA2_13B["vocab_size"])
    input_ids = torch.tensor([ids], device="cuda")
    n = args.new_tokens

    class Counter(BaseStreamer):
        def __init__(self):
            self.count = 0

        def put(self, value):
            self.count += 1

        def end(self):
            pass

    def plain(streamer=None):
        with torch.inference_mode():
            model.generate(
                input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=n, min_new_tokens=n,
                do_sample=False, pad_token_id=0, streamer=streamer,
            )  # fmt: skip
        torch.cuda.synchronize()

    def threaded():
        worker = threading.Thread(target=plain)
        worker.start()
        worker.join()

    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1)

    def persistent():
        pool.submit(plain).result()

    def counted():
        plain(Counter())

    def zhiku():
        for _ in generator.stream(ids, SamplingParams(temperature=0, max_new_tokens=n, repetition_penalty=1.0)):
            pass

    variants = {
        "a main thread": plain,
        "b worker thread": threaded,
        "c counting streamer": counted,
        "d zhiku stream": zhiku,
        "e reused worker thread": persistent,
    }
    plain()  # warm-up
    rates: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            rates[name].append(n / (time.perf_counter() - start))
    print(f"{'variant':<22} {'tok/s median':>12}  all")
    for name, values in rates.items():
        print(f"{name:<22} {statistics.median(values):>12.1f}  {[round(v, 1) for v in values]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
