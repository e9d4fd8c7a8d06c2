// The widening kernel's own source (gpu/widen_kernel.cuh) run on CPU threads (cuda_emulation.h),
// for tests on machines without a GPU. Arguments as fi::gpu::launch_widen, with host pointers.
#pragma once
#include "io/row_feed.h"

namespace fi::test {
void widen_emulated(const RowBlock& b, const void* x, const float* fp8, const float* scale, float* out);
}  // namespace fi::test
