// A weight matrix of the CPU forward pass, held as the checkpoint stores it (bf16/f16 words or
// fp32: 2 bytes per parameter for a 16-bit model, not 4) and multiplied in fp32: one token at a
// time by a widening dot product per row on all cores (the bandwidth-bound case of generation),
// several tokens by OpenBLAS SGEMM over blocks of rows widened on the fly.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/layer_tensors.h"

namespace fi {

struct Weight {
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0;
  std::vector<float> f32;     // [rows, cols] (fp32 checkpoints; FP8 ones dequantised)
  std::vector<uint16_t> h16;  // [rows, cols] raw words (bf16/f16 checkpoints)

  // The tensor as stored; t comes checked from model/layer_tensors.h (a 1-D tensor is [n, 1]).
  static Weight load(const ModelTensor& t);
  bool empty() const { return rows == 0; }
  // Row r widened to fp32 into dst [cols].
  void row(int64_t r, float* dst) const;
};

// y[T, w.rows] = x[T, w.cols] · wᵀ (+ bias[w.rows] when not empty), fp32.
void linear(const float* x, int64_t T, const Weight& w, const std::vector<float>& bias, float* y);

}  // namespace fi
