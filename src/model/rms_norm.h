// The one CPU RMSNorm, for the decode (decode/norm.cpp: apply_norm) and the CPU forward pass
// (forward/llama_cpu.cpp). Both compute exactly this, so they agree to the bit:
//   r = float(1 / sqrt(sum(double(x)²) / n + eps))     the mean of squares summed in double
//   out[i] = x[i] * r * g[i]                          in fp32, left to right
// with g[i] = w[i], or 1 + w[i] (fp32) for Gemma's (1 + w) norms (plus_one).
#pragma once
#include <cstdint>

namespace fi {

// float(1 / sqrt(mean(x²) + eps)) of x [n], the squares summed in double.
float rms_scale(const float* x, int64_t n, double eps);

// out[i] = x[i] * scale * (plus_one ? 1 + w[i] : w[i]) for i < n. out may be x.
void scale_by_gamma(const float* x, float scale, const float* w, int64_t n, bool plus_one, float* out);

// RMSNorm of one row: scale_by_gamma(x, rms_scale(x, n, eps), w, n, plus_one, out). out may be x.
void rms_norm(const float* x, const float* w, int64_t n, double eps, bool plus_one, float* out);

}  // namespace fi
