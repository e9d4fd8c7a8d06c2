// Compiles src/forward/cuda/attention_kernel.cuh with g++ against cuda_emulation.h and runs it
// one block (query, head) at a time on 128 CPU threads.
#include "attention_emulated.h"

#include <cmath>
#include <cstring>

#include "common/error.h"
#include "cuda_emulation.h"

// The kernel's `extern __shared__` array: one block runs at a time, so one array serves all.
namespace fi::gpu::attn_detail {
namespace {
alignas(16) unsigned char fi_attn_smem[8 * 1024];
}  // namespace
}  // namespace fi::gpu::attn_detail

#include "forward/cuda/attention_kernel.cuh"

namespace fi::test {

void attention_emulated(const float* q, int64_t ldq, const float* k, const float* v, int64_t T,
                        int64_t nh, int64_t nkv, int64_t hd, int64_t vd, int64_t pos, float scale,
                        int64_t window, float cap, float* out) {
  using namespace fi::gpu::attn_detail;
  static_assert(sizeof(AttnShared) <= sizeof fi_attn_smem);
  if (hd > kHeadDimMax || vd > kHeadDimMax || nh % nkv != 0) FI_FAIL("emulated attention: bad shape");
  emu::run_grid(
      unsigned(T * nh), kThreads,
      [&] { attention_kernel(q, ldq, k, v, out, nh, nkv, hd, vd, pos, scale, window, cap); },
      // NaN garbage between blocks: nothing may rely on what shared memory held before.
      [] { std::memset(fi_attn_smem, 0xff, sizeof fi_attn_smem); });
}

}  // namespace fi::test
