// Stored neuron rows widened on the device (widen_kernel.cuh): what io/row_feed.h's widen_block
// does on the host, for a block uploaded as the checkpoint stores it.
#pragma once
#include <cuda_runtime_api.h>

#include "io/row_feed.h"

namespace fi::gpu {

// b: the block's shape, dtype and scale layout (its pointers are host ones and unused here).
// x: b's bytes on the device; fp8: [256] fp32 code values (fp8_to_f32 of b.dtype) and scale:
// b.scale->s on the device (FP8 only, else null). out: [b.count, b.width] fp32 (device).
void launch_widen(const RowBlock& b, const void* x, const float* fp8, const float* scale, float* out,
                  cudaStream_t stream);

}  // namespace fi::gpu
