// The mixture-of-experts and MLA kernels of the CUDA forward pass (launchers in
// forward_kernels.h), in their own header so that the tests also compile them with g++ against
// tests/cuda/cuda_emulation.h and run them on CPU threads. Grid-stride loops over int64
// indices; each output element is written by one thread, so no atomics: an expert's tokens are
// distinct rows, and the experts of a layer run one after another on the stage's stream.
// The arithmetic follows the CPU stage (forward/llama_cpu.cpp) operation by operation, with
// __fmul_rn / __fadd_rn where a contraction into an FMA would round differently.
#pragma once

namespace fi::gpu::moe_detail {
namespace {  // internal linkage: the emulated test compiles this file a second time

__device__ __forceinline__ long long first_index() {
  return (long long)(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ long long grid_stride() { return (long long)(gridDim.x) * blockDim.x; }

// out[i, h] = in[idx[i], h] for i < n, h < H (an expert's tokens gathered).
__global__ void gather_rows_kernel(const float* __restrict__ in, long long H,
                                   const int* __restrict__ idx, long long n,
                                   float* __restrict__ out) {
  for (long long e = first_index(); e < n * H; e += grid_stride()) {
    const long long i = e / H, h = e % H;
    out[e] = in[(long long)(idx[i]) * H + h];
  }
}

// out[idx[i] ldo + h] += w[i] · (y[i, h] + y[n + i, h] when split): an expert's output
// (the down GEMM's, its halves summed first) weighted and added to its tokens' rows.
__global__ void scatter_add_kernel(const float* __restrict__ y, long long n, long long H, int split,
                                   const int* __restrict__ idx, const float* __restrict__ w,
                                   float* __restrict__ out, long long ldo) {
  for (long long e = first_index(); e < n * H; e += grid_stride()) {
    const long long i = e / H, h = e % H;
    float s = y[e];
    if (split) s = __fadd_rn(s, y[n * H + e]);
    float* o = out + (long long)(idx[i]) * ldo + h;
    *o = __fadd_rn(*o, __fmul_rn(w[i], s));
  }
}

// Element j of the rotated rope part x [rope] (rotate-half of the pairs, after de-interleaving
// them where interleave: pair p is (x[2p], x[2p + 1]) instead of (x[p], x[p + rope/2])), as the
// CPU stage's rotate(): out[p] = a cos - b sin, out[p + rope/2] = b cos + a sin.
__device__ __forceinline__ float mla_rotated(const float* x, long long rope, long long j,
                                             int interleave, const float* c, const float* s) {
  const long long half = rope / 2, p = j < half ? j : j - half;
  const float a = x[interleave ? 2 * p : p], b = x[interleave ? 2 * p + 1 : p + half];
  return j < half ? __fsub_rn(__fmul_rn(a, c[p]), __fmul_rn(b, s[p]))
                  : __fadd_rn(__fmul_rn(b, c[p]), __fmul_rn(a, s[p]));
}

// DeepSeek's MLA for the T new positions pos..pos+T-1: the rotated queries and the cache rows.
//   q   [T, nh qk]            per head [nope | rope] (q_b's or q_proj's output), qk = nope + rope
//   kva [T, kvr + rope]       kv_a's output: [latent | the one RoPE key of all heads]
//   kvb [T, nh (nope + vd)]   kv_b's output: per head [k_nope | v]
//   cos, sin [T, rope / 2]
// writes qr [T, nh qk] (q with its rope parts rotated), k_cache row pos + t [nh qk] (per head
// [k_nope | rotated rope key]) and v_cache row pos + t [nh vd].
__global__ void mla_rope_cache_kernel(const float* __restrict__ q, const float* __restrict__ kva,
                                      const float* __restrict__ kvb, const float* __restrict__ cos,
                                      const float* __restrict__ sin, long long T, long long nh,
                                      long long nope, long long rope, long long vd, long long kvr,
                                      int interleave, float* __restrict__ qr,
                                      float* __restrict__ k_cache, float* __restrict__ v_cache,
                                      long long pos) {
  const long long qk = nope + rope, nq = nh * qk, per = 2 * nq + nh * vd, half = rope / 2;
  for (long long e = first_index(); e < T * per; e += grid_stride()) {
    const long long t = e / per, r = e % per;
    const float* c = cos + t * half;
    const float* s = sin + t * half;
    if (r < nq) {  // query (head r / qk, dim r % qk)
      const long long h = r / qk, i = r % qk;
      const float* src = q + t * nq + h * qk;
      qr[t * nq + r] = i < nope ? src[i] : mla_rotated(src + nope, rope, i - nope, interleave, c, s);
    } else if (r < 2 * nq) {  // key: k_nope of the head, or the shared rope key rotated
      const long long k = r - nq, h = k / qk, i = k % qk;
      k_cache[(pos + t) * nq + k] =
          i < nope ? kvb[t * nh * (nope + vd) + h * (nope + vd) + i]
                   : mla_rotated(kva + t * (kvr + rope) + kvr, rope, i - nope, interleave, c, s);
    } else {  // value
      const long long v = r - 2 * nq, h = v / vd, j = v % vd;
      v_cache[(pos + t) * nh * vd + v] = kvb[t * nh * (nope + vd) + h * (nope + vd) + nope + j];
    }
  }
}

}  // namespace
}  // namespace fi::gpu::moe_detail
