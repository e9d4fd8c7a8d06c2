// The CUDA forward's mixture-of-experts and MLA kernels (src/forward/cuda/moe_kernels.cuh)
// compiled with g++ and run on CPU threads (tests/cuda/cuda_emulation.h), host memory, with the
// arguments of their launchers (src/forward/cuda/forward_kernels.h).
#pragma once
#include <cstdint>

namespace fi::test {

void gather_rows_emulated(const float* in, int64_t H, const int32_t* idx, int64_t n, float* out);
void scatter_add_emulated(const float* y, int64_t n, int64_t H, bool split, const int32_t* idx,
                          const float* w, float* out, int64_t ldo);
void mla_rope_cache_emulated(const float* q, const float* kva, const float* kvb, const float* cos,
                             const float* sin, int64_t T, int64_t nh, int64_t nope, int64_t rope,
                             int64_t vd, int64_t kvr, bool interleave, float* qr, float* k_cache,
                             float* v_cache, int64_t pos);

}  // namespace fi::test
