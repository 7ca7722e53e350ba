"""Batch 1–8 matrix-vector products straight from bitsandbytes' NF4 weights (Triton), with fused epilogues.

A bitsandbytes ``Params4bit`` holds the weight (N×K, row-major) as packed 4-bit codes, two per byte, high
nibble first; each run of 64 weights shares a scale. With double quantization the scales are themselves 8-bit
codes into a 256-entry table, with one fp32 scale per 256 of them plus an offset. The kernel reads exactly
those tensors (no second copy, no bf16 copy of the weights).

At batch 1 a product is a pure stream of weight bytes, so the work is cut into many small tiles (BN rows by
ITERS scale blocks) to keep enough loads in flight. Each step of a program reads one scale block of its rows
(16 contiguous bytes per thread), looks each byte up in a 256-entry table of value pairs (one 8-byte load for
both nibbles; or two loads from the 16-entry NF4 table), interleaves the values back into input order and
accumulates the scaled dot product in fp32, one accumulator per sequence. Each program writes a partial sum;
the last program of a row block (an atomic counter) adds the partials in a fixed order and applies the
epilogue, rounding like the eager model: the product to the compute dtype first, then ``+ residual`` or
``silu(gate) * up``. One launch can also serve several weights that share the input (q, k and v), their
outputs side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

import triton
import triton.language as tl

MAX_BATCH = 8
QBLOCK = 64  # weights per scale; the only block size the kernel takes

# epilogues
PLAIN, RESIDUAL, SILU_MUL = 0, 1, 2
COUNTERS = 1 << 16  # row blocks one launch may have


@dataclass(frozen=True)
class Nf4Weight:
    """The tensors of one bitsandbytes NF4 weight, as the kernel reads them."""

    packed: object  # uint8, N*K/2
    absmax: object  # uint8 codes (nested) or fp32 scales, one per 64 weights
    code: object  # fp32 [16], the NF4 values
    pairs: object  # int64 [256]: for each byte, the fp32 bits of its high nibble's value, then its low one's
    nested_code: object  # fp32 [256] (nested) or the same tensor as code (unused)
    nested_absmax: object  # fp32, one per ``nested_block`` scales (nested) or absmax (unused)
    offset: float
    nested: bool
    nested_block: int
    n: int
    k: int

    @classmethod
    def of(cls, module) -> Nf4Weight | None:
        """The weight of a bitsandbytes ``Linear4bit``, or None where this kernel does not cover it."""
        weight = getattr(module, "weight", None)
        state = getattr(weight, "quant_state", None)
        if state is None or state.quant_type != "nf4" or state.blocksize != QBLOCK:
            return None
        if getattr(state, "packing_format_for_cpu", False):  # bitsandbytes' CPU backend repacked it
            return None
        if getattr(module, "bias", None) is not None or len(state.shape) != 2:
            return None
        return cls.from_state(weight.data, state)

    @classmethod
    def from_state(cls, packed, state) -> Nf4Weight | None:
        """From bitsandbytes' packed codes and ``QuantState`` (as ``quantize_4bit`` returns them)."""
        n, k = (int(s) for s in state.shape)
        if k % QBLOCK:
            return None  # a scale block would span two rows
        nested = bool(state.nested)
        code = state.code.float().contiguous()
        return cls(
            packed=packed.reshape(-1),
            absmax=state.absmax,
            code=code,
            pairs=_pairs(code),
            nested_code=state.state2.code if nested else state.code,
            nested_absmax=state.state2.absmax if nested else state.absmax,
            offset=float(state.offset) if nested else 0.0,
            nested=nested,
            nested_block=int(state.state2.blocksize) if nested else 1,
            n=n,
            k=k,
        )

    def dequantize(self):
        """The weight as fp32 N×K, computed the way the kernel does (for checks and the CPU reference)."""
        import torch

        codes = torch.stack([self.packed >> 4, self.packed & 15], dim=1).reshape(-1).long()
        scales = self.scales()
        return (self.code[codes] * scales.repeat_interleave(QBLOCK)).reshape(self.n, self.k)

    def scales(self):
        import torch

        if not self.nested:
            return self.absmax.float()
        index = torch.arange(self.absmax.numel(), device=self.absmax.device) // self.nested_block
        return self.nested_code[self.absmax.long()] * self.nested_absmax[index] + self.offset


def _pairs(code):
    """The byte -> (high value, low value) table, both fp32 bit patterns packed into one int64 (low word first)."""
    import torch

    bits = code.view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    byte = torch.arange(256, device=code.device)
    return bits[byte >> 4] | (bits[byte & 15] << 32)


@triton.jit
def _scale(
    absmax_ptr, nested_code_ptr, nested_absmax_ptr, offset, block, mask, NESTED: tl.constexpr, NB2: tl.constexpr
):
    if NESTED:
        q = tl.load(absmax_ptr + block, mask=mask, other=0).to(tl.int32)
        return tl.load(nested_code_ptr + q) * tl.load(nested_absmax_ptr + block // NB2, mask=mask, other=0.0) + offset
    else:
        return tl.load(absmax_ptr + block, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _tile(
    x_ptr, stride_x, w_ptr, absmax_ptr, code_ptr, pairs_ptr, nested_code_ptr, nested_absmax_ptr, offset, rows, N, K,
    K2, kb0, B: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, ITERS: tl.constexpr,
    NESTED: tl.constexpr, NB2: tl.constexpr, PAIRS: tl.constexpr,
):  # fmt: skip
    """fp32 [BP, BN]: rows ``rows`` of one NF4 weight times the inputs, over scale blocks kb0 … kb0 + ITERS - 1.

    One step is one scale block (64 weights, 32 bytes) of BN rows: each thread reads 16 contiguous bytes, the
    nibbles' values are interleaved back into input order (join), and the block's dot product is scaled once.
    """
    row_ok = rows < N
    row_blocks = K // 64
    if BP == 1:
        acc = tl.zeros((BN,), dtype=tl.float32)
        for it in tl.static_range(ITERS):
            kb = kb0 + it  # the scale block within the row
            weights, scale = _block(w_ptr, absmax_ptr, code_ptr, pairs_ptr, nested_code_ptr, nested_absmax_ptr,
                                    offset, rows, row_ok, row_blocks, K2, kb, BN, NESTED, NB2, PAIRS)  # fmt: skip
            acc += _row_dot(weights, x_ptr, kb * 64 + tl.arange(0, 64), K) * scale
        out = acc[None, :]
    else:  # one accumulator per sequence: the weights are read once, every input reuses them from registers
        a0 = tl.zeros((BN,), dtype=tl.float32)
        a1 = tl.zeros((BN,), dtype=tl.float32)
        a2 = tl.zeros((BN,), dtype=tl.float32)
        a3 = tl.zeros((BN,), dtype=tl.float32)
        a4 = tl.zeros((BN,), dtype=tl.float32)
        a5 = tl.zeros((BN,), dtype=tl.float32)
        a6 = tl.zeros((BN,), dtype=tl.float32)
        a7 = tl.zeros((BN,), dtype=tl.float32)
        for it in tl.static_range(ITERS):
            kb = kb0 + it
            weights, scale = _block(w_ptr, absmax_ptr, code_ptr, pairs_ptr, nested_code_ptr, nested_absmax_ptr,
                                    offset, rows, row_ok, row_blocks, K2, kb, BN, NESTED, NB2, PAIRS)  # fmt: skip
            col = kb * 64 + tl.arange(0, 64)
            a0 += _row_dot(weights, x_ptr, col, K) * scale
            if B > 1:
                a1 += _row_dot(weights, x_ptr + stride_x, col, K) * scale
            if B > 2:
                a2 += _row_dot(weights, x_ptr + 2 * stride_x, col, K) * scale
            if B > 3:
                a3 += _row_dot(weights, x_ptr + 3 * stride_x, col, K) * scale
            if B > 4:
                a4 += _row_dot(weights, x_ptr + 4 * stride_x, col, K) * scale
            if B > 5:
                a5 += _row_dot(weights, x_ptr + 5 * stride_x, col, K) * scale
            if B > 6:
                a6 += _row_dot(weights, x_ptr + 6 * stride_x, col, K) * scale
            if B > 7:
                a7 += _row_dot(weights, x_ptr + 7 * stride_x, col, K) * scale
        b = tl.arange(0, BP)[:, None]
        out = tl.where(b == 0, a0[None, :], tl.where(b == 1, a1[None, :], tl.where(b == 2, a2[None, :], a3[None, :])))
        out = tl.where(
            b < 4,
            out,
            tl.where(b == 4, a4[None, :], tl.where(b == 5, a5[None, :], tl.where(b == 6, a6[None, :], a7[None, :]))),
        )
    return out


@triton.jit
def _row_dot(weights, x_ptr, col, K):
    xs = tl.load(x_ptr + col, mask=col < K, other=0.0).to(tl.float32)
    return tl.sum(weights * xs[None, :], axis=1)


@triton.jit
def _block(w_ptr, absmax_ptr, code_ptr, pairs_ptr, nested_code_ptr, nested_absmax_ptr, offset, rows, row_ok,
           row_blocks, K2, kb, BN: tl.constexpr, NESTED: tl.constexpr, NB2: tl.constexpr,
           PAIRS: tl.constexpr):  # fmt: skip
    """Scale block ``kb`` of rows ``rows``: the 64 weights of each in input order (fp32 [BN, 64]) and its scale."""
    ok = row_ok & (rows * 0 + kb < row_blocks)  # a vector compare (the interpreter wants one)
    j = tl.arange(0, 32)
    packed = tl.load(w_ptr + rows[:, None] * K2 + kb * 32 + j[None, :], mask=ok[:, None], other=0,
                     eviction_policy="evict_first")  # fmt: skip
    if PAIRS:  # one lookup per byte: both nibbles' values as two fp32 bit patterns in an int64
        both = tl.load(pairs_ptr + packed.to(tl.int32))
        hi = (both & 0xFFFFFFFF).to(tl.uint32).to(tl.float32, bitcast=True)
        lo = (both >> 32).to(tl.uint32).to(tl.float32, bitcast=True)
    else:
        hi = tl.load(code_ptr + (packed >> 4).to(tl.int32))
        lo = tl.load(code_ptr + (packed & 15).to(tl.int32))
    weights = tl.reshape(tl.join(hi, lo), (BN, 64))
    scale = _scale(absmax_ptr, nested_code_ptr, nested_absmax_ptr, offset, rows * row_blocks + kb, ok, NESTED, NB2)
    return weights, scale


@triton.jit
def _partials(part_ptr, s, NT, cols, rows, n, B: tl.constexpr, BP: tl.constexpr, acc):
    b = tl.arange(0, BP)
    ok = (b < B)[:, None] & (rows < n)[None, :]
    tl.store(part_ptr + (s * B + b)[:, None] * NT + cols[None, :], acc, mask=ok)


@triton.jit
def _sum_partials(part_ptr, S, NT, cols, rows, n, B: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr):
    b = tl.arange(0, BP)
    ok = (b < B)[:, None] & (rows < n)[None, :]
    total = tl.zeros((BP, BN), dtype=tl.float32)
    for t in range(0, S):  # a fixed order: the same sum on every run
        at = part_ptr + (t * B + b)[:, None] * NT + cols[None, :]
        total += tl.load(at, mask=ok, other=0.0, cache_modifier=".cg")
    return total


@triton.jit
def nf4_gemv_kernel(
    x_ptr, stride_x, out_ptr, stride_out, res_ptr, stride_res, part_ptr, count_ptr, code_ptr, pairs_ptr, K, K2, NT,
    w1_ptr, absmax1_ptr, nested_code1_ptr, nested_absmax1_ptr, offset1, N1,
    w2_ptr, absmax2_ptr, nested_code2_ptr, nested_absmax2_ptr, offset2, N2,
    w3_ptr, absmax3_ptr, nested_code3_ptr, nested_absmax3_ptr, offset3, N3,
    B: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, ITERS: tl.constexpr,
    NESTED: tl.constexpr, NB2: tl.constexpr, EPILOGUE: tl.constexpr, WEIGHTS: tl.constexpr, PAIRS: tl.constexpr,
):  # fmt: skip
    """Program (row block, K slice). PLAIN/RESIDUAL: the row blocks of weights 1..WEIGHTS one after another,
    out[b, N1 + … + n] side by side; SILU_MUL: weights 1 (gate) and 2 (up) on the same rows, out [B, N1]."""
    pid = tl.program_id(0)
    s = tl.program_id(1)
    S = tl.num_programs(1)
    kb0 = s * ITERS
    local = tl.arange(0, BN)
    blocks1 = tl.cdiv(N1, BN)
    blocks2 = tl.cdiv(N2, BN)
    if EPILOGUE == 2 or WEIGHTS == 1 or pid < blocks1:
        rows = pid * BN + local
        base = N1 * 0
        n = N1
        acc = _tile(x_ptr, stride_x, w1_ptr, absmax1_ptr, code_ptr, pairs_ptr, nested_code1_ptr,
                    nested_absmax1_ptr, offset1, rows, N1, K, K2, kb0,
                    B, BP, BN, ITERS, NESTED, NB2, PAIRS)  # fmt: skip
    elif pid < blocks1 + blocks2:
        rows = (pid - blocks1) * BN + local
        base = N1
        n = N2
        acc = _tile(x_ptr, stride_x, w2_ptr, absmax2_ptr, code_ptr, pairs_ptr, nested_code2_ptr,
                    nested_absmax2_ptr, offset2, rows, N2, K, K2, kb0,
                    B, BP, BN, ITERS, NESTED, NB2, PAIRS)  # fmt: skip
    else:
        rows = (pid - blocks1 - blocks2) * BN + local
        base = N1 + N2
        n = N3
        acc = _tile(x_ptr, stride_x, w3_ptr, absmax3_ptr, code_ptr, pairs_ptr, nested_code3_ptr,
                    nested_absmax3_ptr, offset3, rows, N3, K, K2, kb0,
                    B, BP, BN, ITERS, NESTED, NB2, PAIRS)  # fmt: skip
    _partials(part_ptr, s, NT, base + rows, rows, n, B, BP, acc)
    if EPILOGUE == 2:
        up = _tile(x_ptr, stride_x, w2_ptr, absmax2_ptr, code_ptr, pairs_ptr, nested_code2_ptr,
                    nested_absmax2_ptr, offset2, rows, N1, K, K2, kb0,
                    B, BP, BN, ITERS, NESTED, NB2, PAIRS)  # fmt: skip
        _partials(part_ptr, s, NT, N1 + rows, rows, n, B, BP, up)
    done = tl.atomic_add(count_ptr + pid, 1, sem="acq_rel")
    if done == S - 1:  # the last slice of this row block: add the partials, apply the epilogue
        dtype = out_ptr.dtype.element_ty
        b = tl.arange(0, BP)
        ok = (b < B)[:, None] & (rows < n)[None, :]
        y = _sum_partials(part_ptr, S, NT, base + rows, rows, n, B, BP, BN).to(dtype).to(tl.float32)
        if EPILOGUE == 1:
            res = tl.load(res_ptr + b[:, None] * stride_res + (base + rows)[None, :], mask=ok, other=0.0)
            y = y + res.to(tl.float32)
        if EPILOGUE == 2:
            up = _sum_partials(part_ptr, S, NT, N1 + rows, rows, n, B, BP, BN).to(dtype).to(tl.float32)
            gate = (y / (1.0 + tl.exp(-y))).to(dtype).to(tl.float32)
            y = gate * up
        tl.store(out_ptr + b[:, None] * stride_out + (base + rows)[None, :], y.to(dtype), mask=ok)
        tl.atomic_xchg(count_ptr + pid, 0)  # ready for the next launch


CONFIGS = [
    triton.Config({"BN": n, "ITERS": i, "PAIRS": pairs}, num_warps=w, num_stages=1)
    for n, i, w, pairs in [
        (64, 8, 4, True), (128, 4, 4, True), (128, 8, 8, True), (256, 4, 8, True),
        (64, 16, 4, True), (32, 8, 2, True), (128, 8, 4, False), (64, 8, 4, False),
    ]
]  # fmt: skip
MIN_SLICE = 64 * min(c.kwargs["ITERS"] for c in CONFIGS)  # weights along K one program covers
# Tiling used unless asked to tune: tuning compiles every config per shape (minutes for a 13B model's first load)
DEFAULT_CONFIG = {"BN": 64, "ITERS": 8, "PAIRS": True, "num_warps": 4}


def _grid(weights, pair: bool):
    def grid(meta):
        blocks = triton.cdiv(weights[0].n, meta["BN"]) if pair else sum(triton.cdiv(w.n, meta["BN"]) for w in weights)
        return blocks, triton.cdiv(weights[0].k, 64 * meta["ITERS"])

    return grid


_tuned = triton.autotune(CONFIGS, key=["NT", "K", "B", "EPILOGUE", "WEIGHTS"])(nf4_gemv_kernel)
_counters: dict = {}


def nf4_gemv(x, weight: Nf4Weight, *, residual=None, up: Nf4Weight | None = None, out=None, config=None):
    """``x @ W.T`` for x [B, K] (B ≤ 8) in the compute dtype; ``residual`` adds, ``up`` gives silu(x W.T) * x U.T.

    ``config`` (BN, ITERS, PAIRS, num_warps) sets the tiling, ``DEFAULT_CONFIG`` without it; ``"tune"`` times
    every config of ``CONFIGS`` once per shape and keeps the fastest.
    """
    if up is not None:
        return _launch(x, [weight, up], SILU_MUL, None, out, config)
    return _launch(x, [weight], RESIDUAL if residual is not None else PLAIN, residual, out, config)


def nf4_gemv_stacked(x, weights: list[Nf4Weight], out=None, config=None):
    """``x @ W.T`` for 1–3 weights of the same K in one launch: [B, N1 + N2 + N3], each output in its columns."""
    return _launch(x, weights, PLAIN, None, out, config)


def _launch(x, weights: list[Nf4Weight], epilogue: int, residual, out, config):
    import torch

    batch, k = x.shape
    first = weights[0]
    pair = epilogue == SILU_MUL
    if not 1 <= batch <= MAX_BATCH or any(w.k != k or w.nested != first.nested for w in weights):
        raise ValueError(f"nf4_gemv: input {tuple(x.shape)} does not fit weights {[(w.n, w.k) for w in weights]}")
    if x.stride(1) != 1:
        x = x.contiguous()
    out_cols = first.n if pair else sum(w.n for w in weights)
    if out is None:
        out = torch.empty((batch, out_cols), dtype=x.dtype, device=x.device)
    part_cols = 2 * first.n if pair else out_cols
    config = DEFAULT_CONFIG if config is None else config
    slices = triton.cdiv(k, MIN_SLICE if config == "tune" else 64 * config["ITERS"])
    partials = torch.empty((slices, batch, part_cols), dtype=torch.float32, device=x.device)
    counters = _counters.get(x.device)
    if counters is None:
        counters = _counters[x.device] = torch.zeros(COUNTERS, dtype=torch.int32, device=x.device)
    res = residual if residual is not None else out
    padded = (weights + [first, first])[:3]
    args = [x, x.stride(0), out, out.stride(0), res, res.stride(0), partials, counters, first.code, first.pairs]
    args += [k, k // 2, part_cols]  # K/2 as its own argument: Triton then knows rows start 16-byte aligned
    for w in padded:
        args += [w.packed, w.absmax, w.nested_code, w.nested_absmax, w.offset, w.n]
    shape = dict(B=batch, BP=triton.next_power_of_2(batch), NESTED=first.nested, NB2=first.nested_block)
    shape.update(EPILOGUE=epilogue, WEIGHTS=len(weights))
    grid = _grid(weights, pair)
    if config == "tune":
        _tuned[grid](*args, **shape)
    else:
        config = dict(config)
        warps = config.pop("num_warps", 4)
        nf4_gemv_kernel[grid(config)](*args, **shape, **config, num_warps=warps, num_stages=1)
    return out
