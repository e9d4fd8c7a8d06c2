// The CUDA forward's RMSNorm kernel (src/forward/cuda/rms_norm_kernel.cuh) compiled with g++
// and run on CPU threads (tests/cuda/cuda_emulation.h): its logic is tested without a GPU.
#pragma once
#include <cstdint>

namespace fi::test {

// As gpu::launch_rms_norm, on host memory: for r < rows, s < segs, the n values at
// in + r·ld_in + s·n normed by gamma [n] (1 + gamma when plus_one) into out + r·ld_out + s·n,
// or added to it (accumulate). out may be in.
void rms_norm_emulated(const float* in, int64_t ld_in, float* out, int64_t ld_out, int64_t rows,
                       int64_t n, int64_t segs, const float* gamma, bool plus_one, double eps,
                       bool accumulate);

}  // namespace fi::test
