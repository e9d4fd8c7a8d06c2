// The reduction kernel's own source run on CPU threads (cuda_emulation.h): for tests on machines
// without a GPU. Same arguments and results as fi::gpu::reduce_rows_cuda.
#pragma once
#include <cstdint>

#include "decode/decoder.h"

namespace fi::test {
void reduce_rows_emulated(const float* logits, int64_t rows, int64_t vocab, int top_k, int bottom_k,
                          ChunkResult& out);
// The same with the token index marks (token_index_kernel.cuh TokenMarks): worst [vocab] fp32,
// marks [rows, marks_ld] words.
void reduce_rows_emulated_marked(const float* logits, int64_t rows, int64_t vocab, int top_k,
                                 int bottom_k, const float* worst, uint32_t* marks, int64_t marks_ld,
                                 ChunkResult& out);
}  // namespace fi::test
