// The CUDA forward pass's kernels (see forward_kernels.h): embedding gather, the halves of a
// split GEMM summed (with bias and residual), RMSNorm of row segments (rms_norm_kernel.cuh: q/k
// norms, post-norms), RoPE + KV-cache append, attention (attention_kernel.cuh), SwiGLU with the split conversion for the down GEMM, the clamp hooks;
// the experts' gather and weighted scatter and MLA's RoPE and cache rows (moe_kernels.cuh).
// Element-wise kernels are grid-stride loops over int64 indices; the arithmetic follows the CPU
// stage (forward/llama_cpu.cpp, forward/ops.cpp) operation by operation.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <string>

#include "forward/cuda/attention_kernel.cuh"
#include "forward/cuda/forward_kernels.h"
#include "forward/cuda/moe_kernels.cuh"
#include "forward/cuda/rms_norm_kernel.cuh"
#include "gpu/check.h"
#include "gpu/convert.cuh"

namespace fi::gpu {
namespace {

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n elements.
unsigned grid_for(int64_t n) {
  const int64_t want = (n + kThreads - 1) / kThreads;
  return unsigned(want < 65536 ? (want > 0 ? want : 1) : 65536);
}

// As fi::apply_act (ops.cpp).
__device__ __forceinline__ float act_f(int act, float x) {
  if (act == 0) return x / (1.f + expf(-x));
  if (act == 1) return 0.5f * x * (1.f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
  return 0.5f * x * (1.f + erff(x * 0.7071067811865476f));
}

int act_code(Act a) { return a == Act::Silu ? 0 : a == Act::GeluTanh ? 1 : 2; }

// Shape: grid-stride over T · H. table: [vocab, H] Tin; ids: [T]; x: [T, H].
template <typename Tin>
__global__ void embed_kernel(const Tin* __restrict__ table, const int32_t* __restrict__ ids,
                             int64_t T, int64_t H, float scale, int apply_scale,
                             float* __restrict__ x) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < T * H; e += stride) {
    const int64_t t = e / H, h = e % H;
    const float v = to_f32(table[int64_t(ids[t]) * H + h]);
    x[e] = apply_scale ? v * scale : v;
  }
}

// Shape: grid-stride over rows · n. y and out may alias (no __restrict__).
__global__ void add_halves_kernel(const float* y, int64_t rows, int64_t n, int split,
                                  const float* __restrict__ bias, float* out, int64_t ldo,
                                  int accumulate) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < rows * n; e += stride) {
    const int64_t r = e / n, j = e % n;
    float s = y[e];
    if (split) s += y[rows * n + e];
    if (bias) s += bias[j];
    float* o = out + r * ldo + j;
    *o = accumulate ? *o + s : s;
  }
}

// Rotate-half of the pair (a, b) as rope_rotate (ops.cpp), without contraction into FMAs.
__device__ __forceinline__ void rotate(float a, float b, float c, float s, float* x, float* y) {
  *x = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
  *y = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
}

// Shape: grid = T (one block per new position), block = kThreads, a loop over the position's
// nh · hd/2 query pairs, nkv · hd/2 key pairs and nkv · hd values.
__global__ void rope_cache_kernel(float* __restrict__ qkv, int64_t nh, int64_t nkv, int64_t hd,
                                  const float* __restrict__ cos, const float* __restrict__ sin,
                                  float* __restrict__ k_cache, float* __restrict__ v_cache,
                                  int64_t pos) {
  const int64_t t = blockIdx.x, half = hd / 2, kvd = nkv * hd, qd = nh * hd;
  float* row = qkv + t * (qd + 2 * kvd);
  float* krow = k_cache + (pos + t) * kvd;
  float* vrow = v_cache + (pos + t) * kvd;
  const float* c = cos + t * half;
  const float* s = sin + t * half;
  const int64_t nq = nh * half, nk = nkv * half;
  for (int64_t e = threadIdx.x; e < nq + nk + kvd; e += blockDim.x) {
    if (e < nq) {  // query pair (head e / half, dim i) in place
      const int64_t h = e / half, i = e % half;
      float* x = row + h * hd;
      rotate(x[i], x[i + half], c[i], s[i], &x[i], &x[i + half]);
    } else if (e < nq + nk) {  // key pair, into the cache
      const int64_t h = (e - nq) / half, i = (e - nq) % half;
      const float* x = row + qd + h * hd;
      rotate(x[i], x[i + half], c[i], s[i], &krow[h * hd + i], &krow[h * hd + i + half]);
    } else {  // value, copied
      const int64_t j = e - nq - nk;
      vrow[j] = row[qd + kvd + j];
    }
  }
}

// Shape: grid-stride over rows · I. y: [rows (x2 when split_in), 2I]; h (lo): [rows, I] Tout.
template <typename Tout>
__global__ void swiglu_kernel(const float* __restrict__ y, int64_t rows, int64_t I, int split_in,
                              int act, Tout* __restrict__ hi, Tout* __restrict__ lo) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t half = rows * 2 * I;  // offset of the lo half of y
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < rows * I; e += stride) {
    const int64_t r = e / I, i = e % I, g_at = r * 2 * I + i, u_at = g_at + I;
    float g = y[g_at], u = y[u_at];
    if (split_in) {
      g += y[half + g_at];
      u += y[half + u_at];
    }
    store_split(hi, lo, e, act_f(act, g) * u);
  }
}

// Shape: grid-stride over n · nr (clamp c = e / nr, row r = row0 + e % nr of the rows); same
// y, h as swiglu.
template <typename Tout>
__global__ void clamp_kernel(const float* __restrict__ y, int64_t rows, int64_t row0, int64_t nr,
                             int64_t I, int split_in, int act, const int32_t* __restrict__ neurons,
                             const float* __restrict__ values, int64_t n, int up_site,
                             Tout* __restrict__ hi, Tout* __restrict__ lo) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n * nr; e += stride) {
    const int64_t c = e / nr, r = row0 + e % nr, i = neurons[c];
    float v = values[c];
    if (up_site) {  // up replaced before the multiply, still gated by act(gate)
      const int64_t g_at = r * 2 * I + i;
      float g = y[g_at];
      if (split_in) g += y[rows * 2 * I + g_at];
      v = act_f(act, g) * v;
    }
    store_split(hi, lo, r * I + i, v);
  }
}

template <typename T>
T* lo_part(void* h, int64_t count) {
  return static_cast<T*>(h) + count;
}

}  // namespace

void launch_embed(const void* table, DType dtype, const int32_t* ids, int64_t T, int64_t H,
                  float scale, float* x, cudaStream_t stream) {
  if (T <= 0) return;
  const unsigned g = grid_for(T * H);
  const int apply = scale != 1.f;
  switch (dtype) {
    case DType::F32:
      embed_kernel<<<g, kThreads, 0, stream>>>(static_cast<const float*>(table), ids, T, H, scale,
                                               apply, x);
      break;
    case DType::BF16:
      embed_kernel<<<g, kThreads, 0, stream>>>(static_cast<const __nv_bfloat16*>(table), ids, T,
                                               H, scale, apply, x);
      break;
    case DType::F8_E4M3: case DType::F8_E5M2:  // dequantised on the host (io/checkpoint.h)
      FI_FAIL("CUDA: FP8 is never a kernel's dtype");
    case DType::F16:
      embed_kernel<<<g, kThreads, 0, stream>>>(static_cast<const __half*>(table), ids, T, H,
                                               scale, apply, x);
      break;
  }
  FI_CUDA_CHECK(cudaGetLastError());
}

void launch_add_halves(const float* y, int64_t rows, int64_t n, bool split, const float* bias,
                       float* out, int64_t ldo, bool accumulate, cudaStream_t stream) {
  if (rows <= 0 || n <= 0) return;
  add_halves_kernel<<<grid_for(rows * n), kThreads, 0, stream>>>(y, rows, n, split ? 1 : 0, bias,
                                                                 out, ldo, accumulate ? 1 : 0);
  FI_CUDA_CHECK(cudaGetLastError());
}

void launch_rms_norm(const float* in, int64_t ld_in, float* out, int64_t ld_out, int64_t rows,
                     int64_t n, int64_t segs, const float* gamma, bool plus_one, double eps,
                     bool accumulate, cudaStream_t stream) {
  if (rows <= 0 || segs <= 0 || n <= 0) return;
  if (!gamma) FI_FAIL("launch_rms_norm: the norm needs gamma on the device");
  if (rows * segs > int64_t(INT32_MAX)) FI_FAIL("CUDA forward: too many rows to norm in one call");
  norm_detail::rms_norm_kernel<<<unsigned(rows * segs), norm_detail::kThreads,
                                 sizeof(norm_detail::NormShared), stream>>>(
      in, ld_in, out, ld_out, n, segs, gamma, plus_one ? 1 : 0, eps, accumulate ? 1 : 0);
  FI_CUDA_CHECK(cudaGetLastError());
}

void launch_rope_cache(float* qkv, int64_t T, int64_t nh, int64_t nkv, int64_t hd,
                       const float* cos, const float* sin, float* k_cache, float* v_cache,
                       int64_t pos, cudaStream_t stream) {
  if (T <= 0) return;
  if (T > int64_t(INT32_MAX)) FI_FAIL("CUDA forward: too many positions in one call");
  rope_cache_kernel<<<unsigned(T), kThreads, 0, stream>>>(qkv, nh, nkv, hd, cos, sin, k_cache,
                                                          v_cache, pos);
  FI_CUDA_CHECK(cudaGetLastError());
}

void launch_attention(const float* q, int64_t ldq, const float* k_cache, const float* v_cache,
                      int64_t T, int64_t nh, int64_t nkv, int64_t hd, int64_t vd, int64_t pos,
                      float scale, int64_t window, float cap, float* out, cudaStream_t stream) {
  static_assert(attn_detail::kHeadDimMax == kMaxHeadDim, "one head_dim limit");
  if (T <= 0) return;
  if (hd > kMaxHeadDim || vd > kMaxHeadDim || nkv <= 0 || nh % nkv != 0)
    FI_FAIL("CUDA forward: attention needs head_dim <= " + std::to_string(kMaxHeadDim) +
            " and num_heads a multiple of num_kv_heads");
  if (T * nh > int64_t(INT32_MAX)) FI_FAIL("CUDA forward: too many query heads in one call");
  attn_detail::attention_kernel<<<unsigned(T * nh), attn_detail::kThreads,
                                 sizeof(attn_detail::AttnShared), stream>>>(
      q, ldq, k_cache, v_cache, out, nh, nkv, hd, vd, pos, scale, window, cap);
  FI_CUDA_CHECK(cudaGetLastError());
}

void launch_swiglu(const float* y, int64_t rows, int64_t I, bool split_in, Act act, void* h,
                   DType out_dtype, cudaStream_t stream) {
  if (rows <= 0) return;
  const unsigned g = grid_for(rows * I);
  const int s = split_in ? 1 : 0, a = act_code(act);
  switch (out_dtype) {
    case DType::F32:
      swiglu_kernel<<<g, kThreads, 0, stream>>>(y, rows, I, s, a, static_cast<float*>(h),
                                                static_cast<float*>(nullptr));
      break;
    case DType::BF16:
      swiglu_kernel<<<g, kThreads, 0, stream>>>(y, rows, I, s, a, static_cast<__nv_bfloat16*>(h),
                                                lo_part<__nv_bfloat16>(h, rows * I));
      break;
    case DType::F8_E4M3: case DType::F8_E5M2:  // dequantised on the host (io/checkpoint.h)
      FI_FAIL("CUDA: FP8 is never a kernel's dtype");
    case DType::F16:
      swiglu_kernel<<<g, kThreads, 0, stream>>>(y, rows, I, s, a, static_cast<__half*>(h),
                                                lo_part<__half>(h, rows * I));
      break;
  }
  FI_CUDA_CHECK(cudaGetLastError());
}

void launch_clamps(const float* y, int64_t rows, int64_t I, bool split_in, Act act,
                   const int32_t* neurons, const float* values, int64_t n, ClampSite site,
                   void* h, DType out_dtype, cudaStream_t stream, int64_t row0, int64_t nrows) {
  const int64_t nr = nrows < 0 ? rows - row0 : nrows;
  if (rows <= 0 || n <= 0 || nr <= 0) return;
  FI_CHECK(row0 >= 0 && row0 + nr <= rows, "CUDA: clamp rows out of range");
  const unsigned g = grid_for(n * nr);
  const int s = split_in ? 1 : 0, a = act_code(act), up = site == ClampSite::Up ? 1 : 0;
  switch (out_dtype) {
    case DType::F32:
      clamp_kernel<<<g, kThreads, 0, stream>>>(y, rows, row0, nr, I, s, a, neurons, values, n, up,
                                               static_cast<float*>(h),
                                               static_cast<float*>(nullptr));
      break;
    case DType::BF16:
      clamp_kernel<<<g, kThreads, 0, stream>>>(y, rows, row0, nr, I, s, a, neurons, values, n, up,
                                               static_cast<__nv_bfloat16*>(h),
                                               lo_part<__nv_bfloat16>(h, rows * I));
      break;
    case DType::F8_E4M3: case DType::F8_E5M2:  // dequantised on the host (io/checkpoint.h)
      FI_FAIL("CUDA: FP8 is never a kernel's dtype");
    case DType::F16:
      clamp_kernel<<<g, kThreads, 0, stream>>>(y, rows, row0, nr, I, s, a, neurons, values, n, up,
                                               static_cast<__half*>(h),
                                               lo_part<__half>(h, rows * I));
      break;
  }
  FI_CUDA_CHECK(cudaGetLastError());
}

void launch_gather_rows(const float* in, int64_t H, const int32_t* idx, int64_t n, float* out,
                        cudaStream_t stream) {
  if (n <= 0 || H <= 0) return;
  moe_detail::gather_rows_kernel<<<grid_for(n * H), kThreads, 0, stream>>>(in, H, idx, n, out);
  FI_CUDA_CHECK(cudaGetLastError());
}

void launch_scatter_add(const float* y, int64_t n, int64_t H, bool split, const int32_t* idx,
                        const float* w, float* out, int64_t ldo, cudaStream_t stream) {
  if (n <= 0 || H <= 0) return;
  moe_detail::scatter_add_kernel<<<grid_for(n * H), kThreads, 0, stream>>>(y, n, H, split ? 1 : 0,
                                                                           idx, w, out, ldo);
  FI_CUDA_CHECK(cudaGetLastError());
}

void launch_mla_rope_cache(const float* q, const float* kva, const float* kvb, const float* cos,
                           const float* sin, int64_t T, int64_t nh, int64_t nope, int64_t rope,
                           int64_t vd, int64_t kvr, bool interleave, float* qr, float* k_cache,
                           float* v_cache, int64_t pos, cudaStream_t stream) {
  if (T <= 0) return;
  const int64_t n = T * (2 * nh * (nope + rope) + nh * vd);
  moe_detail::mla_rope_cache_kernel<<<grid_for(n), kThreads, 0, stream>>>(
      q, kva, kvb, cos, sin, T, nh, nope, rope, vd, kvr, interleave ? 1 : 0, qr, k_cache, v_cache,
      pos);
  FI_CUDA_CHECK(cudaGetLastError());
}

}  // namespace fi::gpu
