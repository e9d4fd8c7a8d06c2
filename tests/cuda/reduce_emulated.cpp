// Compiles src/decode/cuda/row_reduce_kernel.cuh with g++ against cuda_emulation.h and runs it
// one block (row) at a time on 256 CPU threads.
#include "reduce_emulated.h"

#include <vector>

#include "decode/cuda/kernels.h"  // RowOutputs (and the CUDA headers, before the emulation)
#include "cuda_emulation.h"

#include "decode/cuda/row_reduce_kernel.cuh"

namespace fi::test {

void reduce_rows_emulated(const float* logits, int64_t rows, int64_t vocab, int k, int b,
                          ChunkResult& out) {
  using namespace fi::gpu::reduce_detail;
  out.resize(rows, k, b);
  // The kernel's dynamic shared memory; only one block runs at a time.
  std::vector<unsigned char> smem(smem_bytes(k, b) + 16);
  fi::gpu::RowOutputs o;
  o.top_ids = out.top_ids.data();
  o.top_logits = out.top_logits.data();
  o.top_probs = out.top_probs.data();
  o.lse = out.lse.data();
  o.bottom_ids = out.bottom_ids.data();
  o.bottom_logits = out.bottom_logits.data();
  for (int64_t r = 0; r < rows; ++r) {
    emu::dynamic_shared = smem.data();
    emu::run_block(unsigned(r), kThreads, [&] { row_reduce_kernel(logits, vocab, int(vocab), k, b, o); });
  }
}

}  // namespace fi::test
