// Batch 1-8 products straight from bitsandbytes' NF4 weights on the tensor cores (mma.sync m16n8k16), in CUDA C
// compiled at run time by NVRTC (models/nf4_cuda.py, which launches it with the same arguments as nf4_gemv.cu).
//
// Why a second kernel: nf4_gemv.cu multiplies each decoded weight pair with each sequence's inputs by its own
// HFMA2, so at batch 4 it spends about twice the instructions per weight it spends at batch 1, and at the H200's
// memory speed instruction issue is what it runs out of (docs/benchmarks.md, section 6). Here the products and
// sums are one mma per 16 rows x 16 weights whatever the batch (up to the 8 columns of the instruction), so the
// instructions per weight are those of decoding: one byte permute and one shared-memory load per pair.
//
// Layout. A unit is 16 rows (of gate and of up for SILU_MUL; with PAIR 32 rows of one weight, 16 a slot as gate
// and up are, so half the barriers per byte); the block's warps split its K into ranges of whole steps of 128
// weights per row (two scale blocks). In a step, lane (g = lane / 4, t = lane % 4) holds 8 bytes (16
// weights) of each scale block of rows g and g + 8, bytes 8t .. 8t + 7 of the block: the four lanes of a group read
// one 32-byte sector. Byte 2m of them gives register a0 (row g) or a1 (row g + 8) of the block's m-th mma, byte
// 2m + 1 gives a2 / a3, so mma slot 2t + {0,1} is weight 16t + 4m + {0,1} of the block and slot 2t + 8 + {0,1}
// weight 16t + 4m + 2 + {0,1}; the inputs (matrix B, column n = sequence) are taken at the same weights: lane
// (g, t) reads inputs 16t .. 16t + 15 of the block of sequence g, straight from global memory (they stay in L1),
// words 2m and 2m + 1 for the m-th mma. The four mma of a block sum into zeroed fp32 registers, which are then
// scaled by that row's block scale and added (fp32): the scale of row (g + 8 * (t / 2)), block (t % 2) is loaded
// and computed by lane (g, t) and passed to its group by shuffles. Values are the NF4 codes in the inputs'
// dtype (bf16, or fp16 with XF16), from the 256-entry pair table held once per lane as in nf4_gemv.cu.
//
// After a unit each warp writes its sums to shared memory (two buffers, so one barrier per unit) and the block's
// threads add the warps' sums, one row and sequence each, in a fixed order, apply the epilogue and write:
// deterministic for a given WARPS.
//
// ASYNC: the weights' bytes and scales come through a ring of DEPTH steps per warp in shared memory (cp.async, after
// the pair table), not registers. Register loads cannot stay in flight while older ones are used: the compiler
// tracks every global load of a warp on one scoreboard, so using step t's registers waits for step t + 1's bytes as
// well (and for the inputs', loaded in the step), and a warp has one step's bytes in flight whatever DEPTH is. A
// cp.async group is waited for by count (cp.async.wait_group), so DEPTH - 1 steps stay in flight, without
// registers. A lane copies 16 bytes of a row (rows g and g + 8, bytes 16t of the step's 64), so a copy covers whole
// 64-byte pieces of 8 rows; each row's two 32-byte halves (one scale block each) are swapped in rows 2, 3 (mod 4) so
// that the lanes' 8-byte reads of one block never meet in a bank. On an H200 the ring took 7-11 % off each product
// at batch 4 (docs/benchmarks.md, section 6); the inputs through the ring as well measured slower (a bigger ring
// step, fewer blocks per multiprocessor), so they are read from global memory (L1).
//
// XAHEAD (with ASYNC): each step's inputs are loaded during the step before, into two sets of registers in turn.
// Nsight Compute showed the warps waiting for the inputs at each step's first mma (20-27 % of the stall samples of
// q·k·v and down at batch 4: with the shared memory taken, L1 holds little of their 40-110 KB of inputs). The loads
// a step ahead are issued once this step's have arrived, or waiting for these would wait for them too (one
// scoreboard). With the ring of 2 steps it took 1-10 % off each product at batch 4 (docs/benchmarks.md section 6).
//
// Compile-time constants (-D): B (sequences, 1-8), WARPS (at most 16), MINB, DEPTH (steps whose bytes a warp has
// requested: 2 or 3; with ASYNC the ring's steps, 2 to 8), ASYNC, PREFETCH (ASYNC: 128 or 256, each copy also
// brings that many bytes around it into L2), XAHEAD, PAIR, EPILOGUE (0 plain, 1 + residual, 2 silu(gate) * up),
// NESTED, XF16, PDL, HALF (1: K may end halfway through a step; 0: every step whole, and nothing is tested for a
// missing block or row: models/nf4_cuda.py's mma_half), and SMEM_AT: the shared-memory address of the dynamic
// shared memory where models/nf4_cuda.py has read it (nf4_mma_smem_at), so the table loads take it as an immediate
// offset (on Hopper the compiler adds a run-time base otherwise, one more instruction per pair); -1: not known.
// SMEM_AT holds for launches without clusters only: in a cluster, a block's shared-memory addresses carry its rank
// from bit 24 (rank << 24 plus SMEM_AT), so a block of rank 1 reading at the immediate reads rank 0's memory (seen on
// an H200, session 14, with a build that split the units left over between two blocks of a cluster; not kept).

#include "nf4_common.cuh"

#if B < 1 || B > 8
#error "B is 1 to 8"
#endif
#if WARPS < 1 || WARPS > 16
#error "WARPS is 1 to 16"
#endif

#ifndef PAIR
#define PAIR 0  // EPILOGUE 0 or 1: a unit is 32 rows of one weight in two slots of 16, as gate and up are
#endif
#define SLOTS (EPILOGUE == 2 || PAIR ? 2 : 1)  // the pair table's rows (LUT_WORDS) have their words 32.. free
#define SLOT_ROWS (EPILOGUE != 2 && PAIR ? 16 : 0)  // slot j's rows start 16 j rows into the unit
#define UNIT_ROWS (16 + SLOT_ROWS)
#define PART_WORDS (WARPS * SLOTS * 4 * 32)  // one buffer of a unit's sums, in the free halves (2 buffers fit)

#ifndef XAHEAD
#define XAHEAD 0  // ASYNC: each step's inputs are loaded during the step before (see above)
#endif

#if ASYNC
#define STAGE_BYTES 1408  // one slot of one step in a warp's ring: 16 rows x 64 bytes, then 3 words per lane
#define SCALE_AT 1024     // the word holding each lane's u8 scale code (NESTED)
#define NESTED_AT 1152    // its nested scale, or the fp32 scale
#define META_AT 1280      // 0x100: no such block or row (scale 0); else the code's bit offset in its word
#ifndef PREFETCH
#define PREFETCH 0  // 128 or 256: each copy also brings that many bytes around it into L2
#endif
#if PREFETCH == 128
#define CP_PREFETCH ".L2::128B"
#elif PREFETCH == 256
#define CP_PREFETCH ".L2::256B"
#else
#define CP_PREFETCH ""
#endif

__device__ __forceinline__ void copy16(u32 to, const void* from, bool whole) {  // zeros where not whole
  asm volatile("cp.async.cg.shared.global" CP_PREFETCH " [%0], [%1], 16, %2;" ::"r"(to), "l"(from),
               "r"(whole ? 16 : 0)
               : "memory");
}

__device__ __forceinline__ void copy4(u32 to, const void* from, bool whole) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(to), "l"(from), "r"(whole ? 4 : 0) : "memory");
}

__device__ __forceinline__ uint2 lds64(u32 at) {
  uint2 v;
  asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "r"(at) : "memory");
  return v;
}

__device__ __forceinline__ u32 lds32(u32 at) {
  u32 v;
  asm volatile("ld.shared.u32 %0, [%1];" : "=r"(v) : "r"(at) : "memory");
  return v;
}

__device__ __forceinline__ int half_at(int row, int h) {  // where half h (scale block h of the step) of a row is
  return row * 64 + 32 * (h ^ ((row >> 1) & 1));
}
#endif

__device__ __forceinline__ uint2 load_stream(const void* p) {
  uint2 v;
  asm volatile("ld.global.cs.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
}

__device__ __forceinline__ void mma(float (&d)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
#if XF16
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
#else
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
#endif
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

struct Load {  // where one lane's requests for a unit go
  const u8* codes[SLOTS][2];  // rows g and g + 8 (the last row where they are past the end), byte 8t of block 0
                              // (ASYNC: byte 16t, the 16 bytes this lane copies)
  const u8* absmax[SLOTS];    // the scale this lane computes: row g + 8 * (t / 2), block t % 2 (u8 code or fp32)
  int block[SLOTS];           // that scale's index among the weight's scales
  const float* nested[SLOTS];
  bool scale_ok[SLOTS];  // that row exists (a row past the end reads the last row's bytes, scaled by 0)
};

struct Cur {  // what the arithmetic of a unit needs
  float offset[SLOTS];
  int table[SLOTS];
};

struct Step {
  uint2 codes[SLOTS][2][2];  // [slot][row g, g + 8][block]
  u32 q[SLOTS];              // the scale's u8 code (NESTED); bit 8 set: no such block or row, scale 0
  float nested[SLOTS];       // its nested scale (NESTED), or the fp32 scale
};

__device__ __forceinline__ int weight_of(const Weights& w, int unit, int& first) {
  int which = 0;
  first = 0;
  if (EPILOGUE != 2) {
    if (unit >= w.units_end[0]) { which = 1; first = w.units_end[0]; }
    if (unit >= w.units_end[1]) { which = 2; first = w.units_end[1]; }
  }
  return which;
}

__device__ __forceinline__ void cur_of(const Weights& w, int unit, Cur& c) {
  int first;
  const int which = weight_of(w, unit, first);
#pragma unroll
  for (int j = 0; j < SLOTS; ++j) {
    const int wi = EPILOGUE == 2 ? j : which;
    c.offset[j] = w.offset[wi];
    c.table[j] = wi;
  }
}

__device__ __forceinline__ void load_of(const Weights& w, int unit, int K, int lane, Load& l) {
  int first;
  const int which = weight_of(w, unit, first);
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int j = 0; j < SLOTS; ++j) {
    const int wi = EPILOGUE == 2 ? j : which;
    const int last = w.n[wi] - 1, row0 = (unit - first) * UNIT_ROWS + SLOT_ROWS * j;
#pragma unroll
    for (int r = 0; r < 2; ++r)
      l.codes[j][r] = w.packed[wi] + (size_t)min(row0 + g + 8 * r, last) * (K / 2) + t * (ASYNC ? 16 : 8);
    const int srow = row0 + g + 8 * (t >> 1);
    l.scale_ok[j] = srow <= last;
    l.block[j] = min(srow, last) * (K / 64) + (t & 1);
#if NESTED
    l.absmax[j] = (const u8*)w.absmax[wi] + l.block[j];
#else
    l.absmax[j] = (const u8*)((const float*)w.absmax[wi] + l.block[j]);
#endif
    l.nested[j] = w.nested_absmax[wi];
  }
}

#ifndef HALF
#define HALF 1  // K may end halfway through a step (K % 128 == 64); 0: it does not, every step has both blocks
#endif
// a step's scale may be flagged 0x100 (no such block or row: scale 0). Not with the ring over whole steps (HALF 0):
// a row past the end then computes the last row's scale, its sums never written
#define FLAGS (HALF || !ASYNC)

// step s has its second scale block (not where K ends halfway through it, K % 128 == 64); the same for the warp
__device__ __forceinline__ bool has_second(int s, int K) { return !HALF || 2 * s + 1 < (K >> 6); }

// step s's bytes and scales (blocks 2s and 2s + 1 of each row). Where K ends halfway through the step (K % 128 ==
// 64), block 2s + 1 reads nothing: zeros, and its scale is 0 (so are its inputs).
__device__ __forceinline__ void load_step(const Load& l, int s, int K, int lane, int nb2_shift, Step& st) {
  const bool second = has_second(s, K);
#pragma unroll
  for (int j = 0; j < SLOTS; ++j) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      st.codes[j][r][0] = load_stream(l.codes[j][r] + s * 64);
      st.codes[j][r][1] = second ? load_stream(l.codes[j][r] + s * 64 + 32) : make_uint2(0u, 0u);
    }
    if (l.scale_ok[j] && (second || !(lane & 1))) {
#if NESTED
      st.q[j] = load_u8(l.absmax[j] + 2 * s);
      st.nested[j] = load_f32(l.nested[j] + ((l.block[j] + 2 * s) >> nb2_shift));
#else
      st.q[j] = 0;
      st.nested[j] = load_f32((const float*)l.absmax[j] + 2 * s);
#endif
    } else {
      st.q[j] = 0x100;
      st.nested[j] = 0.0f;
    }
  }
}

#if ASYNC
// step s's bytes and scales into ``stage`` (the shared-memory address of this warp's ring step), as cp.async
// copies: where K ends halfway through the step, the second block's bytes are zeros and its scale is 0
__device__ __forceinline__ void copy_step(const Load& l, int s, int K, int lane, int nb2_shift, u32 stage) {
  const bool second = has_second(s, K);
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int j = 0; j < SLOTS; ++j) {
    const u32 at = stage + j * STAGE_BYTES;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const bool whole = second || t < 2;  // bytes 32 .. 63 of the step are the second block
      const u8* from = l.codes[j][r] + s * 64 - (whole ? 0 : 32);  // a readable address even where nothing is read
      copy16(at + half_at(g + 8 * r, t >> 1) + 16 * (t & 1), from, whole);
    }
    const bool ok = !FLAGS || (l.scale_ok[j] && (second || !(lane & 1)));  // as in load_step
    const int o = ok ? 2 * s : 0;  // (block 0 of the lane's row exists)
#if NESTED
    const u8* code = l.absmax[j] + o;
    copy4(at + SCALE_AT + lane * 4, (const void*)((size_t)code & ~(size_t)3), ok);
    copy4(at + NESTED_AT + lane * 4, l.nested[j] + ((l.block[j] + o) >> nb2_shift), ok);
    const u32 meta = ok ? ((u32)(size_t)code & 3u) * 8u : 0x100u;
#else
    copy4(at + NESTED_AT + lane * 4, (const float*)l.absmax[j] + o, ok);
    const u32 meta = ok ? 0u : 0x100u;
#endif
    asm volatile("st.shared.u32 [%0], %1;" ::"r"(at + META_AT + lane * 4), "r"(meta) : "memory");
  }
}

// a ring step as compute() takes it: lane (g, t) reads bytes 8t .. 8t + 7 of each block of rows g, g + 8
__device__ __forceinline__ void read_step(u32 stage, int lane, Step& st) {
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int j = 0; j < SLOTS; ++j) {
    const u32 at = stage + j * STAGE_BYTES;
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int h = 0; h < 2; ++h) st.codes[j][r][h] = lds64(at + half_at(g + 8 * r, h) + 8 * t);
    const u32 meta = lds32(at + META_AT + lane * 4);
#if NESTED
    const u32 word = lds32(at + SCALE_AT + lane * 4);  // read whatever meta says: no branch around the load
    st.q[j] = (FLAGS && (meta & 0x100u)) ? 0x100u : (word >> (meta & 31u)) & 255u;
#else
    st.q[j] = meta;
#endif
    st.nested[j] = __uint_as_float(lds32(at + NESTED_AT + lane * 4));
  }
}
#endif

extern __shared__ __align__(16) u32 smem[];  // the pair table first (LUT_WORDS), then the nested code tables

#ifndef SMEM_AT
#define SMEM_AT -1
#endif
#define TEXT_(v) #v
#define TEXT(v) TEXT_(v)

__device__ __forceinline__ u32 pair_of(u32 word, int i, u32 lane4) {  // byte i's pair, from the lane's copy
  const u32 at = __byte_perm(word, lane4, 0x5504 | (i << 4));
#if SMEM_AT >= 0
  u32 v;
  asm volatile("ld.shared.u32 %0, [%1+" TEXT(SMEM_AT) "];" : "=r"(v) : "r"(at));
  return v;
#else
  return *(const u32*)((const char*)smem + at);
#endif
}

extern "C" __global__ void nf4_mma_smem_at(u32* out) {  // where the dynamic shared memory starts (for SMEM_AT)
  if (threadIdx.x == 0) *out = (u32)__cvta_generic_to_shared(smem);
}

// step s's inputs, xv[block][half]: inputs 16t .. 16t + 15 of the block. ``xrow``: inputs 16t of sequence g (of the
// last sequence for lanes past it: their columns of the mma are never written). Where the step has no second block
// its inputs are the first block's again (finite, and that block's scale is 0); the address is what is chosen, not
// the value, so nothing waits for the loads here
__device__ __forceinline__ void load_inputs(const u16* xrow, int s, int K, uint4 (&xv)[2][2]) {
  const uint4* p = (const uint4*)(xrow + s * 128);
  const uint4* q = has_second(s, K) ? p + 8 : p;
  xv[0][0] = p[0];
  xv[0][1] = p[1];
  xv[1][0] = q[0];
  xv[1][1] = q[1];
}

// one step of a unit: 2 blocks x 4 mma per slot on inputs ``xv``, each block's sums scaled into ``acc``
__device__ __forceinline__ void compute(const Step& st, const Cur& c, const uint4 (&xv)[2][2], const float* ncode,
                                        int lane, float (&acc)[SLOTS][4]) {
  const u32 lane4 = lane * 4;
  float scale[SLOTS];  // row g + 8 * (t / 2), block t % 2 of this step
#pragma unroll
  for (int j = 0; j < SLOTS; ++j) {
#if NESTED
    scale[j] =
        (FLAGS && (st.q[j] & 0x100)) ? 0.0f : ncode[c.table[j] * 256 + (st.q[j] & 255)] * st.nested[j] + c.offset[j];
#else
    scale[j] = st.nested[j];
#endif
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
#pragma unroll
    for (int j = 0; j < SLOTS; ++j) {
      // lanes h and 2 | h of the lane's group of 4 (width 4: the source lane is an immediate; made of the lane's
      // index it took the thread index again from SR_TID.X at each step, the compiler being short of registers)
      const float s_lo = __shfl_sync(0xFFFFFFFFu, scale[j], h, 4);      // row g
      const float s_hi = __shfl_sync(0xFFFFFFFFu, scale[j], 2 | h, 4);  // row g + 8
      float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int m = 0; m < 4; ++m) {
        const u32 lo = m < 2 ? st.codes[j][0][h].x : st.codes[j][0][h].y;  // row g: bytes 2m, 2m + 1
        const u32 hi = m < 2 ? st.codes[j][1][h].x : st.codes[j][1][h].y;  // row g + 8
        const int i = (2 * m) & 3;
        const uint4& xq = xv[h][m >> 1];
        const u32 b0 = (m & 1) ? xq.z : xq.x, b1 = (m & 1) ? xq.w : xq.y;
        mma(d, pair_of(lo, i, lane4), pair_of(hi, i, lane4), pair_of(lo, i + 1, lane4), pair_of(hi, i + 1, lane4),
            b0, b1);
      }
      acc[j][0] += d[0] * s_lo;
      acc[j][1] += d[1] * s_lo;
      acc[j][2] += d[2] * s_hi;
      acc[j][3] += d[3] * s_hi;
    }
  }
}

__device__ __forceinline__ int part_word(int buf, int warp, int v, int lane) {  // in the pair table's free halves
  const int i = ((buf * WARPS + warp) * SLOTS * 4 + v) * 32 + lane;
  return (i >> 5) * 64 + 32 + (i & 31);
}

// the unit's sums: each warp's into shared memory, then the block's threads add them, one sum of a row and sequence
// each (warp order, as before), apply the epilogue and write; every warp of the block calls it once per unit.
// Warp 0 used to add them all (8 values a lane) while the others went on to the next unit, so every unit's barrier
// waited for it: the unit took warp 0's steps and the whole sum. Shared out, the batch-4 decode step took 2.6-4.1 %
// less on an H200 (docs/benchmarks.md section 6, session 13). Two buffers still suffice: a thread reads buffer b
// before it writes the next unit's sums to the other one and waits at that unit's barrier. The sums are the same
// bits as before (the same additions in the same order)
#define ITEMS ((EPILOGUE == 2 ? 1 : SLOTS) * 4 * 32)  // (slot, value, lane) of the sums the epilogue takes

// item i of a unit's sums: the warps' partial sums of lane l's acc[j][v] added (warp order), the epilogue, the write
__device__ __forceinline__ void sum_item(const Weights& w, int which, int row0, int buf, int i, const u16* res,
                                         int stride_res, u16* out, int stride_out) {
  const float* part = (const float*)smem;
  const int j = i >> 7, v = (i >> 5) & 3, l = i & 31;
  const int row = row0 + SLOT_ROWS * j + (l >> 2) + 8 * (v >> 1), seq = 2 * (l & 3) + (v & 1);
  if (seq >= B || row >= w.n[which]) return;
  float y = 0.0f;
#pragma unroll 4  // (unrolled whole, some of q·k·v's builds kept a value in local memory at 128 registers a thread)
  for (int k = 0; k < WARPS; ++k) y += part[part_word(buf, k, j * 4 + v, l)];
  const int col = w.col0[which] + row;
  y = to_float(round_out(y));
#if EPILOGUE == 1
  y += to_float(res[seq * stride_res + col]);
#elif EPILOGUE == 2
  float up = 0.0f;
#pragma unroll
  for (int k = 0; k < WARPS; ++k) up += part[part_word(buf, k, 4 + v, l)];
  up = to_float(round_out(up));
  const float gate = to_float(round_out(y / (1.0f + __expf(-y))));
  y = gate * up;
#endif
  out[seq * stride_out + col] = round_out(y);
}

__device__ __forceinline__ void finish(const Weights& w, int unit, int buf, float (&acc)[SLOTS][4], int warp,
                                       int lane, const u16* res, int stride_res, u16* out, int stride_out) {
  float* part = (float*)smem;
#pragma unroll
  for (int j = 0; j < SLOTS; ++j)
#pragma unroll
    for (int v = 0; v < 4; ++v) {
      part[part_word(buf, warp, j * 4 + v, lane)] = acc[j][v];
      acc[j][v] = 0.0f;
    }
  __syncthreads();
  int first;
  const int which = weight_of(w, unit, first);
  const int row0 = (unit - first) * UNIT_ROWS;
  if (ITEMS <= WARPS * 32) {  // one item a thread at most (every default tiling)
    const int i = warp * 32 + lane;
    if (i < ITEMS) sum_item(w, which, row0, buf, i, res, stride_res, out, stride_out);
  } else {
    for (int i = warp * 32 + lane; i < ITEMS; i += WARPS * 32)
      sum_item(w, which, row0, buf, i, res, stride_res, out, stride_out);
  }
}

extern "C" __global__ void __launch_bounds__(THREADS, MINB) nf4_mma(
    const u16* __restrict__ x, int stride_x, u16* __restrict__ out, int stride_out, const u16* __restrict__ res,
    int stride_res, const float* __restrict__ code, int K, int units, int nb2_shift, const Weights w) {
  u32* lut = smem;
  float* ncode = (float*)(smem + LUT_WORDS);  // 3 x 256: each weight's nested code table (NESTED)
#if PDL && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
  // the thread index through asm: with threadIdx.x the compiler read SR_TID.X again (a ~20-cycle wait on the short
  // scoreboard, where Nsight Compute found 26 % of q·k·v's stall samples, many of them behind these reads) at each
  // step to remake the lane's addresses, short of registers at 128 a thread; this way fewer times (q·k·v's sm_90
  // build, with compute()'s shuffles: 8 reads against 13, which tests/models/test_nf4_cuda_source.py checks). With
  // the scale word read without a branch, 4 % off the four products at batch 4 on an H200 (docs/benchmarks.md
  // section 6, session 11). In the build of whole steps (HALF 0) threadIdx.x made the compiler spill to local
  // memory instead, 3 % slower a batch-4 decode step (session 12)
  u32 tid;
  asm volatile("mov.u32 %0, %%tid.x;" : "=r"(tid));
  const int lane = tid & 31, warp = tid >> 5;
  const int steps = ((K >> 6) + 1) >> 1;
  const int s0 = warp * steps / WARPS, my = (warp + 1) * steps / WARPS - s0;  // this warp's steps of every unit
  const int mine = blockIdx.x < units ? (units - 1 - blockIdx.x) / gridDim.x + 1 : 0;
  const int total = mine * my;

  // the first DEPTH - 1 steps' weights are requested first: the previous kernel does not write them
  Load ld;
  Cur cur;
  int lunit = blockIdx.x, lst = 0;
#define NEXT_STEP()                                                         \
  if (++lst == my) {                                                        \
    lst = 0;                                                                \
    lunit += gridDim.x;                                                     \
    if (lunit < units) load_of(w, lunit, K, lane, ld);                      \
  }
#if ASYNC
  // this warp's ring, after the pair table and the nested code tables
  const u32 ring =
      (u32)__cvta_generic_to_shared(smem) + (LUT_WORDS + 3 * 256) * 4 + warp * DEPTH * SLOTS * STAGE_BYTES;
  int wstage = 0;  // the ring step the next copy goes to
#define COPY(t)                                                                           \
  {                                                                                       \
    if ((t) < total) {                                                                    \
      copy_step(ld, s0 + lst, K, lane, nb2_shift, ring + wstage * (SLOTS * STAGE_BYTES)); \
      NEXT_STEP();                                                                        \
    }                                                                                     \
    asm volatile("cp.async.commit_group;" ::: "memory");                                  \
    wstage = wstage == DEPTH - 1 ? 0 : wstage + 1;                                        \
  }
  if (mine > 0) {
    load_of(w, blockIdx.x, K, lane, ld);
    cur_of(w, blockIdx.x, cur);
#pragma unroll
    for (int i = 0; i < DEPTH - 1; ++i) COPY(i);
  }
#else
  Step a, b, c;
#define LOAD(t, buf)                                                        \
  if ((t) < total) {                                                        \
    load_step(ld, s0 + lst, K, lane, nb2_shift, buf);                       \
    NEXT_STEP();                                                            \
  }
  if (mine > 0) {
    load_of(w, blockIdx.x, K, lane, ld);
    cur_of(w, blockIdx.x, cur);
    LOAD(0, a);
#if DEPTH == 3
    LOAD(1, b);
#endif
  }
#endif
  fill_tables(lut, ncode, code, w, warp, lane, !XF16);  // the pairs in the inputs' dtype
#if PDL && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");  // the inputs (and the residual) come from the previous kernel
#endif
  __syncthreads();
  if (mine == 0) return;  // the same for the whole block

  float acc[SLOTS][4];
#pragma unroll
  for (int j = 0; j < SLOTS; ++j)
#pragma unroll
    for (int v = 0; v < 4; ++v) acc[j][v] = 0.0f;
  int unit = blockIdx.x, buf = 0;
  if (my == 0) {  // more warps than steps: this one only takes part in each unit's sums
    for (int u = 0; u < mine; ++u, unit += gridDim.x, buf ^= 1)
      finish(w, unit, buf, acc, warp, lane, res, stride_res, out, stride_out);
    return;
  }
  int st = 0;
  const u16* xrow = x + (size_t)min(lane >> 2, B - 1) * stride_x + (lane & 3) * 16;
#define COMPUTE(now, xv)                                                                             \
  {                                                                                                  \
    compute(now, cur, xv, ncode, lane, acc);                                                         \
    if (++st == my) {                                                                                \
      finish(w, unit, buf, acc, warp, lane, res, stride_res, out, stride_out);                       \
      unit += gridDim.x;                                                                             \
      buf ^= 1;                                                                                      \
      st = 0;                                                                                        \
      if (t + 1 < total) cur_of(w, unit, cur);                                                        \
    }                                                                                                \
  }
#if ASYNC
  int rstage = 0;  // the ring step this step reads
#define RING_STEP()                                                                               \
  __syncwarp(); /* every lane has read the ring step the copy below refills (step t - 1's) */     \
  COPY(t + DEPTH - 1);                                                                            \
  asm volatile("cp.async.wait_group %0;" ::"n"(DEPTH - 1) : "memory"); /* step t's copies ... */  \
  __syncwarp();                                                        /* ... every lane's */     \
  Step now;                                                                                       \
  read_step(ring + rstage * (SLOTS * STAGE_BYTES), lane, now);                                    \
  rstage = rstage == DEPTH - 1 ? 0 : rstage + 1;
#if XAHEAD
  // the inputs are loaded a step ahead (xa, xb in turn): each step's are in registers when it starts. The next
  // step's loads are issued only once this step's have arrived (their address takes a zero made of them, which
  // the compiler cannot see is zero: K < 2^30), or waiting for this step's would wait for them too (one scoreboard)
  const u32 kzero = (u32)K >> 30;
  uint4 xa[2][2], xb[2][2];
  load_inputs(xrow, s0, K, xa);
#define STEP(xc, xn)                                                                              \
  {                                                                                               \
    RING_STEP();                                                                                  \
    const u32 zero = (xc[0][0].x ^ xc[0][1].x ^ xc[1][0].x ^ xc[1][1].x) & kzero;                 \
    load_inputs(xrow + zero, s0 + (st + 1 == my ? 0 : st + 1), K, xn); /* the next step's */      \
    COMPUTE(now, xc);                                                                             \
  }
  for (int t = 0;;) {
    STEP(xa, xb);
    if (++t == total) break;
    STEP(xb, xa);
    if (++t == total) break;
  }
#undef STEP
#else
  for (int t = 0; t < total; ++t) {
    RING_STEP();
    uint4 xc[2][2];
    load_inputs(xrow, s0 + st, K, xc);
    COMPUTE(now, xc);
  }
#endif
#undef RING_STEP
#undef COPY
#else
#define STEP(now, ahead)           \
  {                                \
    LOAD(t + DEPTH - 1, ahead);    \
    uint4 xc[2][2];                \
    load_inputs(xrow, s0 + st, K, xc); \
    COMPUTE(now, xc);              \
  }
  RUN_STEPS();
#undef STEP
#undef LOAD
#endif
#undef COMPUTE
#undef NEXT_STEP
}
