// The re-scoring kernel's own source (decode/cuda/rescore_kernel.cuh) run on CPU threads
// (cuda_emulation.h): for tests on machines without a GPU. Arguments as fi::gpu::launch_rescore,
// with host pointers.
#pragma once
#include <cstdint>

#include "decode/cuda/kernels.h"

namespace fi::test {
void rescore_rows_emulated(const float* xn, const uint16_t* xg, const uint16_t* w, bool bf16,
                           int64_t rows, int64_t hidden, const double* mean, double spread,
                           const fi::gpu::RowOutputs& cand, int kc, int bc, double* exact,
                           double* stats, float* lse_out, float* logits, int64_t ld);
}  // namespace fi::test
