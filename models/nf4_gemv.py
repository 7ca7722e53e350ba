"""Batch 1–8 matrix-vector products straight from bitsandbytes' NF4 weights (Triton), with fused epilogues.

A bitsandbytes ``Params4bit`` holds the weight (N×K, row-major) as packed 4-bit codes, two per byte, high
nibble first; each run of 64 weights shares a scale. With double quantization the scales are themselves 8-bit
codes into a 256-entry table, with one fp32 scale per 256 of them plus an offset. The kernel reads exactly
those tensors (no second copy, no bf16 copy of the weights).

At batch 1 a product is a pure stream of weight bytes, so the work is cut into many small tiles: a program
takes BN rows by ITERS scale blocks and requests all of their bytes in one load. On CUDA the nibbles become
fp16 values by byte permutes (``prmt_asm``: the 16-entry table lives in registers, four bytes are looked up
per instruction) instead of loads from a table. The high nibbles hold the weights of the even inputs and the
low nibbles those of the odd ones, so the values are multiplied where they lie, against the inputs read as
(even, odd) pairs, and never put back in input order. A block's 64 products are summed in fp16 pairs (HALF=1,
the default) or fp32, then scaled in fp32; one accumulator per sequence. Each program writes a partial sum; the
last program of a row block (an atomic counter) adds the partials in a fixed order and applies the epilogue,
rounding like the eager model: the product to the compute dtype first, then ``+ residual`` or
``silu(gate) * up``. One launch can also serve several weights that share the input (q, k and v), their
outputs side by side. At batch 2-8 (DOT=1, the default there) the values are scaled to fp16 weights and meet the
sequences, padded to 16 slots, in one matrix product per tile on the tensor cores. In Triton's interpreter (no PTX)
the nibbles are looked up in the table instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import triton
import triton.language as tl

from models.grid_overlap import gdc_launch_dependents, gdc_wait, pdl_options

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
    asm: str  # prmt_asm of the values
    table: object  # fp32 [24]: the values, then twice the 4 words of ``prmt_asm``'s table that travel in registers
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
            asm=_asm(code),
            table=_table(code),
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


def _table(code):
    import torch

    words = torch.tensor([_words(code.tolist())[i] for i in (0, 2, 4, 6)], dtype=torch.int64)
    words = torch.where(words >= 1 << 31, words - (1 << 32), words).to(torch.int32)
    return torch.cat([code, words.to(code.device).view(torch.float32).repeat(2)])


def _words(code) -> list[int]:
    """The fp16 values' low bytes and high bytes as two tables of 4 little-endian words each: low words 0..3,
    then high words 0..3. ``prmt_asm`` takes low 0, low 2, high 0 and high 2 ([0, 2, 4, 6]) in registers."""
    import numpy as np

    bits = np.asarray([float(v) for v in code], dtype=np.float16).view(np.uint16).astype(np.uint32)
    words = []
    for table in (bits & 0xFF, bits >> 8):
        words += [int(table[4 * w] | table[4 * w + 1] << 8 | table[4 * w + 2] << 16 | table[4 * w + 3] << 24)
                  for w in range(4)]  # fmt: skip
    return words


def prmt_asm(code) -> str:
    """PTX that turns 4 packed bytes into the fp16 NF4 values of their 8 nibbles, two outputs of 4 values each:
    the high nibbles' (even inputs) and the low nibbles' (odd inputs), each in the slot of its byte.

    The 16 fp16 values are split into a table of low bytes and one of high bytes, 16 bytes each, held as
    immediates. ``prmt`` picks 4 bytes out of 8 by 4 selector nibbles, which are the packed nibbles themselves;
    its 3-bit index covers half a table, so each half is looked up (the upper half with bit 3 flipped, which
    would otherwise mean "replicate the sign") and the nibble's bit 3 chooses between them (``lop3``). Two more
    ``prmt`` put each value's low and high byte together. 22 instructions for 8 weights.
    """
    words = _words(code)
    lo, hi = words[:4], words[4:]
    lines = [".reg .b32 %lt<4>, %ht<4>, %s4, %m<2>, %c1, %x<2>, %la, %lb, %ha, %hb, %lo, %hi;"]
    # words 0 and 2 of each table come in registers loaded from memory ($5, $9, $13, $17: the first of each
    # input's 4 copies), so that the compiler keeps them rather than moving a constant in before every use;
    # words 1 and 3 are immediates, which prmt takes as its second table operand
    lines += ["mov.b32 %lt0, $5;", "mov.b32 %lt2, $9;", "mov.b32 %ht0, $13;", "mov.b32 %ht2, $17;"]
    lines += [f"mov.b32 %lt{i}, {lo[i]:#010x};" for i in (1, 3)]
    lines += [f"mov.b32 %ht{i}, {hi[i]:#010x};" for i in (1, 3)]
    lines += [
        "shl.b32 %s4, $4, 4;",
        "prmt.b32 %m0, $4, %s4, 0x9D8C;",  # 0xFF in byte i where nibble i (of bits 0-15) has bit 3 set
        "prmt.b32 %m1, $4, %s4, 0xBFAE;",  # the same for bits 16-31
        "xor.b32 %x0, $4, 0x8888;",
        "shr.u32 %c1, $4, 16;",
        "xor.b32 %x1, %c1, 0x8888;",
    ]
    # bits 0-15 hold bytes 0 and 1, nibbles (low0, high0, low1, high1); bits 16-31 bytes 2 and 3
    for sel, flipped, mask, even, odd in (("$4", "%x0", "%m0", "$0", "$2"), ("%c1", "%x1", "%m1", "$1", "$3")):
        lines += [
            f"prmt.b32 %la, %lt0, %lt1, {sel};",
            f"prmt.b32 %lb, %lt2, %lt3, {flipped};",
            f"lop3.b32 %lo, %la, %lb, {mask}, 0xD8;",  # mask ? lb : la
            f"prmt.b32 %ha, %ht0, %ht1, {sel};",
            f"prmt.b32 %hb, %ht2, %ht3, {flipped};",
            f"lop3.b32 %hi, %ha, %hb, {mask}, 0xD8;",
            f"prmt.b32 {even}, %lo, %hi, 0x7351;",  # the high nibbles' values: bytes 1 and 3 of lo and hi
            f"prmt.b32 {odd}, %lo, %hi, 0x6240;",  # the low nibbles': bytes 0 and 2
        ]
    return "{\n" + "\n".join(lines) + "\n}"


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
    x_ptr, stride_x, w_ptr, absmax_ptr, code_ptr, nested_code_ptr, nested_absmax_ptr, offset, rows, N, K, K2, kb0,
    B: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, ITERS: tl.constexpr, NESTED: tl.constexpr,
    NB2: tl.constexpr, DECODE: tl.constexpr, ASM: tl.constexpr, HALF: tl.constexpr, DOT: tl.constexpr,
    XROWS: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    """fp32 [BP, BN]: rows ``rows`` of one NF4 weight times the inputs, over scale blocks kb0 … kb0 + ITERS - 1.

    All ITERS scale blocks (64 weights, 32 bytes each) of the BN rows are requested in one load, so that every
    thread has its whole share of bytes in flight at once. The high nibbles hold the even inputs' weights and the
    low nibbles the odd ones', so the values are never put back in input order: each is multiplied with its input
    where it lies; each block's sum is scaled once. The weights are read once; every input reuses them.
    PDL=1: the weights and scales are requested before waiting for the previous kernel (whose output the inputs
    are), so they stream in while it finishes.
    """
    blocks = kb0 + tl.arange(0, ITERS)  # the scale blocks within the row
    ok = (rows < N)[:, None] & (blocks < K // 64)[None, :]
    at = rows[:, None, None] * K2 + blocks[None, :, None] * 32 + tl.arange(0, 32)[None, None, :]
    packed = tl.load(w_ptr + at, mask=ok[:, :, None], other=0, eviction_policy="evict_first")
    scale = _scale(absmax_ptr, nested_code_ptr, nested_absmax_ptr, offset, rows[:, None] * (K // 64) + blocks[None, :],
                   ok, NESTED, NB2)  # fmt: skip
    if PDL:
        gdc_wait()  # everything below may read what the previous kernel wrote
    even, odd = _values(packed, code_ptr, DECODE, ASM)
    if BP == 1:
        return tl.sum(_block_dots(even, odd, x_ptr, blocks, K, HALF, rows, XROWS) * scale, axis=1)[None, :]
    if DOT:
        return _tile_dot(even, odd, scale, x_ptr, stride_x, kb0, K, B, BP, BN, ITERS)
    b = tl.arange(0, BP)[:, None]
    out = tl.zeros((BP, BN), dtype=tl.float32)
    for i in tl.static_range(B):
        total = tl.sum(_block_dots(even, odd, x_ptr + i * stride_x, blocks, K, HALF, rows, XROWS) * scale, axis=1)
        out = tl.where(b == i, total[None, :], out)
    return out


@triton.jit
def _tile_dot(even, odd, scale, x_ptr, stride_x, kb0, K, B: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
              ITERS: tl.constexpr):  # fmt: skip
    """fp32 [BP, BN] on the tensor cores (BP ≥ 16 sequences' slots): the values scaled to fp16 weights, each
    high nibble's beside its low nibble's, one matrix product over the tile's ITERS * 64 weights per row."""
    scale = scale.to(tl.float16)[:, :, None]  # (the table decode's values are fp32: made fp16 too)
    weights = tl.join(even.to(tl.float16) * scale, odd.to(tl.float16) * scale)
    weights = tl.reshape(weights, (BN, ITERS * 64))  # per row: block, pair, (even, odd)
    # joined, the columns are in the inputs' own order (block, pair, even/odd): the inputs load as they lie
    b = tl.arange(0, BP)
    k = kb0 * 64 + tl.arange(0, ITERS * 64)
    ok = (b < B)[:, None] & (k < K)[None, :]
    inputs = tl.load(x_ptr + b[:, None] * stride_x + k[None, :], mask=ok, other=0.0).to(tl.float16)
    return tl.trans(tl.dot(weights, tl.trans(inputs), out_dtype=tl.float32))


@triton.jit
def _block_dots(even, odd, x_ptr, blocks, K, HALF: tl.constexpr, rows, XROWS: tl.constexpr):
    """[BN, ITERS]: each block's values times its 64 inputs, read as 32 words of (even, odd) 16-bit pairs.

    XROWS=1: the inputs are loaded once per row (from the L1 cache), addressed in the weights' own 3-D shape,
    instead of once and spread over the rows through shared memory (a layout conversion, with barriers)."""
    j = blocks[:, None] * 32 + tl.arange(0, 32)[None, :]
    if XROWS:
        j = j[None, :, :] + (rows * 0)[:, None, None]
    pair = tl.load(x_ptr.to(tl.pointer_type(tl.uint32), bitcast=True) + j, mask=j < K // 2, other=0)
    if x_ptr.dtype.element_ty == tl.bfloat16:  # bf16 -> fp32 is the 16 bits moved up
        x_even = (pair << 16).to(tl.float32, bitcast=True)
        x_odd = (pair & 0xFFFF0000).to(tl.float32, bitcast=True)
    else:
        x_even = (pair & 0xFFFF).to(tl.uint16).to(tl.float16, bitcast=True).to(tl.float32)
        x_odd = (pair >> 16).to(tl.uint16).to(tl.float16, bitcast=True).to(tl.float32)
    if not XROWS:
        x_even, x_odd = x_even[None, :, :], x_odd[None, :, :]
    if HALF:  # products and the block's sum in fp16 pairs (two weights an instruction), scaled in fp32
        dot = even * x_even.to(tl.float16) + odd * x_odd.to(tl.float16)
        return tl.sum(dot, axis=2).to(tl.float32)
    return tl.sum(even.to(tl.float32) * x_even + odd.to(tl.float32) * x_odd, axis=2)


@triton.jit
def _values(packed, code_ptr, DECODE: tl.constexpr, ASM: tl.constexpr):
    """The NF4 values of the high nibbles (weights of the even inputs) and of the low nibbles (odd inputs)."""
    if DECODE == 1:  # byte permutes from a table held in registers: four bytes per instruction (PTX)
        words_ptr = code_ptr.to(tl.pointer_type(tl.int32), bitcast=True) + 16  # after the 16 values (``table``)
        # loaded per thread from one of two copies (by column), so that the compiler cannot keep them in uniform
        # registers: it would move them into ordinary ones before every use
        copy = words_ptr + (tl.arange(0, 32) // 16 % 2)[None, None, :] * 4
        low0, low2, high0, high2 = tl.load(copy), tl.load(copy + 1), tl.load(copy + 2), tl.load(copy + 3)
        even, odd = tl.inline_asm_elementwise(
            ASM,
            "=r,=r,=r,=r,r" + ",r,r,r,r" * 4,
            [packed, low0, low2, high0, high2],
            dtype=(tl.float16, tl.float16),
            is_pure=True,
            pack=4,
        )
    else:  # two loads from the 16-entry table (64 bytes: one cache line)
        even = tl.load(code_ptr + (packed >> 4).to(tl.int32))
        odd = tl.load(code_ptr + (packed & 15).to(tl.int32))
    return even, odd


@triton.jit
def _partials(part_ptr, s, NT, cols, rows, n, B: tl.constexpr, BP: tl.constexpr, acc):
    b = tl.arange(0, BP)
    ok = (b < B)[:, None] & (rows < n)[None, :]
    tl.store(part_ptr + (s * B + b)[:, None] * NT + cols[None, :], acc, mask=ok)


@triton.jit
def _sum_partials(part_ptr, S, NT, cols, rows, n, B: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
                  SP: tl.constexpr):  # fmt: skip
    """The S partial sums of the rows, CH of them per load (all in flight at once), added in a fixed order."""
    CH: tl.constexpr = 16 // BP if BP < 16 else 1
    b = tl.arange(0, BP)
    ok = (b < B)[:, None] & (rows < n)[None, :]
    total = tl.zeros((BP, BN), dtype=tl.float32)
    for c in tl.static_range(0, SP, CH):
        t = c + tl.arange(0, CH)
        at = part_ptr + (t[:, None, None] * B + b[None, :, None]) * NT + cols[None, None, :]
        part = tl.load(at, mask=(t < S)[:, None, None] & ok[None, :, :], other=0.0, cache_modifier=".cg")
        total += tl.sum(part, axis=0)
    return total


@triton.jit
def nf4_gemv_kernel(
    x_ptr, stride_x, out_ptr, stride_out, res_ptr, stride_res, part_ptr, count_ptr, code_ptr, K, K2, NT,
    w1_ptr, absmax1_ptr, nested_code1_ptr, nested_absmax1_ptr, offset1, N1,
    w2_ptr, absmax2_ptr, nested_code2_ptr, nested_absmax2_ptr, offset2, N2,
    w3_ptr, absmax3_ptr, nested_code3_ptr, nested_absmax3_ptr, offset3, N3,
    B: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, ITERS: tl.constexpr,
    NESTED: tl.constexpr, NB2: tl.constexpr, EPILOGUE: tl.constexpr, WEIGHTS: tl.constexpr, DECODE: tl.constexpr,
    ASM: tl.constexpr, HALF: tl.constexpr, DOT: tl.constexpr, SP: tl.constexpr, XROWS: tl.constexpr,
    PDL: tl.constexpr,
):  # fmt: skip
    """Program (row block, K slice). PLAIN/RESIDUAL: the row blocks of weights 1..WEIGHTS one after another,
    out[b, N1 + … + n] side by side; SILU_MUL: weights 1 (gate) and 2 (up) on the same rows, out [B, N1].
    PDL=1 (launched as a programmatic dependent launch): the next kernel may start once every program here has
    started, and this one's weights load while the previous kernel ends (``_tile``)."""
    if PDL:
        gdc_launch_dependents()
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
        acc = _tile(x_ptr, stride_x, w1_ptr, absmax1_ptr, code_ptr, nested_code1_ptr,
                    nested_absmax1_ptr, offset1, rows, N1, K, K2, kb0,
                    B, BP, BN, ITERS, NESTED, NB2, DECODE, ASM, HALF, DOT, XROWS, PDL)  # fmt: skip
    elif pid < blocks1 + blocks2:
        rows = (pid - blocks1) * BN + local
        base = N1
        n = N2
        acc = _tile(x_ptr, stride_x, w2_ptr, absmax2_ptr, code_ptr, nested_code2_ptr,
                    nested_absmax2_ptr, offset2, rows, N2, K, K2, kb0,
                    B, BP, BN, ITERS, NESTED, NB2, DECODE, ASM, HALF, DOT, XROWS, PDL)  # fmt: skip
    else:
        rows = (pid - blocks1 - blocks2) * BN + local
        base = N1 + N2
        n = N3
        acc = _tile(x_ptr, stride_x, w3_ptr, absmax3_ptr, code_ptr, nested_code3_ptr,
                    nested_absmax3_ptr, offset3, rows, N3, K, K2, kb0,
                    B, BP, BN, ITERS, NESTED, NB2, DECODE, ASM, HALF, DOT, XROWS, PDL)  # fmt: skip
    _partials(part_ptr, s, NT, base + rows, rows, n, B, BP, acc)
    if EPILOGUE == 2:
        up = _tile(x_ptr, stride_x, w2_ptr, absmax2_ptr, code_ptr, nested_code2_ptr,
                    nested_absmax2_ptr, offset2, rows, N1, K, K2, kb0,
                    B, BP, BN, ITERS, NESTED, NB2, DECODE, ASM, HALF, DOT, XROWS, PDL)  # fmt: skip
        _partials(part_ptr, s, NT, N1 + rows, rows, n, B, BP, up)
    done = tl.atomic_add(count_ptr + pid, 1, sem="acq_rel")
    if done == S - 1:  # the last slice of this row block: add the partials, apply the epilogue
        dtype = out_ptr.dtype.element_ty
        b = tl.arange(0, BP)
        ok = (b < B)[:, None] & (rows < n)[None, :]
        y = _sum_partials(part_ptr, S, NT, base + rows, rows, n, B, BP, BN, SP).to(dtype).to(tl.float32)
        if EPILOGUE == 1:
            res = tl.load(res_ptr + b[:, None] * stride_res + (base + rows)[None, :], mask=ok, other=0.0)
            y = y + res.to(tl.float32)
        if EPILOGUE == 2:
            up = _sum_partials(part_ptr, S, NT, N1 + rows, rows, n, B, BP, BN, SP).to(dtype).to(tl.float32)
            gate = (y / (1.0 + tl.exp(-y))).to(dtype).to(tl.float32)
            y = gate * up
        tl.store(out_ptr + b[:, None] * stride_out + (base + rows)[None, :], y.to(dtype), mask=ok)
        tl.atomic_xchg(count_ptr + pid, 0)  # ready for the next launch


TABLE, PRMT = 0, 1  # how nibbles become values: loads from the code table, or byte permutes (PTX, CUDA only)
CONFIGS = [
    triton.Config({"BN": n, "ITERS": i, "DECODE": PRMT, "HALF": half, "XROWS": xrows}, num_warps=w, num_stages=1)
    for n, i, w, half, xrows in [
        (64, 4, 4, 1, 0), (64, 4, 4, 1, 1), (128, 4, 4, 1, 0), (32, 8, 4, 1, 0), (32, 4, 2, 1, 0), (32, 4, 2, 1, 1),
    ]
]  # fmt: skip
MIN_SLICE = 64 * min(c.kwargs["ITERS"] for c in CONFIGS)  # weights along K one program covers
# Tiling used unless asked to tune (the fastest on an H100, bench/gpu_kernels.py); tuning compiles every config
# per shape, minutes for a 13B model's first load
DEFAULT_CONFIG = {"BN": 64, "ITERS": 4, "num_warps": 4}


def _grid(weights, pair: bool):
    def grid(meta):
        blocks = triton.cdiv(weights[0].n, meta["BN"]) if pair else sum(triton.cdiv(w.n, meta["BN"]) for w in weights)
        return blocks, triton.cdiv(weights[0].k, 64 * meta["ITERS"])

    return grid


_tuned = triton.autotune(CONFIGS, key=["NT", "K", "B", "EPILOGUE", "WEIGHTS"])(nf4_gemv_kernel)
_counters: dict = {}


def nf4_gemv(
    x, weight: Nf4Weight, *, residual=None, up: Nf4Weight | None = None, out=None, config=None, pdl: bool = False
):
    """``x @ W.T`` for x [B, K] (B ≤ 8) in the compute dtype; ``residual`` adds, ``up`` gives silu(x W.T) * x U.T.

    On a CUDA device the CUDA kernel (``models.nf4_cuda``) computes it where it can, this module's Triton kernel
    otherwise. ``config``: KERNEL ("cuda", the default, or "triton" for the Triton kernel alone); the CUDA kernel's
    tiling (MMA, R, WARPS, MINB, DEPTH: ``nf4_cuda.default_config``); the Triton kernel's (BN, ITERS, num_warps and
    optionally DECODE), ``DEFAULT_CONFIG`` for what is not given. ``"tune"``: the Triton kernel, timing every
    config of ``CONFIGS`` once per shape and keeping the fastest. DECODE defaults to the byte permutes where the
    kernel is compiled for CUDA, the table loads in Triton's interpreter. ``pdl``: launched as a programmatic
    dependent launch (``models.grid_overlap``; only where ``grid_overlap.supported``).
    """
    if up is not None:
        return _launch(x, [weight, up], SILU_MUL, None, out, config, pdl)
    return _launch(x, [weight], RESIDUAL if residual is not None else PLAIN, residual, out, config, pdl)


def nf4_gemv_stacked(x, weights: list[Nf4Weight], out=None, config=None, pdl: bool = False):
    """``x @ W.T`` for 1–3 weights of the same K in one launch: [B, N1 + N2 + N3], each output in its columns."""
    return _launch(x, weights, PLAIN, None, out, config, pdl)


def _launch(x, weights: list[Nf4Weight], epilogue: int, residual, out, config, pdl: bool):
    import torch

    from models import nf4_cuda

    batch, k = x.shape
    first = weights[0]
    pair = epilogue == SILU_MUL
    if not 1 <= batch <= MAX_BATCH or any(w.k != k or w.nested != first.nested for w in weights):
        raise ValueError(f"nf4_gemv: input {tuple(x.shape)} does not fit weights {[(w.n, w.k) for w in weights]}")
    if config != "tune":
        config = dict(config or {})
        if config.pop("KERNEL", "cuda") == "cuda" and x.is_cuda:
            done = nf4_cuda.launch(x, weights, epilogue, residual, out, config, pdl)
            if done is not None:
                return done
        config = dict(DEFAULT_CONFIG, **{key: v for key, v in config.items() if key not in nf4_cuda.CUDA_KEYS})

    if x.stride(1) != 1 or x.stride(0) % 2 or x.data_ptr() % 4:  # the kernel reads inputs as 32-bit pairs
        x = x.clone(memory_format=torch.contiguous_format)
    out_cols = first.n if pair else sum(w.n for w in weights)
    if out is None:
        out = torch.empty((batch, out_cols), dtype=x.dtype, device=x.device)
    part_cols = 2 * first.n if pair else out_cols
    slices = triton.cdiv(k, MIN_SLICE if config == "tune" else 64 * config["ITERS"])
    slices_pow2 = triton.next_power_of_2(slices)  # the most partial sums a row may have (tuned: any tiling)
    partials = torch.empty((slices, batch, part_cols), dtype=torch.float32, device=x.device)
    counters = _counters.get(x.device)
    if counters is None:
        counters = _counters[x.device] = torch.zeros(COUNTERS, dtype=torch.int32, device=x.device)
    res = residual if residual is not None else out
    padded = (weights + [first, first])[:3]
    args = [x, x.stride(0), out, out.stride(0), res, res.stride(0), partials, counters, first.table]
    args += [k, k // 2, part_cols]  # K/2 as its own argument: Triton then knows rows start 16-byte aligned
    for w in padded:
        args += [w.packed, w.absmax, w.nested_code, w.nested_absmax, w.offset, w.n]
    tune = config == "tune"
    config = {} if tune else dict(config)
    dot = config.pop("DOT", 1) if batch > 1 else 0  # batch 2-8: on the tensor cores, in 16 sequence slots
    config.pop("DOT", None)
    shape = dict(B=batch, BP=16 if dot else triton.next_power_of_2(batch), NESTED=first.nested, DOT=dot)
    shape.update(NB2=first.nested_block, EPILOGUE=epilogue, WEIGHTS=len(weights), ASM=first.asm, SP=slices_pow2)
    shape.update(pdl_options(pdl))
    grid = _grid(weights, pair)
    if tune:
        _tuned[grid](*args, **shape)
    else:
        warps = config.pop("num_warps", 4)
        config.setdefault("DECODE", PRMT if x.is_cuda and not _interpreting() else TABLE)
        config.setdefault("HALF", 1)
        config.setdefault("XROWS", 0)
        nf4_gemv_kernel[grid(config)](*args, **shape, **config, num_warps=warps, num_stages=1)
    return out


_asms: dict = {}


def _asm(code) -> str:
    key = tuple(code.tolist())
    if key not in _asms:
        _asms[key] = prmt_asm(key)
    return _asms[key]


def _interpreting() -> bool:
    import os

    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
