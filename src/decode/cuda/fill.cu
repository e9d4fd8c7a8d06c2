// Reproducible random fills on the device for the tests and the benchmark (no disk, no host
// transfer): value i = scale * (2u - 1), u uniform in [0, 1) from a splitmix64 hash of seed + i.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "decode/cuda/kernels.h"
#include "gpu/check.h"

namespace fi::gpu {
namespace {

__device__ __forceinline__ uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }

// Shape: a grid-stride loop over n values; any grid.
template <typename T>
__global__ void fill_uniform_kernel(T* dst, int64_t n, float scale, uint64_t seed) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const uint64_t h = splitmix64(seed * 0x100000001b3ull + uint64_t(i));
    const float u = float(h >> 40) * (1.f / 16777216.f);  // 24 random bits
    store(dst + i, scale * (2.f * u - 1.f));
  }
}

}  // namespace

void launch_fill_uniform(void* dst, DType dtype, int64_t n, float scale, uint64_t seed,
                         cudaStream_t stream) {
  if (n <= 0) return;
  const int threads = 256;
  const int64_t want = (n + threads - 1) / threads;
  const unsigned blocks = unsigned(want < 65536 ? want : 65536);
  switch (dtype) {
    case DType::F32:
      fill_uniform_kernel<<<blocks, threads, 0, stream>>>(static_cast<float*>(dst), n, scale, seed);
      break;
    case DType::BF16:
      fill_uniform_kernel<<<blocks, threads, 0, stream>>>(static_cast<__nv_bfloat16*>(dst), n,
                                                          scale, seed);
      break;
    case DType::F8_E4M3: case DType::F8_E5M2:  // dequantised on the host (io/checkpoint.h)
      FI_FAIL("CUDA: FP8 is never a kernel's dtype");
    case DType::F16:
      fill_uniform_kernel<<<blocks, threads, 0, stream>>>(static_cast<__half*>(dst), n, scale, seed);
      break;
  }
  FI_CUDA_CHECK(cudaGetLastError());
}

}  // namespace fi::gpu
