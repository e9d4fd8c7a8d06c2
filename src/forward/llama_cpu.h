// The Llama-family forward pass on the CPU in fp32 (weights widened from bf16/f16/f32, matmuls
// through OpenBLAS), with a KV cache for generation and neuron clamp hooks (forward/clamp.h).
#pragma once
#include <cstdint>
#include <vector>

#include "forward/clamp.h"
#include "forward/ops.h"
#include "model/config.h"

namespace fi {

class LlamaCpu {
 public:
  // Loads every weight of `model` into memory as fp32 (about 4 bytes per parameter; the
  // embedding of an untied model stays on disk and is read a row per token).
  explicit LlamaCpu(const Model& model);
  const ModelConfig& config() const { return model_.cfg; }

  // Clamps applied from the next forward on; checks layer and neuron ranges.
  void set_clamps(const std::vector<Clamp>& clamps, ClampSite site);
  void reset();                                // forgets the KV cache (position back to 0)
  int64_t position() const { return pos_; }    // tokens seen so far

  // Runs tokens at positions position()..position()+T-1 and appends them to the cache.
  // Returns logits: [T, V] for every new position when all_positions, else [V] of the last one.
  std::vector<float> forward(const std::vector<int32_t>& tokens, bool all_positions = false);

 private:
  struct Layer {
    std::vector<float> attn_norm, q, k, v, o, q_bias, k_bias, v_bias;  // q: [nh*hd, H] ...
    std::vector<float> mlp_norm, gate, up, down;  // gate, up: [I, H]; down: [H, I]
    std::vector<float> k_cache, v_cache;          // [positions, nkv*hd]
  };
  std::vector<float> load(const std::string& tensor, std::vector<int64_t> shape, const char* field);
  void embed(const std::vector<int32_t>& tokens, float* x) const;  // x: [T, H]
  void attention(Layer& w, const float* xn, int64_t T, float* out);  // xn, out: [T, H]
  void mlp(int64_t l, const float* xn, int64_t T, float* out);       // xn, out: [T, H]

  const Model& model_;
  Act act_;
  std::vector<Layer> layers_;
  std::vector<float> final_norm_, lm_head_;  // lm_head_: [V, H] (the embedding when tied)
  std::vector<double> inv_freq_;             // [hd/2]
  std::vector<Clamp> clamps_;
  ClampSite site_ = ClampSite::Act;
  int64_t pos_ = 0;
};

// Throws unless every clamp names a layer and neuron of the model (cheap: call before loading).
void check_clamps(const ModelConfig& cfg, const std::vector<Clamp>& clamps);

// Softmax of logits [n] in double precision, as float.
std::vector<float> softmax(const std::vector<float>& logits);

}  // namespace fi
