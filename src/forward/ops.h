// The small numeric pieces of the forward pass, as plain functions so the unit tests can check
// each against its formula: RoPE frequencies (every rope_scaling type) and rotation, MLP gates,
// the tanh soft-cap. RMSNorm is model/rms_norm.h (shared with the decode).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "forward/clamp.h"
#include "model/config.h"

namespace fi {

// The rotary embedding of one layer for one forward call: angle(pos, i) = pos · inv_freq[i], and
// cos, sin of it multiplied by attention_factor (yarn, longrope; 1 for the others), so q·k scales
// by its square, as transformers' rotary classes do.
struct RopeFreqs {
  std::vector<double> inv_freq;  // [head_dim / 2]
  double attention_factor = 1;
};

// The RoPE of a layer for a call after which the sequence holds seq_len positions (pos + T).
// theta^(-2i/head_dim), then cfg.rope_scaling as transformers' modeling_rope_utils computes it:
//   llama3    long wavelengths / factor, short ones kept, a linear blend in between;
//   linear    all / factor;
//   dynamic   plain RoPE of base theta · (factor · s / max_pos - (factor - 1))^(d / (d - 2)),
//             s = max(seq_len, max_position_embeddings): unchanged until the sequence is longer;
//   yarn      interpolation (/ factor) and extrapolation blended by the linear ramp between the
//             dimensions that turn beta_fast and beta_slow times in original_max_position_embeddings
//             (ends rounded out unless truncate is false); attention_factor given, or
//             mscale-based (DeepSeek), or 0.1 ln(factor) + 1;
//   longrope  theta^(-2i/d) / short_factor[i], or / long_factor[i] once seq_len exceeds
//             original_max_position_embeddings; attention_factor given, or
//             sqrt(1 + ln(f) / ln(original)) with f = max_position_embeddings / original (1 if f <= 1).
// The config passed forward_refusal (model/layer_tensors.h), which checks the fields each type needs.
// local: a sliding layer of a model with rope_local_theta (Gemma 3), plain RoPE of that theta.
RopeFreqs rope_freqs(const ModelConfig& cfg, int64_t seq_len, bool local);

// rope_freqs(cfg, 0, false).inv_freq: the frequencies of a short sequence on a global layer.
std::vector<double> rope_inv_freq(const ModelConfig& cfg);

// Rotates one head vector x [head_dim] in place at position pos, rotate-half convention (HF):
// for i < d/2: x[i] <- x[i] cos - x[i+d/2] sin;  x[i+d/2] <- x[i+d/2] cos + x[i] sin,
// with angle = pos * inv_freq[i]; cos, sin: [d/2], precomputed for that position.
void rope_rotate(float* x, int64_t head_dim, const float* cos, const float* sin);

// The MLP gate activation named by config.json: silu, gelu_pytorch_tanh (= gelu_new) or gelu (erf).
enum class Act { Silu, GeluTanh, GeluErf };
Act parse_act(const std::string& hidden_act);  // throws naming the unsupported activation
float apply_act(Act a, float x);

// The routing of T tokens at one mixture-of-experts layer, as Mixtral, Qwen2-MoE, Qwen3-MoE and
// DeepSeek-V3 compute it (both stages run it on the host): per token the router's softmax (fp32)
// over the experts, or DeepSeek's sigmoid scores, whose choice adds e_score_correction_bias and
// keeps the topk_group best of n_group groups (each scored by its two best; the others' experts
// set to 0, as transformers' masked_fill); the top experts_per_token by that choice (lower index
// first on a tie), weighted by their scores renormalised to sum 1 where norm_topk_prob (sigmoid:
// + 1e-20), times routed_scaling_factor. A --force-route clamp of (layer, e) in clamps_of(t)
// puts expert e first at token t, whatever its score.
// logits: [T, experts] fp32; bias: [experts] or empty.
struct ExpertRoute {
  std::vector<std::vector<int64_t>> tokens;  // [experts]: the tokens routed to each, ascending
  std::vector<std::vector<float>> weights;   // [experts]: their weights, in the same order
};
ExpertRoute route_experts(const ModelConfig& cfg, int64_t layer, const float* logits, int64_t T,
                          const std::vector<float>& bias,
                          const std::function<const std::vector<Clamp>&(int64_t t)>& clamps_of);

// Gemma 2's soft-cap: tanh(x / cap) · cap in fp32; x itself when cap is 0 (none).
float softcap(float x, double cap);

}  // namespace fi
