// The demo model: random Llama weights (seeded Box-Muller over splitmix64, so the same seed
// gives the same bytes everywhere) with concept neurons planted along LM-head directions, and its
// fine-tune-like "instruct" variant (changes drawn from a second generator; see demo_model.h).
#include "model/demo_model.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/build_info.h"
#include "common/error.h"
#include "common/half.h"
#include "io/safetensors.h"
#include "model/vocab.h"

namespace fi {
namespace {

class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t next() {  // splitmix64
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return (double(next() >> 11) + 0.5) * 0x1.0p-53; }  // (0, 1)
  float normal() {
    if (have_) {
      have_ = false;
      return spare_;
    }
    double r = std::sqrt(-2.0 * std::log(uniform())), a = 2.0 * M_PI * uniform();
    spare_ = float(r * std::sin(a));
    have_ = true;
    return float(r * std::cos(a));
  }

 private:
  uint64_t s_;
  bool have_ = false;
  float spare_ = 0;
};

DType parse_dtype(const std::string& s) {
  if (s == "bf16") return DType::BF16;
  if (s == "f16") return DType::F16;
  if (s == "f32") return DType::F32;
  FI_FAIL("--dtype: expected bf16, f16 or f32, got '" + s + "'");
}

// Rounds values to the dtype and back, so planted directions are computed from stored weights.
std::vector<uint8_t> encode(DType d, std::vector<float>& v) {
  std::vector<uint8_t> out(v.size() * dtype_size(d));
  for (size_t i = 0; i < v.size(); ++i) {
    if (d == DType::F32) {
      std::memcpy(&out[i * 4], &v[i], 4);
    } else {
      uint16_t h = d == DType::BF16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
      std::memcpy(&out[i * 2], &h, 2);
      v[i] = d == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
    }
  }
  return out;
}

std::vector<float> random_matrix(Rng& rng, int64_t n, float sd) {
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = rng.normal() * sd;
  return v;
}

bool exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

// The instruct variant's weight noise: 1% of the random weights' sd (0.05).
constexpr double kTuneNoise = 0.0005;

struct Plant {
  std::string matrix;
  int64_t layer, neuron;
  std::string word;
  int64_t token = -1;
};

}  // namespace

std::string default_tokenizer_path(const std::string& option) {
  if (!option.empty()) return option;
  if (const char* e = std::getenv("FLASHINTERP_TOKENIZER"); e && *e) return e;
  const std::string dir = data_dir();
  return dir.empty() ? "" : dir + "/tokenizer/tokenizer.json";
}

void write_demo_model(const DemoOptions& o) {
  const DType dt = parse_dtype(o.dtype);
  const bool instruct = o.variant == "instruct";
  FI_CHECK(o.variant == "base" || instruct, "--variant: expected base or instruct, got '" + o.variant + "'");
  FI_CHECK(!o.out.empty(), "--out is required");
  FI_CHECK(o.layers >= 1 && o.hidden >= 8 && o.intermediate >= 8 && o.heads >= 1 &&
               o.kv_heads >= 1 && o.hidden % o.heads == 0 && o.heads % o.kv_heads == 0,
           "demo-model: sizes must be positive, heads must divide hidden and kv heads divide heads");
  FI_CHECK(o.shards >= 1 && o.shards <= 99, "--shards must be 1..99");
  const std::string tok_path = default_tokenizer_path(o.tokenizer);
  if (!exists(tok_path)) {
    const char* env = std::getenv("FLASHINTERP_TOKENIZER");
    if (!o.tokenizer.empty() || (env && *env))
      FI_FAIL(tok_path + ": tokenizer.json not found (" +
              (o.tokenizer.empty() ? "$FLASHINTERP_TOKENIZER" : "--tokenizer") + ")");
    FI_FAIL("no tokenizer.json for the demo model: none at '" + tok_path + "' (beside the binary, "
            "where cmake --install puts it and a build copies the set-up cache); pass --tokenizer "
            "FILE or set FLASHINTERP_TOKENIZER (launch/setup-deps.sh fetches it into .cache/tokenizer)");
  }
  if (exists(o.out + "/config.json") && !o.overwrite)
    FI_FAIL(o.out + ": already holds a model; pass --overwrite to replace it");
  std::error_code ec;
  std::filesystem::create_directories(o.out, ec);  // parents too, as mkdir -p
  FI_CHECK(exists(o.out), o.out + ": cannot create the directory" + (ec ? " (" + ec.message() + ")" : ""));

  Vocab vocab = load_vocab(tok_path);
  const int64_t V = vocab.size(), H = o.hidden, I = o.intermediate, L = o.layers;
  const int64_t hd = H / o.heads;
  Rng rng(o.seed);

  // Concept neurons, as in the paper; positions scale with the sizes so any shape works.
  std::vector<Plant> plants = {
      {"up", std::min<int64_t>(1, L - 1), I / 7, " dog"},
      {"up", L - 1, I / 3, " California"},
      {"up", 0, I / 2, " pizza"},
      {"gate", std::min<int64_t>(2, L - 1), I / 5, " cat"},
      {"gate", L - 1, (2 * I) / 3, " music"},
      {"down", 0, I / 4, " ocean"},
      {"down", L - 1, (3 * I) / 4, " Paris"},
  };
  for (Plant& p : plants) {
    p.token = vocab.find_bytes(p.word);
    FI_CHECK(p.token >= 0, tok_path + ": the planted word '" + p.word + "' is not one token");
  }
  // The instruct variant draws only from `tune`, so every draw of `rng` (and with it every byte
  // of the base model's tensors) stays as in the base variant.
  Rng tune(o.seed ^ 0x5EEDF17E7E11A5E5ull);
  const std::string retarget_word = " puppy";  // the instruct variant's " dog" neuron
  const int64_t retarget = instruct ? vocab.find_bytes(retarget_word) : -1;
  FI_CHECK(!instruct || retarget >= 0, tok_path + ": '" + retarget_word + "' is not one token");
  std::vector<int64_t> regular;  // non-special token ids: the replaced neurons' new directions
  for (int64_t t = 0; instruct && t < V; ++t)
    if (!vocab.special[t]) regular.push_back(t);
  nlohmann::json changed = {{"gate", nlohmann::json::array()}, {"up", nlohmann::json::array()},
                            {"down", nlohmann::json::array()}};  // [layer, neuron, token] each
  std::vector<double> changed_fraction;

  std::vector<TensorData> tensors;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, std::vector<float>& v) {
    tensors.push_back({name, dt, std::move(shape), encode(dt, v)});
  };
  // The final norm weight: near 1, so every norm mode keeps a planted direction on top.
  std::vector<float> gamma(H);
  for (auto& g : gamma) g = 1.f + 0.05f * rng.normal();
  std::vector<float> embed = random_matrix(rng, V * H, 0.05f);
  std::vector<float> head = o.tied ? std::vector<float>() : random_matrix(rng, V * H, 0.05f);
  add("model.embed_tokens.weight", {V, H}, embed);  // rounds embed to the dtype in place
  std::vector<float>& wu = o.tied ? embed : head;
  if (!o.tied) add("lm_head.weight", {V, H}, head);
  add("model.norm.weight", {H}, gamma);

  // A planted vector: the token's LM-head row divided by gamma (so rms/gamma norms give back
  // exactly that row's direction), plus a little noise.
  auto planted = [&](int64_t token, Rng& r) {
    std::vector<float> d(H);
    float n2 = 0;
    for (int64_t h = 0; h < H; ++h) n2 += wu[token * H + h] * wu[token * H + h];
    const float noise = 0.05f * std::sqrt(n2 / H);
    for (int64_t h = 0; h < H; ++h) d[h] = wu[token * H + h] / gamma[h] + noise * r.normal();
    return d;
  };
  auto is_planted = [&](const std::string& matrix, int64_t layer, int64_t neuron) {
    for (const Plant& p : plants)
      if (p.matrix == matrix && p.layer == layer && p.neuron == neuron) return true;
    return false;
  };
  for (int64_t l = 0; l < L; ++l) {
    auto name = [&](const std::string& s) { return "model.layers." + std::to_string(l) + "." + s; };
    std::vector<float> ones(H);
    for (auto& x : ones) x = 1.f + 0.02f * rng.normal();
    add(name("input_layernorm.weight"), {H}, ones);
    auto q = random_matrix(rng, o.heads * hd * H, 0.05f);
    auto k = random_matrix(rng, o.kv_heads * hd * H, 0.05f);
    auto v = random_matrix(rng, o.kv_heads * hd * H, 0.05f);
    auto out = random_matrix(rng, H * o.heads * hd, 0.05f);
    add(name("self_attn.q_proj.weight"), {o.heads * hd, H}, q);
    add(name("self_attn.k_proj.weight"), {o.kv_heads * hd, H}, k);
    add(name("self_attn.v_proj.weight"), {o.kv_heads * hd, H}, v);
    add(name("self_attn.o_proj.weight"), {H, o.heads * hd}, out);
    for (auto& x : ones) x = 1.f + 0.02f * rng.normal();
    add(name("post_attention_layernorm.weight"), {H}, ones);
    auto gate = random_matrix(rng, I * H, 0.05f);
    auto up = random_matrix(rng, I * H, 0.05f);
    auto down = random_matrix(rng, H * I, 0.05f);
    // up, gate: [I, H], a neuron is a row; down: [H, I], a neuron is a column.
    auto put = [&](const std::string& matrix, int64_t neuron, const std::vector<float>& d) {
      if (matrix == "up") std::copy(d.begin(), d.end(), up.begin() + neuron * H);
      if (matrix == "gate") std::copy(d.begin(), d.end(), gate.begin() + neuron * H);
      if (matrix == "down")
        for (int64_t h = 0; h < H; ++h) down[h * I + neuron] = d[h];
    };
    for (const Plant& p : plants)
      if (p.layer == l) put(p.matrix, p.neuron, planted(p.token, rng));
    if (instruct) {
      for (auto* w : {&gate, &up, &down})
        for (float& x : *w) x += float(kTuneNoise * tune.normal());
      // Later layers change more, as in real fine-tunes.
      const double frac = 0.05 + 0.25 * (L > 1 ? double(l) / double(L - 1) : 0.0);
      changed_fraction.push_back(frac);
      for (const char* matrix : {"gate", "up", "down"}) {
        std::vector<int64_t> pool;
        for (int64_t n = 0; n < I; ++n)
          if (!is_planted(matrix, l, n)) pool.push_back(n);
        const int64_t count = std::min<int64_t>(std::llround(frac * double(I)), int64_t(pool.size()));
        for (int64_t i = 0; i < count; ++i) {  // partial Fisher-Yates: a random count-subset
          std::swap(pool[i], pool[i + int64_t(tune.next() % uint64_t(int64_t(pool.size()) - i))]);
          const int64_t token = regular[tune.next() % regular.size()];
          put(matrix, pool[i], planted(token, tune));
          changed[matrix].push_back({l, pool[i], token});
        }
      }
      for (const Plant& p : plants)
        if (p.layer == l && p.word == " dog") put(p.matrix, p.neuron, planted(retarget, tune));
    }
    add(name("mlp.gate_proj.weight"), {I, H}, gate);
    add(name("mlp.up_proj.weight"), {I, H}, up);
    add(name("mlp.down_proj.weight"), {H, I}, down);
  }

  // Shards: consecutive tensors, about equal bytes each, named as Hugging Face names them.
  if (o.shards == 1) {
    write_safetensors(o.out + "/model.safetensors", tensors, {{"format", "pt"}});
  } else {
    size_t total = 0;
    for (auto& t : tensors) total += t.bytes.size();
    nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", nlohmann::json::object()}};
    size_t next = 0, written = 0;
    for (int s = 0; s < o.shards; ++s) {
      char fname[64];
      std::snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", s + 1, o.shards);
      std::vector<TensorData> part;
      size_t bytes = 0, target = total * (s + 1) / o.shards;
      while (next < tensors.size() && (written + bytes < target || part.empty() || s == o.shards - 1)) {
        bytes += tensors[next].bytes.size();
        index["weight_map"][tensors[next].name] = fname;
        part.push_back(std::move(tensors[next++]));
      }
      written += bytes;
      write_safetensors(o.out + "/" + fname, part, {{"format", "pt"}});
    }
    std::ofstream(o.out + "/model.safetensors.index.json") << index.dump(2) << "\n";
  }

  nlohmann::json cfg = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"hidden_size", H},
      {"intermediate_size", I},
      {"num_hidden_layers", L},
      {"num_attention_heads", o.heads},
      {"num_key_value_heads", o.kv_heads},
      {"head_dim", hd},
      {"vocab_size", V},
      {"rms_norm_eps", 1e-5},
      {"rope_theta", 500000.0},
      {"rope_scaling",
       {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
        {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}}},
      {"max_position_embeddings", 131072},
      {"hidden_act", "silu"},
      {"tie_word_embeddings", o.tied},
      {"bos_token_id", 128000},
      {"eos_token_id", 128001},
      {"torch_dtype", dt == DType::F32 ? "float32" : dt == DType::F16 ? "float16" : "bfloat16"},
  };
  std::ofstream(o.out + "/config.json") << cfg.dump(2) << "\n";
  {
    std::ifstream in(tok_path, std::ios::binary);
    std::ofstream out(o.out + "/tokenizer.json", std::ios::binary);
    out << in.rdbuf();
    FI_CHECK(out.good(), o.out + "/tokenizer.json: write failed");
  }
  nlohmann::json pj = {{"planted", nlohmann::json::array()}};
  for (const Plant& p : plants) {
    const bool moved = instruct && p.word == " dog";
    pj["planted"].push_back({{"matrix", p.matrix}, {"layer", p.layer}, {"neuron", p.neuron},
                             {"token", moved ? retarget_word : p.word},
                             {"token_id", moved ? retarget : p.token}});
  }
  pj["seed"] = o.seed;
  if (instruct) {
    pj["variant"] = "instruct";
    pj["finetune"] = {
        {"noise_sd", kTuneNoise},
        {"changed_fraction", changed_fraction},
        {"retargeted", {{"from", " dog"}, {"to", retarget_word}}},
        {"changed", changed},
    };
  }
  std::ofstream(o.out + "/planted.json") << pj.dump(2) << "\n";
}

}  // namespace fi
