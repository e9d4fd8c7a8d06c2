// Launches the widening kernel (widen.h, widen_kernel.cuh).
#include "gpu/check.h"
#include "gpu/widen.h"
#include "gpu/widen_kernel.cuh"

namespace fi::gpu {

void launch_widen(const RowBlock& b, const void* x, const float* fp8, const float* scale, float* out,
                  cudaStream_t stream) {
  using namespace widen_detail;
  const int64_t n = b.count * b.width;
  if (n <= 0) return;
  WidenArgs a;
  a.x = static_cast<const uint8_t*>(x);
  a.kind = is_fp8(b.dtype) ? kFp8 : b.dtype == DType::BF16 ? kBF16 : b.dtype == DType::F16 ? kF16 : kF32;
  a.columns = b.columns ? 1 : 0;
  a.count = b.count;
  a.width = b.width;
  a.first = b.first;
  if (a.kind == kFp8) {
    if (!fp8 || !scale || !b.scale) FI_FAIL("launch_widen: an FP8 block needs its code table and scale");
    a.fp8 = fp8;
    a.scale = scale;
    a.br = b.scale->br;
    a.bc = b.scale->bc;
    a.sc = b.scale->sc;
  }
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  if (blocks > 0x7fffffff) FI_FAIL("launch_widen: block too large");
  widen_kernel<<<unsigned(blocks), kThreads, 0, stream>>>(a, out);
  FI_CUDA_CHECK(cudaGetLastError());
}

}  // namespace fi::gpu
