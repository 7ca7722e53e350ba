"""A/B of the decode step: zhiku's captured step for LLaMA-2-13B NF4 (random weights) replayed at one batch and
cache length under several configurations, the model loaded once, the configurations taken in turn each round.

Run on a CUDA machine with bitsandbytes:
    python bench/step_ab.py [--batch 4] [--context 1500[,3000...]] [--rounds 3] \\
        --variant 'name={"main": {"WARPS": 6}, "residual": {}, "attention": {"SPLITS": 32}, "source": "x.cu"}' ...
A variant's keys (each optional): "main" over ``nf4_cuda.MMA_CONFIG`` (q·k·v, gate·up), "residual" over
``MMA_RESIDUAL_CONFIG`` (o, down), "attention" over ``decode_kernels.ATTENTION_TILING`` (batches from 2),
"attention1" over ``ATTENTION_TILING_BATCH1`` (with ``--batch 1``), and "source": another nf4_mma.cu to compile.
The defaults are the variant "defaults". Prints the median µs a step of each (and of batch 1, for the ratio the decode
target names: batch-4 tokens a second over batch 1's) as a table.
Differences of about 1 % between runs on different machines are common; within a run the rounds agree closer. Each
round takes the variants in another order (round r starts with the r-th), so that none is always measured after the
same one; a variant "again" = {} (the defaults a second time) shows the spread of a change that changes nothing.
With several cache lengths (``--context 500,1500,3000``) each gets its table, with the ratio the memory floors allow
there (the weights read once a step, each sequence's keys and values once).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gpu_measure import RANDOM_13B, bytes_per_token, random_13b_generator, ratio_at_floors, replay_us  # noqa: E402
from offline import enforce_offline  # noqa: E402

enforce_offline()


def _variant(text: str) -> tuple[str, dict]:
    name, _, spec = text.partition("=")
    value = json.loads(spec or "{}")
    unknown = set(value) - {"main", "residual", "attention", "attention1", "source"}
    if not name or unknown:
        raise argparse.ArgumentTypeError(f"NAME={{JSON}} with main, residual, attention, attention1, source: {text!r}")
    return name, value


def _apply(variant: dict, defaults: tuple[dict, dict, dict, dict, Path]) -> None:
    """Sets the tilings (in place: the launches read these dicts) and the kernel source of ``variant``."""
    from models import decode_kernels, nf4_cuda

    targets = (nf4_cuda.MMA_CONFIG, nf4_cuda.MMA_RESIDUAL_CONFIG, decode_kernels.ATTENTION_TILING,
               decode_kernels.ATTENTION_TILING_BATCH1)  # fmt: skip
    for target, base, key in zip(targets, defaults, ("main", "residual", "attention", "attention1")):
        target.clear()
        target.update(base, **variant.get(key, {}))
    source = Path(variant["source"]) if "source" in variant else defaults[4]
    if source != nf4_cuda.MMA_SOURCE:
        nf4_cuda.MMA_SOURCE = source
        nf4_cuda._kernels.clear()  # compiled again from this source


def _contexts(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def _measure(decoder, variants: list, defaults: tuple, batch: int, context: int, rounds: int) -> tuple[list, dict]:
    """Batch 1's step and each variant's batch-``batch`` step at a cache of ``context`` tokens, ``rounds`` times."""
    times: dict[str, list[float]] = {name: [] for name, _ in variants}
    single: list[float] = []
    for round_ in range(rounds):
        _apply({}, defaults)
        decoder.forget(1)
        single.append(replay_us(decoder, 1, context))
        shift = round_ % len(variants)  # each round starts one variant later: none always follows the same one
        for name, variant in variants[shift:] + variants[:shift]:
            _apply(variant, defaults)
            decoder.forget(batch)  # captured again with this configuration
            times[name].append(replay_us(decoder, batch, context))
            print(f"context {context}, round {round_}: {name} {times[name][-1]:.0f} µs", flush=True)
    _apply({}, defaults)
    return single, times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=RANDOM_13B)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--context", type=_contexts, default=[1500], help="cache lengths, comma-separated")
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
    defaults = (dict(nf4_cuda.MMA_CONFIG), dict(nf4_cuda.MMA_RESIDUAL_CONFIG), dict(decode_kernels.ATTENTION_TILING),
                dict(decode_kernels.ATTENTION_TILING_BATCH1), nf4_cuda.MMA_SOURCE)  # fmt: skip
    variants = [("defaults", {}), *args.variant]
    runs = []
    for context in args.context:
        single, times = _measure(decoder, variants, defaults, args.batch, context, args.rounds)
        one = statistics.median(single)
        rows = []
        for name, spread in times.items():
            step = statistics.median(spread)
            rows.append([name, f"{step:.0f}", f"{min(spread):.0f}-{max(spread):.0f}",
                         f"{100 * (step / statistics.median(times['defaults']) - 1):+.1f}%",
                         f"{args.batch * one / step:.3f}"])  # fmt: skip
        weights, kv = bytes_per_token(generator.model, context)
        floors = ratio_at_floors(weights, kv, args.batch)
        title = (f"decode step at batch {args.batch}, cache {context} tokens (batch 1: {one:.0f} µs a step; at the "
                 f"floors batch {args.batch} / batch 1 = {floors:.2f})")  # fmt: skip
        print(table(title, ["variant", "µs/step", "rounds", "vs defaults", f"batch {args.batch} / batch 1"], rows))
        runs.append({"context": context, "batch1_us": single, "us": times, "ratio_at_floors": floors})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"batch": args.batch, "variants": dict(variants), "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
