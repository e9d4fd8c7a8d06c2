// The small numeric pieces of the Llama forward pass, as plain functions so the unit tests can
// check each against its formula: RoPE frequencies (llama3 scaling) and rotation, MLP gates.
// RMSNorm is model/rms_norm.h (shared with the decode).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace fi {

// RoPE inverse frequencies for one head, [head_dim / 2]: theta^(-2i/head_dim), then the llama3
// rope_scaling when cfg.rope_scaling.type == "llama3" (FACTS.md: long wavelengths / factor, short
// ones kept, a linear blend in between).
std::vector<double> rope_inv_freq(const ModelConfig& cfg);

// Rotates one head vector x [head_dim] in place at position pos, rotate-half convention (HF):
// for i < d/2: x[i] <- x[i] cos - x[i+d/2] sin;  x[i+d/2] <- x[i+d/2] cos + x[i] sin,
// with angle = pos * inv_freq[i]; cos, sin: [d/2], precomputed for that position.
void rope_rotate(float* x, int64_t head_dim, const float* cos, const float* sin);

// The MLP gate activation named by config.json: silu, gelu_pytorch_tanh (= gelu_new) or gelu (erf).
enum class Act { Silu, GeluTanh, GeluErf };
Act parse_act(const std::string& hidden_act);  // throws naming the unsupported activation
float apply_act(Act a, float x);

}  // namespace fi
