// The model families' tensor tables and the forward pass's checks (see layer_tensors.h).
#include "model/layer_tensors.h"

#include "common/error.h"

namespace fi {
namespace {

using D = Dim;

// A Llama decoder layer: llama, mistral, qwen2 and gemma have these tensors. Qwen2 adds q/k/v
// biases; any checkpoint that has q_proj.bias loads all three (as the forward always has).
// Gemma's norms multiply by (1 + w) (ModelConfig::norm_plus_one), the same tensors.
const std::vector<TensorRow> kLlamaLayer = {
    {Role::AttnNorm, "input_layernorm.weight", {D::Hidden}},
    {Role::Q, "self_attn.q_proj.weight", {D::QHeads, D::Hidden}},
    {Role::K, "self_attn.k_proj.weight", {D::KvHeads, D::Hidden}},
    {Role::V, "self_attn.v_proj.weight", {D::KvHeads, D::Hidden}},
    {Role::QBias, "self_attn.q_proj.bias", {D::QHeads}, "self_attn.q_proj.bias"},
    {Role::KBias, "self_attn.k_proj.bias", {D::KvHeads}, "self_attn.q_proj.bias"},
    {Role::VBias, "self_attn.v_proj.bias", {D::KvHeads}, "self_attn.q_proj.bias"},
    {Role::O, "self_attn.o_proj.weight", {D::Hidden, D::QHeads}},
    {Role::MlpNorm, "post_attention_layernorm.weight", {D::Hidden}},
    {Role::Gate, "mlp.gate_proj.weight", {D::Intermediate, D::Hidden}},
    {Role::Up, "mlp.up_proj.weight", {D::Intermediate, D::Hidden}},
    {Role::Down, "mlp.down_proj.weight", {D::Hidden, D::Intermediate}},
};

// Qwen 3: Llama's layer with an RMSNorm over each head of q and of k (before RoPE).
const std::vector<TensorRow> kQwen3Layer = {
    {Role::AttnNorm, "input_layernorm.weight", {D::Hidden}},
    {Role::Q, "self_attn.q_proj.weight", {D::QHeads, D::Hidden}},
    {Role::K, "self_attn.k_proj.weight", {D::KvHeads, D::Hidden}},
    {Role::V, "self_attn.v_proj.weight", {D::KvHeads, D::Hidden}},
    {Role::QNorm, "self_attn.q_norm.weight", {D::HeadDim}},
    {Role::KNorm, "self_attn.k_norm.weight", {D::HeadDim}},
    {Role::O, "self_attn.o_proj.weight", {D::Hidden, D::QHeads}},
    {Role::MlpNorm, "post_attention_layernorm.weight", {D::Hidden}},
    {Role::Gate, "mlp.gate_proj.weight", {D::Intermediate, D::Hidden}},
    {Role::Up, "mlp.up_proj.weight", {D::Intermediate, D::Hidden}},
    {Role::Down, "mlp.down_proj.weight", {D::Hidden, D::Intermediate}},
};

// Gemma 2: four norms a layer, around attention and around the MLP (post_attention_layernorm
// normalises the attention's output here, not the MLP's input as in Llama).
const std::vector<TensorRow> kGemma2Layer = {
    {Role::AttnNorm, "input_layernorm.weight", {D::Hidden}},
    {Role::Q, "self_attn.q_proj.weight", {D::QHeads, D::Hidden}},
    {Role::K, "self_attn.k_proj.weight", {D::KvHeads, D::Hidden}},
    {Role::V, "self_attn.v_proj.weight", {D::KvHeads, D::Hidden}},
    {Role::O, "self_attn.o_proj.weight", {D::Hidden, D::QHeads}},
    {Role::PostAttnNorm, "post_attention_layernorm.weight", {D::Hidden}},
    {Role::MlpNorm, "pre_feedforward_layernorm.weight", {D::Hidden}},
    {Role::Gate, "mlp.gate_proj.weight", {D::Intermediate, D::Hidden}},
    {Role::Up, "mlp.up_proj.weight", {D::Intermediate, D::Hidden}},
    {Role::Down, "mlp.down_proj.weight", {D::Hidden, D::Intermediate}},
    {Role::PostMlpNorm, "post_feedforward_layernorm.weight", {D::Hidden}},
};

// Gemma 3: Gemma 2's layer with Qwen 3's per-head q/k norms.
const std::vector<TensorRow> kGemma3Layer = {
    {Role::AttnNorm, "input_layernorm.weight", {D::Hidden}},
    {Role::Q, "self_attn.q_proj.weight", {D::QHeads, D::Hidden}},
    {Role::K, "self_attn.k_proj.weight", {D::KvHeads, D::Hidden}},
    {Role::V, "self_attn.v_proj.weight", {D::KvHeads, D::Hidden}},
    {Role::QNorm, "self_attn.q_norm.weight", {D::HeadDim}},
    {Role::KNorm, "self_attn.k_norm.weight", {D::HeadDim}},
    {Role::O, "self_attn.o_proj.weight", {D::Hidden, D::QHeads}},
    {Role::PostAttnNorm, "post_attention_layernorm.weight", {D::Hidden}},
    {Role::MlpNorm, "pre_feedforward_layernorm.weight", {D::Hidden}},
    {Role::Gate, "mlp.gate_proj.weight", {D::Intermediate, D::Hidden}},
    {Role::Up, "mlp.up_proj.weight", {D::Intermediate, D::Hidden}},
    {Role::Down, "mlp.down_proj.weight", {D::Hidden, D::Intermediate}},
    {Role::PostMlpNorm, "post_feedforward_layernorm.weight", {D::Hidden}},
};

// OLMo 2: no norm before attention or the MLP, a norm after each; q and k normed over their
// whole width (all heads at once).
const std::vector<TensorRow> kOlmo2Layer = {
    {Role::Q, "self_attn.q_proj.weight", {D::QHeads, D::Hidden}},
    {Role::K, "self_attn.k_proj.weight", {D::KvHeads, D::Hidden}},
    {Role::V, "self_attn.v_proj.weight", {D::KvHeads, D::Hidden}},
    {Role::QNorm, "self_attn.q_norm.weight", {D::QHeads}},
    {Role::KNorm, "self_attn.k_norm.weight", {D::KvHeads}},
    {Role::O, "self_attn.o_proj.weight", {D::Hidden, D::QHeads}},
    {Role::PostAttnNorm, "post_attention_layernorm.weight", {D::Hidden}},
    {Role::Gate, "mlp.gate_proj.weight", {D::Intermediate, D::Hidden}},
    {Role::Up, "mlp.up_proj.weight", {D::Intermediate, D::Hidden}},
    {Role::Down, "mlp.down_proj.weight", {D::Hidden, D::Intermediate}},
    {Role::PostMlpNorm, "post_feedforward_layernorm.weight", {D::Hidden}},
};

// Phi-3: q, k and v fused in qkv_proj (rows q, then k, then v), gate and up in gate_up_proj
// (rows gate, then up).
const std::vector<TensorRow> kPhi3Layer = {
    {Role::AttnNorm, "input_layernorm.weight", {D::Hidden}},
    {Role::QKV, "self_attn.qkv_proj.weight", {D::QkvHeads, D::Hidden}},
    {Role::O, "self_attn.o_proj.weight", {D::Hidden, D::QHeads}},
    {Role::MlpNorm, "post_attention_layernorm.weight", {D::Hidden}},
    {Role::GateUp, "mlp.gate_up_proj.weight", {D::Intermediate2, D::Hidden}},
    {Role::Down, "mlp.down_proj.weight", {D::Hidden, D::Intermediate}},
};

// Which layers a row belongs to.
bool dense_layer(const ModelConfig& c, int64_t l) { return !c.is_moe_layer(l); }
bool moe_layer(const ModelConfig& c, int64_t l) { return c.is_moe_layer(l); }
bool shared_layer(const ModelConfig& c, int64_t l) { return c.is_moe_layer(l) && c.moe.shared_size > 0; }
bool q_lora(const ModelConfig& c, int64_t) { return c.mla.q_lora_rank > 0; }
bool no_q_lora(const ModelConfig& c, int64_t) { return c.mla.q_lora_rank == 0; }

// Mixtral: Mistral's attention; every layer's MLP is block_sparse_moe, experts' w1 = gate,
// w3 = up, w2 = down.
const std::vector<TensorRow> kMixtralLayer = {
    {Role::AttnNorm, "input_layernorm.weight", {D::Hidden}},
    {Role::Q, "self_attn.q_proj.weight", {D::QHeads, D::Hidden}},
    {Role::K, "self_attn.k_proj.weight", {D::KvHeads, D::Hidden}},
    {Role::V, "self_attn.v_proj.weight", {D::KvHeads, D::Hidden}},
    {Role::O, "self_attn.o_proj.weight", {D::Hidden, D::QHeads}},
    {Role::MlpNorm, "post_attention_layernorm.weight", {D::Hidden}},
    {Role::Router, "block_sparse_moe.gate.weight", {D::Experts, D::Hidden}},
    {Role::ExpertGate, "block_sparse_moe.experts.{e}.w1.weight", {D::ExpertSize, D::Hidden}},
    {Role::ExpertUp, "block_sparse_moe.experts.{e}.w3.weight", {D::ExpertSize, D::Hidden}},
    {Role::ExpertDown, "block_sparse_moe.experts.{e}.w2.weight", {D::Hidden, D::ExpertSize}},
};

// Qwen2-MoE and Qwen3-MoE: their dense family's attention (Qwen2's biases, Qwen3's q/k norms);
// the MoE layers (decoder_sparse_step, mlp_only_layers) route to mlp.experts.{e}, Qwen2-MoE also
// runs mlp.shared_expert scaled by sigmoid(shared_expert_gate); the other layers are dense.
#define FI_QWEN_MOE_MLP                                                                           \
  {Role::MlpNorm, "post_attention_layernorm.weight", {D::Hidden}},                               \
  {Role::Gate, "mlp.gate_proj.weight", {D::Intermediate, D::Hidden}, nullptr, dense_layer},      \
  {Role::Up, "mlp.up_proj.weight", {D::Intermediate, D::Hidden}, nullptr, dense_layer},          \
  {Role::Down, "mlp.down_proj.weight", {D::Hidden, D::Intermediate}, nullptr, dense_layer},      \
  {Role::Router, "mlp.gate.weight", {D::Experts, D::Hidden}, nullptr, moe_layer},                \
  {Role::ExpertGate, "mlp.experts.{e}.gate_proj.weight", {D::ExpertSize, D::Hidden}, nullptr, moe_layer}, \
  {Role::ExpertUp, "mlp.experts.{e}.up_proj.weight", {D::ExpertSize, D::Hidden}, nullptr, moe_layer},     \
  {Role::ExpertDown, "mlp.experts.{e}.down_proj.weight", {D::Hidden, D::ExpertSize}, nullptr, moe_layer}
const std::vector<TensorRow> kQwen2MoeLayer = {
    {Role::AttnNorm, "input_layernorm.weight", {D::Hidden}},
    {Role::Q, "self_attn.q_proj.weight", {D::QHeads, D::Hidden}},
    {Role::K, "self_attn.k_proj.weight", {D::KvHeads, D::Hidden}},
    {Role::V, "self_attn.v_proj.weight", {D::KvHeads, D::Hidden}},
    {Role::QBias, "self_attn.q_proj.bias", {D::QHeads}, "self_attn.q_proj.bias"},
    {Role::KBias, "self_attn.k_proj.bias", {D::KvHeads}, "self_attn.q_proj.bias"},
    {Role::VBias, "self_attn.v_proj.bias", {D::KvHeads}, "self_attn.q_proj.bias"},
    {Role::O, "self_attn.o_proj.weight", {D::Hidden, D::QHeads}},
    FI_QWEN_MOE_MLP,
    {Role::SharedGate, "mlp.shared_expert.gate_proj.weight", {D::SharedSize, D::Hidden}, nullptr, shared_layer},
    {Role::SharedUp, "mlp.shared_expert.up_proj.weight", {D::SharedSize, D::Hidden}, nullptr, shared_layer},
    {Role::SharedDown, "mlp.shared_expert.down_proj.weight", {D::Hidden, D::SharedSize}, nullptr, shared_layer},
    {Role::SharedRouter, "mlp.shared_expert_gate.weight", {D::One, D::Hidden}, nullptr, shared_layer},
};
const std::vector<TensorRow> kQwen3MoeLayer = {
    {Role::AttnNorm, "input_layernorm.weight", {D::Hidden}},
    {Role::Q, "self_attn.q_proj.weight", {D::QHeads, D::Hidden}},
    {Role::K, "self_attn.k_proj.weight", {D::KvHeads, D::Hidden}},
    {Role::V, "self_attn.v_proj.weight", {D::KvHeads, D::Hidden}},
    {Role::QNorm, "self_attn.q_norm.weight", {D::HeadDim}},
    {Role::KNorm, "self_attn.k_norm.weight", {D::HeadDim}},
    {Role::O, "self_attn.o_proj.weight", {D::Hidden, D::QHeads}},
    FI_QWEN_MOE_MLP,
};
#undef FI_QWEN_MOE_MLP

// DeepSeek-V3: MLA attention; the first first_k_dense_replace layers dense, the others route to
// mlp.experts.{e} (sigmoid scores with e_score_correction_bias) beside mlp.shared_experts.
const std::vector<TensorRow> kDeepseekV3Layer = {
    {Role::AttnNorm, "input_layernorm.weight", {D::Hidden}},
    {Role::QA, "self_attn.q_a_proj.weight", {D::QLora, D::Hidden}, nullptr, q_lora},
    {Role::QANorm, "self_attn.q_a_layernorm.weight", {D::QLora}, nullptr, q_lora},
    {Role::QB, "self_attn.q_b_proj.weight", {D::MlaQ, D::QLora}, nullptr, q_lora},
    {Role::Q, "self_attn.q_proj.weight", {D::MlaQ, D::Hidden}, nullptr, no_q_lora},
    {Role::KVA, "self_attn.kv_a_proj_with_mqa.weight", {D::MlaKvA, D::Hidden}},
    {Role::KVANorm, "self_attn.kv_a_layernorm.weight", {D::KvLora}},
    {Role::KVB, "self_attn.kv_b_proj.weight", {D::MlaKvB, D::KvLora}},
    {Role::O, "self_attn.o_proj.weight", {D::Hidden, D::MlaO}},
    {Role::MlpNorm, "post_attention_layernorm.weight", {D::Hidden}},
    {Role::Gate, "mlp.gate_proj.weight", {D::Intermediate, D::Hidden}, nullptr, dense_layer},
    {Role::Up, "mlp.up_proj.weight", {D::Intermediate, D::Hidden}, nullptr, dense_layer},
    {Role::Down, "mlp.down_proj.weight", {D::Hidden, D::Intermediate}, nullptr, dense_layer},
    {Role::Router, "mlp.gate.weight", {D::Experts, D::Hidden}, nullptr, moe_layer},
    {Role::RouterBias, "mlp.gate.e_score_correction_bias", {D::Experts}, nullptr, moe_layer},
    {Role::ExpertGate, "mlp.experts.{e}.gate_proj.weight", {D::ExpertSize, D::Hidden}, nullptr, moe_layer},
    {Role::ExpertUp, "mlp.experts.{e}.up_proj.weight", {D::ExpertSize, D::Hidden}, nullptr, moe_layer},
    {Role::ExpertDown, "mlp.experts.{e}.down_proj.weight", {D::Hidden, D::ExpertSize}, nullptr, moe_layer},
    {Role::SharedGate, "mlp.shared_experts.gate_proj.weight", {D::SharedSize, D::Hidden}, nullptr, shared_layer},
    {Role::SharedUp, "mlp.shared_experts.up_proj.weight", {D::SharedSize, D::Hidden}, nullptr, shared_layer},
    {Role::SharedDown, "mlp.shared_experts.down_proj.weight", {D::Hidden, D::SharedSize}, nullptr, shared_layer},
};

// The tensors outside the layers; their names are TensorNames' (Model::names).
struct ModelRow {
  Role role;
  std::vector<Dim> shape;
};
const std::vector<ModelRow> kModelRows = {
    {Role::Embed, {D::Vocab, D::Hidden}},
    {Role::FinalNorm, {D::Hidden}},
    {Role::LmHead, {D::Vocab, D::Hidden}},
};

ModelTensor describe(const Model& m, Role role, std::string name, const std::vector<Dim>& shape) {
  ModelTensor t{role, std::move(name), {}, {}};
  for (Dim d : shape) {
    t.shape.push_back(dim_size(m.cfg, d));
    t.fields += (t.fields.empty() ? "" : ",") + std::string(dim_fields(d));
  }
  return t;
}

// Checks t against the checkpoint (Model::expect) and fills in where it is.
void check(const Model& m, ModelTensor& t) {
  t.info = &m.expect(t.name, t.shape, t.fields.c_str());
  t.file = &m.ckpt.file_of(t.name);
  t.ckpt = &m.ckpt;
}

// The rows of layer l that it loads: an optional row only when its key tensor is there.
// A row whose suffix has "{e}" is one tensor per routed expert.
template <typename F>
void for_each_row(const Model& m, int64_t l, F&& f) {
  for (const TensorRow& r : family_of(m.cfg).layer) {
    if (r.when && !r.when(m.cfg, l)) continue;
    if (r.if_present && !m.ckpt.has(m.names.layer(l, r.if_present))) continue;
    const std::string suffix = r.suffix;
    const size_t at = suffix.find("{e}");
    if (at == std::string::npos) {
      f(describe(m, r.role, m.names.layer(l, suffix), r.shape));
      continue;
    }
    for (int64_t e = 0; e < m.cfg.moe.experts; ++e) {
      std::string s = suffix;
      s.replace(at, 3, std::to_string(e));
      f(describe(m, r.role, m.names.layer(l, s), r.shape));
    }
  }
}

}  // namespace

int64_t dim_size(const ModelConfig& c, Dim d) {
  switch (d) {
    case Dim::Hidden: return c.hidden_size;
    case Dim::Intermediate: return c.intermediate_size;
    case Dim::QHeads: return c.num_heads * c.head_dim;
    case Dim::KvHeads: return c.num_kv_heads * c.head_dim;
    case Dim::Vocab: return c.vocab_size;
    case Dim::HeadDim: return c.head_dim;
    case Dim::QkvHeads: return (c.num_heads + 2 * c.num_kv_heads) * c.head_dim;
    case Dim::Intermediate2: return 2 * c.intermediate_size;
    case Dim::Experts: return c.moe.experts;
    case Dim::ExpertSize: return c.moe.expert_size;
    case Dim::SharedSize: return c.moe.shared_size;
    case Dim::One: return 1;
    case Dim::QLora: return c.mla.q_lora_rank;
    case Dim::KvLora: return c.mla.kv_lora_rank;
    case Dim::MlaQ: return c.num_heads * (c.mla.qk_nope_head_dim + c.mla.qk_rope_head_dim);
    case Dim::MlaKvA: return c.mla.kv_lora_rank + c.mla.qk_rope_head_dim;
    case Dim::MlaKvB: return c.num_heads * (c.mla.qk_nope_head_dim + c.mla.v_head_dim);
    case Dim::MlaO: return c.num_heads * c.mla.v_head_dim;
  }
  return 0;
}

const char* dim_fields(Dim d) {
  switch (d) {
    case Dim::Hidden: return "hidden_size";
    case Dim::Intermediate: return "intermediate_size";
    case Dim::QHeads: return "num_heads*head_dim";
    case Dim::KvHeads: return "num_kv_heads*head_dim";
    case Dim::Vocab: return "vocab_size";
    case Dim::HeadDim: return "head_dim";
    case Dim::QkvHeads: return "(num_heads+2*num_kv_heads)*head_dim";
    case Dim::Intermediate2: return "2*intermediate_size";
    case Dim::Experts: return "num_experts";
    case Dim::ExpertSize: return "moe_intermediate_size";
    case Dim::SharedSize: return "shared_expert_intermediate_size";
    case Dim::One: return "1";
    case Dim::QLora: return "q_lora_rank";
    case Dim::KvLora: return "kv_lora_rank";
    case Dim::MlaQ: return "num_heads*(qk_nope_head_dim+qk_rope_head_dim)";
    case Dim::MlaKvA: return "kv_lora_rank+qk_rope_head_dim";
    case Dim::MlaKvB: return "num_heads*(qk_nope_head_dim+v_head_dim)";
    case Dim::MlaO: return "num_heads*v_head_dim";
  }
  return "?";
}

const std::vector<ModelFamily>& model_families() {
  static const std::vector<ModelFamily> families = {
      {"llama", kLlamaLayer},
      {"mistral", kLlamaLayer},
      {"qwen2", kLlamaLayer},
      {"qwen3", kQwen3Layer},
      {"gemma", kLlamaLayer},
      {"gemma2", kGemma2Layer},
      {"gemma3_text", kGemma3Layer},
      {"gemma3", kGemma3Layer},
      {"olmo2", kOlmo2Layer},
      {"phi3", kPhi3Layer},
      {"mixtral", kMixtralLayer},
      {"qwen2_moe", kQwen2MoeLayer},
      {"qwen3_moe", kQwen3MoeLayer},
      {"deepseek_v3", kDeepseekV3Layer},
  };
  return families;
}

const ModelFamily& family_of(const ModelConfig& cfg) {
  for (const ModelFamily& f : model_families())
    if (cfg.model_type == f.model_type) return f;
  FI_FAIL(cfg.path + ": model_type '" + cfg.model_type + "' is not supported (supported: " +
          family_names() + ")");
}

const char* role_name(Role r) {
  switch (r) {
    case Role::Embed: return "embed";
    case Role::FinalNorm: return "final_norm";
    case Role::LmHead: return "lm_head";
    case Role::AttnNorm: return "attn_norm";
    case Role::Q: return "q";
    case Role::K: return "k";
    case Role::V: return "v";
    case Role::QBias: return "q_bias";
    case Role::KBias: return "k_bias";
    case Role::VBias: return "v_bias";
    case Role::O: return "o";
    case Role::MlpNorm: return "mlp_norm";
    case Role::Gate: return "gate";
    case Role::Up: return "up";
    case Role::Down: return "down";
    case Role::PostAttnNorm: return "post_attn_norm";
    case Role::PostMlpNorm: return "post_mlp_norm";
    case Role::QNorm: return "q_norm";
    case Role::KNorm: return "k_norm";
    case Role::QKV: return "qkv";
    case Role::GateUp: return "gate_up";
    case Role::Router: return "router";
    case Role::RouterBias: return "router_bias";
    case Role::ExpertGate: return "expert_gate";
    case Role::ExpertUp: return "expert_up";
    case Role::ExpertDown: return "expert_down";
    case Role::SharedGate: return "shared_gate";
    case Role::SharedUp: return "shared_up";
    case Role::SharedDown: return "shared_down";
    case Role::SharedRouter: return "shared_router";
    case Role::QA: return "q_a";
    case Role::QANorm: return "q_a_norm";
    case Role::QB: return "q_b";
    case Role::KVA: return "kv_a";
    case Role::KVANorm: return "kv_a_norm";
    case Role::KVB: return "kv_b";
  }
  return "?";
}

std::string family_names() {
  std::string s;
  for (const ModelFamily& f : model_families()) s += (s.empty() ? "" : ", ") + std::string(f.model_type);
  return s;
}

const TensorInfo& ModelTensor::stored() const {
  FI_CHECK(info && file, "tensor '" + name + "' was not found in the checkpoint");
  return *info;
}

std::vector<float> ModelTensor::read_f32() const {
  stored();
  return ckpt->read_f32(name);
}

const ModelTensor* LayerTensors::find(Role r) const {
  for (const ModelTensor& t : tensors)
    if (t.role == r) return &t;
  return nullptr;
}

const ModelTensor& LayerTensors::operator[](Role r) const {
  const ModelTensor* t = find(r);
  if (!t) FI_FAIL("layer " + std::to_string(layer) + " has no " + role_name(r) + " tensor");
  return *t;
}

LayerTensors layer_tensors(const Model& m, int64_t l) {
  LayerTensors out;
  out.layer = l;
  for_each_row(m, l, [&](ModelTensor t) {
    check(m, t);
    out.tensors.push_back(std::move(t));
  });
  return out;
}

std::vector<ModelTensor> layer_tensors_present(const Model& m, int64_t l) {
  std::vector<ModelTensor> out;
  for_each_row(m, l, [&](ModelTensor t) {
    if (!m.ckpt.has(t.name)) return;
    t.info = &m.ckpt.info(t.name);
    t.file = &m.ckpt.file_of(t.name);
    t.ckpt = &m.ckpt;
    out.push_back(std::move(t));
  });
  return out;
}

ModelTensor model_tensor(const Model& m, Role r) {
  for (const ModelRow& row : kModelRows) {
    if (row.role != r) continue;
    const std::string name = r == Role::Embed ? m.names.embed
                             : r == Role::FinalNorm ? m.names.final_norm
                                                    : m.lm_head_name();
    ModelTensor t = describe(m, r, name, row.shape);
    check(m, t);
    return t;
  }
  FI_FAIL(std::string("model_tensor: ") + role_name(r) + " is a layer's tensor");
}

// The fields each RoPE type needs beyond what load_config checks (forward/ops.h rope_freqs).
static std::string rope_refusal(const ModelConfig& c) {
  const RopeScaling& s = c.rope_scaling;
  const std::string& t = s.type;
  if (t != "" && t != "llama3" && t != "linear" && t != "dynamic" && t != "yarn" && t != "longrope")
    return c.path + ": field 'rope_scaling' type " + t + ": not implemented in the forward pass";
  if (t == "dynamic" && c.max_position_embeddings <= 0)
    return c.path + ": field 'max_position_embeddings' is missing (rope type dynamic needs it)";
  if (t == "dynamic" && c.head_dim <= 2)
    return c.path + ": field 'head_dim' must be above 2 for rope type dynamic";
  if (t == "yarn" && s.original_max_position_embeddings <= 0 && c.max_position_embeddings <= 0)
    return c.path + ": field 'rope_scaling.original_max_position_embeddings' is missing and so is "
                    "'max_position_embeddings' (rope type yarn needs one)";
  const size_t half = size_t(c.head_dim / 2);
  if (t == "longrope" && (s.short_factor.size() != half || s.long_factor.size() != half))
    return c.path + ": field 'rope_scaling.short_factor' and long_factor must have head_dim/2 entries";
  for (const std::vector<double>* v : {&s.short_factor, &s.long_factor})
    for (double x : *v)
      if (!(x > 0)) return c.path + ": field 'rope_scaling.short_factor' and long_factor must be positive";
  return "";
}

std::string forward_refusal(const ModelConfig& c) {
  const ModelFamily& f = family_of(c);
  if (f.forward_refusal)
    return c.path + ": the forward pass does not support " + f.model_type + " yet (" + f.forward_refusal + ")";
  if (!c.forward_problem.empty()) return c.forward_problem;
  if (c.head_dim % 2 != 0) return c.path + ": head_dim must be even for rotary embeddings";
  return rope_refusal(c);
}

void check_forward_supported(const ModelConfig& c) {
  const std::string why = forward_refusal(c);
  if (!why.empty()) FI_FAIL(why);
}

void check_layer_span(const ModelConfig& c, int64_t first, int64_t last) {
  FI_CHECK(0 <= first && first <= last && last <= c.num_layers,
           "forward: layer span [" + std::to_string(first) + ", " + std::to_string(last) +
               ") is outside the model's " + std::to_string(c.num_layers) + " layers");
}

void check_token_ids(const ModelConfig& c, const std::vector<int32_t>& tokens) {
  for (int32_t id : tokens)
    if (id < 0 || id >= c.vocab_size)
      FI_FAIL("token id " + std::to_string(id) + " is outside the vocabulary (0.." +
              std::to_string(c.vocab_size - 1) + ")");
}

}  // namespace fi
