// The CUDA forward's attention kernel (src/forward/cuda/attention_kernel.cuh) compiled with g++
// and run on CPU threads (tests/cuda/cuda_emulation.h): its logic is tested without a GPU.
#pragma once
#include <cstdint>

namespace fi::test {

// As gpu::launch_attention: q [T, ldq], k [>= pos + T, nkv · hd], v [>= pos + T, nkv · vd],
// out [T, nh · vd], host memory; scores q·k · scale, soft-capped by cap (0: none), over the last
// `window` keys (0: all).
void attention_emulated(const float* q, int64_t ldq, const float* k, const float* v, int64_t T,
                        int64_t nh, int64_t nkv, int64_t hd, int64_t vd, int64_t pos, float scale,
                        int64_t window, float cap, float* out);

}  // namespace fi::test
