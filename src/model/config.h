// config.json of the Llama family (llama, mistral, qwen2, gemma): the fields the decode and the
// forward pass need, each validated; a missing or inconsistent field names the field and file.
#pragma once
#include <string>

#include "io/checkpoint.h"

namespace fi {

struct RopeScaling {
  std::string type;  // "" (none) or "llama3"
  double factor = 1, low_freq_factor = 1, high_freq_factor = 4;
  double original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string path;        // the config.json it came from
  std::string model_type;  // llama | mistral | qwen2 | gemma
  int64_t hidden_size = 0, intermediate_size = 0, num_layers = 0;
  int64_t num_heads = 0, num_kv_heads = 0, head_dim = 0, vocab_size = 0;
  int64_t max_position_embeddings = 0;  // the longest sequence the model was made for (0: not given)
  double rms_norm_eps = 1e-5, rope_theta = 10000;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool norm_plus_one = false;  // Gemma: RMSNorm multiplies by (1 + w)
  std::string hidden_act = "silu";
};

ModelConfig load_config(const std::string& config_json_path);

// The matrices a decode can read. Neurons are rows of up/gate and columns of down.
enum class Matrix { Up, Gate, Down };
const char* matrix_name(Matrix m);    // "up", "gate", "down"
Matrix parse_matrix(const std::string& s);  // throws on an unknown name

// Tensor names for this model type (the one place they are spelled out).
struct TensorNames {
  std::string embed = "model.embed_tokens.weight";
  std::string final_norm = "model.norm.weight";
  std::string lm_head = "lm_head.weight";  // the embedding when tied
  std::string matrix_pattern(Matrix m) const;   // e.g. model.layers.{}.mlp.up_proj.weight
  std::string matrix(Matrix m, int64_t layer) const;
  std::string layer(int64_t layer, const std::string& suffix) const;  // model.layers.L.<suffix>
};

// A checkpoint with its config, every tensor the decode needs checked against the config.
struct Model {
  std::string dir;
  ModelConfig cfg;
  TensorNames names;
  Checkpoint ckpt;
  explicit Model(const std::string& dir);
  std::string lm_head_name() const { return cfg.tie_word_embeddings ? names.embed : names.lm_head; }
  // Throws unless the tensor exists with this exact shape, naming tensor, field and file.
  const TensorInfo& expect(const std::string& tensor, std::vector<int64_t> shape,
                           const char* field) const;
  int64_t neurons() const { return cfg.intermediate_size; }
};

}  // namespace fi
