// Compiles src/decode/cuda/row_reduce_kernel.cuh with g++ against cuda_emulation.h and runs it
// one block (row) at a time on 256 CPU threads.
#include "reduce_emulated.h"

#include <cstring>

#include "common/error.h"

#include "decode/cuda/kernels.h"  // RowOutputs (and the CUDA headers, before the emulation)
#include "cuda_emulation.h"

// The kernel's `extern __shared__` array: one block runs at a time, so one array serves all.
namespace fi::gpu::reduce_detail {
namespace {
alignas(16) unsigned char fi_reduce_smem[64 * 1024];
}  // namespace
}  // namespace fi::gpu::reduce_detail

#include "decode/cuda/row_reduce_kernel.cuh"

namespace fi::test {

void reduce_rows_emulated(const float* logits, int64_t rows, int64_t vocab, int k, int b,
                          ChunkResult& out) {
  reduce_rows_emulated_marked(logits, rows, vocab, k, b, nullptr, nullptr, 0, out);
}

void reduce_rows_emulated_marked(const float* logits, int64_t rows, int64_t vocab, int k, int b,
                                 const float* worst, uint32_t* marks, int64_t marks_ld,
                                 ChunkResult& out) {
  using namespace fi::gpu::reduce_detail;
  const fi::gpu::TokenMarks tm{worst, marks, marks_ld};
  out.resize(rows, k, b);
  if (smem_bytes(k, b) > sizeof fi_reduce_smem) FI_FAIL("emulated reduction: k too large");
  const fi::gpu::RowOutputs o = fi::gpu::host_results(out);
  if (rows <= 0) return;
  emu::run_grid(
      unsigned(rows), kThreads, [&] { row_reduce_kernel(logits, vocab, int(vocab), k, b, o, tm); },
      // NaN garbage between blocks: nothing may rely on what shared memory held before.
      [] { std::memset(fi_reduce_smem, 0xff, sizeof fi_reduce_smem); });
}

}  // namespace fi::test
