// The decode's norm on the device (rms, gamma, none; Gemma's 1 + gamma), fused with the
// conversion of the normed rows to the LM-head's dtype for the GEMM: gpu::launch_norm_split
// (src/gpu/norm_split.cu) with the decode's parameters. Same arithmetic as fi::apply_norm.
//
// Rounding: for a bf16/f16 LM-head the normed fp32 row is rounded to bf16/f16 (to nearest even)
// because cuBLAS multiplies two 16-bit operands; the CPU path keeps it fp32. That rounding
// (relative 2^-9 per component for bf16) moves each logit by about 1e-3 × |x|·|w|/sqrt(H) —
// see cuda_decoder.cpp for when that stays inside the 1e-3 contract and the optional `lo` part,
// the rounding remainder, that brings the GEMM input to ~16 more bits.
#include "common/error.h"
#include "decode/cuda/kernels.h"
#include "gpu/norm_split.h"

namespace fi::gpu {

void launch_norm_convert(const void* x, DType x_dtype, void* hi, void* lo, DType out_dtype,
                         int64_t rows, int64_t hidden, const float* gamma, const DecodeParams& p,
                         cudaStream_t stream) {
  if (rows <= 0) return;
  RowNorm n;
  n.kind = p.norm == NormMode::Rms     ? RowNorm::Kind::Rms
           : p.norm == NormMode::Gamma ? RowNorm::Kind::Gamma
                                       : RowNorm::Kind::None;
  n.plus_one = p.norm_plus_one;
  n.eps = p.eps;
  if (n.kind != RowNorm::Kind::None && !gamma)
    FI_FAIL("CUDA decode: the norm needs gamma on the device");
  launch_norm_split(x, x_dtype, hi, lo, out_dtype, rows, hidden, gamma, n, stream);
}

}  // namespace fi::gpu
