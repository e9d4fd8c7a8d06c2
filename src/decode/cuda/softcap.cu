// Gemma 2's final logit soft-cap on the GPU: logits[r, v] = c·tanh(logits[r, v] / c) over a
// [rows, vocab] block with leading dimension ld, in place, between the GEMM and the reduction
// (the CPU backend does the same per vocab block, decode/cpu/cpu_decoder.cpp).
#include <climits>
#include <string>

#include "decode/cuda/kernels.h"
#include "gpu/check.h"

namespace fi::gpu {
namespace {

__global__ void softcap_kernel(float* logits, int64_t vocab, int64_t ld, float c) {
  float* row = logits + int64_t(blockIdx.y) * ld;
  for (int64_t v = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; v < vocab; v += int64_t(gridDim.x) * blockDim.x)
    row[v] = c * tanhf(row[v] / c);
}

}  // namespace

void launch_softcap(float* logits, int64_t rows, int64_t vocab, int64_t ld, float cap, cudaStream_t stream) {
  if (rows <= 0 || vocab <= 0) return;
  if (rows > 65535) FI_FAIL("CUDA decode: soft-cap over more than 65535 rows in one launch: " + std::to_string(rows));
  const int threads = 256;
  const unsigned blocks = unsigned(std::min<int64_t>((vocab + threads - 1) / threads, 1024));
  softcap_kernel<<<dim3(blocks, unsigned(rows)), threads, 0, stream>>>(logits, vocab, ld, cap);
  FI_CUDA_CHECK(cudaGetLastError());
}

}  // namespace fi::gpu
