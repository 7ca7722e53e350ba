// What models/nf4_gemv.cu and models/nf4_mma.cu share (NVRTC compiles each with this header, models/nf4_cuda.py):
// the weights' description, the loads of scales, the compute dtype's conversions, the pair table and the loop that
// keeps a warp's requests DEPTH - 1 steps ahead of its arithmetic.

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

#ifndef ASYNC
#define ASYNC 0  // nf4_mma.cu: the weights come through a ring of shared memory (cp.async), not registers
#endif
#if ASYNC ? (DEPTH < 2 || DEPTH > 8) : (DEPTH != 2 && DEPTH != 3)
#error "DEPTH is 2 or 3 (2 to 8 with ASYNC)"
#endif

#define THREADS (WARPS * 32)
#define LUT_WORDS (256 * 64)  // 256 pairs x a 256-byte row; lane l reads word 64*b + l (bank l)

struct Weights {  // up to three weights sharing K; SILU_MUL: 0 = gate, 1 = up
  const u8* packed[3];       // N x K/2 bytes, high nibble = even input
  const void* absmax[3];     // u8 codes (NESTED) or fp32 scales, one per 64 weights
  const float* nested_code[3];    // 256 fp32 (NESTED)
  const float* nested_absmax[3];  // one fp32 per 2^nb2_shift scales (NESTED)
  float offset[3];
  int n[3];
  int col0[3];       // first output column of each weight
  int units_end[3];  // units (of a kernel's rows) up to and including each weight
};

__device__ __forceinline__ u32 load_u8(const void* p) {
  u16 v;
  asm volatile("ld.global.nc.u8 %0, [%1];" : "=h"(v) : "l"(p));
  return v;
}

__device__ __forceinline__ float load_f32(const void* p) {
  float v;
  asm volatile("ld.global.nc.f32 %0, [%1];" : "=f"(v) : "l"(p));
  return v;
}

__device__ __forceinline__ u32 pack_f16x2(float lo, float hi) {
  u32 d;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi), "f"(lo));
  return d;
}

__device__ __forceinline__ u32 pack_bf16x2(float lo, float hi) {
  u32 d;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi), "f"(lo));
  return d;
}

__device__ __forceinline__ float to_float(u16 v) {  // an input or residual element
#if XF16
  float f;
  asm("{.reg .f16 h; mov.b16 h, %1; cvt.f32.f16 %0, h;}" : "=f"(f) : "h"(v));
  return f;
#else
  return __uint_as_float(((u32)v) << 16);
#endif
}

__device__ __forceinline__ u16 round_out(float v) {  // to the compute dtype, round to nearest even
  u16 r;
#if XF16
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(v));
#else
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(v));
#endif
  return r;
}

// The pair table (the two values of each byte of codes, even weight low; bf16 or fp16), 32 copies: lane l of a warp
// makes the pair of byte value r0 + l, then the warp writes each of its 32 rows (one word per lane, 128 consecutive
// bytes: no conflicts); and each weight's nested code table (NESTED) after it.
__device__ __forceinline__ void fill_tables(u32* lut, float* ncode, const float* code, const Weights& w, int warp,
                                            int lane, bool bf16) {
  for (int r0 = warp * 32; r0 < 256; r0 += WARPS * 32) {
    const int v = r0 + lane;
    const u32 pair = bf16 ? pack_bf16x2(code[v >> 4], code[v & 15]) : pack_f16x2(code[v >> 4], code[v & 15]);
#pragma unroll 8
    for (int j = 0; j < 32; ++j) lut[(r0 + j) * 64 + lane] = __shfl_sync(0xFFFFFFFFu, pair, j);
  }
#if NESTED
  for (int i = threadIdx.x; i < 3 * 256; i += THREADS) ncode[i] = w.nested_code[i >> 8][i & 255];
#endif
}

// ``total`` steps of a warp, each STEP(now, ahead) requesting step t + DEPTH - 1 into ``ahead`` before computing
// ``now``: the buffers a, b (and c) take turns, so nothing is copied
#if DEPTH == 3
#define RUN_STEPS()              \
  for (int t = 0;;) {            \
    STEP(a, c);                  \
    if (++t == total) break;     \
    STEP(b, a);                  \
    if (++t == total) break;     \
    STEP(c, b);                  \
    if (++t == total) break;     \
  }
#else
#define RUN_STEPS()              \
  for (int t = 0;;) {            \
    STEP(a, b);                  \
    if (++t == total) break;     \
    STEP(b, a);                  \
    if (++t == total) break;     \
  }
#endif
