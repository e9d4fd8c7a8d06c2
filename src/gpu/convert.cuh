// Device-side conversions between fp32 and the checkpoint dtypes (round to nearest even), and
// the hi + lo split of an fp32 value for a 16-bit GEMM; shared by the decode's and the forward
// pass's kernels. Only for nvcc: this header includes CUDA headers.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace fi::gpu {

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }

// v as hi (+ lo): hi[i] = v rounded to T; lo[i] = the remainder rounded (16-bit T, lo not null),
// so hi + lo carries about 16 bits more than hi alone.
template <typename T>
__device__ __forceinline__ void store_split(T* hi, T* lo, int64_t i, float v) {
  const T h = from_f32<T>(v);
  hi[i] = h;
  if (lo) lo[i] = from_f32<T>(v - to_f32(h));  // the difference is exact in fp32
}

}  // namespace fi::gpu
