"""Greedy answers of a real model in NF4 on the GPU: the captured decode loop against transformers' eager decode.

Run on a CUDA machine with bitsandbytes and the packaged SmolLM2:  python bench/greedy_identity.py [--tokens 128]
For each question and each NF4 kernel inside the captured step (bitsandbytes' own, zhiku's), the index of the
first token where the captured answer leaves eager ``generate`` (``tokens`` = identical throughout). As
yardsticks, the same for eager against eager computed another valid way: at batch 2 (the same prompt twice:
bitsandbytes then dequantizes the weights and multiplies in bf16 instead of its batch-1 GEMV), and with SDPA's
math backend instead of flash attention.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from offline import enforce_offline  # noqa: E402

enforce_offline()

QUESTIONS = [
    "Explain how a hash table handles collisions.",
    "Write a short story about a lighthouse keeper.",
    "What are the main causes of inflation?",
    "How do I make a good cup of tea?",
    "请用中文介绍一下长城的历史。",
]


def first_difference(a: list[int], b: list[int]) -> int:
    """Index of the first differing token over the shorter of the two (its length if they agree)."""
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def eager(generator, ids: list[int], tokens: int, batch: int = 1, math: bool = False) -> list[int]:
    import contextlib

    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    input_ids = torch.tensor([ids] * batch, device="cuda")
    backend = sdpa_kernel(SDPBackend.MATH) if math else contextlib.nullcontext()
    with torch.inference_mode(), backend:
        out = generator.model.generate(
            input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=tokens, do_sample=False,
            repetition_penalty=1.0,
        )  # fmt: skip
    return out[0, len(ids) :].tolist()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "greedy_identity.json")
    args = parser.parse_args()

    import torch

    from bench.ingest_bench import table
    from models.llm import Generator, LlmSpec, SamplingParams

    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for kernel in ("zhiku", "bitsandbytes"):
            spec = LlmSpec(quantization="nf4", device="cuda", cache_dir=Path(cache), context_tokens=2048,
                           nf4_kernel=kernel)  # fmt: skip
            generator = Generator(spec)
            for question in QUESTIONS:
                ids = generator.prompt_ids([{"role": "user", "content": question}])
                params = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=args.tokens)
                captured = generator.decoder.generate(torch.tensor([ids], device="cuda"), params)[0][0].tolist()
                reference = eager(generator, ids, args.tokens)
                row = {"question": question, "kernel": kernel, "eager_tokens": len(reference),
                       "captured_vs_eager": first_difference(captured, reference)}  # fmt: skip
                if kernel == "zhiku":  # the yardsticks do not depend on the captured step's kernel
                    row["eager_batch2_vs_eager"] = first_difference(eager(generator, ids, args.tokens, 2), reference)
                    row["eager_math_vs_eager"] = first_difference(
                        eager(generator, ids, args.tokens, math=True), reference
                    )
                rows.append(row)
                print(row, flush=True)
            generator.unload()
    columns = [
        "question",
        "kernel",
        "eager_tokens",
        "captured_vs_eager",
        "eager_batch2_vs_eager",
        "eager_math_vs_eager",
    ]
    print(table("first differing token (= tokens compared when identical)", columns,
                [[r.get(c, "") for c in columns] for r in rows]))  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(0), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
