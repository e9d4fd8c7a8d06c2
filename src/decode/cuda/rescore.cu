// The launcher of the --gemm bf16 re-scoring kernel (rescore_kernel.cuh).
#include <climits>
#include <string>

#include "decode/cuda/kernels.h"
#include "decode/cuda/rescore_kernel.cuh"
#include "gpu/check.h"

namespace fi::gpu {

void launch_rescore(const float* xn, const void* xg, const void* w, bool bf16, int64_t rows,
                    int64_t hidden, const double* mean, double spread, const RowOutputs& cand,
                    int kc, int bc, double* exact, double* stats, float* lse_out, float* logits,
                    int64_t ld, uint32_t* marks, int64_t marks_ld, cudaStream_t stream) {
  using namespace rescore_detail;
  if (rows <= 0) return;
  if (rows > INT_MAX) FI_FAIL("CUDA decode: too many rows in one launch: " + std::to_string(rows));
  const size_t smem = size_t(4 * kWarps) * sizeof(double);
  rescore_kernel<<<unsigned(rows), kThreads, smem, stream>>>(
      xn, static_cast<const uint16_t*>(xg), static_cast<const uint16_t*>(w), bf16, hidden, mean,
      spread, cand.top_ids, cand.top_logits, kc, cand.bottom_ids, bc, cand.lse, exact, stats,
      lse_out, logits, ld, marks, marks_ld);
  FI_CUDA_CHECK(cudaGetLastError());
}

}  // namespace fi::gpu
