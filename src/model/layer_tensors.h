// The tensors of a model as the forward pass loads them, one table per model family (in the style
// of llm.c's fill_in_parameter_sizes): each row a role, the tensor's name below
// model.layers.L., its shape in config fields, and whether it is optional. Both forward stages
// (forward/llama_cpu.cpp, forward/cuda/llama_cuda.cpp) load what the table resolves for a layer,
// and `inspect` counts the same tensors for its forward plan. Adding a family (or a tensor a
// family has, e.g. Qwen3's q/k norms) is adding rows here; a family whose rows a stage does not
// implement yet carries a forward_refusal until it does.
//
// Also here: the forward pass's config checks (check_forward_supported, check_layer_span) and its
// token-id check, each written once for both stages.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace fi {

// A dimension of a tensor's shape, as config fields.
enum class Dim {
  Hidden,        // hidden_size
  Intermediate,  // intermediate_size
  QHeads,        // num_heads*head_dim
  KvHeads,       // num_kv_heads*head_dim
  Vocab,         // vocab_size
  HeadDim,       // head_dim
  QkvHeads,      // (num_heads+2*num_kv_heads)*head_dim: Phi-3's fused qkv_proj
  Intermediate2, // 2*intermediate_size: Phi-3's fused gate_up_proj
  Experts,       // the routed experts (num_local_experts, num_experts or n_routed_experts)
  ExpertSize,    // neurons per routed expert (moe_intermediate_size; Mixtral: intermediate_size)
  SharedSize,    // the shared expert's neurons (shared_expert_intermediate_size, n_shared_experts*moe_intermediate_size)
  One,           // 1: Qwen2-MoE's shared_expert_gate [1, hidden]
  QLora,         // q_lora_rank (MLA)
  KvLora,        // kv_lora_rank (MLA)
  MlaQ,          // num_heads*(qk_nope_head_dim+qk_rope_head_dim)
  MlaKvA,        // kv_lora_rank+qk_rope_head_dim
  MlaKvB,        // num_heads*(qk_nope_head_dim+v_head_dim)
  MlaO,          // num_heads*v_head_dim
};
int64_t dim_size(const ModelConfig& cfg, Dim d);
const char* dim_fields(Dim d);  // "hidden_size", "num_heads*head_dim", ...

// What a tensor is to the forward pass.
enum class Role {
  Embed, FinalNorm, LmHead,                       // once per model
  AttnNorm, Q, K, V, QBias, KBias, VBias, O,      // per layer: attention
  MlpNorm, Gate, Up, Down,                        // per layer: MLP
  PostAttnNorm, PostMlpNorm,                      // Gemma 2/3, OLMo 2: norms of each block's output
  QNorm, KNorm,                                   // Qwen 3, Gemma 3 (per head), OLMo 2 (whole width)
  QKV, GateUp,                                    // Phi-3's fused projections
  Router, RouterBias,                             // MoE: the router [experts, hidden], DeepSeek's e_score_correction_bias
  ExpertGate, ExpertUp, ExpertDown,               // MoE: routed expert e's MLP (one row per expert)
  SharedGate, SharedUp, SharedDown, SharedRouter, // MoE: the shared expert(s); Qwen2-MoE's shared_expert_gate
  QA, QANorm, QB, KVA, KVANorm, KVB,              // DeepSeek's MLA attention
};

// One row of a family's layer table.
struct TensorRow {
  Role role;
  const char* suffix;      // the tensor model.layers.L.<suffix>
  std::vector<Dim> shape;  // [rows, cols] or [n]
  // Null: every layer has it. Else the row is loaded only when the layer has the tensor of this
  // suffix, and is then required (Qwen2's q/k/v biases come together, keyed on q_proj.bias).
  const char* if_present = nullptr;
  // Null: every layer. Else the row belongs to the layers for which it is true (an MoE layer's
  // experts, a dense layer's MLP, MLA's q_proj when q_lora_rank is null).
  bool (*when)(const ModelConfig&, int64_t layer) = nullptr;
  // A suffix with "{e}" is one row per routed expert e (block_sparse_moe.experts.{e}.w1.weight).
};

struct ModelFamily {
  const char* model_type;                  // config.json's model_type
  std::vector<TensorRow> layer;            // each decoder layer's tensors, in load order
  const char* forward_refusal = nullptr;   // why the forward pass refuses it; null: it runs it
};

// The model types load_config accepts (family_names() lists them).
const std::vector<ModelFamily>& model_families();
std::string family_names();  // "llama, mistral, qwen2, ..."
// cfg.model_type's family; throws naming cfg.path when it is none of them.
const ModelFamily& family_of(const ModelConfig& cfg);
const char* role_name(Role r);  // "q", "attn_norm", ...

// One tensor of a Model, as a row of the table names it for that model.
struct ModelTensor {
  Role role;
  std::string name;            // e.g. model.layers.3.self_attn.q_proj.weight
  std::vector<int64_t> shape;  // the row's shape in this config's numbers
  std::string fields;          // the row's shape as config fields: "num_heads*head_dim,hidden_size"
  const TensorInfo* info = nullptr;       // the checkpoint's tensor; null: the checkpoint lacks it
  const SafetensorsFile* file = nullptr;  // the shard holding it (with info)
  const Checkpoint* ckpt = nullptr;       // the checkpoint holding it (with info)
  uint64_t bytes() const { return info ? info->end - info->begin : 0; }
  const TensorInfo& stored() const;     // *info; throws when the checkpoint lacks the tensor
  std::vector<float> read_f32() const;  // the whole tensor widened to fp32 (FP8: dequantised)
};

struct LayerTensors {
  int64_t layer = 0;
  std::vector<ModelTensor> tensors;  // the rows loaded for this layer, in table order
  const ModelTensor* find(Role r) const;        // null when the layer has no such tensor
  const ModelTensor& operator[](Role r) const;  // throws when the layer has no such tensor
};

// Layer `layer`'s tensors for the forward pass, each checked against the config (Model::expect:
// a missing tensor or a wrong shape names the tensor, the config fields and the file). Optional
// rows whose key tensor is absent are left out.
LayerTensors layer_tensors(const Model& m, int64_t layer);

// Embed, FinalNorm or LmHead (the embedding when tied), checked like layer_tensors.
ModelTensor model_tensor(const Model& m, Role r);

// The table's tensors of layer `layer` that the checkpoint has, unchecked (inspect's count).
std::vector<ModelTensor> layer_tensors_present(const Model& m, int64_t layer);

// Why the forward pass cannot run this config, naming config.json ("" when it can): a family it
// does not implement yet, ModelConfig::forward_problem (a RoPE type or field), an odd head_dim
// (rotary embeddings rotate pairs), or a RoPE type or the field it needs that it does not implement.
std::string forward_refusal(const ModelConfig& cfg);
void check_forward_supported(const ModelConfig& cfg);  // throws forward_refusal(cfg)
// Throws unless 0 <= first <= last <= num_layers (a stage's layers [first, last)).
void check_layer_span(const ModelConfig& cfg, int64_t first, int64_t last);
// Throws "token id N is outside the vocabulary (0..V-1)" for the first id out of range.
void check_token_ids(const ModelConfig& cfg, const std::vector<int32_t>& tokens);

}  // namespace fi
