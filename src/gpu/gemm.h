// The one cuBLAS call of the CUDA code: fp32 rows of W · x for a row-major weight matrix in its
// checkpoint dtype (the decode's logits, the forward pass's linear layers).
// Only for the CUDA sources: this header includes CUDA headers.
#pragma once
#include <cublas_v2.h>

#include <cstdint>

#include "io/safetensors.h"

namespace fi::gpu {

// logits[r, v] (+)= sum_h x[r, h] · w[v, h] for r < rows, v < vocab; fp32 output with row stride
// ld; w: [vocab, hidden], x: [rows, hidden], both of dtype (device). 16-bit inputs accumulate in
// fp32 (CUBLAS_COMPUTE_32F); fp32 inputs use plain SGEMM math unless allow_tf32.
// accumulate: beta = 1 (adds to logits) instead of 0.
void gemm_logits(cublasHandle_t blas, const void* w, DType dtype, int64_t vocab, int64_t hidden,
                 const void* x, int64_t rows, float* logits, int64_t ld, bool allow_tf32,
                 bool accumulate);

}  // namespace fi::gpu
