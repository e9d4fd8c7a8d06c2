// Rows normed (RMS and/or gamma, or not at all) and converted for a GEMM on the device: hi =
// the normed fp32 row rounded to the weight dtype, lo (16-bit only) = the rounding remainder.
// The decode's norm (decode/cuda/kernels.h) and the forward pass's linear layers run this kernel.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "io/safetensors.h"

namespace fi::gpu {

// The norm of each row before the conversion.
struct RowNorm {
  enum class Kind {
    Rms,    // x · 1/sqrt(mean(x²) + eps) · g
    Gamma,  // x · g
    None,   // x (gamma unused)
  };
  Kind kind = Kind::None;
  bool plus_one = false;  // g = 1 + gamma (Gemma) instead of gamma
  double eps = 1e-5;      // Rms only
};

// x: [rows, hidden] of x_dtype (device); gamma: [hidden] fp32 (device; unused for None).
// hi: [rows, hidden] of out_dtype = the normed rows rounded to out_dtype. lo (optional, only
// for 16-bit out_dtype): the rounding remainder, also rounded, so hi + lo carries ~16 bits more.
void launch_norm_split(const void* x, DType x_dtype, void* hi, void* lo, DType out_dtype,
                       int64_t rows, int64_t hidden, const float* gamma, const RowNorm& norm,
                       cudaStream_t stream);

}  // namespace fi::gpu
