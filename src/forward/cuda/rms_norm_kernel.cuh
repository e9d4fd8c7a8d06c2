// The RMSNorm kernel of the CUDA forward pass over segments of fp32 rows: Qwen 3's and Gemma 3's
// q/k norms (each head of q and of k, [hd] gamma), OLMo 2's (the whole q or k width) and the
// post-norms of Gemma 2/3 and OLMo 2 (a block's output [H], added to the residual). In its own
// header so that the tests also compile it with g++ against tests/cuda/cuda_emulation.h and run
// it on CPU threads; it uses only __syncthreads, __shfl_xor_sync, __fmul_rn, __fadd_rn, sqrt and
// one extern __shared__ array.
//
// Arithmetic of the CPU stage's RMSNorm (model/rms_norm.h): scale = float(1 / sqrt(sum of
// double(x)² / n + eps)), then out = (x * scale) * g in fp32 without contraction, g = w or
// 1 + w (Gemma). The sum here goes in another order (per thread, then a warp tree, then the
// warps in order) than the CPU's left-to-right loop; in double that changes the float scale
// only when the exact value sits within ~1e-16 of a rounding boundary.
#pragma once

namespace fi::gpu::norm_detail {
namespace {  // internal linkage: the emulated test compiles this file a second time

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;

// The block's shared memory (dynamic: sizeof(NormShared) bytes at launch).
struct NormShared {
  double red[kWarps];  // per-warp partial sums of squares
};

// Shape: grid = rows · segs blocks (block b: row r = b / segs, segment s = b % segs), block =
// kThreads, dynamic shared memory sizeof(NormShared). Segment (r, s) is in[r · ld_in + s · n ..
// + n) and is written to out[r · ld_out + s · n ..), normed by gamma [n] (the same for every
// segment): out = norm(in), or out += norm(in) when accumulate. out may be in (same ld): each
// element is read, then written, by the same thread after the block's barrier.
__global__ void __launch_bounds__(kThreads)
    rms_norm_kernel(const float* in, long long ld_in, float* out, long long ld_out, long long n,
                    long long segs, const float* __restrict__ gamma, int plus_one, double eps,
                    int accumulate) {
  extern __shared__ __align__(16) unsigned char fi_norm_smem[];
  NormShared& s = *reinterpret_cast<NormShared*>(fi_norm_smem);
  const long long b = blockIdx.x, r = b / segs, seg = b % segs;
  const float* x = in + r * ld_in + seg * n;
  float* o = out + r * ld_out + seg * n;
  const int tid = int(threadIdx.x);
  double ss = 0;
  for (long long i = tid; i < n; i += kThreads) ss += double(x[i]) * double(x[i]);
  for (int m = 16; m > 0; m >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, m);
  if ((tid & 31) == 0) s.red[tid >> 5] = ss;
  __syncthreads();
  double t = 0;  // every thread adds the warps in the same order: one scale for the block
  for (int w = 0; w < kWarps; ++w) t += s.red[w];
  const float scale = float(1.0 / sqrt(t / double(n) + eps));
  for (long long i = tid; i < n; i += kThreads) {
    const float g = plus_one ? 1.f + gamma[i] : gamma[i];
    const float v = __fmul_rn(__fmul_rn(x[i], scale), g);
    o[i] = accumulate ? __fadd_rn(o[i], v) : v;
  }
}

}  // namespace
}  // namespace fi::gpu::norm_detail
