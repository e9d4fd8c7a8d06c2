// The launchers of the fused row reduction (the kernel itself: row_reduce_kernel.cuh) and of
// the token index update (token_index_kernel.cuh).
#include <climits>
#include <string>

#include "decode/cuda/kernels.h"
#include "decode/cuda/row_reduce_kernel.cuh"
#include "decode/cuda/token_index_kernel.cuh"
#include "gpu/check.h"

namespace fi::gpu {

void launch_row_reduce(const float* logits, int64_t rows, int64_t vocab, int64_t ld, int k, int b,
                       const RowOutputs& out, cudaStream_t stream) {
  launch_row_reduce(logits, rows, vocab, ld, k, b, out, TokenMarks{}, stream);
}

void launch_row_reduce(const float* logits, int64_t rows, int64_t vocab, int64_t ld, int k, int b,
                       const RowOutputs& out, const TokenMarks& marks, cudaStream_t stream) {
  using namespace reduce_detail;
  if (k < 0 || k > kMaxK || b < 0 || b > kMaxK)
    FI_FAIL("CUDA decode: top_k and bottom_k must be in [0, " + std::to_string(kMaxK) + "], got " +
            std::to_string(k) + " and " + std::to_string(b));
  if (vocab > INT_MAX - 2 * kTile || vocab > ld)
    FI_FAIL("CUDA decode: vocab " + std::to_string(vocab) + " unsupported with row stride " +
            std::to_string(ld));
  if (rows <= 0) return;
  if (rows > INT_MAX) FI_FAIL("CUDA decode: too many rows in one launch: " + std::to_string(rows));
  // <= 48 KiB for k, b <= kMaxK, so no cudaFuncSetAttribute is needed.
  static_assert(kStateBytes + 2 * 2048 * 8 <= 48 * 1024, "reduction shared memory over 48 KiB");
  const size_t smem = smem_bytes(k, b);
  if (marks.marks && marks.ld * 32 < vocab) FI_FAIL("CUDA decode: token marks narrower than the vocabulary");
  row_reduce_kernel<<<unsigned(rows), kThreads, smem, stream>>>(logits, ld, int(vocab), k, b, out, marks);
  FI_CUDA_CHECK(cudaGetLastError());
}

void launch_token_index(const float* logits, int64_t ld, int64_t rows, int64_t vocab,
                        const float* lse, const uint32_t* marks, int64_t marks_ld,
                        const float* lse_marks, int32_t layer, int64_t row0,
                        const TokenIndexLists& t, cudaStream_t stream) {
  if (rows <= 0 || vocab <= 0) return;
  if (t.m <= 0) FI_FAIL("CUDA decode: token index with M = " + std::to_string(t.m));
  token_index_kernel<<<unsigned((vocab + 255) / 256), 256, 0, stream>>>(
      logits, ld, rows, vocab, lse, marks, marks_ld, lse_marks, layer, row0, t);
  FI_CUDA_CHECK(cudaGetLastError());
}

}  // namespace fi::gpu
