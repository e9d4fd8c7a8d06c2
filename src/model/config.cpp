// config.json of the dense Llama-class families parsed strictly where the decode needs a field
// (every fault names the file and the field) and leniently where only the forward pass does (its
// problems are kept in ModelConfig::forward_problem), the MLP matrix names, and Model: a
// checkpoint whose decode tensors are checked against its config.
#include "model/config.h"

#include <algorithm>
#include <sstream>

#include "common/error.h"
#include "io/json.h"
#include "model/layer_tensors.h"

namespace fi {
namespace {

using nlohmann::json;

// Field access for one config file: null counts as absent, any other wrong type is an error.
struct Fields {
  const json& j;
  const std::string& path;
  std::string scope = "";  // "text_config." for Gemma 3's nested config

  // field: a key of j, or a path that already starts with the scope.
  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    FI_FAIL(path + ": field '" + (field.rfind(scope, 0) == 0 ? field : scope + field) + "' " + what);
  }
  const json* get(const json& obj, const std::string& key) const {
    auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
  }
  const json& need(const json& obj, const std::string& key, const std::string& field) const {
    const json* v = get(obj, key);
    if (!v) fail(field, "is missing");
    return *v;
  }
  int64_t as_int(const json& v, const std::string& field) const {
    if (!v.is_number_integer()) fail(field, "must be an integer, got " + std::string(v.type_name()));
    if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX)) fail(field, "is too large");
    return v.get<int64_t>();
  }
  double as_double(const json& v, const std::string& field) const {
    if (!v.is_number()) fail(field, "must be a number, got " + std::string(v.type_name()));
    return v.get<double>();
  }
  std::string as_string(const json& v, const std::string& field) const {
    if (!v.is_string()) fail(field, "must be a string, got " + std::string(v.type_name()));
    return v.get<std::string>();
  }
  int64_t positive_int(const std::string& key, const int64_t* fallback = nullptr) const {
    const json* v = get(j, key);
    if (!v && fallback) return *fallback;
    int64_t x = as_int(v ? *v : need(j, key, key), key);
    if (x <= 0) fail(key, "must be positive, got " + std::to_string(x));
    return x;
  }
  double positive_double(const json& obj, const std::string& key, const std::string& field,
                         const double* fallback = nullptr) const {
    const json* v = get(obj, key);
    if (!v && fallback) return *fallback;
    double x = as_double(v ? *v : need(obj, key, field), field);
    if (!(x > 0)) fail(field, "must be positive");
    return x;
  }
};


// The HF config class's defaults of the families whose public configs leave fields out (Gemma 3's
// text_config gives only a few): a field absent from the file takes the value the class would.
json family_defaults(const std::string& model_type) {
  if (model_type == "gemma2")
    return {{"head_dim", 256}, {"rms_norm_eps", 1e-6}, {"rope_theta", 10000.0},
            {"query_pre_attn_scalar", 256}, {"sliding_window", 4096},
            {"final_logit_softcapping", 30.0}, {"attn_logit_softcapping", 50.0},
            {"max_position_embeddings", 8192}};
  if (model_type == "gemma3" || model_type == "gemma3_text")
    return {{"vocab_size", 262208}, {"hidden_size", 2304}, {"intermediate_size", 9216},
            {"num_hidden_layers", 26}, {"num_attention_heads", 8}, {"num_key_value_heads", 4},
            {"head_dim", 256}, {"max_position_embeddings", 131072}, {"rms_norm_eps", 1e-6},
            {"rope_theta", 1000000.0}, {"query_pre_attn_scalar", 256}, {"sliding_window", 4096},
            {"rope_local_base_freq", 10000.0}, {"sliding_window_pattern", 6}};
  return json::object();
}

// What the forward pass finds wrong in the config: collected, never thrown at load.
struct Problems {
  std::string first;
  void add(const std::string& why) {
    if (first.empty()) first = why;
  }
};

// Reads one RoPE description (rope_scaling, rope_parameters or one of its per-layer-type parts)
// into r, and its rope_theta into *theta when it has one. `where` is its field path.
void parse_rope(const Fields& f, const json& v, const std::string& where, RopeScaling& r, double* theta,
                Problems& p) {
  const std::string file = f.path + ": field '";
  auto num = [&](const char* key, double& out, bool required) {
    const json* x = f.get(v, key);
    if (!x) {
      if (required) p.add(file + where + "." + key + "' is missing (rope type " + r.type + ")");
      return;
    }
    if (!x->is_number() || !(x->get<double>() > 0)) p.add(file + where + "." + key + "' must be a positive number");
    else out = x->get<double>();
  };
  auto list = [&](const char* key, std::vector<double>& out) {
    const json* x = f.get(v, key);
    if (!x || !x->is_array()) return p.add(file + where + "." + key + "' must be a list of numbers");
    for (const json& e : *x) {
      if (!e.is_number()) return p.add(file + where + "." + key + "' must be a list of numbers");
      out.push_back(e.get<double>());
    }
  };
  if (theta) {
    if (const json* t = f.get(v, "rope_theta")) {
      if (!t->is_number() || !(t->get<double>() > 0)) p.add(file + where + ".rope_theta' must be a positive number");
      else *theta = t->get<double>();
    }
  }
  const char* key = v.contains("rope_type") ? "rope_type" : "type";
  const json* tv = f.get(v, key);
  if (!tv) {
    if (theta && v.contains("rope_theta")) return;  // v5: rope_parameters with only rope_theta
    return p.add(file + where + ".type' is missing");
  }
  if (!tv->is_string()) return p.add(file + where + "." + key + "' must be a string");
  r.type = tv->get<std::string>();
  if (r.type == "default") r.type.clear();  // HF's name for plain RoPE
  if (r.type == "su") r.type = "longrope";  // its first name (Phi-3 128k)
  if (r.type.empty()) return;
  if (r.type == "linear" || r.type == "dynamic") {
    num("factor", r.factor, true);
  } else if (r.type == "llama3") {
    num("factor", r.factor, true);
    num("low_freq_factor", r.low_freq_factor, true);
    num("high_freq_factor", r.high_freq_factor, true);
    num("original_max_position_embeddings", r.original_max_position_embeddings, true);
    if (r.high_freq_factor <= r.low_freq_factor)
      p.add(file + where + ".high_freq_factor' must be greater than low_freq_factor");
  } else if (r.type == "yarn") {
    num("factor", r.factor, true);
    num("original_max_position_embeddings", r.original_max_position_embeddings, false);
    num("beta_fast", r.beta_fast, false);
    num("beta_slow", r.beta_slow, false);
    num("attention_factor", r.attention_factor, false);
    num("mscale", r.mscale, false);
    num("mscale_all_dim", r.mscale_all_dim, false);
    if (const json* t = f.get(v, "truncate")) r.truncate = !t->is_boolean() || t->get<bool>();
  } else if (r.type == "longrope") {
    list("short_factor", r.short_factor);
    list("long_factor", r.long_factor);
    num("factor", r.factor, false);
    num("attention_factor", r.attention_factor, false);
    num("original_max_position_embeddings", r.original_max_position_embeddings, false);
  } else {
    p.add(file + where + "." + key + "' is '" + r.type +
          "', a RoPE type the forward pass does not know (known: default, linear, dynamic, llama3, "
          "yarn, longrope)");
  }
}

// rope_scaling (v4) or rope_parameters (v5; per layer type for Gemma 3: full_attention and
// sliding_attention), with rope_theta and Gemma 3's rope_local_base_freq.
void parse_rope_fields(const Fields& f, ModelConfig& c, Problems& p) {
  const json& j = f.j;
  const double theta = 10000;
  c.rope_theta = f.positive_double(j, "rope_theta", f.scope + "rope_theta", &theta);
  if (f.get(j, "rope_local_base_freq"))
    c.rope_local_theta = f.positive_double(j, "rope_local_base_freq", f.scope + "rope_local_base_freq");
  for (const std::string key : {"rope_parameters", "rope_scaling"}) {
    const json* v = f.get(j, key);
    if (!v) continue;
    const std::string where = f.scope + key;
    if (!v->is_object()) {
      p.add(f.path + ": field '" + where + "' must be an object or null, got " + std::string(v->type_name()));
      return;
    }
    const bool v5 = key == "rope_parameters";
    if (!v->contains("full_attention") && !v->contains("sliding_attention")) {
      parse_rope(f, *v, where, c.rope_scaling, v5 ? &c.rope_theta : nullptr, p);
      return;
    }
    for (const auto& [layer_type, part] : v->items()) {
      const std::string at = where + "." + layer_type;
      if (!part.is_object()) {
        p.add(f.path + ": field '" + at + "' must be an object");
      } else if (layer_type == "full_attention") {
        parse_rope(f, part, at, c.rope_scaling, &c.rope_theta, p);
      } else if (layer_type == "sliding_attention") {
        RopeScaling local;
        double local_theta = c.rope_local_theta > 0 ? c.rope_local_theta : c.rope_theta;
        parse_rope(f, part, at, local, &local_theta, p);
        if (!local.type.empty())
          p.add(f.path + ": field '" + at + ".rope_type' is '" + local.type +
                "'; the forward pass scales only the full-attention layers' RoPE");
        c.rope_local_theta = local_theta;
      } else {
        p.add(f.path + ": field '" + at + "' is a layer type the forward pass does not know");
      }
    }
    return;
  }
}

// Which layers attend in a sliding window: layer_types where the config lists them, else the
// family's rule (Gemma 2 every other layer from 0, Gemma 3 all but every sliding_window_pattern-th,
// Mistral and Phi-3 all layers, Qwen with use_sliding_window from max_window_layers on).
void parse_sliding(const Fields& f, ModelConfig& c, Problems& p) {
  const json& j = f.j;
  const std::string& t = c.model_type;
  c.sliding_layers.assign(size_t(c.num_layers), 0);
  int64_t window = 0;
  if (const json* w = f.get(j, "sliding_window")) {
    if (!w->is_number_integer() || w->get<int64_t>() <= 0) {
      p.add(f.path + ": field '" + f.scope + "sliding_window' must be a positive integer or null");
      return;
    }
    window = w->get<int64_t>();
  }
  if (const json* lt = f.get(j, "layer_types")) {
    if (!lt->is_array() || int64_t(lt->size()) != c.num_layers) {
      p.add(f.path + ": field '" + f.scope + "layer_types' must list one type per layer");
      return;
    }
    for (size_t i = 0; i < lt->size(); ++i) {
      const json& e = (*lt)[i];
      const std::string s = e.is_string() ? e.get<std::string>() : "";
      if (s == "sliding_attention") c.sliding_layers[i] = 1;
      else if (s != "full_attention")
        p.add(f.path + ": field '" + f.scope + "layer_types[" + std::to_string(i) +
              "]' is not full_attention or sliding_attention");
    }
  } else if (t == "gemma2") {
    for (int64_t i = 0; i < c.num_layers; i += 2) c.sliding_layers[size_t(i)] = 1;
  } else if (t == "gemma3" || t == "gemma3_text") {
    const int64_t six = 6;
    const int64_t pattern = f.positive_int("sliding_window_pattern", &six);
    for (int64_t i = 0; i < c.num_layers; ++i) c.sliding_layers[size_t(i)] = (i + 1) % pattern != 0;
  } else if (t == "mistral" || t == "mixtral" || t == "phi3") {
    c.sliding_layers.assign(size_t(c.num_layers), 1);
  } else if (t == "qwen2" || t == "qwen3" || t == "qwen2_moe" || t == "qwen3_moe") {
    const json* use = f.get(j, "use_sliding_window");
    if (use && use->is_boolean() && use->get<bool>()) {
      const int64_t zero = 0;
      const json* from_v = f.get(j, "max_window_layers");
      const int64_t from = from_v && from_v->is_number_integer() ? from_v->get<int64_t>() : zero;
      for (int64_t i = std::max<int64_t>(from, 0); i < c.num_layers; ++i) c.sliding_layers[size_t(i)] = 1;
    }
  }
  if (window == 0) c.sliding_layers.assign(size_t(c.num_layers), 0);
  bool any = false;
  for (uint8_t s : c.sliding_layers) any |= s != 0;
  c.sliding_window = any ? window : 0;
}

// A non-negative integer field (absent or null: fallback).
int64_t count_field(const Fields& f, const std::string& key, int64_t fallback) {
  const json* v = f.get(f.j, key);
  if (!v) return fallback;
  const int64_t x = f.as_int(*v, f.scope + key);
  if (x < 0) f.fail(key, "must not be negative, got " + std::to_string(x));
  return x;
}

bool bool_field(const Fields& f, const std::string& key, bool fallback) {
  const json* v = f.get(f.j, key);
  if (!v) return fallback;
  if (!v->is_boolean()) f.fail(key, "must be a boolean, got " + std::string(v->type_name()));
  return v->get<bool>();
}

// The mixture-of-experts fields of Mixtral, Qwen2-MoE, Qwen3-MoE and DeepSeek-V3, and which
// layers are MoE layers (each family's rule, as its modelling code in transformers applies it).
void parse_moe(const Fields& f, ModelConfig& c) {
  const std::string& t = c.model_type;
  MoeConfig& m = c.moe;
  const json& j = f.j;
  m.layers.assign(size_t(c.num_layers), 0);
  if (t == "mixtral") {
    m.experts = f.positive_int("num_local_experts");
    m.expert_size = c.intermediate_size;
    m.layers.assign(size_t(c.num_layers), 1);
    m.norm_topk_prob = true;  // Mixtral renormalises its top-k softmax weights
  } else if (t == "qwen2_moe" || t == "qwen3_moe") {
    m.experts = count_field(f, "num_experts", 0);
    m.expert_size = m.experts > 0 ? f.positive_int("moe_intermediate_size") : 0;
    if (t == "qwen2_moe") {
      m.shared_size = count_field(f, "shared_expert_intermediate_size", 0);
      m.shared_experts = m.shared_size > 0 ? 1 : 0;
    }
    const int64_t one = 1;
    const int64_t step = f.positive_int("decoder_sparse_step", &one);
    std::vector<uint8_t> mlp_only(size_t(c.num_layers), 0);
    if (const json* v = f.get(j, "mlp_only_layers")) {
      if (!v->is_array()) f.fail("mlp_only_layers", "must be a list of layer ids");
      for (const json& e : *v) {
        if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() >= c.num_layers)
          f.fail("mlp_only_layers", "must list layer ids 0.." + std::to_string(c.num_layers - 1));
        mlp_only[size_t(e.get<int64_t>())] = 1;
      }
    }
    for (int64_t l = 0; l < c.num_layers; ++l)
      m.layers[size_t(l)] = m.experts > 0 && !mlp_only[size_t(l)] && (l + 1) % step == 0;
    m.norm_topk_prob = bool_field(f, "norm_topk_prob", false);
  } else if (t == "deepseek_v3") {
    m.experts = count_field(f, "n_routed_experts", 0);
    m.expert_size = m.experts > 0 ? f.positive_int("moe_intermediate_size") : 0;
    m.shared_experts = m.experts > 0 ? count_field(f, "n_shared_experts", 0) : 0;
    m.shared_size = m.shared_experts * m.expert_size;
    const int64_t first_dense = count_field(f, "first_k_dense_replace", 0);
    const int64_t one = 1;
    const int64_t freq = f.positive_int("moe_layer_freq", &one);
    for (int64_t l = 0; l < c.num_layers; ++l)
      m.layers[size_t(l)] = m.experts > 0 && l >= first_dense && l % freq == 0;
    m.norm_topk_prob = bool_field(f, "norm_topk_prob", false);
    const double one_d = 1;
    m.routed_scaling_factor = f.positive_double(j, "routed_scaling_factor", f.scope + "routed_scaling_factor", &one_d);
    if (const json* v = f.get(j, "scoring_func")) m.scoring_func = f.as_string(*v, "scoring_func");
    if (const json* v = f.get(j, "topk_method")) m.topk_method = f.as_string(*v, "topk_method");
    m.n_group = count_field(f, "n_group", 1);
    m.topk_group = count_field(f, "topk_group", 1);
    m.mtp_layers = count_field(f, "num_nextn_predict_layers", 0);
    // MLA: q and k heads are qk_nope_head_dim + qk_rope_head_dim wide, v heads v_head_dim.
    MlaConfig& a = c.mla;
    a.q_lora_rank = count_field(f, "q_lora_rank", 0);
    a.kv_lora_rank = f.positive_int("kv_lora_rank");
    a.qk_nope_head_dim = f.positive_int("qk_nope_head_dim");
    a.qk_rope_head_dim = f.positive_int("qk_rope_head_dim");
    a.v_head_dim = f.positive_int("v_head_dim");
    a.rope_interleave = bool_field(f, "rope_interleave", true);
    c.head_dim = a.qk_rope_head_dim;  // as transformers' DeepseekV3Config: the rotary dimension
  } else {
    return;
  }
  if (m.experts > 0) {
    m.experts_per_token = f.positive_int("num_experts_per_tok");
    if (m.experts_per_token > m.experts)
      f.fail("num_experts_per_tok", "(" + std::to_string(m.experts_per_token) + ") exceeds the " +
                                        std::to_string(m.experts) + " experts");
  }
}

std::string join_shape(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

ModelConfig load_config(const std::string& path) {
  const json top = read_json_file(path);
  if (!top.is_object()) FI_FAIL(path + ": expected a JSON object at the top level");
  ModelConfig c;
  c.path = path;
  {
    Fields t{top, path};
    c.model_type = t.as_string(t.need(top, "model_type", "model_type"), "model_type");
  }
  family_of(c);  // throws unless model_type is one of the families in model/layer_tensors.h
  const std::string& t = c.model_type;
  // Gemma 3 with its vision tower: the language model's fields are in text_config.
  json j = top;
  std::string scope;
  if (t == "gemma3") {
    auto it = top.find("text_config");
    if (it == top.end() || !it->is_object())
      FI_FAIL(path + ": field 'text_config' is missing or not an object (model_type gemma3)");
    j = *it;
    scope = "text_config.";
    for (const char* k : {"torch_dtype", "dtype", "tie_word_embeddings", "quantization_config"})
      if (!j.contains(k) && top.contains(k)) j[k] = top[k];
  }
  const json defaults = family_defaults(t);
  for (const auto& [k, v] : defaults.items())
    if (!j.contains(k)) j[k] = v;
  const Fields f{j, path, scope};
  const bool gemma = t == "gemma" || t == "gemma2" || t == "gemma3" || t == "gemma3_text";
  c.norm_plus_one = gemma;
  c.fused_gate_up = t == "phi3";
  Problems problems;

  c.hidden_size = f.positive_int("hidden_size");
  c.intermediate_size = f.positive_int("intermediate_size");
  c.num_layers = f.positive_int("num_hidden_layers");
  c.num_heads = f.positive_int("num_attention_heads");
  c.num_kv_heads = f.positive_int("num_key_value_heads", &c.num_heads);
  if (!f.get(j, "head_dim") && c.hidden_size % c.num_heads != 0)
    f.fail("num_attention_heads", "(" + std::to_string(c.num_heads) + ") does not divide hidden_size (" +
                                      std::to_string(c.hidden_size) + ") and head_dim is absent");
  int64_t head_dim = c.hidden_size / c.num_heads;
  c.head_dim = f.positive_int("head_dim", &head_dim);
  if (c.num_heads % c.num_kv_heads != 0)
    f.fail("num_key_value_heads", "(" + std::to_string(c.num_kv_heads) +
                                      ") does not divide num_attention_heads (" +
                                      std::to_string(c.num_heads) + ")");
  c.vocab_size = f.positive_int("vocab_size");
  const int64_t no_limit = 0;
  c.max_position_embeddings = f.positive_int("max_position_embeddings", &no_limit);
  c.rms_norm_eps = f.positive_double(j, "rms_norm_eps", scope + "rms_norm_eps");
  parse_rope_fields(f, c, problems);
  RopeScaling& rs = c.rope_scaling;
  if (const json* v = f.get(j, "original_max_position_embeddings"))  // Phi-3.5 keeps it at the top
    if (rs.original_max_position_embeddings == 0 && v->is_number() && v->get<double>() > 0)
      rs.original_max_position_embeddings = v->get<double>();
  if (rs.type == "longrope") {
    const size_t half = size_t(c.head_dim / 2);
    if (rs.short_factor.size() != half || rs.long_factor.size() != half)
      problems.add(path + ": field '" + scope + "rope_scaling.short_factor' and long_factor must have head_dim/2 (" +
                   std::to_string(half) + ") entries");
    if (rs.original_max_position_embeddings == 0)
      problems.add(path + ": field '" + scope + "original_max_position_embeddings' is missing (rope type longrope)");
  }
  if (const json* v = f.get(j, "partial_rotary_factor")) {
    c.partial_rotary_factor = f.as_double(*v, scope + "partial_rotary_factor");
    if (c.partial_rotary_factor != 1)
      problems.add(path + ": field '" + scope + "partial_rotary_factor' is not 1; the forward pass rotates whole heads only");
  }
  for (const std::string bias : {"mlp_bias", "attention_bias"}) {
    const json* v = f.get(j, bias);
    if (v && v->is_boolean() && v->get<bool>() && !(bias == "attention_bias" && (t == "qwen2" || t == "qwen2_moe")))
      problems.add(path + ": field '" + scope + bias + "' is true; the forward pass has no such biases");
  }

  c.tie_word_embeddings = gemma;  // Gemma ties the LM-head unless told otherwise
  if (const json* v = f.get(j, "tie_word_embeddings")) {
    if (!v->is_boolean()) f.fail("tie_word_embeddings", "must be a boolean, got " + std::string(v->type_name()));
    c.tie_word_embeddings = v->get<bool>();
  }
  for (const std::string key : {"dtype", "torch_dtype"})  // v5 writes dtype, v4 torch_dtype
    if (const json* v = f.get(j, key); v && v->is_string() && c.dtype.empty()) c.dtype = v->get<std::string>();
  // Gemma's modelling code reads hidden_activation (tanh-GELU when absent) and ignores hidden_act.
  std::string act_field = gemma || !f.get(j, "hidden_act") ? "hidden_activation" : "hidden_act";
  const json* act = f.get(j, act_field);
  c.hidden_act = act ? f.as_string(*act, scope + act_field) : gemma ? "gelu_pytorch_tanh" : "silu";
  if (gemma && t != "gemma") {  // Gemma 2 and 3 (Gemma 1 has none of these)
    const double none = 0;
    c.final_logit_softcapping = f.positive_double(j, "final_logit_softcapping", scope + "final_logit_softcapping", &none);
    c.attn_logit_softcapping = f.positive_double(j, "attn_logit_softcapping", scope + "attn_logit_softcapping", &none);
    c.query_pre_attn_scalar = f.positive_double(j, "query_pre_attn_scalar", scope + "query_pre_attn_scalar", &none);
  }
  if (const json* q = f.get(j, "quantization_config")) {
    if (!q->is_object()) f.fail("quantization_config", "must be an object, got " + std::string(q->type_name()));
    const std::string where = scope + "quantization_config.";
    if (const json* m = f.get(*q, "quant_method")) c.quant_method = f.as_string(*m, where + "quant_method");
    if (const json* b = f.get(*q, "weight_block_size")) {
      if (!b->is_array() || b->size() != 2 || !(*b)[0].is_number_integer() || !(*b)[1].is_number_integer() ||
          (*b)[0].get<int64_t>() <= 0 || (*b)[1].get<int64_t>() <= 0)
        f.fail(where + "weight_block_size", "must be [rows, cols] of positive integers");
      c.weight_block_rows = (*b)[0].get<int64_t>();
      c.weight_block_cols = (*b)[1].get<int64_t>();
    }
  }
  parse_sliding(f, c, problems);
  parse_moe(f, c);
  c.forward_problem = problems.first;
  return c;
}

const char* matrix_name(Matrix m) {
  switch (m) {
    case Matrix::Up: return "up";
    case Matrix::Gate: return "gate";
    case Matrix::Down: return "down";
  }
  return "?";
}

Matrix parse_matrix(const std::string& s) {
  if (s == "up") return Matrix::Up;
  if (s == "gate") return Matrix::Gate;
  if (s == "down") return Matrix::Down;
  FI_FAIL("unknown matrix '" + s + "' (valid: up, gate, down)");
}

void TensorNames::set_prefix(const std::string& p) {
  prefix = p;
  embed = p + "embed_tokens.weight";
  final_norm = p + "norm.weight";
  lm_head = p == "language_model.model." ? "language_model.lm_head.weight" : "lm_head.weight";
}

std::string TensorNames::matrix_pattern(Matrix m) const {
  if (fused_gate_up && m != Matrix::Down) {
    const int64_t I = intermediate_size, r0 = m == Matrix::Gate ? 0 : I;
    return prefix + "layers.{}.mlp.gate_up_proj.weight[" + std::to_string(r0) + ":" + std::to_string(r0 + I) + "]";
  }
  return prefix + "layers.{}.mlp." + matrix_name(m) + "_proj.weight";
}

MatrixSource TensorNames::matrix_source(Matrix m, int64_t l) const {
  if (fused_gate_up && m != Matrix::Down)
    return {layer(l, "mlp.gate_up_proj.weight"), m == Matrix::Gate ? 0 : intermediate_size};
  return {layer(l, std::string("mlp.") + matrix_name(m) + "_proj.weight"), 0};
}

// The suffix after layers.L. of routed expert e (spelled as given) and of the shared expert(s).
static std::string expert_suffix(const std::string& type, Matrix m, const std::string& e) {
  if (type == "mixtral")
    return "block_sparse_moe.experts." + e + "." + (m == Matrix::Gate ? "w1" : m == Matrix::Up ? "w3" : "w2") +
           ".weight";
  return "mlp.experts." + e + "." + matrix_name(m) + "_proj.weight";
}

static std::string shared_suffix(const std::string& type, Matrix m) {
  const std::string group = type == "deepseek_v3" ? "mlp.shared_experts." : "mlp.shared_expert.";
  return group + matrix_name(m) + "_proj.weight";
}

std::string TensorNames::expert(Matrix m, int64_t l, int64_t e) const {
  return layer(l, expert_suffix(model_type, m, std::to_string(e)));
}

std::string TensorNames::shared(Matrix m, int64_t l) const { return layer(l, shared_suffix(model_type, m)); }

std::string TensorNames::expert_pattern(Matrix m) const {
  return prefix + "layers.{}." + expert_suffix(model_type, m, "{e}");
}

std::string TensorNames::shared_pattern(Matrix m) const {
  return prefix + "layers.{}." + shared_suffix(model_type, m);
}

int64_t MoeConfig::moe_layer_count() const {
  int64_t n = 0;
  for (uint8_t x : layers) n += x;
  return n;
}

std::string TensorNames::layer(int64_t layer, const std::string& suffix) const {
  return prefix + "layers." + std::to_string(layer) + "." + suffix;
}

Model::Model(const std::string& d) : dir(d), cfg(load_config(d + "/config.json")), ckpt(d) {
  ckpt.set_weight_block(cfg.weight_block_rows, cfg.weight_block_cols);
  names.fused_gate_up = cfg.fused_gate_up;
  names.intermediate_size = cfg.intermediate_size;
  names.model_type = cfg.model_type;
  for (const char* p : {"model.", "language_model.model.", "model.language_model."})
    if (ckpt.has(std::string(p) + "embed_tokens.weight")) {
      names.set_prefix(p);
      break;
    }
  expect(lm_head_name(), {cfg.vocab_size, cfg.hidden_size}, "vocab_size,hidden_size");
  expect(names.final_norm, {cfg.hidden_size}, "hidden_size");
  // FP8 checkpoints quantise the layers' linear weights; the LM-head, the embedding and the
  // norms ship in 16 or 32 bits, and the decode reads them as such.
  for (const std::string& t : {lm_head_name(), names.embed, names.final_norm})
    if (ckpt.has(t) && is_fp8(ckpt.info(t).dtype))
      FI_FAIL(ckpt.file_of(t).path() + ": tensor '" + t + "' is " + dtype_name(ckpt.info(t).dtype) +
              "; an FP8 LM-head, embedding or final norm is not supported");
  for (int64_t l = 0; l < cfg.num_layers; ++l)
    for (Matrix m : {Matrix::Up, Matrix::Gate, Matrix::Down}) {
      if (!cfg.is_moe_layer(l)) {
        expect_matrix(m, l);
        continue;
      }
      for (int64_t e = 0; e < cfg.moe.experts; ++e) expect_expert(m, l, e);
      if (cfg.moe.shared_size > 0) expect_shared(m, l);
    }
}

const TensorInfo& Model::expect_expert(Matrix m, int64_t l, int64_t e) const {
  const int64_t H = cfg.hidden_size, N = cfg.moe.expert_size;
  const std::string name = names.expert(m, l, e);
  const bool mixtral = cfg.model_type == "mixtral";  // its experts are intermediate_size wide
  if (m == Matrix::Down)
    return expect(name, {H, N}, mixtral ? "hidden_size,intermediate_size" : "hidden_size,moe_intermediate_size");
  return expect(name, {N, H}, mixtral ? "intermediate_size,hidden_size" : "moe_intermediate_size,hidden_size");
}

const TensorInfo& Model::expect_shared(Matrix m, int64_t l) const {
  const int64_t H = cfg.hidden_size, N = cfg.moe.shared_size;
  const char* field = cfg.model_type == "deepseek_v3" ? "n_shared_experts*moe_intermediate_size"
                                                      : "shared_expert_intermediate_size";
  const std::string name = names.shared(m, l);
  if (m == Matrix::Down) return expect(name, {H, N}, (std::string("hidden_size,") + field).c_str());
  return expect(name, {N, H}, (std::string(field) + ",hidden_size").c_str());
}

const TensorInfo& Model::expect_matrix(Matrix m, int64_t l) const {
  const int64_t H = cfg.hidden_size, I = cfg.intermediate_size;
  const std::string name = names.matrix(m, l);
  if (m == Matrix::Down) return expect(name, {H, I}, "hidden_size,intermediate_size");
  if (cfg.fused_gate_up) return expect(name, {2 * I, H}, "2*intermediate_size,hidden_size");
  return expect(name, {I, H}, "intermediate_size,hidden_size");
}

// field: the config fields behind each dimension, comma-separated ("vocab_size,hidden_size").
const TensorInfo& Model::expect(const std::string& tensor, std::vector<int64_t> shape,
                                const char* field) const {
  if (!ckpt.has(tensor)) FI_FAIL(dir + ": missing tensor '" + tensor + "'");
  const TensorInfo& t = ckpt.info(tensor);
  if (t.shape == shape) return t;
  std::vector<std::string> names;
  std::stringstream ss(field);
  for (std::string n; std::getline(ss, n, ',');) names.push_back(n);
  std::string says;
  if (names.size() == shape.size()) {
    for (size_t i = 0; i < shape.size(); ++i)
      says += (i ? ", " : "") + names[i] + "=" + std::to_string(shape[i]);
  } else {
    says = std::string(field) + " -> " + join_shape(shape);
  }
  FI_FAIL(ckpt.file_of(tensor).path() + ": tensor '" + tensor + "' has shape " + join_shape(t.shape) +
          " but config.json says " + says);
}

}  // namespace fi
