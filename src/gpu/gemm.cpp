// gemm_logits (see gemm.h): one cublasGemmEx with fp32 accumulation and output.
#include "gpu/gemm.h"

#include <climits>

#include "gpu/check.h"

namespace fi::gpu {

void gemm_logits(cublasHandle_t blas, const void* w, DType dtype, int64_t vocab, int64_t hidden,
                 const void* x, int64_t rows, float* logits, int64_t ld, bool allow_tf32,
                 bool accumulate) {
  if (rows <= 0 || vocab <= 0) return;
  if (vocab > INT_MAX || hidden > INT_MAX || rows > INT_MAX || ld > INT_MAX)
    FI_FAIL("CUDA decode: GEMM dimensions exceed cuBLAS's int range");
  const float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
  const cudaDataType t = dtype == DType::BF16  ? CUDA_R_16BF
                         : dtype == DType::F16 ? CUDA_R_16F
                                               : CUDA_R_32F;
  // 16-bit inputs: fp32 accumulation. fp32 inputs: full fp32 unless TF32 was asked for.
  const cublasComputeType_t c =
      dtype == DType::F32 && allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  // cuBLAS is column-major: logitsᵀ [vocab, rows] (ldc = ld) = W [vocab, hidden] · Xᵀ, where
  // row-major W [vocab, hidden] is column-major [hidden, vocab] (op T, lda = hidden) and
  // row-major X [rows, hidden] is column-major [hidden, rows] (op N, ldb = hidden).
  FI_CUBLAS_CHECK(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, int(vocab), int(rows), int(hidden),
                               &alpha, w, t, int(hidden), x, t, int(hidden), &beta, logits,
                               CUDA_R_32F, int(ld), c, CUBLAS_GEMM_DEFAULT));
}

}  // namespace fi::gpu
