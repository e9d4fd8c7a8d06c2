// Compiles src/decode/cuda/rescore_kernel.cuh with g++ against cuda_emulation.h and runs it one
// block (row) at a time on 256 CPU threads.
#include "rescore_emulated.h"

#include <cstring>

#include "decode/cuda/kernels.h"  // RowOutputs (and the CUDA headers, before the emulation)
#include "cuda_emulation.h"

// The kernel's `extern __shared__` array: one block runs at a time, so one array serves all.
namespace fi::gpu::rescore_detail {
namespace {
alignas(16) unsigned char fi_rescore_smem[4096];
}  // namespace
}  // namespace fi::gpu::rescore_detail

#include "decode/cuda/rescore_kernel.cuh"

namespace fi::test {

void rescore_rows_emulated(const float* xn, const uint16_t* xg, const uint16_t* w, bool bf16,
                           int64_t rows, int64_t hidden, const double* mean, double spread,
                           const fi::gpu::RowOutputs& cand, int kc, int bc, double* exact,
                           double* stats, float* lse_out, float* logits, int64_t ld) {
  using namespace fi::gpu::rescore_detail;
  if (rows <= 0) return;
  emu::run_grid(
      unsigned(rows), kThreads,
      [&] {
        rescore_kernel(xn, xg, w, bf16, hidden, mean, spread, cand.top_ids, cand.top_logits, kc,
                       cand.bottom_ids, bc, cand.lse, exact, stats, lse_out, logits, ld, nullptr, 0);
      },
      // NaN garbage between blocks: nothing may rely on what shared memory held before.
      [] { std::memset(fi_rescore_smem, 0xff, sizeof fi_rescore_smem); });
}

}  // namespace fi::test
