// Compiles src/gpu/widen_kernel.cuh with g++ against cuda_emulation.h and runs its grid one block
// at a time on 256 CPU threads.
#include "widen_emulated.h"

#include "common/error.h"
#include "cuda_emulation.h"
#include "gpu/widen_kernel.cuh"

namespace fi::test {

void widen_emulated(const RowBlock& b, const void* x, const float* fp8, const float* scale, float* out) {
  using namespace fi::gpu::widen_detail;
  const int64_t n = b.count * b.width;
  if (n <= 0) return;
  WidenArgs a;  // as launch_widen (gpu/widen.cu) fills it
  a.x = static_cast<const uint8_t*>(x);
  a.kind = is_fp8(b.dtype) ? kFp8 : b.dtype == DType::BF16 ? kBF16 : b.dtype == DType::F16 ? kF16 : kF32;
  a.columns = b.columns ? 1 : 0;
  a.count = b.count;
  a.width = b.width;
  a.first = b.first;
  if (a.kind == kFp8) {
    FI_CHECK(fp8 && scale && b.scale, "widen_emulated: an FP8 block needs its table and scale");
    a.fp8 = fp8;
    a.scale = scale;
    a.br = b.scale->br;
    a.bc = b.scale->bc;
    a.sc = b.scale->sc;
  }
  emu::run_grid(unsigned((n + kThreads - 1) / kThreads), kThreads, [&] { widen_kernel(a, out); }, [] {});
}

}  // namespace fi::test
