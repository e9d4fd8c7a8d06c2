// 16-bit float bits -> fp32, exactly (as fi::f16_to_f32 and fi::bf16_to_f32 on the host), for the
// kernels the tests also compile for CPU threads (tests/cuda/cuda_emulation.h): no CUDA header.
#pragma once
#include <cstdint>
#include <cstring>

namespace fi::gpu {
namespace {  // internal linkage: an emulated test compiles its kernel file a second time

__device__ __forceinline__ float bf16_bits_to_f32(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

__device__ __forceinline__ float half_bits_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16, ex = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  uint32_t u;
  if (ex == 0x1f) {
    u = sign | 0x7f800000u | (man << 13);
  } else if (ex != 0) {
    u = sign | ((ex + 112u) << 23) | (man << 13);
  } else if (man == 0) {
    u = sign;
  } else {  // subnormal: normalise
    int e = -1;
    uint32_t m = man;
    do {
      m <<= 1;
      ++e;
    } while ((m & 0x400u) == 0);
    u = sign | (uint32_t(112 - e) << 23) | ((m & 0x3ffu) << 13);
  }
  float f;
  memcpy(&f, &u, 4);
  return f;
}

}  // namespace
}  // namespace fi::gpu
