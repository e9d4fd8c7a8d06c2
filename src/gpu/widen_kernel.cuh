// The widening kernel: a block of neuron vectors as the checkpoint stores them (rows, or the
// column segments of down_proj; bf16, f16, f32, FP8 with its scale) into fp32 rows on the
// device, the same values as the host's widen_block (io/row_feed.h) bit for bit: 16-bit values
// widened exactly, FP8 codes looked up in the host's table and multiplied by their scale in one
// fp32 rounding, columns transposed.
// Included by widen.cu (nvcc) and, unchanged, by tests/cuda/widen_emulated.cpp (CPU threads,
// cuda_emulation.h). So: no CUDA header; only threadIdx/blockIdx and __fmul_rn (and half_bits.cuh).
#pragma once
#include <cstdint>
#include <cstring>

#include "gpu/half_bits.cuh"

namespace fi::gpu {
namespace widen_detail {
namespace {  // internal linkage: the emulated test compiles this file a second time

constexpr int kThreads = 256;

enum Kind : int { kF32 = 0, kBF16 = 1, kF16 = 2, kFp8 = 3 };

// What the kernel reads. Element (n, i) of the output is element (r, c) of the tensor:
// rows: (first + n, i) at x[n * width + i]; columns: (i, first + n) at x[i * count + n].
struct WidenArgs {
  const uint8_t* x = nullptr;  // the stored bytes
  int kind = kF32;
  int columns = 0;
  int64_t count = 0, width = 0, first = 0;
  const float* fp8 = nullptr;    // kFp8: [256] the value of every code (fp8_to_f32)
  const float* scale = nullptr;  // kFp8: scale(r, c) = scale[(r / br) * sc + c / bc]
  int64_t br = 1, bc = 1, sc = 1;
};

// Shape: grid = ceil(count * width / kThreads) blocks of kThreads, one output element each, in
// output order (consecutive threads write consecutive floats). out: [count, width] fp32.
__global__ void __launch_bounds__(kThreads) widen_kernel(WidenArgs a, float* __restrict__ out) {
  const int64_t idx = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (idx >= a.count * a.width) return;
  const int64_t n = idx / a.width, i = idx % a.width;
  const int64_t at = a.columns ? i * a.count + n : n * a.width + i;
  float v;
  if (a.kind == kFp8) {
    const int64_t r = a.columns ? i : a.first + n, c = a.columns ? a.first + n : i;
    v = __fmul_rn(a.fp8[a.x[at]], a.scale[(r / a.br) * a.sc + c / a.bc]);
  } else if (a.kind == kF32) {
    memcpy(&v, a.x + at * 4, 4);
  } else {
    uint16_t h;
    memcpy(&h, a.x + at * 2, 2);
    if (a.kind == kBF16) {
      const uint32_t u = uint32_t(h) << 16;
      memcpy(&v, &u, 4);
    } else {
      v = half_bits_to_f32(h);
    }
  }
  out[idx] = v;
}

}  // namespace
}  // namespace widen_detail
}  // namespace fi::gpu
