// config.json parsing (one crafted file per rule), matrix and tensor names, Model's checks of a
// tiny safetensors checkpoint against its config (tied and untied LM-head, wrong shapes), and the
// forward pass's tensor table and checks over it (model/layer_tensors.h).
#include "model/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "model/layer_tensors.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// One folder per process, removed at exit; one subfolder per test.
struct TempRoot {
  fs::path path = fs::temp_directory_path() / ("fi_test_config_" + std::to_string(::getpid()));
  ~TempRoot() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
} temp_root;

fs::path temp_dir() {
  fs::path d = temp_root.path / ::testing::UnitTest::GetInstance()->current_test_info()->name();
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string write_config(const fs::path& dir, const std::string& text) {
  fs::path p = dir / "config.json";
  std::ofstream(p) << text;
  return p.string();
}

// The message of the fi::Error that f throws ("" and a test failure when it throws none).
template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const fi::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error thrown";
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// A tiny Llama config: H=8, I=12, L=2, heads=2, V=16.
json tiny() {
  return json::parse(R"({"model_type": "llama", "hidden_size": 8, "intermediate_size": 12,
    "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": 16, "rms_norm_eps": 1e-5})");
}

// Meta-Llama-3.1-8B's config.json as published.
const char* kLlama31_8B = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 4096,
  "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 131072,
  "mlp_bias": false, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
  "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "transformers_version": "4.43.0.dev0", "use_cache": true, "vocab_size": 128256
})";

}  // namespace

TEST(Config, Llama31_8B) {
  std::string p = write_config(temp_dir(), kLlama31_8B);
  fi::ModelConfig c = fi::load_config(p);
  EXPECT_EQ(c.path, p);
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.num_layers, 32);
  EXPECT_EQ(c.num_heads, 32);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000);
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8);
  EXPECT_DOUBLE_EQ(c.rope_scaling.low_freq_factor, 1);
  EXPECT_DOUBLE_EQ(c.rope_scaling.high_freq_factor, 4);
  EXPECT_DOUBLE_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.norm_plus_one);
  EXPECT_EQ(c.hidden_act, "silu");
}

TEST(Config, Defaults) {
  fi::ModelConfig c = fi::load_config(write_config(temp_dir(), tiny().dump()));
  EXPECT_EQ(c.num_kv_heads, 2);  // = num_attention_heads
  EXPECT_EQ(c.head_dim, 4);      // = hidden / heads
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000);
  EXPECT_EQ(c.rope_scaling.type, "");
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.norm_plus_one);
  EXPECT_EQ(c.hidden_act, "silu");
  // null means absent for optional fields
  json j = tiny();
  j["rope_scaling"] = nullptr;
  j["num_key_value_heads"] = nullptr;
  j["head_dim"] = nullptr;
  c = fi::load_config(write_config(temp_dir(), j.dump()));
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 4);
  EXPECT_EQ(c.rope_scaling.type, "");
}

TEST(Config, ExplicitHeadDimAndActivation) {
  json j = tiny();
  j["num_attention_heads"] = 3;  // does not divide 8, fine when head_dim is given
  j["head_dim"] = 16;
  j["num_key_value_heads"] = 1;
  j["hidden_act"] = "gelu";
  j["model_type"] = "qwen2";
  j["tie_word_embeddings"] = true;
  fi::ModelConfig c = fi::load_config(write_config(temp_dir(), j.dump()));
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.num_kv_heads, 1);
  EXPECT_EQ(c.hidden_act, "gelu");
  EXPECT_EQ(c.model_type, "qwen2");
  EXPECT_TRUE(c.tie_word_embeddings);
  j.erase("hidden_act");
  j["hidden_activation"] = "relu";
  EXPECT_EQ(fi::load_config(write_config(temp_dir(), j.dump())).hidden_act, "relu");
}

TEST(Config, Gemma) {
  json j = tiny();
  j["model_type"] = "gemma";
  j["hidden_act"] = "gelu";  // Gemma's code ignores this in favour of hidden_activation
  fi::ModelConfig c = fi::load_config(write_config(temp_dir(), j.dump()));
  EXPECT_TRUE(c.norm_plus_one);
  EXPECT_TRUE(c.tie_word_embeddings);  // Gemma's default
  EXPECT_EQ(c.hidden_act, "gelu_pytorch_tanh");
  j["hidden_activation"] = "gelu_pytorch_tanh";
  j["tie_word_embeddings"] = false;
  c = fi::load_config(write_config(temp_dir(), j.dump()));
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_TRUE(c.norm_plus_one);
  j["model_type"] = "gemma2";
  EXPECT_TRUE(fi::load_config(write_config(temp_dir(), j.dump())).norm_plus_one);
  j["model_type"] = "mistral";
  c = fi::load_config(write_config(temp_dir(), j.dump()));
  EXPECT_FALSE(c.norm_plus_one);
  EXPECT_EQ(c.hidden_act, "gelu");
}

TEST(Config, RopeScaling) {
  json j = tiny();
  j["rope_scaling"] = {{"type", "llama3"}, {"factor", 32}, {"low_freq_factor", 1},
                       {"high_freq_factor", 4}, {"original_max_position_embeddings", 8192}};
  fi::ModelConfig c = fi::load_config(write_config(temp_dir(), j.dump()));
  EXPECT_EQ(c.rope_scaling.type, "llama3");  // the older "type" spelling
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 32);
  EXPECT_EQ(c.forward_problem, "");

  j["rope_scaling"] = {{"rope_type", "default"}};
  EXPECT_EQ(fi::load_config(write_config(temp_dir(), j.dump())).rope_scaling.type, "");

  // Every type is read; a fault in one is the forward pass's problem, never load_config's.
  std::string p = write_config(temp_dir(), "");
  auto load = [&](const json& rs) {
    j["rope_scaling"] = rs;
    write_config(fs::path(p).parent_path(), j.dump());
    return fi::load_config(p);
  };
  c = load({{"rope_type", "yarn"}, {"factor", 4}, {"original_max_position_embeddings", 32768}});
  EXPECT_EQ(c.rope_scaling.type, "yarn");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 4);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_fast, 32);
  EXPECT_DOUBLE_EQ(c.rope_scaling.original_max_position_embeddings, 32768);
  EXPECT_EQ(c.forward_problem, "");
  c = load({{"type", "yarn"}, {"factor", 40}, {"beta_fast", 32}, {"beta_slow", 1}, {"mscale", 1},
            {"mscale_all_dim", 1}, {"original_max_position_embeddings", 4096}});  // DeepSeek-V3's
  EXPECT_DOUBLE_EQ(c.rope_scaling.mscale_all_dim, 1);
  c = load({{"type", "linear"}, {"factor", 2}});
  EXPECT_EQ(c.rope_scaling.type, "linear");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 2);
  c = load({{"type", "dynamic"}, {"factor", 2}});
  EXPECT_EQ(c.rope_scaling.type, "dynamic");
  // longrope needs head_dim/2 (= 2 here) factors each and the original length.
  j["original_max_position_embeddings"] = 4096;
  c = load({{"type", "longrope"}, {"short_factor", {1.0, 1.5}}, {"long_factor", {2.0, 3.0}}});
  EXPECT_EQ(c.rope_scaling.type, "longrope");
  EXPECT_EQ(c.rope_scaling.long_factor, (std::vector<double>{2.0, 3.0}));
  EXPECT_DOUBLE_EQ(c.rope_scaling.original_max_position_embeddings, 4096);
  EXPECT_EQ(c.forward_problem, "");
  c = load({{"type", "su"}, {"short_factor", {1.0}}, {"long_factor", {2.0, 3.0}}});
  EXPECT_EQ(c.rope_scaling.type, "longrope");
  EXPECT_TRUE(contains(c.forward_problem, "short_factor' and long_factor must have head_dim/2 (2)")) << c.forward_problem;
  j.erase("original_max_position_embeddings");

  c = load({{"rope_type", "llama3"}, {"low_freq_factor", 1}, {"high_freq_factor", 4},
            {"original_max_position_embeddings", 8192}});
  EXPECT_EQ(c.forward_problem, p + ": field 'rope_scaling.factor' is missing (rope type llama3)");
  c = load({{"rope_type", "llama3"}, {"factor", 8}, {"low_freq_factor", 4}, {"high_freq_factor", 4},
            {"original_max_position_embeddings", 8192}});  // would divide by zero
  EXPECT_TRUE(contains(c.forward_problem, "field 'rope_scaling.high_freq_factor'")) << c.forward_problem;
  c = load({{"factor", 8}});
  EXPECT_EQ(c.forward_problem, p + ": field 'rope_scaling.type' is missing");
  c = load({{"rope_type", "ntk-by-parts"}, {"factor", 8}});
  EXPECT_TRUE(contains(c.forward_problem, "field 'rope_scaling.rope_type' is 'ntk-by-parts'")) << c.forward_problem;
  c = load("llama3");
  EXPECT_TRUE(contains(c.forward_problem, "field 'rope_scaling' must be an object")) << c.forward_problem;
  // The forward pass refuses with that reason; the decode's fields are all there.
  EXPECT_EQ(fi::forward_refusal(c), c.forward_problem);
  EXPECT_EQ(c.hidden_size, 8);
}

// transformers v5 writes rope_parameters (with rope_theta inside) and dtype.
TEST(Config, TransformersV5) {
  json j = tiny();
  j["rope_parameters"] = {{"rope_type", "llama3"}, {"rope_theta", 500000.0}, {"factor", 8.0},
                          {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                          {"original_max_position_embeddings", 8192}};
  j["dtype"] = "bfloat16";
  fi::ModelConfig c = fi::load_config(write_config(temp_dir(), j.dump()));
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000);
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8);
  EXPECT_EQ(c.dtype, "bfloat16");
  EXPECT_EQ(c.forward_problem, "");
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1000000.0}};
  j.erase("dtype");
  j["torch_dtype"] = "float16";
  c = fi::load_config(write_config(temp_dir(), j.dump()));
  EXPECT_DOUBLE_EQ(c.rope_theta, 1000000);
  EXPECT_EQ(c.rope_scaling.type, "");
  EXPECT_EQ(c.dtype, "float16");
}

// google/gemma-3-4b-it's config.json as published (text_config gives only a few fields; the rest
// are Gemma3TextConfig's defaults), and the same model saved by transformers v5.
TEST(Config, Gemma3Nested) {
  const char* kGemma3_4B = R"({
    "architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999,
    "eoi_token_index": 256000, "eos_token_id": [1, 106], "image_token_index": 262144,
    "initializer_range": 0.02, "mm_tokens_per_image": 256, "model_type": "gemma3",
    "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
      "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
      "sliding_window": 1024},
    "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0",
    "vision_config": {"hidden_size": 1152, "image_size": 896, "intermediate_size": 4304,
      "model_type": "siglip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 27,
      "patch_size": 14, "vision_use_head": false}})";
  const std::string p = write_config(temp_dir(), kGemma3_4B);
  fi::ModelConfig c = fi::load_config(p);
  EXPECT_EQ(c.model_type, "gemma3");
  EXPECT_EQ(c.hidden_size, 2560);
  EXPECT_EQ(c.intermediate_size, 10240);
  EXPECT_EQ(c.num_layers, 34);
  EXPECT_EQ(c.num_heads, 8);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 256);
  EXPECT_EQ(c.vocab_size, 262208);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  EXPECT_DOUBLE_EQ(c.rope_local_theta, 1e4);
  EXPECT_EQ(c.rope_scaling.type, "linear");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8);
  EXPECT_DOUBLE_EQ(c.query_pre_attn_scalar, 256);
  EXPECT_DOUBLE_EQ(c.final_logit_softcapping, 0);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_TRUE(c.norm_plus_one);
  EXPECT_EQ(c.hidden_act, "gelu_pytorch_tanh");
  EXPECT_EQ(c.dtype, "bfloat16");
  EXPECT_EQ(c.sliding_window, 1024);
  ASSERT_EQ(c.sliding_layers.size(), 34u);
  for (int i = 0; i < 34; ++i) EXPECT_EQ(c.sliding_layers[size_t(i)], (i + 1) % 6 != 0) << i;

  json v5 = json::parse(kGemma3_4B);
  v5["text_config"].erase("rope_scaling");
  v5["text_config"]["rope_parameters"] = {
      {"full_attention", {{"rope_type", "linear"}, {"factor", 8.0}, {"rope_theta", 1000000.0}}},
      {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 10000.0}}}};
  json types = json::array();
  for (int i = 0; i < 34; ++i) types.push_back((i + 1) % 6 ? "sliding_attention" : "full_attention");
  v5["text_config"]["layer_types"] = types;
  c = fi::load_config(write_config(temp_dir(), v5.dump()));
  EXPECT_EQ(c.rope_scaling.type, "linear");
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  EXPECT_DOUBLE_EQ(c.rope_local_theta, 1e4);
  for (int i = 0; i < 34; ++i) EXPECT_EQ(c.sliding_layers[size_t(i)], (i + 1) % 6 != 0) << i;
  EXPECT_EQ(c.forward_problem, "");

  json bad = json::parse(kGemma3_4B);
  bad["text_config"]["hidden_size"] = -1;
  const std::string bp = write_config(temp_dir(), bad.dump());
  EXPECT_EQ(error_of([&] { fi::load_config(bp); }), bp + ": field 'text_config.hidden_size' must be positive, got -1");
  bad.erase("text_config");
  write_config(fs::path(bp).parent_path(), bad.dump());
  EXPECT_TRUE(contains(error_of([&] { fi::load_config(bp); }), "field 'text_config' is missing"));
}

// Gemma 2's soft-caps and alternating sliding layers; Mistral's and Qwen's windows.
TEST(Config, SoftCapsAndWindows) {
  json j = tiny();
  j["model_type"] = "gemma2";
  j["num_hidden_layers"] = 4;
  fi::ModelConfig c = fi::load_config(write_config(temp_dir(), j.dump()));
  EXPECT_DOUBLE_EQ(c.final_logit_softcapping, 30);  // Gemma2Config's defaults
  EXPECT_DOUBLE_EQ(c.attn_logit_softcapping, 50);
  EXPECT_EQ(c.sliding_window, 4096);
  EXPECT_EQ(c.sliding_layers, (std::vector<uint8_t>{1, 0, 1, 0}));
  j["final_logit_softcapping"] = nullptr;
  j["sliding_window"] = 8;
  c = fi::load_config(write_config(temp_dir(), j.dump()));
  EXPECT_DOUBLE_EQ(c.final_logit_softcapping, 0);
  EXPECT_EQ(c.sliding_window, 8);

  j = tiny();
  j["model_type"] = "mistral";
  j["sliding_window"] = 4096;
  c = fi::load_config(write_config(temp_dir(), j.dump()));
  EXPECT_EQ(c.sliding_layers, (std::vector<uint8_t>{1, 1}));
  j["sliding_window"] = nullptr;  // Mistral 7B v0.2 and later
  c = fi::load_config(write_config(temp_dir(), j.dump()));
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_EQ(c.sliding_layers, (std::vector<uint8_t>{0, 0}));
  EXPECT_DOUBLE_EQ(c.final_logit_softcapping, 0);  // only Gemma 2/3 have soft-caps

  j = tiny();
  j["model_type"] = "qwen2";
  j["sliding_window"] = 131072;  // present in Qwen configs, off unless use_sliding_window
  j["use_sliding_window"] = false;
  j["max_window_layers"] = 1;
  c = fi::load_config(write_config(temp_dir(), j.dump()));
  EXPECT_EQ(c.sliding_window, 0);
  j["use_sliding_window"] = true;
  c = fi::load_config(write_config(temp_dir(), j.dump()));
  EXPECT_EQ(c.sliding_layers, (std::vector<uint8_t>{0, 1}));
  EXPECT_EQ(c.sliding_window, 131072);
}

TEST(Config, MissingRequiredField) {
  for (const char* field : {"model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
                            "num_attention_heads", "vocab_size", "rms_norm_eps"}) {
    json j = tiny();
    j.erase(field);
    std::string p = write_config(temp_dir(), j.dump());
    EXPECT_EQ(error_of([&] { fi::load_config(p); }), p + ": field '" + field + "' is missing");
    j[field] = nullptr;  // null is as good as missing
    write_config(fs::path(p).parent_path(), j.dump());
    EXPECT_EQ(error_of([&] { fi::load_config(p); }), p + ": field '" + field + "' is missing");
  }
}

TEST(Config, WrongType) {
  struct Case { const char* field; json value; const char* says; };
  std::vector<Case> cases = {
      {"hidden_size", "4096", "must be an integer, got string"},
      {"hidden_size", 64.5, "must be an integer, got number"},
      {"num_hidden_layers", true, "must be an integer, got boolean"},
      {"vocab_size", json::array({16}), "must be an integer, got array"},
      {"num_key_value_heads", "2", "must be an integer"},
      {"head_dim", 4.0, "must be an integer"},
      {"rms_norm_eps", "1e-5", "must be a number, got string"},
      {"rope_theta", "5e5", "must be a number"},
      {"tie_word_embeddings", "true", "must be a boolean, got string"},
      {"model_type", 1, "must be a string, got number"},
      {"hidden_act", 1, "must be a string"},
  };
  for (const auto& c : cases) {
    json j = tiny();
    j[c.field] = c.value;
    std::string p = write_config(temp_dir(), j.dump());
    std::string e = error_of([&] { fi::load_config(p); });
    EXPECT_TRUE(contains(e, p + ": field '" + c.field + "' " + c.says)) << e;
  }
}

TEST(Config, NonPositive) {
  for (const char* field : {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                            "num_key_value_heads", "head_dim", "vocab_size"}) {
    for (int v : {0, -1}) {
      json j = tiny();
      j[field] = v;
      std::string p = write_config(temp_dir(), j.dump());
      EXPECT_EQ(error_of([&] { fi::load_config(p); }),
                p + ": field '" + field + "' must be positive, got " + std::to_string(v));
    }
  }
  json j = tiny();
  j["rms_norm_eps"] = 0;
  std::string p = write_config(temp_dir(), j.dump());
  EXPECT_EQ(error_of([&] { fi::load_config(p); }), p + ": field 'rms_norm_eps' must be positive");
}

TEST(Config, Divisibility) {
  json j = tiny();
  j["num_attention_heads"] = 3;  // 8 % 3 != 0 and no head_dim
  std::string p = write_config(temp_dir(), j.dump());
  std::string e = error_of([&] { fi::load_config(p); });
  EXPECT_TRUE(contains(e, p + ": field 'num_attention_heads' (3) does not divide hidden_size (8)")) << e;

  j = tiny();
  j["num_attention_heads"] = 4;
  j["num_key_value_heads"] = 3;
  write_config(fs::path(p).parent_path(), j.dump());
  e = error_of([&] { fi::load_config(p); });
  EXPECT_TRUE(contains(e, p + ": field 'num_key_value_heads' (3) does not divide num_attention_heads (4)")) << e;
}

TEST(Config, BadFile) {
  fs::path d = temp_dir();
  json j = tiny();
  j["model_type"] = "gpt2";
  std::string p = write_config(d, j.dump());
  std::string e = error_of([&] { fi::load_config(p); });
  EXPECT_TRUE(contains(e, p + ": model_type 'gpt2' is not supported")) << e;

  write_config(d, "{\"model_type\": \"llama\",");
  e = error_of([&] { fi::load_config(p); });
  EXPECT_TRUE(contains(e, p + ": invalid JSON")) << e;

  write_config(d, "[1, 2]");
  EXPECT_TRUE(contains(error_of([&] { fi::load_config(p); }), p + ": expected a JSON object"));

  std::string missing = (d / "nope" / "config.json").string();
  EXPECT_EQ(error_of([&] { fi::load_config(missing); }), missing + ": cannot open");
}

TEST(Matrix, Names) {
  for (fi::Matrix m : {fi::Matrix::Up, fi::Matrix::Gate, fi::Matrix::Down})
    EXPECT_EQ(fi::parse_matrix(fi::matrix_name(m)), m);
  EXPECT_STREQ(fi::matrix_name(fi::Matrix::Up), "up");
  EXPECT_STREQ(fi::matrix_name(fi::Matrix::Gate), "gate");
  EXPECT_STREQ(fi::matrix_name(fi::Matrix::Down), "down");
  std::string e = error_of([] { fi::parse_matrix("mlp"); });
  EXPECT_TRUE(contains(e, "'mlp'")) << e;
  EXPECT_TRUE(contains(e, "up, gate, down")) << e;
  EXPECT_TRUE(contains(error_of([] { fi::parse_matrix("Up"); }), "'Up'"));
}

TEST(TensorNames, Spelling) {
  fi::TensorNames n;
  EXPECT_EQ(n.matrix_pattern(fi::Matrix::Up), "model.layers.{}.mlp.up_proj.weight");
  EXPECT_EQ(n.matrix_pattern(fi::Matrix::Gate), "model.layers.{}.mlp.gate_proj.weight");
  EXPECT_EQ(n.matrix_pattern(fi::Matrix::Down), "model.layers.{}.mlp.down_proj.weight");
  EXPECT_EQ(n.matrix(fi::Matrix::Up, 0), "model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(n.matrix(fi::Matrix::Down, 125), "model.layers.125.mlp.down_proj.weight");
  EXPECT_EQ(n.layer(3, "input_layernorm.weight"), "model.layers.3.input_layernorm.weight");
  EXPECT_EQ(n.embed, "model.embed_tokens.weight");
  EXPECT_EQ(n.final_norm, "model.norm.weight");
  EXPECT_EQ(n.lm_head, "lm_head.weight");
}

// ---- Model over a tiny checkpoint ----------------------------------------------------------

namespace {

fi::TensorData zeros(const std::string& name, std::vector<int64_t> shape) {
  size_t n = 1;
  for (int64_t d : shape) n *= size_t(d);
  return {name, fi::DType::BF16, shape, std::vector<uint8_t>(n * 2, 0)};
}

// The tensors of the tiny config (H=8, I=12, L=2, V=16); tied leaves out lm_head.weight.
std::vector<fi::TensorData> tiny_tensors(bool tied) {
  std::vector<fi::TensorData> t = {zeros("model.embed_tokens.weight", {16, 8}), zeros("model.norm.weight", {8})};
  if (!tied) t.push_back(zeros("lm_head.weight", {16, 8}));
  for (int l = 0; l < 2; ++l) {
    std::string pre = "model.layers." + std::to_string(l) + ".";
    t.push_back(zeros(pre + "input_layernorm.weight", {8}));
    t.push_back(zeros(pre + "mlp.up_proj.weight", {12, 8}));
    t.push_back(zeros(pre + "mlp.gate_proj.weight", {12, 8}));
    t.push_back(zeros(pre + "mlp.down_proj.weight", {8, 12}));
  }
  return t;
}

std::string make_model(bool tied, const std::vector<fi::TensorData>& tensors) {
  fs::path d = temp_dir();
  json j = tiny();
  j["tie_word_embeddings"] = tied;
  write_config(d, j.dump());
  fi::write_safetensors((d / "model.safetensors").string(), tensors);
  return d.string();
}

void replace(std::vector<fi::TensorData>& t, const std::string& name, std::vector<int64_t> shape) {
  for (auto& x : t)
    if (x.name == name) x = zeros(name, shape);
}

void drop(std::vector<fi::TensorData>& t, const std::string& name) {
  std::erase_if(t, [&](const fi::TensorData& x) { return x.name == name; });
}

}  // namespace

TEST(Model, Untied) {
  std::string d = make_model(false, tiny_tensors(false));
  fi::Model m(d);
  EXPECT_EQ(m.dir, d);
  EXPECT_EQ(m.cfg.hidden_size, 8);
  EXPECT_EQ(m.neurons(), 12);
  EXPECT_EQ(m.lm_head_name(), "lm_head.weight");
  const fi::TensorInfo& t = m.expect("model.layers.1.mlp.down_proj.weight", {8, 12}, "hidden_size,intermediate_size");
  EXPECT_EQ(t.name, "model.layers.1.mlp.down_proj.weight");
  EXPECT_EQ(t.dtype, fi::DType::BF16);
}

TEST(Model, Tied) {
  std::string d = make_model(true, tiny_tensors(true));
  fi::Model m(d);
  EXPECT_TRUE(m.cfg.tie_word_embeddings);
  EXPECT_EQ(m.lm_head_name(), "model.embed_tokens.weight");

  // Tied config but only lm_head.weight in the file: the embedding is what it needs.
  auto t = tiny_tensors(false);
  drop(t, "model.embed_tokens.weight");
  d = make_model(true, t);
  EXPECT_EQ(error_of([&] { fi::Model{d}; }), d + ": missing tensor 'model.embed_tokens.weight'");
}

TEST(Model, WrongLmHeadShape) {
  auto t = tiny_tensors(false);
  replace(t, "lm_head.weight", {10, 8});
  std::string d = make_model(false, t);
  EXPECT_EQ(error_of([&] { fi::Model{d}; }),
            (fs::path(d) / "model.safetensors").string() +
                ": tensor 'lm_head.weight' has shape [10,8] but config.json says vocab_size=16, hidden_size=8");

  t = tiny_tensors(true);
  replace(t, "model.embed_tokens.weight", {16, 9});
  d = make_model(true, t);
  EXPECT_EQ(error_of([&] { fi::Model{d}; }),
            (fs::path(d) / "model.safetensors").string() + ": tensor 'model.embed_tokens.weight' has shape "
                "[16,9] but config.json says vocab_size=16, hidden_size=8");
}

TEST(Model, WrongLayerShapes) {
  auto t = tiny_tensors(false);
  replace(t, "model.layers.1.mlp.down_proj.weight", {12, 8});  // transposed
  std::string d = make_model(false, t);
  std::string e = error_of([&] { fi::Model{d}; });
  EXPECT_TRUE(contains(e, "model.safetensors: tensor 'model.layers.1.mlp.down_proj.weight' has shape "
                          "[12,8] but config.json says hidden_size=8, intermediate_size=12")) << e;

  t = tiny_tensors(false);
  replace(t, "model.layers.0.mlp.gate_proj.weight", {12, 8, 1});
  d = make_model(false, t);
  e = error_of([&] { fi::Model{d}; });
  EXPECT_TRUE(contains(e, "'model.layers.0.mlp.gate_proj.weight' has shape [12,8,1] but config.json says "
                          "intermediate_size=12, hidden_size=8")) << e;

  t = tiny_tensors(false);
  replace(t, "model.norm.weight", {9});
  d = make_model(false, t);
  e = error_of([&] { fi::Model{d}; });
  EXPECT_TRUE(contains(e, "'model.norm.weight' has shape [9] but config.json says hidden_size=8")) << e;
}

TEST(Model, MissingTensors) {
  auto t = tiny_tensors(false);
  drop(t, "model.layers.1.mlp.up_proj.weight");
  std::string d = make_model(false, t);
  EXPECT_EQ(error_of([&] { fi::Model{d}; }), d + ": missing tensor 'model.layers.1.mlp.up_proj.weight'");

  t = tiny_tensors(false);
  drop(t, "lm_head.weight");
  d = make_model(false, t);
  EXPECT_EQ(error_of([&] { fi::Model{d}; }), d + ": missing tensor 'lm_head.weight'");

  t = tiny_tensors(false);
  drop(t, "model.norm.weight");
  d = make_model(false, t);
  EXPECT_EQ(error_of([&] { fi::Model{d}; }), d + ": missing tensor 'model.norm.weight'");

  // A config fault comes before the checkpoint is looked at.
  d = temp_dir().string();
  EXPECT_EQ(error_of([&] { fi::Model{d}; }), d + "/config.json: cannot open");
}

// ---- The forward pass's tensor table (model/layer_tensors.h) --------------------------------

namespace {

// tiny_tensors plus what the forward pass loads besides (heads 2 of head_dim 4: q, k, v, o [8, 8],
// post_attention_layernorm), and Qwen2's q/k/v biases [8] with bias.
std::vector<fi::TensorData> forward_tensors(bool bias) {
  std::vector<fi::TensorData> t = tiny_tensors(false);
  for (int l = 0; l < 2; ++l) {
    std::string pre = "model.layers." + std::to_string(l) + ".";
    for (const char* p : {"q", "k", "v", "o"}) t.push_back(zeros(pre + "self_attn." + p + "_proj.weight", {8, 8}));
    if (bias)
      for (const char* p : {"q", "k", "v"}) t.push_back(zeros(pre + "self_attn." + p + "_proj.bias", {8}));
    t.push_back(zeros(pre + "post_attention_layernorm.weight", {8}));
  }
  return t;
}

std::vector<std::string> names_of(const std::vector<fi::ModelTensor>& t) {
  std::vector<std::string> n;
  for (const fi::ModelTensor& x : t) n.push_back(x.name);
  return n;
}

}  // namespace

TEST(LayerTensors, LlamaLayerInTableOrder) {
  fi::Model m(make_model(false, forward_tensors(false)));
  const fi::LayerTensors t = fi::layer_tensors(m, 1);
  const std::string p = "model.layers.1.";
  EXPECT_EQ(names_of(t.tensors),
            (std::vector<std::string>{p + "input_layernorm.weight", p + "self_attn.q_proj.weight",
                                      p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight",
                                      p + "self_attn.o_proj.weight", p + "post_attention_layernorm.weight",
                                      p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight",
                                      p + "mlp.down_proj.weight"}));
  EXPECT_EQ(t[fi::Role::O].shape, (std::vector<int64_t>{8, 8}));
  EXPECT_EQ(t[fi::Role::O].fields, "hidden_size,num_heads*head_dim");
  EXPECT_EQ(t[fi::Role::K].fields, "num_kv_heads*head_dim,hidden_size");
  EXPECT_EQ(t[fi::Role::Down].fields, "hidden_size,intermediate_size");
  EXPECT_EQ(t[fi::Role::Up].bytes(), 12u * 8 * 2);
  EXPECT_EQ(t.find(fi::Role::QBias), nullptr);
  EXPECT_TRUE(contains(error_of([&] { t[fi::Role::QBias]; }), "layer 1 has no q_bias tensor"));
  EXPECT_EQ(fi::model_tensor(m, fi::Role::LmHead).name, "lm_head.weight");
  EXPECT_EQ(fi::model_tensor(m, fi::Role::Embed).fields, "vocab_size,hidden_size");
  EXPECT_EQ(names_of(fi::layer_tensors_present(m, 0)), names_of(fi::layer_tensors(m, 0).tensors));
}

TEST(LayerTensors, Qwen2BiasesComeTogether) {
  fi::Model m(make_model(false, forward_tensors(true)));
  const fi::LayerTensors t = fi::layer_tensors(m, 0);
  EXPECT_EQ(t.tensors.size(), 12u);
  EXPECT_EQ(t[fi::Role::VBias].name, "model.layers.0.self_attn.v_proj.bias");
  EXPECT_EQ(t[fi::Role::VBias].fields, "num_kv_heads*head_dim");

  auto tensors = forward_tensors(true);
  drop(tensors, "model.layers.1.self_attn.k_proj.bias");  // q_proj.bias there: k's is required
  std::string d = make_model(false, tensors);
  fi::Model m2(d);
  EXPECT_EQ(fi::layer_tensors(m2, 0).tensors.size(), 12u);
  EXPECT_EQ(error_of([&] { fi::layer_tensors(m2, 1); }),
            d + ": missing tensor 'model.layers.1.self_attn.k_proj.bias'");
}

TEST(LayerTensors, WrongShapeNamesTheFields) {
  auto tensors = forward_tensors(false);
  replace(tensors, "model.layers.0.self_attn.q_proj.weight", {8, 9});
  fi::Model m(make_model(false, tensors));
  std::string e = error_of([&] { fi::layer_tensors(m, 0); });
  EXPECT_TRUE(contains(e, "tensor 'model.layers.0.self_attn.q_proj.weight' has shape [8,9] but config.json "
                          "says num_heads*head_dim=8, hidden_size=8")) << e;
}

TEST(LayerTensors, ForwardChecks) {
  EXPECT_EQ(fi::family_names(), "llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3_text, gemma3, olmo2, phi3, mixtral, qwen2_moe, qwen3_moe, deepseek_v3");
  json j = tiny();
  std::string p = write_config(temp_dir(), j.dump());
  fi::ModelConfig c = fi::load_config(p);
  EXPECT_EQ(fi::forward_refusal(c), "");
  fi::check_forward_supported(c);
  fi::check_layer_span(c, 0, 2);
  fi::check_token_ids(c, {0, 15});
  EXPECT_EQ(error_of([&] { fi::check_layer_span(c, 1, 3); }),
            "forward: layer span [1, 3) is outside the model's 2 layers");
  EXPECT_EQ(error_of([&] { fi::check_token_ids(c, {3, 16, -1}); }),
            "token id 16 is outside the vocabulary (0..15)");
  j["partial_rotary_factor"] = 0.5;  // Phi-4-mini's: a detail the forward pass refuses by name
  p = write_config(temp_dir(), j.dump());
  EXPECT_EQ(error_of([&] { fi::check_forward_supported(fi::load_config(p)); }),
            p + ": field 'partial_rotary_factor' is not 1; the forward pass rotates whole heads only");
  j.erase("partial_rotary_factor");
  j["model_type"] = "qwen2";
  j["head_dim"] = 3;
  p = write_config(temp_dir(), j.dump());
  EXPECT_EQ(error_of([&] { fi::check_forward_supported(fi::load_config(p)); }),
            p + ": head_dim must be even for rotary embeddings");
}

// Which layers are MoE layers, by each family's rule (transformers' modelling code): Qwen's
// decoder_sparse_step and mlp_only_layers, DeepSeek's first_k_dense_replace and moe_layer_freq;
// and the MoE fields' errors.
TEST(Config, MixtureOfExperts) {
  auto layers = [](const fi::ModelConfig& c) {
    std::string s;
    for (uint8_t x : c.moe.layers) s += x ? 'M' : 'd';
    return s;
  };
  json q = tiny();
  q["model_type"] = "qwen2_moe";
  q["num_hidden_layers"] = 6;
  q["num_experts"] = 4;
  q["num_experts_per_tok"] = 2;
  q["moe_intermediate_size"] = 5;
  q["shared_expert_intermediate_size"] = 7;
  q["decoder_sparse_step"] = 2;
  q["mlp_only_layers"] = {3};
  fi::ModelConfig c = fi::load_config(write_config(temp_dir(), q.dump()));
  EXPECT_EQ(layers(c), "dMdddM");  // (l + 1) % 2 == 0, not layer 3
  EXPECT_EQ(c.moe.expert_size, 5);
  EXPECT_EQ(c.moe.shared_size, 7);
  EXPECT_EQ(c.intermediate_size, 12);  // the dense layers' width
  EXPECT_TRUE(fi::forward_refusal(c).empty());  // the CPU forward routes experts

  json d = tiny();
  d["model_type"] = "deepseek_v3";
  d["num_hidden_layers"] = 6;
  d["n_routed_experts"] = 8;
  d["num_experts_per_tok"] = 2;
  d["moe_intermediate_size"] = 3;
  d["n_shared_experts"] = 2;
  d["first_k_dense_replace"] = 1;
  d["moe_layer_freq"] = 2;
  d["q_lora_rank"] = nullptr;
  d["kv_lora_rank"] = 4;
  d["qk_nope_head_dim"] = 2;
  d["qk_rope_head_dim"] = 2;
  d["v_head_dim"] = 2;
  c = fi::load_config(write_config(temp_dir(), d.dump()));
  EXPECT_EQ(layers(c), "ddMdMd");  // l >= 1 and l % 2 == 0
  EXPECT_EQ(c.moe.shared_size, 6);
  EXPECT_EQ(c.mla.q_lora_rank, 0);
  EXPECT_EQ(c.head_dim, 2);  // qk_rope_head_dim, as transformers

  json m = tiny();
  m["model_type"] = "mixtral";
  m["num_local_experts"] = 4;
  m["num_experts_per_tok"] = 5;
  std::string p = write_config(temp_dir(), m.dump());
  EXPECT_TRUE(contains(error_of([&] { fi::load_config(p); }), "field 'num_experts_per_tok' (5) exceeds the 4 experts"));
  m["num_experts_per_tok"] = 2;
  c = fi::load_config(write_config(temp_dir(), m.dump()));
  EXPECT_EQ(layers(c), "MM");
  EXPECT_EQ(c.moe.expert_size, 12);
  q["mlp_only_layers"] = {6};
  p = write_config(temp_dir(), q.dump());
  EXPECT_TRUE(contains(error_of([&] { fi::load_config(p); }), "field 'mlp_only_layers' must list layer ids 0..5"));
}
