"""zhiku's NF4 product kernels (CUDA and Triton) against bitsandbytes, per LLaMA-2-13B weight shape and a few
odd shapes.

Run on a CUDA machine with bitsandbytes:
    python bench/gpu_kernels.py [--quick] [--products] [--attention] [--balance] [--out FILE.json]
For each shape and batch: each kernel's error against bitsandbytes' dequantize + matmul (fp32 products of the
bf16 weights it dequantizes), then the time of one product and of the 40 layers × 7 linears of the 13B model
replayed in one CUDA graph, as % of the copy bandwidth measured in the same run. --products instead times each
kind of product of the 13B step with each tiling of the two CUDA kernels (nf4_gemv.cu, MMA=0; the tensor-core
nf4_mma.cu, MMA=1) at batch 1 and 4, and --attention the decode attention's tilings (how the defaults were
chosen). --balance times o, down and gate·up with row counts whose units fall evenly over the blocks or not.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gpu_measure import copy_bandwidth, graph_seconds, median_cuda  # noqa: E402
from bench.ingest_bench import table  # noqa: E402

SHAPES_13B = {"q/k/v/o": (5120, 5120), "gate/up": (13824, 5120), "down": (5120, 13824)}
ODD_SHAPES = {"odd rows": (1000, 576), "tiny": (37, 128), "wide": (96, 11008), "smollm2 mlp": (1536, 576)}


def quantized(n: int, k: int, generator):
    import torch
    from bitsandbytes import functional as F

    weight = (torch.randn(n, k, device="cuda", generator=generator) * 0.02).to(torch.bfloat16)
    packed, state = F.quantize_4bit(weight, blocksize=64, compress_statistics=True, quant_type="nf4")
    return packed, state


KERNELS = {"cuda": {"KERNEL": "cuda"}, "triton": {"KERNEL": "triton", "HALF": 1}}


def weight_bytes(packed, state) -> int:
    """What a product reads of one weight: the packed codes, the scales' codes and their fp32 scales."""
    return packed.numel() + state.absmax.numel() + state.state2.absmax.numel() * 4


def check(packed, state, batch: int, generator) -> dict:
    """Relative errors against bitsandbytes' dequantized weights (fp32 sums of the block products), for each
    kernel (CUDA, Triton) and epilogue: plain, + residual, silu·up, and three weights stacked in one launch."""
    import torch
    from bitsandbytes import functional as F

    from models.nf4_gemv import Nf4Weight, nf4_gemv, nf4_gemv_stacked

    weight = Nf4Weight.from_state(packed, state)
    reference_w = F.dequantize_4bit(packed, state).float()
    x = torch.randn(batch, weight.k, device="cuda", generator=generator).to(torch.bfloat16)
    reference = x.float() @ reference_w.T
    residual = torch.randn(batch, weight.n, device="cuda", generator=generator).to(torch.bfloat16)
    up_packed, up_state = quantized(weight.n, weight.k, generator)
    up_weight = Nf4Weight.from_state(up_packed, up_state)
    up = x.float() @ F.dequantize_4bit(up_packed, up_state).float().T
    expected_silu = torch.nn.functional.silu(reference.bfloat16()) * up.bfloat16()
    errors = {}
    for name, config in KERNELS.items():
        out = torch.full((batch, weight.n), float("nan"), dtype=torch.bfloat16, device="cuda")  # poisoned
        nf4_gemv(x, weight, out=out, config=config)
        errors[f"{name}_plain"] = _rel(out, reference)
        errors[f"{name}_residual"] = _rel(
            nf4_gemv(x, weight, residual=residual, config=config), reference.bfloat16().float() + residual.float()
        )
        errors[f"{name}_silu"] = _rel(nf4_gemv(x, weight, up=up_weight, config=config), expected_silu.float())
        stacked = nf4_gemv_stacked(x, [weight, up_weight, weight], config=config)
        errors[f"{name}_stacked"] = _rel(stacked, torch.cat([reference, up, reference], dim=1))
    return errors


def _rel(out, reference) -> float:
    out = out.float()
    if not out.isfinite().all():
        return float("inf")
    return float((out - reference).norm() / reference.norm())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "gpu_kernels.json")
    parser.add_argument("--quick", action="store_true", help="check the 13B shapes at batch 1 and 4 only")
    parser.add_argument("--products", action="store_true", help="instead: time each product type with each tiling")
    parser.add_argument("--attention", action="store_true", help="instead (or after --products): time the decode "
                        "attention's tilings")  # fmt: skip
    parser.add_argument("--balance", action="store_true", help="instead: o, down and gate·up with as many rows as "
                        "make a whole number of units a block, or not (how much the units left over cost)")  # fmt: skip
    args = parser.parse_args()

    import bitsandbytes as bnb
    import torch

    from models.nf4_gemv import Nf4Weight, nf4_gemv

    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    generator = torch.Generator(device="cuda").manual_seed(0)
    bandwidth = copy_bandwidth()
    if args.balance:
        rows = _unit_balance(generator, bandwidth)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(0), "balance": rows}, indent=2))
        columns = ["B", "product", "rows", "units", "kernel", "us", "pct_bw"]
        print(table("units of 16 rows over the blocks", columns, [[r[c] for c in columns] for r in rows]))
        return 0
    if args.products or args.attention:
        products = _per_product(generator, bandwidth) if args.products else []
        args.out.parent.mkdir(parents=True, exist_ok=True)
        device = torch.cuda.get_device_name(0)
        result = {"device": device, "copy_bandwidth_TBps": bandwidth / 1e12, "products": products}
        if args.attention:
            result["attention"] = _attention_tilings(generator, bandwidth)
        args.out.write_text(json.dumps(result, indent=2))
        if products:
            _print_products(products)
        return 0
    rows, worst = [], 0.0
    for name, (n, k) in (SHAPES_13B if args.quick else {**SHAPES_13B, **ODD_SHAPES}).items():
        packed, state = quantized(n, k, generator)
        weight = Nf4Weight.from_state(packed, state)
        for batch in (1, 4) if args.quick else (1, 2, 3, 4, 8):
            errors = check(packed, state, batch, generator)
            worst = max(worst, *errors.values())
            row = {"shape": name, "N": n, "K": k, "B": batch, **{f"err_{e}": v for e, v in errors.items()}}
            print(row, flush=True)
            if name in SHAPES_13B and batch == 1:
                x = torch.randn(batch, k, device="cuda", generator=generator).to(torch.bfloat16)
                bytes_read = weight_bytes(packed, state)
                ours = median_cuda(lambda x=x, w=weight: nf4_gemv(x, w), repeats=50)
                row["triton_us"] = 1e6 * median_cuda(lambda x=x, w=weight: nf4_gemv(x, w, config=KERNELS["triton"]),
                                                     repeats=50)  # fmt: skip
                theirs = median_cuda(
                    lambda x=x, p=packed, s=state: bnb.matmul_4bit(x, p.t(), quant_state=s), repeats=50
                )
                row.update(
                    zhiku_us=ours * 1e6, bnb_us=theirs * 1e6,
                    zhiku_pct_bw=100 * bytes_read / ours / bandwidth, bnb_pct_bw=100 * bytes_read / theirs / bandwidth,
                )  # fmt: skip
            rows.append(row)
    print(f"device: {torch.cuda.get_device_name(0)}; copy bandwidth {bandwidth / 1e12:.2f} TB/s")
    columns = ["shape", "N", "K", "B", *(f"err_{k}_{e}" for k in KERNELS for e in ("plain", "residual", "silu",
               "stacked")), "zhiku_us", "triton_us", "bnb_us", "zhiku_pct_bw", "bnb_pct_bw"]  # fmt: skip
    print(table("per shape", columns, [[r.get(c, "") for c in columns] for r in rows]), flush=True)
    layers = _layer_stack(generator, bandwidth, args.quick)
    result = {"device": torch.cuda.get_device_name(0), "copy_bandwidth_TBps": bandwidth / 1e12, "rows": rows,
              "layers": layers, "worst_error": worst}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    stack = ["kernel", "config", "B", "ms", "pct_bw", "linears_tok_s"]
    print(table("40 layers x 7 linears, one CUDA graph", stack, [[r[c] for c in stack] for r in layers]))
    print(f"worst relative error {worst:.2e} (bf16 tolerance 1e-2)")
    return 0 if worst < 1e-2 else 1


def _layer_stack(generator, bandwidth: float, quick: bool) -> list[dict]:
    """The 40 layers × 7 linears of LLaMA-2-13B, one CUDA graph each: bitsandbytes, and zhiku with each tiling of
    ``CONFIGS`` at batch 1, then the fastest of them at batch 4."""
    import bitsandbytes as bnb
    import torch

    from models import grid_overlap
    from models.nf4_gemv import CONFIGS, Nf4Weight, nf4_gemv, nf4_gemv_stacked

    shapes = [(5120, 5120)] * 4 + [(13824, 5120)] * 2 + [(5120, 13824)]
    weights = [quantized(n, k, generator) for n, k in shapes]  # one layer's weights, reused for each of 40
    nf4 = [Nf4Weight.from_state(p, s) for p, s in weights]
    layer_bytes = sum(weight_bytes(p, s) for p, s in weights)
    inputs = {b: {k: torch.randn(b, k, device="cuda", generator=generator).bfloat16() for k in (5120, 13824)}
              for b in (1, 4)}  # fmt: skip

    def ours(batch, config):  # as the decode step calls it: q/k/v in one launch, o, gate·up, down
        x = inputs[batch]
        pdl = bool(config.get("PDL"))  # launched overlapped (models.grid_overlap)
        config = {k: v for k, v in config.items() if k != "PDL"}
        for _ in range(40):
            nf4_gemv_stacked(x[5120], nf4[:3], config=config, pdl=pdl)
            nf4_gemv(x[5120], nf4[3], config=config, pdl=pdl)
            nf4_gemv(x[5120], nf4[4], up=nf4[5], config=config, pdl=pdl)
            nf4_gemv(x[13824], nf4[6], config=config, pdl=pdl)

    def theirs(batch, config):  # what Linear4bit.forward calls: a GEMV at batch 1, dequantize + matmul above
        for _ in range(40):
            for p, s in weights:
                bnb.matmul_4bit(inputs[batch][s.shape[1]], p.t(), quant_state=s)

    def row(name, batch, config, fn):
        seconds = graph_seconds(lambda: fn(batch, config))
        share = 100 * 40 * layer_bytes / seconds / bandwidth
        label = "" if config is None else " ".join(f"{k}={v}" for k, v in config.items())
        return {"kernel": name, "config": label, "tiling": config, "B": batch, "ms": seconds * 1e3, "pct_bw": share,
                "linears_tok_s": batch / seconds}  # fmt: skip

    rows = [row("bitsandbytes", 1, None, theirs)]
    cuda = [{"KERNEL": "cuda"}, {"KERNEL": "cuda", "DEPTH": 2}, {"KERNEL": "cuda", "R": 2, "MINB": 3},
            {"KERNEL": "cuda", "WARPS": 16, "MINB": 1}, {"KERNEL": "cuda", "R": 8, "MINB": 1, "DEPTH": 2}]  # fmt: skip
    if grid_overlap.supported(torch.device("cuda")):  # each launched while the previous one ends
        cuda = [dict(c, PDL=1) for c in cuda] + [{"KERNEL": "cuda"}]
    for config in cuda:
        rows.append(row("zhiku-cuda", 1, config, ours))
        print(rows[-1], flush=True)
    configs = [dict(c.kwargs, num_warps=c.num_warps, KERNEL="triton") for c in CONFIGS]
    if quick:  # the default tiling and the fastest on the H100s of session 4
        configs = [c for c in configs if (c["BN"], c["num_warps"], c["XROWS"]) in ((64, 4, 0), (32, 2, 1))]
    for config in configs:
        rows.append(row("zhiku", 1, config, ours))
        print(rows[-1], flush=True)
    best = dict(min((r for r in rows if r["kernel"] == "zhiku"), key=lambda r: r["ms"])["tiling"])
    overlap = grid_overlap.supported(torch.device("cuda"))
    if overlap:  # the best tiling again, each product launched while the previous one ends
        rows.append(row("zhiku", 1, dict(best, PDL=1), ours))
        print(rows[-1], flush=True)
    rows.append(row("zhiku-cuda", 1, {"KERNEL": "cuda", "PDL": int(overlap), "MMA": 1}, ours))  # tensor cores
    print(rows[-1], flush=True)
    rows.append(row("bitsandbytes", 4, None, theirs))
    # batch 4: the CUDA kernels (the tensor-core one and nf4_gemv.cu) with a few tilings, then the Triton
    # kernel's best batch-1 tiling on the tensor cores (DOT=1), also with a longer tile
    for config in [
        {"KERNEL": "cuda", "PDL": 1, "MMA": 1},
        {"KERNEL": "cuda", "PDL": 1, "MMA": 1, "DEPTH": 3},
        {"KERNEL": "cuda", "PDL": 1, "MMA": 0},
        {"KERNEL": "cuda", "PDL": 1, "MMA": 0, "R": 1, "WARPS": 8, "MINB": 2},
    ]:
        rows.append(row("zhiku-cuda", 4, config, ours))
        print(rows[-1], flush=True)
    for config in [dict(best, DOT=1), dict(best, ITERS=8, DOT=1)]:
        rows.append(row("zhiku", 4, config, ours))
        print(rows[-1], flush=True)
    if overlap:
        fastest = min((r for r in rows if r["kernel"] == "zhiku" and r["B"] == 4), key=lambda r: r["ms"])
        rows.append(row("zhiku", 4, dict(fastest["tiling"], PDL=1), ours))
        print(rows[-1], flush=True)
    return rows


MMA_CONFIGS = [dict(MMA=1, ASYNC=0, WARPS=8, MINB=2, DEPTH=2, PAIR=0),
               *[dict(MMA=1, ASYNC=1, WARPS=w, MINB=m, DEPTH=d, XAHEAD=a, PAIR=0)
                 for w, m, d, a in ((8, 2, 2, 0), (8, 2, 2, 1), (8, 2, 3, 1), (8, 2, 4, 0), (8, 2, 4, 1), (16, 1, 2, 0),
                                    (16, 1, 2, 1), (16, 1, 4, 0), (16, 1, 4, 1))],
               *[dict(MMA=1, ASYNC=1, WARPS=w, MINB=m, DEPTH=d, XAHEAD=1, PAIR=1)
                 for w, m, d in ((8, 2, 2), (8, 2, 3), (16, 1, 2))]]  # fmt: skip
PRODUCT_CONFIGS = {  # nf4_gemv.cu's defaults of each product (MMA=0), then the tensor-core kernel's tilings
    1: [dict(MMA=0, R=4, DEPTH=2, WARPS=8, MINB=2), dict(MMA=0, R=2, DEPTH=3, WARPS=8, MINB=2),
        dict(MMA=0, R=2, DEPTH=2, WARPS=8, MINB=3), *MMA_CONFIGS],
    4: [dict(MMA=0, R=2, DEPTH=3, WARPS=16, MINB=1), *MMA_CONFIGS],
}  # fmt: skip


ATTENTION_TILINGS = [*[dict(SPLITS=s, BLOCK_L=b, num_warps=w)
                       for s, b, w in ((64, 64, 4), (32, 32, 2), (64, 32, 1), (32, 16, 1), (64, 16, 1), (96, 16, 1),
                                       (64, 8, 1), (128, 8, 1))],
                     dict(SPLITS=64, BLOCK_L=16, num_warps=1, num_stages=2),
                     *[dict(SPLITS=s, BLOCK_L=b, num_warps=1, FUSED=1) for s, b in ((64, 16), (64, 32))]]  # fmt: skip


def _attention_tilings(generator, bandwidth: float) -> list[dict]:
    """The decode step's attention over 4,096-position caches holding 1,502 (+1) positions of the 13B shapes
    (40 heads of 128), 40 layers (each its own cache, as in the model: L2 holds none) in one CUDA graph, at batch 1
    and 4, with each tiling of ``ATTENTION_TILINGS``."""
    import torch

    from models import grid_overlap
    from models.decode_kernels import attention

    pdl = grid_overlap.supported(torch.device("cuda"))
    rows = []
    for batch in (1, 4):
        caches = [torch.empty(2, batch, 40, 4096, 128, device="cuda", dtype=torch.bfloat16) for _ in range(40)]
        for cache in caches:
            cache.normal_(generator=generator)
        q = torch.randn(batch, 40 * 128, device="cuda", generator=generator).bfloat16()
        pos = torch.full((batch,), 1502, dtype=torch.long, device="cuda")
        read = 2 * batch * 40 * 1503 * 128 * 2  # keys and values up to pos, bytes per layer

        def layers(tiling, q=q, caches=caches, pos=pos):
            for cache in caches:
                attention(q, cache[0], cache[1], pos, 40, 40, 128, 0.088, pdl, tiling)

        for tiling in ATTENTION_TILINGS:
            seconds = graph_seconds(lambda t=tiling: layers(t)) / 40
            rows.append({"B": batch, "tiling": tiling, "us": seconds * 1e6, "pct_bw": 100 * read / seconds / bandwidth})
            print(rows[-1], flush=True)
        del caches
    return rows


def _print_products(products: list[dict]) -> None:
    columns = ["product", "B", "config", "us", "pct_bw"]
    print(table("each product type, 40 launches in one CUDA graph (CUDA kernel, overlapped)", columns,
                [[r[c] for c in columns] for r in products]))  # fmt: skip


# (product, K, row counts): 264 units of 16 rows are one a block for nf4_mma.cu's 264 blocks on an H200 (8 warps, two
# a multiprocessor); the 13B's 5,120 rows make 320 (56 blocks take a second), gate·up's 13,824 make 864 (3.27 a block)
BALANCE = (("down", 13824, (4224, 5120, 6336, 8448)), ("o", 5120, (4224, 5120, 8448)),
           ("gate_up", 5120, (12672, 13824, 16896)))  # fmt: skip


def _per_layer(launch) -> float:
    """Seconds of one ``launch()``, replayed as the 13B's 40 layers in one CUDA graph."""
    return graph_seconds(lambda: [launch() for _ in range(40)]) / 40


def _unit_balance(generator, bandwidth: float) -> list[dict]:
    """Each product of ``BALANCE`` at batch 4 and 1 on both CUDA kernels (40 launches in a graph): does a product
    whose units do not fall evenly over the blocks take the time of its last round of units?"""
    import torch

    from models import grid_overlap, nf4_cuda
    from models.nf4_gemv import Nf4Weight, nf4_gemv

    pdl = grid_overlap.supported(torch.device("cuda"))
    gemv = {"KERNEL": "cuda", "MMA": 0}
    rows = []
    for batch in (4, 1):
        for name, k, counts in BALANCE:
            x = torch.randn(batch, k, device="cuda", generator=generator).bfloat16()
            mma = dict(nf4_cuda.MMA_CONFIG if name == "gate_up" else nf4_cuda.MMA_RESIDUAL_CONFIG, KERNEL="cuda")
            for n in counts:
                weights = [quantized(n, k, generator) for _ in range(2 if name == "gate_up" else 1)]
                w = [Nf4Weight.from_state(p, s) for p, s in weights]
                res = torch.randn(batch, n, device="cuda", generator=generator).bfloat16()
                size = sum(weight_bytes(p, s) for p, s in weights)
                for label, config in (("mma", mma), ("gemv", gemv)):
                    if name == "gate_up":
                        call = partial(nf4_gemv, x, w[0], up=w[1], config=config, pdl=pdl)
                    else:
                        call = partial(nf4_gemv, x, w[0], residual=res, config=config, pdl=pdl)
                    seconds = _per_layer(call)
                    rows.append(
                        {
                            "B": batch,
                            "product": name,
                            "rows": n,
                            "units": n // 16,
                            "kernel": label,
                            "us": round(seconds * 1e6, 2),
                            "pct_bw": round(100 * size / seconds / bandwidth, 1),
                        }
                    )
                    print(rows[-1], flush=True)
    return rows


def _per_product(generator, bandwidth: float) -> list[dict]:
    """Each kind of product of the 13B step (q·k·v stacked, o + residual, gate·up, down + residual), 40 launches
    in one CUDA graph, with each tiling of ``PRODUCT_CONFIGS``: the tiling can differ by product."""
    import torch

    from models import grid_overlap, nf4_cuda
    from models.nf4_gemv import Nf4Weight, nf4_gemv, nf4_gemv_stacked

    pdl = grid_overlap.supported(torch.device("cuda"))
    limit = nf4_cuda.shared_limit(torch.device("cuda"))
    epilogue = {"o": nf4_cuda.RESIDUAL, "down": nf4_cuda.RESIDUAL, "gate_up": nf4_cuda.SILU_MUL}
    square = [quantized(5120, 5120, generator) for _ in range(4)]
    gate, up = quantized(13824, 5120, generator), quantized(13824, 5120, generator)
    pairs = {"qkv": square[:3], "o": square[3:], "gate_up": [gate, up], "down": [quantized(5120, 13824, generator)]}
    nf4 = {name: [Nf4Weight.from_state(p, s) for p, s in weights] for name, weights in pairs.items()}
    size = {name: sum(weight_bytes(p, s) for p, s in weights) for name, weights in pairs.items()}
    rows = []
    for batch, configs in PRODUCT_CONFIGS.items():
        x = {k: torch.randn(batch, k, device="cuda", generator=generator).bfloat16() for k in (5120, 13824)}
        res = torch.randn(batch, 5120, device="cuda", generator=generator).bfloat16()
        calls = {
            "qkv": lambda c, x=x: nf4_gemv_stacked(x[5120], nf4["qkv"], config=c, pdl=pdl),
            "o": lambda c, x=x, res=res: nf4_gemv(x[5120], nf4["o"][0], residual=res, config=c, pdl=pdl),
            "gate_up": lambda c, x=x: nf4_gemv(x[5120], nf4["gate_up"][0], up=nf4["gate_up"][1], config=c, pdl=pdl),
            "down": lambda c, x=x, res=res: nf4_gemv(x[13824], nf4["down"][0], residual=res, config=c, pdl=pdl),
        }
        for name, call in calls.items():
            for config in configs:
                full = dict(nf4_cuda.MMA_CONFIG, **config)
                if config["MMA"] and nf4_cuda._ring_that_fits(full, epilogue.get(name, 0), limit) != full:
                    print(f"{name} {config}: more shared memory than a block may have", flush=True)
                    continue  # (launch would shorten the ring, and the label would not say what ran)
                config = dict(config, KERNEL="cuda")
                seconds = _per_layer(partial(call, config))
                label = " ".join(f"{k}={v}" for k, v in config.items() if k != "KERNEL")
                rows.append({"product": name, "B": batch, "config": label, "tiling": config, "us": seconds * 1e6,
                             "pct_bw": 100 * size[name] / seconds / bandwidth})  # fmt: skip
                print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    sys.exit(main())
