// The re-scoring kernel of `--gemm bf16` on the device (decode/rescore.h): per row, the exact
// logits of the candidates the reduction kernel found over the one-GEMM logits (the fp32 normed
// row against the 16-bit LM-head rows, summed in double), the row's residual statistics, and the
// corrected log-sum-exp (the same formulas as fi::row_residual and fi::corrected_lse, for a
// 16-bit head, where W~ = W). It also writes the exact values into the logits buffer, so the
// token index kernel after it sees them, with the corrected lse; it marks them too (the row
// reduction's marks were made on the one-GEMM logits; token_index_kernel.cuh).
// Included by rescore.cu (nvcc) and, unchanged, by tests/cuda/rescore_emulated.cpp (CPU threads,
// cuda_emulation.h). So: no CUDA header; only threadIdx/blockIdx, __syncthreads,
// __shfl_xor_sync, atomicOr, exp, log, memcpy, and one extern __shared__ array.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "gpu/half_bits.cuh"

namespace fi::gpu {
namespace rescore_detail {
namespace {  // internal linkage: the emulated test compiles this file a second time

constexpr int kThreads = 256;  // one block per row; one warp per candidate at a time
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kStats = 4;  // per row: corrected lse, |x~ - x|, |x~|, shift

// 16-bit bits -> fp32 (bf16, or IEEE half when !bf16), exactly.
__device__ __forceinline__ float bits_to_f32(uint16_t h, bool bf16) {
  return bf16 ? bf16_bits_to_f32(h) : half_bits_to_f32(h);
}

__device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// Shape: grid = rows, block = kThreads. Dynamic shared memory: kWarps * 4 doubles.
// xn: [rows, H] fp32 exact normed rows; xg: [rows, H] 16-bit bits, the GEMM's input;
// w: [V, H] 16-bit bits (the LM-head); mean: [H] its mean row (double), spread: tr(C)/H.
// top_ids/top_logits: [rows, kc] and bottom_ids/bottom_logits: [rows, bc] the candidates (ids -1
// past the end) with their one-GEMM logits; lse_approx: [rows] the one-GEMM log-sum-exp.
// Out: exact [rows, kc + bc] double (top then bottom; unset past the end), stats [rows, kStats],
// lse_out [rows] float (corrected), and logits[r, id] = exact for every candidate (ld: row stride);
// marks (optional, marks_ld words per row): each candidate's bit set.
__global__ void __launch_bounds__(kThreads)
    rescore_kernel(const float* __restrict__ xn, const uint16_t* __restrict__ xg,
                   const uint16_t* __restrict__ w, bool bf16, int64_t H, const double* __restrict__ mean,
                   double spread, const int32_t* __restrict__ top_ids, const float* __restrict__ top_logits,
                   int kc, const int32_t* __restrict__ bottom_ids, int bc,
                   const float* __restrict__ lse_approx, double* __restrict__ exact,
                   double* __restrict__ stats, float* __restrict__ lse_out, float* __restrict__ logits,
                   int64_t ld, uint32_t* __restrict__ marks, int64_t marks_ld) {
  extern __shared__ __align__(16) unsigned char fi_rescore_smem[];
  double* red = reinterpret_cast<double*>(fi_rescore_smem);  // [4][kWarps]
  const int64_t r = blockIdx.x;
  const int warp = int(threadIdx.x) >> 5, lane = int(threadIdx.x) & 31;
  const float* x = xn + r * H;
  const uint16_t* g = xg + r * H;

  // The candidates' exact logits: one warp per candidate, lanes over the hidden size.
  const int nc = kc + bc;
  for (int c = warp; c < nc; c += kWarps) {
    const int32_t id = c < kc ? top_ids[r * kc + c] : bottom_ids[r * bc + (c - kc)];
    if (id < 0) continue;  // the same for the whole warp
    const uint16_t* wr = w + int64_t(id) * H;
    double acc = 0;
    for (int64_t h = lane; h < H; h += 32) acc += double(x[h]) * double(bits_to_f32(wr[h], bf16));
    acc = warp_sum(acc);
    if (lane == 0) {
      exact[r * nc + c] = acc;
      logits[r * ld + id] = float(acc);
      if (marks) atomicOr(&marks[r * marks_ld + id / 32], 1u << (id % 32));
    }
  }

  // The residual: d = x~ - x; sums of d², x~², x~·d, mean·d.
  double s[4] = {0, 0, 0, 0};
  for (int64_t h = threadIdx.x; h < H; h += kThreads) {
    const double e = x[h], gv = bits_to_f32(g[h], bf16), d = gv - e;
    s[0] += d * d;
    s[1] += gv * gv;
    s[2] += gv * d;
    s[3] += mean[h] * d;
  }
  for (int i = 0; i < 4; ++i) {
    s[i] = warp_sum(s[i]);
    if (lane == 0) red[i * kWarps + warp] = s[i];
  }
  __syncthreads();  // every candidate written, every warp's sums in red
  if (threadIdx.x == 0) {
    double t[4] = {0, 0, 0, 0};
    for (int i = 0; i < 4; ++i)
      for (int k = 0; k < kWarps; ++k) t[i] += red[i * kWarps + k];
    const double shift = t[3] + spread * (t[2] - 0.5 * t[0]);
    // corrected lse: the top candidates' terms exact, the tail shifted (fi::corrected_lse)
    const double la = lse_approx[r];
    double lse = la;
    if (la == la && la != INFINITY && la != -INFINITY) {
      double pc = 0, ex = 0;
      for (int c = 0; c < kc; ++c) {
        if (top_ids[r * kc + c] < 0) break;
        pc += exp(double(top_logits[r * kc + c]) - la);
        ex += exp(exact[r * nc + c] - la);
      }
      const double tail = pc < 1.0 ? 1.0 - pc : 0.0;
      lse = la + log(tail * exp(-shift) + ex);
    }
    stats[r * kStats + 0] = lse;
    stats[r * kStats + 1] = sqrt(t[0]);
    stats[r * kStats + 2] = sqrt(t[1]);
    stats[r * kStats + 3] = shift;
    lse_out[r] = float(lse);
  }
}

}  // namespace
}  // namespace rescore_detail
}  // namespace fi::gpu
