// The attention kernel of the CUDA forward pass, in its own header so that the tests can also
// compile it with g++ against tests/cuda/cuda_emulation.h and run it on CPU threads. It uses
// only __syncthreads, __shfl_xor_sync, expf, fmaxf, INFINITY and one extern __shared__ array.
//
// One block per (query t, head h), kThreads threads. The keys first..pos+t (first = 0, or
// pos+t-window+1 on a sliding layer) go by in tiles of kThreads, one key per thread: its score
// q·k · scale (soft-capped to tanh(s / cap) · cap when cap > 0), then the tile's maximum and a running
// (online) softmax: the running sum (double) and the output accumulators are rescaled by
// exp(old max - new max) whenever the maximum grows, so nothing of size P is stored.
// Output dims: thread tid accumulates dims tid, tid + kThreads, ... (at most kPerThread). Keys
// have hd dims and values vd (equal but for DeepSeek's MLA: q·k over nope + rope dims, v_head_dim).
#pragma once

namespace fi::gpu::attn_detail {
namespace {  // internal linkage: the emulated test compiles this file a second time

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kHeadDimMax = 512;
constexpr int kPerThread = kHeadDimMax / kThreads;

// The block's shared memory (dynamic: sizeof(AttnShared) bytes at launch).
struct AttnShared {
  float q[kHeadDimMax];      // the query head
  float p[kThreads];         // the tile's exp(score - max)
  float red_max[kWarps];     // per-warp partial maxima
  double red_sum[kWarps];    // per-warp partial sums
};

__device__ __forceinline__ float block_max(float v, AttnShared& s) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  if ((threadIdx.x & 31) == 0) s.red_max[threadIdx.x >> 5] = v;
  __syncthreads();
  float r = s.red_max[0];
  for (int w = 1; w < kWarps; ++w) r = fmaxf(r, s.red_max[w]);
  __syncthreads();  // red_max is written again by the next call
  return r;
}

__device__ __forceinline__ double block_sum(double v, AttnShared& s) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0) s.red_sum[threadIdx.x >> 5] = v;
  __syncthreads();
  double r = 0;
  for (int w = 0; w < kWarps; ++w) r += s.red_sum[w];
  __syncthreads();
  return r;
}

// Shape: grid = T · nh blocks (block b: t = b / nh, h = b % nh), block = kThreads,
// dynamic shared memory sizeof(AttnShared). q: [T, ldq]; k: [>= pos + T, nkv · hd], v: [>= pos + T,
// nkv · vd]; out: [T, nh · vd]. hd, vd <= kHeadDimMax; nh % nkv == 0; window: keys a query sees, itself
// included (0: all before it); cap: the score soft-cap (0: none).
__global__ void __launch_bounds__(kThreads)
    attention_kernel(const float* __restrict__ q, long long ldq, const float* __restrict__ k,
                     const float* __restrict__ v, float* __restrict__ out, long long nh,
                     long long nkv, long long hd, long long vd, long long pos, float scale, long long window,
                     float cap) {
  extern __shared__ __align__(16) unsigned char fi_attn_smem[];
  AttnShared& s = *reinterpret_cast<AttnShared*>(fi_attn_smem);
  const long long b = blockIdx.x, t = b / nh, h = b % nh, kh = h / (nh / nkv);
  const long long kvd = nkv * hd, vvd = nkv * vd, n = pos + t + 1;  // keys first..pos+t
  const long long first = window > 0 && n > window ? n - window : 0;
  const int tid = int(threadIdx.x);
  for (long long i = tid; i < hd; i += kThreads) s.q[i] = q[t * ldq + h * hd + i];
  __syncthreads();

  float acc[kPerThread];
  for (int r = 0; r < kPerThread; ++r) acc[r] = 0.f;
  float m = -INFINITY;  // the running maximum (the same in every thread)
  double sum = 0;       // the running sum of exp(score - m)
  for (long long j0 = first; j0 < n; j0 += kThreads) {
    const long long j = j0 + tid;
    float sc = -INFINITY;
    if (j < n) {
      const float* kj = k + j * kvd + kh * hd;
      float d = 0.f;
      for (long long i = 0; i < hd; ++i) d += s.q[i] * kj[i];
      sc = d * scale;
      if (cap > 0.f) sc = tanhf(sc / cap) * cap;
    }
    const float m_new = fmaxf(m, block_max(sc, s));  // finite: the tile has a key (j0 < n)
    const float c = expf(m - m_new);                  // 0 on the first tile (m = -inf)
    const float e = j < n ? expf(sc - m_new) : 0.f;
    s.p[tid] = e;
    sum = sum * c + block_sum(double(e), s);  // block_sum's barrier also publishes s.p
    m = m_new;
    const long long cnt = n - j0 < kThreads ? n - j0 : kThreads;
    const float* vt = v + j0 * vvd + kh * vd;
    for (int r = 0; r < kPerThread; ++r) {
      const long long i = tid + r * kThreads;
      if (i >= vd) break;
      float a = acc[r] * c;
      for (long long jj = 0; jj < cnt; ++jj) a += s.p[jj] * vt[jj * vvd + i];
      acc[r] = a;
    }
    __syncthreads();  // s.p is written again by the next tile
  }
  for (int r = 0; r < kPerThread; ++r) {
    const long long i = tid + r * kThreads;
    if (i >= vd) break;
    out[t * nh * vd + h * vd + i] = float(double(acc[r]) / sum);
  }
}

}  // namespace
}  // namespace fi::gpu::attn_detail
