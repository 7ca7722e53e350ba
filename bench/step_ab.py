"""A/B of the decode step: zhiku's captured step for LLaMA-2-13B NF4 (random weights) replayed at one batch and
cache length under several configurations, the model loaded once, the configurations taken in turn each round.

Run on a CUDA machine with bitsandbytes:
    python bench/step_ab.py [--batch 4] [--context 1500] [--rounds 3] \\
        --variant 'name={"main": {"WARPS": 6}, "residual": {}, "attention": {"SPLITS": 32}, "source": "x.cu"}' ...
A variant's keys (each optional): "main" over ``nf4_cuda.MMA_CONFIG`` (q·k·v, gate·up), "residual" over
``MMA_RESIDUAL_CONFIG`` (o, down), "attention" over ``decode_kernels.ATTENTION_TILING`` (batches from 2), and
"source": another nf4_mma.cu to compile. The defaults run first as "defaults". Prints the median µs a step of each
(and of batch 1, for the ratio the decode target names: batch-4 tokens a second over batch 1's) as a table.
Differences of about 1 % between runs on different machines are common; within a run the rounds agree closer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gpu_measure import RANDOM_13B, random_13b_generator, replay_us  # noqa: E402
from offline import enforce_offline  # noqa: E402

enforce_offline()


def _variant(text: str) -> tuple[str, dict]:
    name, _, spec = text.partition("=")
    value = json.loads(spec or "{}")
    unknown = set(value) - {"main", "residual", "attention", "source"}
    if not name or unknown:
        raise argparse.ArgumentTypeError(f"NAME={{JSON}} with main, residual, attention, source: {text!r}")
    return name, value


def _apply(variant: dict, defaults: tuple[dict, dict, dict, Path]) -> None:
    """Sets the tilings (in place: the launches read these dicts) and the kernel source of ``variant``."""
    from models import decode_kernels, nf4_cuda

    for target, base, key in zip((nf4_cuda.MMA_CONFIG, nf4_cuda.MMA_RESIDUAL_CONFIG, decode_kernels.ATTENTION_TILING),
                                 defaults, ("main", "residual", "attention")):  # fmt: skip
        target.clear()
        target.update(base, **variant.get(key, {}))
    source = Path(variant["source"]) if "source" in variant else defaults[3]
    if source != nf4_cuda.MMA_SOURCE:
        nf4_cuda.MMA_SOURCE = source
        nf4_cuda._kernels.clear()  # compiled again from this source


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=RANDOM_13B)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--context", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", type=_variant, action="append", default=[])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "step_ab.json")
    args = parser.parse_args()

    from bench.ingest_bench import table
    from models import decode_kernels, nf4_cuda

    generator = random_13b_generator(args.dir)
    if generator is None:
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    decoder = generator.decoder
    defaults = (dict(nf4_cuda.MMA_CONFIG), dict(nf4_cuda.MMA_RESIDUAL_CONFIG),
                dict(decode_kernels.ATTENTION_TILING), nf4_cuda.MMA_SOURCE)  # fmt: skip
    variants = [("defaults", {}), *args.variant]
    times: dict[str, list[float]] = {name: [] for name, _ in variants}
    single: list[float] = []
    for round_ in range(args.rounds):
        _apply({}, defaults)
        decoder.forget(1)
        single.append(replay_us(decoder, 1, args.context))
        for name, variant in variants:
            _apply(variant, defaults)
            decoder.forget(args.batch)  # captured again with this configuration
            times[name].append(replay_us(decoder, args.batch, args.context))
            print(f"round {round_}: {name} {times[name][-1]:.0f} µs", flush=True)
    _apply({}, defaults)
    one = statistics.median(single)
    rows = []
    for name, spread in times.items():
        step = statistics.median(spread)
        rows.append([name, f"{step:.0f}", f"{min(spread):.0f}-{max(spread):.0f}",
                     f"{100 * (step / statistics.median(times['defaults']) - 1):+.1f}%",
                     f"{args.batch * one / step:.3f}"])  # fmt: skip
    print(table(f"decode step at batch {args.batch}, cache {args.context} tokens (batch 1: {one:.0f} µs a step)",
                ["variant", "µs/step", "rounds", "vs defaults", f"batch {args.batch} / batch 1"], rows))  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"batch": args.batch, "context": args.context, "batch1_us": single,
                                    "variants": dict(variants), "us": times}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
