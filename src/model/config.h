// config.json of the dense Llama-class families (model/layer_tensors.h lists them): the fields the
// decode and the forward pass need, each validated; a missing or inconsistent field names the
// field and file. Gemma 3 (model_type gemma3) is read from its text_config.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/checkpoint.h"

namespace fi {

// RoPE's frequency rule, from rope_scaling (transformers v4) or rope_parameters (v5). Every type is
// parsed; the forward pass computes what it implements and refuses the rest (ModelConfig::
// forward_problem), while inspect and decode, which use no RoPE, never look at it.
struct RopeScaling {
  std::string type;  // "" (plain RoPE), llama3, linear, dynamic, yarn, longrope, or an unknown name
  double factor = 1, low_freq_factor = 1, high_freq_factor = 4;
  double original_max_position_embeddings = 0;  // 0: not given
  double beta_fast = 32, beta_slow = 1;          // yarn
  double attention_factor = 0;                   // yarn, longrope: 0 = the type's default
  double mscale = 0, mscale_all_dim = 0;         // yarn as DeepSeek writes it (0: not given)
  bool truncate = true;                          // yarn (v5): round the ramp's ends to integers
  std::vector<double> short_factor, long_factor; // longrope: head_dim/2 each
};

// Mixture of experts (Mixtral, Qwen2-MoE, Qwen3-MoE, DeepSeek-V3): which layers send their MLP
// input to routed experts, and the experts' sizes. A dense model has experts == 0.
struct MoeConfig {
  int64_t experts = 0;            // routed experts per MoE layer
  int64_t experts_per_token = 0;  // num_experts_per_tok
  int64_t expert_size = 0;        // neurons per routed expert (Mixtral: intermediate_size)
  // Neurons of the shared expert(s), concatenated in order (Qwen2-MoE's shared_expert; DeepSeek's
  // n_shared_experts x moe_intermediate_size); 0: none.
  int64_t shared_size = 0;
  int64_t shared_experts = 0;  // DeepSeek's n_shared_experts (Qwen2-MoE: 1 when shared_size > 0)
  std::vector<uint8_t> layers;  // [num_layers] 1 where the MLP is the MoE block, 0 where dense
  // The router as the forward pass will need it (parsed and shown; not used by the decode).
  bool norm_topk_prob = false;
  double routed_scaling_factor = 1;
  std::string scoring_func = "softmax";  // DeepSeek-V3: sigmoid
  std::string topk_method;               // DeepSeek-V3: noaux_tc (group-limited, bias-corrected)
  int64_t n_group = 0, topk_group = 0;
  // DeepSeek's multi-token-prediction layers (num_nextn_predict_layers), numbered from
  // num_hidden_layers: in the checkpoint, not on the model's main path.
  int64_t mtp_layers = 0;
  int64_t moe_layer_count() const;
};

// DeepSeek's multi-head latent attention (MLA): q through a rank-q_lora_rank bottleneck (or a
// plain q_proj when q_lora_rank is null), k and v from one rank-kv_lora_rank latent plus a shared
// RoPE key of qk_rope_head_dim (ModelConfig::head_dim is then qk_rope_head_dim, the rotary
// dimension, as transformers has it). kv_lora_rank == 0: not MLA.
struct MlaConfig {
  int64_t q_lora_rank = 0, kv_lora_rank = 0, qk_nope_head_dim = 0, qk_rope_head_dim = 0, v_head_dim = 0;
  // rope_interleave (DeepseekV3Config's default true): the rotary part's pairs are adjacent
  // (x[2i], x[2i+1]) rather than (x[i], x[i + d/2]).
  bool rope_interleave = true;
};

struct ModelConfig {
  std::string path;        // the config.json it came from
  std::string model_type;  // one of model_families() (model/layer_tensors.h)
  int64_t hidden_size = 0, intermediate_size = 0, num_layers = 0;
  int64_t num_heads = 0, num_kv_heads = 0, head_dim = 0, vocab_size = 0;
  int64_t max_position_embeddings = 0;  // the longest sequence the model was made for (0: not given)
  double rms_norm_eps = 1e-5, rope_theta = 10000;
  RopeScaling rope_scaling;     // of every layer, or of the full-attention layers when rope_local_theta > 0
  double rope_local_theta = 0;  // Gemma 3: the sliding layers' plain-RoPE theta (0: as the others)
  double partial_rotary_factor = 1;
  bool tie_word_embeddings = false;
  bool norm_plus_one = false;  // Gemma: RMSNorm multiplies by (1 + w), embeddings scaled by sqrt(H)
  bool fused_gate_up = false;  // Phi-3: mlp.gate_up_proj [2I, H], gate rows first
  std::string hidden_act = "silu";
  std::string dtype;           // torch_dtype (v4) or dtype (v5); "" when not given
  // Gemma 2/3: tanh soft-caps (0: none) and the attention score scale 1/sqrt(query_pre_attn_scalar)
  // (0: head_dim).
  double final_logit_softcapping = 0, attn_logit_softcapping = 0, query_pre_attn_scalar = 0;
  int64_t sliding_window = 0;           // keys a sliding layer sees, itself included (0: none)
  std::vector<uint8_t> sliding_layers;  // [num_layers] 1 where the layer attends in the window
  // quantization_config of an FP8 checkpoint: its quant_method ("" when none) and, for block
  // scales (weight_scale_inv), weight_block_size [rows, cols] (128 x 128 when not given).
  std::string quant_method;
  int64_t weight_block_rows = 128, weight_block_cols = 128;
  MoeConfig moe;
  MlaConfig mla;
  bool is_moe_layer(int64_t l) const { return !moe.layers.empty() && moe.layers[size_t(l)] != 0; }
  // The first reason the forward pass cannot run this config, naming the config.json field (""
  // when it can): a RoPE type or field it does not implement. Never fatal to inspect or decode.
  std::string forward_problem;
};

ModelConfig load_config(const std::string& config_json_path);

// The matrices a decode can read. Neurons are rows of up/gate and columns of down.
enum class Matrix { Up, Gate, Down };
const char* matrix_name(Matrix m);    // "up", "gate", "down"
Matrix parse_matrix(const std::string& s);  // throws on an unknown name

// Where a matrix's neurons are: a tensor, and from which of its rows (Phi-3's fused gate_up_proj
// holds gate in rows [0, I) and up in rows [I, 2I)).
struct MatrixSource {
  std::string tensor;
  int64_t row0 = 0;
};

// Tensor names for one checkpoint (the one place they are spelled out). The prefix before
// embed_tokens, norm and layers is "model.", or for a Gemma 3 checkpoint with its vision tower
// "language_model.model." (v5: "model.language_model."): the one whose embedding the checkpoint has.
struct TensorNames {
  std::string prefix = "model.";
  std::string embed = "model.embed_tokens.weight";
  std::string final_norm = "model.norm.weight";
  std::string lm_head = "lm_head.weight";  // the embedding when tied
  bool fused_gate_up = false;
  int64_t intermediate_size = 0;  // the fused tensor's row split
  void set_prefix(const std::string& p);
  // e.g. model.layers.{}.mlp.up_proj.weight; Phi-3: model.layers.{}.mlp.gate_up_proj.weight[I:2I]
  std::string matrix_pattern(Matrix m) const;
  MatrixSource matrix_source(Matrix m, int64_t layer) const;
  std::string matrix(Matrix m, int64_t layer) const { return matrix_source(m, layer).tensor; }
  std::string layer(int64_t layer, const std::string& suffix) const;  // <prefix>layers.L.<suffix>
  // MoE layers: routed expert e's matrix (Mixtral block_sparse_moe.experts.{e}.w1 = gate, w3 = up,
  // w2 = down; the others mlp.experts.{e}.{gate,up,down}_proj) and the shared expert's
  // (Qwen2-MoE mlp.shared_expert.*, DeepSeek-V3 mlp.shared_experts.*).
  std::string model_type;
  std::string expert(Matrix m, int64_t layer, int64_t e) const;
  std::string shared(Matrix m, int64_t layer) const;
  // The same with {} for the layer and {e} for the expert (a map group's tensor_pattern).
  std::string expert_pattern(Matrix m) const;
  std::string shared_pattern(Matrix m) const;
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
  // The tensor holding matrix m of a layer, checked: [I, H] (up, gate), [H, I] (down), Phi-3's
  // gate_up_proj [2I, H]. An MoE layer has none (ModelConfig::is_moe_layer).
  const TensorInfo& expect_matrix(Matrix m, int64_t layer) const;
  // An MoE layer's routed expert e ([expert_size, H], down [H, expert_size]) and its shared
  // expert(s) ([shared_size, H]), checked likewise.
  const TensorInfo& expect_expert(Matrix m, int64_t layer, int64_t e) const;
  const TensorInfo& expect_shared(Matrix m, int64_t layer) const;
  int64_t neurons() const { return cfg.intermediate_size; }
};

}  // namespace fi
