// Batch 1-4 matrix-vector products straight from bitsandbytes' NF4 weights, in CUDA C (compiled at run time by
// NVRTC: models/nf4_cuda.py). Same tensors, epilogues and rounding as the Triton kernel (models/nf4_gemv.py);
// fewer instructions per weight (about 2.8 against 5), which is what limits that one (docs/benchmarks.md, section 6).
//
// A warp takes R rows (R of gate and R of up for SILU_MUL) over the whole of K, so no partial sums leave the
// warp; its 32 lanes take 16 bytes (32 weights, half a scale block) of each row per step, and the next step's
// bytes and scales are requested before this step's arithmetic. A byte becomes the fp16 pair of its two weights
// by one byte permute (prmt) and one shared-memory load: the 256-entry pair table is held 32 times, once per lane,
// each lane's copy in its own bank, so a warp's lookups never conflict. The inputs are converted to fp16 once per
// block of threads into shared memory. The products of half a scale block are summed in fp16 pairs, then scaled
// and added in fp32; a warp's lanes are added in a fixed order (deterministic).
//
// Compile-time constants (-D): B (sequences, 1-4), R (rows per warp), WARPS, EPILOGUE (0 plain, 1 + residual,
// 2 silu(gate) * up), NESTED (double-quantised scales), XF16 (inputs and outputs fp16 instead of bf16), PDL.

#include "nf4_common.cuh"

#if B < 1 || B > 4
#error "B is 1 to 4"
#endif

#define SLOTS (EPILOGUE == 2 ? 2 * R : R)
#define X_BASE ((LUT_WORDS + 3 * 256) * 4)  // the inputs' first byte in shared memory, unless XHOLES

__device__ __forceinline__ uint4 load_stream(const void* p) {
  uint4 v;
  asm volatile("ld.global.cs.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

__device__ __forceinline__ u32 hfma2(u32 a, u32 b, u32 c) {
  u32 d;
  asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}

__device__ __forceinline__ float sum_f16x2(u32 v) {  // lo + hi, in fp32
  float lo, hi;
  asm("{.reg .f16 l, h; mov.b32 {l, h}, %2; cvt.f32.f16 %0, l; cvt.f32.f16 %1, h;}" : "=f"(lo), "=f"(hi) : "r"(v));
  return lo + hi;
}

__device__ __forceinline__ u32 input_pair(u32 pair) {  // two inputs (even low) -> fp16 pair
#if XF16
  return pair;
#else
  return pack_f16x2(__uint_as_float(pair << 16), __uint_as_float(pair & 0xFFFF0000u));
#endif
}

// The inputs in shared memory, as fp16 pairs in 16-byte chunks, K rounded up to 1024 per sequence. A lane reads
// chunk p = s * xchunks + 128 * step + 32 * word + lane (inputs 8p .. 8p+7 of the step's 1024). XHOLES: the chunks
// fill the unused upper halves of the pair table's 256-byte rows (32 KB: inputs of up to 16,384 for one sequence),
// 8 chunks a row; otherwise they follow the tables. Either way the 8 lanes of each shared-memory phase read 128
// consecutive bytes (no bank conflicts).
__device__ __forceinline__ int x_byte(int p) {  // chunk p's first byte
#if XHOLES
  return (p >> 3) * 256 + 128 + (p & 7) * 16;
#else
  return X_BASE + p * 16;
#endif
}

// the same for p = base + lane with base a multiple of 8: x_byte(base) - x_byte(0) + x_byte(lane)
__device__ __forceinline__ int x_step(int base) {
#if XHOLES
  return base * 32;
#else
  return base * 16;
#endif
}

#define WU (EPILOGUE == 2 ? 2 : 1)  // weights one unit reads: gate and up, or one

struct Rows {  // the rows of one unit, as one lane reads them
  const u8* codes[SLOTS];   // this lane's first 16 bytes of each row
  const u8* absmax[SLOTS];  // the scale (u8 code, or fp32) of this lane's first block of each row
  int block[SLOTS];         // the index of that block among the weight's scales
  const float* nested[WU];
  float offset[WU];
  int valid;  // rows of the unit that exist (R, except at the end of a weight)
  int which;  // the weight (PLAIN/RESIDUAL; 0 for SILU_MUL)
  int row0;
};

struct Step {  // what one step of one lane loads, requested a step ahead
  uint4 codes[SLOTS];
  u32 q[SLOTS];
  float nested[SLOTS];
};

struct Shared {  // what the block holds in shared memory
  const char* lut;     // the pair table, as bytes
  const float* ncode;  // 3 x 256 nested code values
  int xchunks;         // 16-byte chunks per sequence
  int xlane;           // x_byte(lane)
};

__device__ __forceinline__ void rows_of(const Weights& w, int unit, int K, int lane, Rows& r) {
  int which = 0, first = 0;
  if (EPILOGUE != 2) {
    if (unit >= w.units_end[0]) { which = 1; first = w.units_end[0]; }
    if (unit >= w.units_end[1]) { which = 2; first = w.units_end[1]; }
  }
  r.which = which;
  r.row0 = (unit - first) * R;
  r.valid = min(R, w.n[which] - r.row0);
#pragma unroll
  for (int j = 0; j < SLOTS; ++j) {
    const int wi = EPILOGUE == 2 ? j / R : which;
    const int row = r.row0 + j % R;
    r.codes[j] = w.packed[wi] + (size_t)row * (K / 2) + lane * 16;
    r.block[j] = row * (K / 64) + (lane >> 1);
#if NESTED
    r.absmax[j] = (const u8*)w.absmax[wi] + r.block[j];
#else
    r.absmax[j] = (const u8*)((const float*)w.absmax[wi] + r.block[j]);
#endif
  }
#pragma unroll
  for (int u = 0; u < WU; ++u) {
    const int wi = EPILOGUE == 2 ? u : which;
    r.nested[u] = w.nested_absmax[wi];
    r.offset[u] = w.offset[wi];
  }
}

// the step's bytes and scales; nothing for rows past the weight's end or a lane past the end of K (never used)
__device__ __forceinline__ void load_step(const Rows& r, int it, bool active, int nb2_shift, Step& st) {
#pragma unroll
  for (int j = 0; j < SLOTS; ++j) {
    if (active && j % R < r.valid) {
      st.codes[j] = load_stream(r.codes[j] + it * 512);
#if NESTED
      st.q[j] = load_u8(r.absmax[j] + it * 16);
      st.nested[j] = load_f32(r.nested[j / R] + ((r.block[j] + it * 16) >> nb2_shift));
#else
      st.nested[j] = load_f32((const float*)r.absmax[j] + it * 16);
#endif
    }
  }
}

__device__ __forceinline__ void compute(const Step& cur, const Rows& rows, int it, const Shared& sh, u32 lane4,
                                        float (&part)[SLOTS][B]) {
  u32 acc[SLOTS][B];
#pragma unroll
  for (int j = 0; j < SLOTS; ++j)
#pragma unroll
    for (int s = 0; s < B; ++s) acc[j][s] = 0;
#pragma unroll
  for (int word = 0; word < 4; ++word) {
    uint4 xv[B];
#pragma unroll
    for (int s = 0; s < B; ++s)
      xv[s] = *(const uint4*)(sh.lut + sh.xlane + x_step(s * sh.xchunks + it * 128) + x_step(word * 32));
#pragma unroll
    for (int j = 0; j < SLOTS; ++j) {
      const u32 v = word == 0 ? cur.codes[j].x : word == 1 ? cur.codes[j].y : word == 2 ? cur.codes[j].z
                                                                                        : cur.codes[j].w;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const u32 at = __byte_perm(v, lane4, 0x5504 | (i << 4));  // byte i of v, times 256, + 4 * lane
        const u32 pair = *(const u32*)(sh.lut + at);
#pragma unroll
        for (int s = 0; s < B; ++s) {
          const u32 xp = i == 0 ? xv[s].x : i == 1 ? xv[s].y : i == 2 ? xv[s].z : xv[s].w;
          acc[j][s] = hfma2(pair, xp, acc[j][s]);
        }
      }
    }
  }
#pragma unroll
  for (int j = 0; j < SLOTS; ++j) {
    const int u = j / R;
#if NESTED
    const int table = EPILOGUE == 2 ? u : rows.which;
    const float scale = sh.ncode[table * 256 + (cur.q[j] & 255)] * cur.nested[j] + rows.offset[u];
#else
    const float scale = cur.nested[j];
#endif
#pragma unroll
    for (int s = 0; s < B; ++s) part[j][s] += sum_f16x2(acc[j][s]) * scale;
  }
}

// the unit's rows are done: add the lanes' sums (fixed order), apply the epilogue, write, start again from zero
__device__ __forceinline__ void finish(const Rows& rows, float (&part)[SLOTS][B], int lane, const Weights& w,
                                       const u16* res, int stride_res, u16* out, int stride_out) {
#pragma unroll
  for (int j = 0; j < SLOTS; ++j)
#pragma unroll
    for (int s = 0; s < B; ++s) {
      float v = part[j][s];
#pragma unroll
      for (int m = 16; m >= 1; m >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, m);
      part[j][s] = v;
    }
#pragma unroll
  for (int j = 0; j < R; ++j)
#pragma unroll
    for (int s = 0; s < B; ++s) {
      if (lane == j * B + s && j < rows.valid) {
        const int col = w.col0[rows.which] + rows.row0 + j;
        float y = to_float(round_out(part[j][s]));
#if EPILOGUE == 1
        y += to_float(res[(size_t)s * stride_res + col]);
#elif EPILOGUE == 2
        const float up = to_float(round_out(part[j + R][s]));
        const float gate = to_float(round_out(y / (1.0f + __expf(-y))));
        y = gate * up;
#endif
        out[(size_t)s * stride_out + col] = round_out(y);
      }
    }
#pragma unroll
  for (int j = 0; j < SLOTS; ++j)
#pragma unroll
    for (int s = 0; s < B; ++s) part[j][s] = 0.0f;
}

extern "C" __global__ void __launch_bounds__(THREADS, MINB) nf4_gemv(
    const u16* __restrict__ x, int stride_x, u16* __restrict__ out, int stride_out, const u16* __restrict__ res,
    int stride_res, const float* __restrict__ code, int K, int units, int nb2_shift, const Weights w) {
  extern __shared__ __align__(16) u32 smem[];
  u32* lut = smem;                            // LUT_WORDS
  float* ncode = (float*)(smem + LUT_WORDS);  // 3 x 256: each weight's nested code table (NESTED)
  const int iters = (K + 1023) >> 10;  // steps per row: 32 lanes x 32 weights each
  const int xchunks = iters * 128;

#if PDL && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int W = gridDim.x * WARPS;
  const int g = warp * gridDim.x + blockIdx.x;  // warps interleaved over the blocks: the work spreads evenly
  const int lane_iters = (K - lane * 32 + 1023) >> 10;  // steps in which this lane has weights (K % 64 == 0)
  const int mine = g < units ? (units - 1 - g) / W + 1 : 0;
  const int total = mine * iters;

  // the first DEPTH - 1 steps' weights are requested before anything else: the previous kernel does not write
  // them. ``lrows``/``lunit``/``lit``: where the next request goes; ``rows``/``unit``/``it``: the step computed.
  Rows rows, lrows;
  int lunit = g, lit = 0;
  Step a, b, c;
#define ADVANCE_LOAD()                                                      \
  if (++lit == iters) {                                                     \
    lit = 0;                                                                \
    lunit += W;                                                             \
    if (lunit < units) rows_of(w, lunit, K, lane, lrows);                   \
  }
#define LOAD(t, buf)                                                        \
  if ((t) < total) {                                                        \
    load_step(lrows, lit, lit < lane_iters, nb2_shift, buf);                \
    ADVANCE_LOAD();                                                         \
  }
  if (total > 0) {
    rows_of(w, g, K, lane, lrows);
    rows = lrows;
    LOAD(0, a);
#if DEPTH == 3
    LOAD(1, b);
#endif
  }
  fill_tables(lut, ncode, code, w, warp, lane, false);
#if PDL && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");  // the inputs (and the residual) come from the previous kernel
#endif
  {
    const int chunks = K / 8;  // 16-byte chunks of one sequence's inputs
    for (int i = threadIdx.x; i < B * chunks; i += THREADS) {
      const int s = i / chunks, c = i - s * chunks;
      const uint4 v = *(const uint4*)(x + (size_t)s * stride_x + c * 8);
      uint4 h;
      h.x = input_pair(v.x);
      h.y = input_pair(v.y);
      h.z = input_pair(v.z);
      h.w = input_pair(v.w);
      const int p = s * xchunks + (c & ~127) + (c & 3) * 32 + ((c >> 2) & 31);  // chunk c is lane c/4's, word c%4
      *(uint4*)((char*)smem + x_byte(p)) = h;
    }
  }
  __syncthreads();
  if (total == 0) return;

  const Shared sh = {(const char*)lut, ncode, xchunks, x_byte(lane)};
  const u32 lane4 = lane * 4;
  float part[SLOTS][B];
#pragma unroll
  for (int j = 0; j < SLOTS; ++j)
#pragma unroll
    for (int s = 0; s < B; ++s) part[j][s] = 0.0f;

  int unit = g, it = 0;
  // one step: request the bytes of step t + DEPTH - 1 (maybe of a later unit) into ``ahead``, then this step's
  // arithmetic on ``cur``; the buffers take turns, so nothing is copied
#define STEP(cur, ahead)                                                                            \
  {                                                                                                 \
    LOAD(t + DEPTH - 1, ahead);                                                                     \
    if (it < lane_iters) compute(cur, rows, it, sh, lane4, part);                                   \
    if (++it == iters) {                                                                            \
      finish(rows, part, lane, w, res, stride_res, out, stride_out);                                \
      unit += W;                                                                                    \
      it = 0;                                                                                       \
      if (t + 1 < total) rows_of(w, unit, K, lane, rows);                                           \
    }                                                                                               \
  }
  RUN_STEPS();
#undef STEP
#undef LOAD
#undef ADVANCE_LOAD
}