// config.json of the Llama family parsed strictly (every fault names the file and the field),
// the MLP matrix names, and Model: a checkpoint whose decode tensors are checked against its config.
#include "model/config.h"

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

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    FI_FAIL(path + ": field '" + field + "' " + what);
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

RopeScaling parse_rope_scaling(const Fields& f) {
  RopeScaling r;
  const json* v = f.get(f.j, "rope_scaling");
  if (!v) return r;
  if (!v->is_object()) f.fail("rope_scaling", "must be an object or null, got " + std::string(v->type_name()));
  // Newer configs spell the type "rope_type", older ones "type".
  std::string key = v->contains("rope_type") ? "rope_type" : "type";
  std::string field = "rope_scaling." + key;
  std::string type = f.as_string(f.need(*v, key, field), field);
  if (type == "default") return r;  // HF's name for plain RoPE
  if (type != "llama3") f.fail(field, "is '" + type + "'; only 'llama3' is supported");
  r.type = type;
  r.factor = f.positive_double(*v, "factor", "rope_scaling.factor");
  r.low_freq_factor = f.positive_double(*v, "low_freq_factor", "rope_scaling.low_freq_factor");
  r.high_freq_factor = f.positive_double(*v, "high_freq_factor", "rope_scaling.high_freq_factor");
  r.original_max_position_embeddings =
      f.positive_double(*v, "original_max_position_embeddings",
                        "rope_scaling.original_max_position_embeddings");
  if (r.high_freq_factor <= r.low_freq_factor)
    f.fail("rope_scaling.high_freq_factor", "must be greater than low_freq_factor");
  return r;
}

std::string join_shape(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

ModelConfig load_config(const std::string& path) {
  json j = read_json_file(path);
  if (!j.is_object()) FI_FAIL(path + ": expected a JSON object at the top level");
  Fields f{j, path};
  ModelConfig c;
  c.path = path;
  c.model_type = f.as_string(f.need(j, "model_type", "model_type"), "model_type");
  family_of(c);  // throws unless model_type is one of the families in model/layer_tensors.h
  bool gemma = c.model_type == "gemma" || c.model_type == "gemma2";
  c.norm_plus_one = gemma;

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
  c.rms_norm_eps = f.positive_double(j, "rms_norm_eps", "rms_norm_eps");
  double theta = 10000;
  c.rope_theta = f.positive_double(j, "rope_theta", "rope_theta", &theta);
  c.rope_scaling = parse_rope_scaling(f);

  c.tie_word_embeddings = gemma;  // Gemma ties the LM-head unless told otherwise
  if (const json* v = f.get(j, "tie_word_embeddings")) {
    if (!v->is_boolean()) f.fail("tie_word_embeddings", "must be a boolean, got " + std::string(v->type_name()));
    c.tie_word_embeddings = v->get<bool>();
  }
  // Gemma's modelling code reads hidden_activation (tanh-GELU when absent) and ignores hidden_act.
  std::string act_field = gemma || !f.get(j, "hidden_act") ? "hidden_activation" : "hidden_act";
  const json* act = f.get(j, act_field);
  c.hidden_act = act ? f.as_string(*act, act_field) : gemma ? "gelu_pytorch_tanh" : "silu";
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

std::string TensorNames::matrix_pattern(Matrix m) const {
  return std::string("model.layers.{}.mlp.") + matrix_name(m) + "_proj.weight";
}

std::string TensorNames::matrix(Matrix m, int64_t layer) const {
  std::string p = matrix_pattern(m);
  return p.replace(p.find("{}"), 2, std::to_string(layer));
}

std::string TensorNames::layer(int64_t layer, const std::string& suffix) const {
  return "model.layers." + std::to_string(layer) + "." + suffix;
}

Model::Model(const std::string& d) : dir(d), cfg(load_config(d + "/config.json")), ckpt(d) {
  const int64_t H = cfg.hidden_size, I = cfg.intermediate_size;
  expect(lm_head_name(), {cfg.vocab_size, H}, "vocab_size,hidden_size");
  expect(names.final_norm, {H}, "hidden_size");
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    expect(names.matrix(Matrix::Up, l), {I, H}, "intermediate_size,hidden_size");
    expect(names.matrix(Matrix::Gate, l), {I, H}, "intermediate_size,hidden_size");
    expect(names.matrix(Matrix::Down, l), {H, I}, "hidden_size,intermediate_size");
  }
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
