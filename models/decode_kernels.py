"""Triton kernels for one decode step of a Llama-family model, besides the NF4 products (``nf4_gemv``): RMSNorm;
rotary embedding of q and k with the write of k and v into the static cache at the current position; attention of
one new token over the cache, split along the sequence (flash-decoding) and combined. Positions are read from a
device tensor, so a CUDA graph of the step replays at any position.

Each rounds where the eager transformers model rounds (to the compute dtype after every torch op), so the captured
step stays within rounding of eager. RMSNorm and the rotary embedding are compiled without floating-point
contraction: with it, Triton turned ``x*cos + rotate(x)*sin`` (each product rounded to bf16 in eager) into one bf16
FMA, a bf16 step off eager in a few elements on an H100 (the interpreter, which does not contract, was bitwise equal).

With ``pdl`` each is launched as a programmatic dependent launch (``models.grid_overlap``): it lets the next kernel
start at once (whose weights then stream in meanwhile) and waits for the previous one before it reads anything.
"""

from __future__ import annotations

import triton
import triton.language as tl

from models import scratch
from models.grid_overlap import gdc_launch_dependents, gdc_wait, pdl_options


@triton.jit
def _overlap(PDL: tl.constexpr):
    """Let the next kernel start, then wait for the previous one's writes (PDL=1)."""
    if PDL:
        gdc_launch_dependents()
        gdc_wait()


@triton.jit
def rmsnorm_kernel(x_ptr, w_ptr, out_ptr, H, eps, BLOCK: tl.constexpr, PDL: tl.constexpr):
    _overlap(PDL)
    b = tl.program_id(0)
    i = tl.arange(0, BLOCK)
    ok = i < H
    dtype = out_ptr.dtype.element_ty
    x = tl.load(x_ptr + b * H + i, mask=ok, other=0.0).to(tl.float32)
    var = tl.sum(x * x, axis=0) / H
    h = (x * tl.rsqrt(var + eps)).to(dtype).to(tl.float32)
    w = tl.load(w_ptr + i, mask=ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + b * H + i, (w * h).to(dtype), mask=ok)


def rmsnorm(x, weight, eps: float, out=None, pdl: bool = False):
    import torch

    out = torch.empty_like(x) if out is None else out
    rmsnorm_kernel[(x.shape[0],)](
        x, weight, out, x.shape[1], eps, BLOCK=triton.next_power_of_2(x.shape[1]), enable_fp_fusion=False,
        **pdl_options(pdl),
    )  # fmt: skip
    return out


@triton.jit
def _rotate(src, cos_row, sin_row, D: tl.constexpr):
    """x*cos + rotate_half(x)*sin, each product rounded like the eager bf16 ops."""
    d = tl.arange(0, D)
    partner = (d + D // 2) % D
    dtype = src.dtype.element_ty
    x = tl.load(src + d).to(tl.float32)
    other = tl.load(src + partner).to(tl.float32)
    rotated = tl.where(d < D // 2, -other, other)
    cos = tl.load(cos_row + d).to(tl.float32)
    sin = tl.load(sin_row + d).to(tl.float32)
    a = (x * cos).to(dtype).to(tl.float32)
    b = (rotated * sin).to(dtype).to(tl.float32)
    return (a + b).to(dtype)


@triton.jit
def rope_cache_kernel(
    q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, pos_ptr, kc_ptr, vc_ptr,
    stride_q, stride_k, stride_cb, stride_ch, HQ, HKV, D: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    """Program (b, h): q heads rotate in place; k heads rotate into the cache; v heads are copied into it."""
    _overlap(PDL)
    b = tl.program_id(0)
    h = tl.program_id(1)
    pos = tl.load(pos_ptr + b)
    d = tl.arange(0, D)
    cos_row = cos_ptr + pos * D
    sin_row = sin_ptr + pos * D
    if h < HQ:
        src = q_ptr + b * stride_q + h * D
        rotated = _rotate(src, cos_row, sin_row, D)
        tl.debug_barrier()  # in place: every thread has read its partner before any writes (threads hold copies)
        tl.store(src + d, rotated)
    elif h < HQ + HKV:
        kv = h - HQ
        rotated = _rotate(k_ptr + b * stride_k + kv * D, cos_row, sin_row, D)
        tl.store(kc_ptr + b * stride_cb + kv * stride_ch + pos * D + d, rotated)
    else:
        kv = h - HQ - HKV
        value = tl.load(v_ptr + b * stride_k + kv * D + d)
        tl.store(vc_ptr + b * stride_cb + kv * stride_ch + pos * D + d, value)


def rope_cache(
    q, k, v, cos, sin, pos, cache_k, cache_v, heads: int, kv_heads: int, head_dim: int, pdl: bool = False
) -> None:
    """q [B, heads*D] rotated in place; k rotated and v written to ``cache_[kv][b, :, pos[b]]``."""
    grid = (q.shape[0], heads + 2 * kv_heads)
    rope_cache_kernel[grid](
        q, k, v, cos, sin, pos, cache_k, cache_v, q.stride(0), k.stride(0), cache_k.stride(0), cache_k.stride(1),
        heads, kv_heads, D=head_dim, enable_fp_fusion=False, **pdl_options(pdl),
    )  # fmt: skip


@triton.jit
def attention_split_kernel(
    q_ptr, kc_ptr, vc_ptr, pos_ptr, part_ptr, lse_ptr, count_ptr, out_ptr, stride_q, stride_cb, stride_ch, scale, HQ,
    GROUP, NSPLIT, D: tl.constexpr, BLOCK_L: tl.constexpr, SPLITS: tl.constexpr, FUSED: tl.constexpr,
    PDL: tl.constexpr,
):  # fmt: skip
    """Program (b*HQ + h, s): softmax-weighted values of cache positions [s*chunk, (s+1)*chunk) up to pos[b], where
    the chunk is the length up to pos[b] shared among the NSPLIT programs of the head in whole BLOCK_L: programs past
    the length do nothing, so the grid can be sized for the whole cache and a graph replays at any position.

    Rounds like flash attention (what the eager model's SDPA runs at decode on a GPU): exponentials in base 2 of the
    unscaled scores, and the weights rounded to the cache's dtype before they multiply the values.

    FUSED: the head's last program to finish (an atomic count per head, which it leaves at 0 for the next launch)
    combines the head's parts into ``out``, as ``attention_combine_kernel`` would, and programs past the length
    write nothing."""
    _overlap(PDL)
    bh = tl.program_id(0)
    s = tl.program_id(1)
    b = bh // HQ
    kv = (bh % HQ) // GROUP
    length = tl.load(pos_ptr + b) + 1
    chunk = tl.cdiv(tl.cdiv(length, NSPLIT), BLOCK_L) * BLOCK_L
    start = s * chunk
    d = tl.arange(0, D)
    out_at = part_ptr + (bh * NSPLIT + s) * D + d
    scale_log2 = scale * 1.4426950408889634  # exp(x * scale) = exp2(x * scale * log2(e))
    if start < length:
        q = tl.load(q_ptr + b * stride_q + (bh % HQ) * D + d).to(tl.float32)
        base = b * stride_cb + kv * stride_ch
        m = -float("inf")
        total = 0.0
        acc = tl.zeros((D,), dtype=tl.float32)
        end = tl.minimum(start + chunk, length)
        for off in range(start, end, BLOCK_L):
            idx = off + tl.arange(0, BLOCK_L)
            ok = idx < end
            at = base + idx[:, None] * D + d[None, :]
            keys = tl.load(kc_ptr + at, mask=ok[:, None], other=0.0).to(tl.float32)
            values = tl.load(vc_ptr + at, mask=ok[:, None], other=0.0)  # requested with the keys, not after them
            scores = tl.where(ok, tl.sum(keys * q[None, :], axis=1), -float("inf"))  # unscaled, as flash's
            m_new = tl.maximum(m, tl.max(scores, axis=0))
            p = tl.exp2(scores * scale_log2 - m_new * scale_log2)
            alpha = tl.exp2(m * scale_log2 - m_new * scale_log2)
            # the weights meet the values in the cache's dtype, as in flash attention's tensor-core product (the
            # eager model's SDPA at decode); their sum stays in fp32
            weights = p.to(values.dtype).to(tl.float32)
            acc = acc * alpha + tl.sum(weights[:, None] * values.to(tl.float32), axis=0)
            total = total * alpha + tl.sum(p, axis=0)
            m = m_new
        tl.store(out_at, acc / total)
        tl.store(lse_ptr + bh * NSPLIT + s, m * scale + tl.log(total))
        if FUSED:
            parts = tl.cdiv(length, chunk)  # the head's programs with positions
            tl.debug_barrier()  # every thread's part is written before the count says so
            if tl.atomic_add(count_ptr + bh, 1, sem="acq_rel") == parts - 1:
                _combine(part_ptr, lse_ptr, out_ptr, bh, parts, NSPLIT, D, SPLITS, 8, ".cg")
                tl.atomic_xchg(count_ptr + bh, 0)
    elif not FUSED:
        tl.store(out_at, tl.zeros((D,), dtype=tl.float32))
        tl.store(lse_ptr + bh * NSPLIT + s, -float("inf"))


@triton.jit
def _combine(part_ptr, lse_ptr, out_ptr, bh, PARTS, NSPLIT, D: tl.constexpr, SPLITS: tl.constexpr,
             CHUNK: tl.constexpr, CACHE: tl.constexpr):  # fmt: skip
    """out[bh] = the head's first PARTS parts weighted by their softmax totals, CHUNK parts at a time (a one-warp
    program holds CHUNK x D of them in registers)."""
    s = tl.arange(0, SPLITS)
    d = tl.arange(0, D)
    lse = tl.load(lse_ptr + bh * NSPLIT + s, mask=s < PARTS, other=-float("inf"), cache_modifier=CACHE)
    top = tl.max(lse, axis=0)
    acc = tl.zeros((D,), dtype=tl.float32)
    for c in range(0, PARTS, CHUNK):
        r = c + tl.arange(0, CHUNK)
        ok = r < PARTS
        weight = tl.exp(tl.load(lse_ptr + bh * NSPLIT + r, mask=ok, other=-float("inf"), cache_modifier=CACHE) - top)
        part = tl.load(part_ptr + (bh * NSPLIT + r)[:, None] * D + d[None, :], mask=ok[:, None], other=0.0,
                       cache_modifier=CACHE)  # fmt: skip
        acc += tl.sum(weight[:, None] * part, axis=0)
    out = acc / tl.sum(tl.exp(lse - top), axis=0)
    tl.store(out_ptr + bh * D + d, out.to(out_ptr.dtype.element_ty))


@triton.jit
def attention_combine_kernel(
    part_ptr, lse_ptr, out_ptr, NSPLIT, D: tl.constexpr, SPLITS: tl.constexpr, PDL: tl.constexpr
):
    _overlap(PDL)
    _combine(part_ptr, lse_ptr, out_ptr, tl.program_id(0), NSPLIT, NSPLIT, D, SPLITS, SPLITS, "")


# programs per head (SPLITS, sharing the length up to the position), cache positions per iteration (BLOCK_L) and
# warps: the fastest of bench/gpu_kernels.py --attention on an H200 (13B shapes, 1,503 positions, docs/benchmarks.md
# section 6), one-warp programs: at batch 4 39.6 µs a layer (74 % of the copy bandwidth) against 50.2 µs for
# four-warp programs of 64 positions each over the whole cache, whose programs past the length also cost; at
# batch 1 14.0 µs against 14.8. From batch 2, 24 programs a head rather than 64: in the decode step at batch 4 (a
# 1,500-token cache; bench/step_ab.py) 32 were 1.1-2.1 % faster than 64 in three runs (sessions 12 and 13), 24 another
# 1.0-2.6 % in two, 16 no faster than 32
ATTENTION_TILING = {"SPLITS": 24, "BLOCK_L": 16, "num_warps": 1}
ATTENTION_TILING_BATCH1 = {"SPLITS": 64, "BLOCK_L": 32, "num_warps": 1}


# the head's parts combined by its last program, not by a kernel of their own (tiling key "FUSED"). On an H200 the
# first version, all 64 parts of a head in one warp's registers, was slower at batch 4 (53.5 µs a layer against
# 41.8); this one, 8 parts at a time, faster (40.0 against 42.5 at batch 4, 13.9 against 15.0-15.2 at batch 1:
# docs/benchmarks.md section 6, session 10). Off: in the decode step it gained nothing (batch 4 685.7 tok/s against
# 683.1-686.3 without), and the profile put it at 1,600 µs a batch-4 step against 1,514 for the two kernels (session 11)
FUSED = False


def attention_tiling(batch: int) -> dict:
    return ATTENTION_TILING_BATCH1 if batch == 1 else ATTENTION_TILING


def attention(
    q, cache_k, cache_v, pos, heads: int, kv_heads: int, head_dim: int, scale: float, pdl: bool = False,
    tiling: dict | None = None,
):  # fmt: skip
    """Attention of q [B, heads*D] over cache_[kv] [B, kv_heads, L, D] up to and including pos[b]: [B, heads*D].
    ``tiling``: SPLITS (programs per head), BLOCK_L (positions per iteration), num_warps, num_stages;
    ``attention_tiling``'s for the batch where not given."""
    import torch

    batch, length = q.shape[0], cache_k.shape[2]
    tiling = dict(attention_tiling(batch), **(tiling or {}))
    block, fused = tiling["BLOCK_L"], bool(tiling.get("FUSED", FUSED))
    splits = min(tiling["SPLITS"], triton.cdiv(length, block))
    part = torch.empty((batch * heads, splits, head_dim), dtype=torch.float32, device=q.device)
    lse = torch.empty((batch * heads, splits), dtype=torch.float32, device=q.device)
    out = torch.empty((batch, heads * head_dim), dtype=q.dtype, device=q.device)
    counts = scratch.zeroed(q.device, "attention", batch * heads) if fused else lse  # (unused unless fused)
    attention_split_kernel[(batch * heads, splits)](
        q, cache_k, cache_v, pos, part, lse, counts, out, q.stride(0), cache_k.stride(0), cache_k.stride(1), scale,
        heads, heads // kv_heads, splits, D=head_dim, BLOCK_L=block, SPLITS=triton.next_power_of_2(splits),
        FUSED=fused, num_warps=tiling["num_warps"], num_stages=tiling.get("num_stages", 3), **pdl_options(pdl),
    )  # fmt: skip
    if not fused:
        attention_combine_kernel[(batch * heads,)](
            part, lse, out, splits, D=head_dim, SPLITS=triton.next_power_of_2(splits), **pdl_options(pdl)
        )
    return out
