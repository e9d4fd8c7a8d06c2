// The norm + conversion kernel (see norm_split.h). Same arithmetic as fi::apply_norm
// (src/decode/norm.cpp) and the CPU forward's RMSNorm: sum of squares in double, then
// x * scale * g in fp32 without contraction; then hi and lo as gpu::store_split (convert.cuh).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "gpu/check.h"
#include "gpu/convert.cuh"
#include "gpu/norm_split.h"

namespace fi::gpu {
namespace {

constexpr int kThreads = 256;

// Shape: grid = rows (one block per row), block = kThreads. x: [rows, hidden] Tin;
// hi (and lo when not null): [rows, hidden] Tout; gamma: [hidden] fp32 (unused for mode 2).
// mode: 0 rms, 1 gamma, 2 none.
template <typename Tin, typename Tout>
__global__ void __launch_bounds__(kThreads)
    norm_split_kernel(const Tin* __restrict__ x, Tout* __restrict__ hi, Tout* __restrict__ lo,
                      int64_t hidden, const float* __restrict__ gamma, int mode, int plus_one,
                      double eps) {
  __shared__ double warp_ss[kThreads / 32];
  __shared__ float scale_s;
  const int64_t r = blockIdx.x;
  const Tin* xr = x + r * hidden;
  float scale = 1.f;
  if (mode == 0) {
    double ss = 0;
    for (int64_t i = threadIdx.x; i < hidden; i += kThreads) {
      const double v = to_f32(xr[i]);
      ss += v * v;
    }
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if ((threadIdx.x & 31) == 0) warp_ss[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x == 0) {
      double t = 0;
      for (int w = 0; w < kThreads / 32; ++w) t += warp_ss[w];
      scale_s = float(1.0 / sqrt(t / double(hidden) + eps));
    }
    __syncthreads();
    scale = scale_s;
  }
  for (int64_t i = threadIdx.x; i < hidden; i += kThreads) {
    float v = to_f32(xr[i]);
    if (mode != 2) {
      const float g = plus_one ? 1.f + gamma[i] : gamma[i];
      v = __fmul_rn(__fmul_rn(v, scale), g);  // as the CPU: (v * scale) * g, no contraction
    }
    store_split(hi, lo, r * hidden + i, v);
  }
}

template <typename Tin, typename Tout>
void launch_typed(const void* x, void* hi, void* lo, int64_t rows, int64_t hidden,
                  const float* gamma, int mode, const RowNorm& n, cudaStream_t stream) {
  norm_split_kernel<Tin, Tout><<<unsigned(rows), kThreads, 0, stream>>>(
      static_cast<const Tin*>(x), static_cast<Tout*>(hi), static_cast<Tout*>(lo), hidden, gamma,
      mode, n.plus_one ? 1 : 0, n.eps);
}

template <typename Tin>
void launch_out(const void* x, void* hi, void* lo, DType out_dtype, int64_t rows, int64_t hidden,
                const float* gamma, int mode, const RowNorm& n, cudaStream_t stream) {
  switch (out_dtype) {
    case DType::BF16:
      return launch_typed<Tin, __nv_bfloat16>(x, hi, lo, rows, hidden, gamma, mode, n, stream);
    case DType::F8_E4M3: case DType::F8_E5M2:  // dequantised on the host (io/checkpoint.h)
      FI_FAIL("CUDA: FP8 is never a kernel's dtype");
    case DType::F16:
      return launch_typed<Tin, __half>(x, hi, lo, rows, hidden, gamma, mode, n, stream);
    case DType::F32:
      return launch_typed<Tin, float>(x, hi, nullptr, rows, hidden, gamma, mode, n, stream);
  }
}

}  // namespace

void launch_norm_split(const void* x, DType x_dtype, void* hi, void* lo, DType out_dtype,
                       int64_t rows, int64_t hidden, const float* gamma, const RowNorm& norm,
                       cudaStream_t stream) {
  if (rows <= 0) return;
  const int mode = norm.kind == RowNorm::Kind::Rms ? 0 : norm.kind == RowNorm::Kind::Gamma ? 1 : 2;
  if (mode != 2 && !gamma) FI_FAIL("launch_norm_split: the norm needs gamma on the device");
  switch (x_dtype) {
    case DType::F32:
      launch_out<float>(x, hi, lo, out_dtype, rows, hidden, gamma, mode, norm, stream);
      break;
    case DType::BF16:
      launch_out<__nv_bfloat16>(x, hi, lo, out_dtype, rows, hidden, gamma, mode, norm, stream);
      break;
    case DType::F8_E4M3: case DType::F8_E5M2:  // dequantised on the host (io/checkpoint.h)
      FI_FAIL("CUDA: FP8 is never a kernel's dtype");
    case DType::F16:
      launch_out<__half>(x, hi, lo, out_dtype, rows, hidden, gamma, mode, norm, stream);
      break;
  }
  FI_CUDA_CHECK(cudaGetLastError());
}

}  // namespace fi::gpu
