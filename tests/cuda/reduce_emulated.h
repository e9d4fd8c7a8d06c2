// The reduction kernel's own source run on CPU threads (cuda_emulation.h): for tests on machines
// without a GPU. Same arguments and results as fi::gpu::reduce_rows_cuda.
#pragma once
#include <cstdint>

#include "decode/decoder.h"

namespace fi::test {
void reduce_rows_emulated(const float* logits, int64_t rows, int64_t vocab, int top_k, int bottom_k,
                          ChunkResult& out);
}  // namespace fi::test
