// Compiles src/forward/cuda/moe_kernels.cuh with g++ against cuda_emulation.h and runs each
// grid-stride kernel as 3 blocks of 32 CPU threads (so every loop strides more than once).
#include "moe_emulated.h"

#include "cuda_emulation.h"
#include "forward/cuda/moe_kernels.cuh"

namespace fi::test {
namespace {

void run(const std::function<void()>& kernel) { emu::run_grid(3, 32, kernel, [] {}); }

}  // namespace

void gather_rows_emulated(const float* in, int64_t H, const int32_t* idx, int64_t n, float* out) {
  run([&] { gpu::moe_detail::gather_rows_kernel(in, H, idx, n, out); });
}

void scatter_add_emulated(const float* y, int64_t n, int64_t H, bool split, const int32_t* idx,
                          const float* w, float* out, int64_t ldo) {
  run([&] { gpu::moe_detail::scatter_add_kernel(y, n, H, split ? 1 : 0, idx, w, out, ldo); });
}

void mla_rope_cache_emulated(const float* q, const float* kva, const float* kvb, const float* cos,
                             const float* sin, int64_t T, int64_t nh, int64_t nope, int64_t rope,
                             int64_t vd, int64_t kvr, bool interleave, float* qr, float* k_cache,
                             float* v_cache, int64_t pos) {
  run([&] {
    gpu::moe_detail::mla_rope_cache_kernel(q, kva, kvb, cos, sin, T, nh, nope, rope, vd, kvr,
                                           interleave ? 1 : 0, qr, k_cache, v_cache, pos);
  });
}

}  // namespace fi::test
