// Compiles src/forward/cuda/rms_norm_kernel.cuh with g++ against cuda_emulation.h and runs it
// one block (row segment) at a time on 128 CPU threads.
#include "norm_emulated.h"

#include <cstring>

#include "common/error.h"
#include "cuda_emulation.h"

// The kernel's `extern __shared__` array: one block runs at a time, so one array serves all.
namespace fi::gpu::norm_detail {
namespace {
alignas(16) unsigned char fi_norm_smem[256];
}  // namespace
}  // namespace fi::gpu::norm_detail

#include "forward/cuda/rms_norm_kernel.cuh"

namespace fi::test {

void rms_norm_emulated(const float* in, int64_t ld_in, float* out, int64_t ld_out, int64_t rows,
                       int64_t n, int64_t segs, const float* gamma, bool plus_one, double eps,
                       bool accumulate) {
  using namespace fi::gpu::norm_detail;
  static_assert(sizeof(NormShared) <= sizeof fi_norm_smem);
  if (rows <= 0 || segs <= 0 || n <= 0) FI_FAIL("emulated RMSNorm: bad shape");
  emu::run_grid(
      unsigned(rows * segs), kThreads,
      [&] {
        rms_norm_kernel(in, ld_in, out, ld_out, n, segs, gamma, plus_one ? 1 : 0, eps,
                        accumulate ? 1 : 0);
      },
      // NaN garbage between blocks: nothing may rely on what shared memory held before.
      [] { std::memset(fi_norm_smem, 0xff, sizeof fi_norm_smem); });
}

}  // namespace fi::test
