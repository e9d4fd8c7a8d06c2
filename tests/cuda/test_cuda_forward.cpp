// The CUDA forward stage (src/forward/cuda/) against the CPU stage on small random checkpoints
// written here: bf16, f16 and f32 weights; GQA, MHA and one kv head; Qwen2 biases; llama3
// rope_scaling; Gemma (1 + gamma norms, scaled embedding, tanh-GELU, tied LM-head); erf-GELU;
// clamps at both sites. Logits within 1e-3 relative for prompts of 1, 7, 40 and 300 tokens
// (300: more rows than one GEMM piece, more keys than one attention tile) and 5 steps through
// the KV cache after each; a model split into two CUDA stages equals the one-stage model.
// Without a device those tests print "SKIPPED (no CUDA device)"; the attention kernel's source
// still runs on CPU threads (attention_emulated.cpp), and the test checkpoints are checked to
// load and run on the CPU stage.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "attention_emulated.h"
#include "common/half.h"
#include "cuda_test_util.h"
#include "forward/stage.h"
#include "io/safetensors.h"
#include "model/config.h"

namespace fs = std::filesystem;

namespace {

using fi::DType;

struct Spec {
  std::string label;
  DType dtype = DType::BF16;
  std::string model_type = "llama";
  std::string act;  // config's hidden_act ("" = the model type's default)
  int64_t L = 3, H = 64, I = 160, nh = 4, nkv = 2, hd = 16, V = 211;
  bool bias = false, llama3 = false, tied = false;
};

std::vector<Spec> specs() {
  std::vector<Spec> s(4);
  s[0].label = "bf16 llama, GQA 4/2, llama3 rope";
  s[0].llama3 = true;
  s[1].label = "f16 qwen2, biases, one kv head, tied";
  s[1].dtype = DType::F16;
  s[1].model_type = "qwen2";
  s[1].bias = s[1].tied = true;
  s[1].nkv = 1;
  s[2].label = "f32 llama, MHA, erf-GELU";
  s[2].dtype = DType::F32;
  s[2].act = "gelu";
  s[2].nkv = 4;
  s[3].label = "bf16 gemma, head_dim 160, tied";
  s[3].model_type = "gemma";
  s[3].tied = true;
  s[3].nh = 2;
  s[3].nkv = 1;
  s[3].hd = 160;  // > 128: two output dims per attention thread
  return s;
}

// A checkpoint of spec s with random weights (rounded to its dtype) in a fresh directory.
class TestModel {
 public:
  TestModel(const Spec& s, uint64_t seed) {
    dir_ = fs::temp_directory_path() /
           ("fi_test_cuda_forward_" + std::to_string(::getpid()) + "_" + std::to_string(seed));
    fs::create_directories(dir_);
    std::mt19937_64 rng(seed);
    std::vector<fi::TensorData> t;
    const bool gemma = s.model_type == "gemma";
    // sd: the entries' spread; base: added (norm gammas near 1, Gemma's near 0).
    auto add = [&](const std::string& name, std::vector<int64_t> shape, float sd, float base) {
      int64_t n = 1;
      for (int64_t d : shape) n *= d;
      std::normal_distribution<float> nd(base, sd);
      std::vector<float> v(static_cast<size_t>(n));
      for (float& x : v) x = nd(rng);
      fi::TensorData d{name, s.dtype, shape, {}};
      d.bytes.resize(size_t(n) * fi::dtype_size(s.dtype));
      if (s.dtype == DType::F32) {
        std::memcpy(d.bytes.data(), v.data(), d.bytes.size());
      } else {
        std::vector<uint16_t> raw;
        if (s.dtype == DType::BF16) fi::test::round_bf16(v, &raw);
        else fi::test::round_f16(v, &raw);
        std::memcpy(d.bytes.data(), raw.data(), d.bytes.size());
      }
      t.push_back(std::move(d));
    };
    const float g0 = gemma ? 0.f : 1.f;
    const int64_t qd = s.nh * s.hd, kvd = s.nkv * s.hd;
    add("model.embed_tokens.weight", {s.V, s.H}, gemma ? 0.15f : 1.f, 0);
    if (!s.tied) add("lm_head.weight", {s.V, s.H}, 3.f / std::sqrt(float(s.H)), 0);
    add("model.norm.weight", {s.H}, 0.1f, g0);
    for (int64_t l = 0; l < s.L; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      add(p + "input_layernorm.weight", {s.H}, 0.1f, g0);
      add(p + "self_attn.q_proj.weight", {qd, s.H}, 1.f / std::sqrt(float(s.H)), 0);
      add(p + "self_attn.k_proj.weight", {kvd, s.H}, 1.f / std::sqrt(float(s.H)), 0);
      add(p + "self_attn.v_proj.weight", {kvd, s.H}, 1.f / std::sqrt(float(s.H)), 0);
      if (s.bias) {
        add(p + "self_attn.q_proj.bias", {qd}, 0.3f, 0);
        add(p + "self_attn.k_proj.bias", {kvd}, 0.3f, 0);
        add(p + "self_attn.v_proj.bias", {kvd}, 0.3f, 0);
      }
      add(p + "self_attn.o_proj.weight", {s.H, qd}, 1.f / std::sqrt(float(qd)), 0);
      add(p + "post_attention_layernorm.weight", {s.H}, 0.1f, g0);
      add(p + "mlp.gate_proj.weight", {s.I, s.H}, 1.f / std::sqrt(float(s.H)), 0);
      add(p + "mlp.up_proj.weight", {s.I, s.H}, 1.f / std::sqrt(float(s.H)), 0);
      add(p + "mlp.down_proj.weight", {s.H, s.I}, 1.f / std::sqrt(float(s.I)), 0);
    }
    fi::write_safetensors((dir_ / "model.safetensors").string(), t);
    std::ostringstream c;
    c << R"({"model_type": ")" << s.model_type << R"(", "hidden_size": )" << s.H
      << R"(, "intermediate_size": )" << s.I << R"(, "num_hidden_layers": )" << s.L
      << R"(, "num_attention_heads": )" << s.nh << R"(, "num_key_value_heads": )" << s.nkv
      << R"(, "head_dim": )" << s.hd << R"(, "vocab_size": )" << s.V
      << R"(, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": )"
      << (s.tied ? "true" : "false");
    if (!s.act.empty()) c << R"(, "hidden_act": ")" << s.act << '"';
    // original_max_position_embeddings 64: for head_dim 16 all three llama3 bands occur.
    if (s.llama3)
      c << R"(, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,)"
        << R"( "high_freq_factor": 4.0, "original_max_position_embeddings": 64})";
    c << "}";
    std::ofstream(dir_ / "config.json") << c.str();
    model_ = std::make_unique<fi::Model>(dir_.string());
  }
  ~TestModel() {
    model_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  const fi::Model& model() const { return *model_; }

 private:
  fs::path dir_;
  std::unique_ptr<fi::Model> model_;
};

std::vector<int32_t> random_ids(size_t n, int64_t V, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::uniform_int_distribution<int32_t> d(0, int32_t(V - 1));
  std::vector<int32_t> ids(n);
  for (int32_t& i : ids) i = d(g);
  return ids;
}

// Logits [T, V] of every new position: embed on the first stage, each stage's layers, the head
// of the last one.
std::vector<float> run(const std::vector<fi::Stage*>& stages, const fi::ModelConfig& c,
                       const std::vector<int32_t>& ids, int64_t pos) {
  const int64_t T = int64_t(ids.size());
  std::vector<float> x(size_t(T * c.hidden_size)), logits(size_t(T * c.vocab_size));
  stages.front()->embed(ids, x.data());
  for (fi::Stage* s : stages) s->layers(x.data(), T, pos);
  stages.back()->head(x.data(), T, logits.data());
  return logits;
}

// max |got - want| <= rel · max |want|, and per element |got - want| <= rel · max(|want|, floor)
// with the floor 5% of the largest logit (small logits carry the absolute error of large ones).
void expect_close(const std::vector<float>& got, const std::vector<float>& want, double rel,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double mx = 0, worst = 0;
  for (float w : want) mx = std::max(mx, double(std::fabs(w)));
  size_t bad = 0, first_bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::fabs(double(got[i]) - want[i]);
    worst = std::max(worst, d);
    if (!(d <= rel * std::max(double(std::fabs(want[i])), 0.05 * mx)) && bad++ == 0) first_bad = i;
  }
  EXPECT_GT(mx, 0.) << what;
  EXPECT_LE(worst, rel * mx) << what << ": max |diff| " << worst << ", max |logit| " << mx;
  EXPECT_EQ(bad, 0u) << what << ": first at " << first_bad << " got " << got[first_bad]
                     << " want " << want[first_bad];
}

struct ClampCase {
  std::string label;
  std::vector<fi::Clamp> clamps;
  fi::ClampSite site = fi::ClampSite::Act;
};

std::vector<ClampCase> clamp_cases() {
  // Several clamps over the layers; neuron 7 of layer 1 twice (the later one wins).
  const std::vector<fi::Clamp> some = {{0, 3, 2.5f}, {1, 7, -4.f}, {2, 0, 10.f}, {1, 7, 1.5f},
                                       {1, 150, 3.f}};
  return {{"no clamps", {}, fi::ClampSite::Act},
          {"clamps at act", some, fi::ClampSite::Act},
          {"clamps at up", some, fi::ClampSite::Up}};
}

// Prompt of `prompt` tokens, then 5 single-token steps, on the CPU stage and the CUDA stage.
void compare_generation(fi::Stage& cpu, fi::Stage& gpu, const fi::ModelConfig& c, size_t prompt,
                        uint64_t seed, const std::string& what) {
  const std::vector<int32_t> ids = random_ids(prompt + 5, c.vocab_size, seed);
  cpu.reset();
  gpu.reset();
  const std::vector<int32_t> head(ids.begin(), ids.begin() + long(prompt));
  expect_close(run({&gpu}, c, head, 0), run({&cpu}, c, head, 0), 1e-3,
               what + ", prompt of " + std::to_string(prompt));
  for (size_t s = prompt; s < ids.size(); ++s)
    expect_close(run({&gpu}, c, {ids[s]}, int64_t(s)), run({&cpu}, c, {ids[s]}, int64_t(s)), 1e-3,
                 what + ", step at position " + std::to_string(s));
}

TEST(CudaForward, MatchesCpuStage) {
  FI_SKIP_WITHOUT_CUDA();
  uint64_t seed = 100;
  for (const Spec& s : specs()) {
    TestModel m(s, ++seed);
    const fi::ModelConfig& c = m.model().cfg;
    const fi::StageSpan all{0, c.num_layers, true, true};
    auto cpu = fi::make_cpu_stage(m.model(), all);
    auto gpu = fi::make_cuda_stage(m.model(), all);
    EXPECT_STREQ(gpu->name(), "cuda");
    for (const ClampCase& k : clamp_cases()) {
      cpu->set_clamps(k.clamps, k.site);
      gpu->set_clamps(k.clamps, k.site);
      for (size_t prompt : {1, 7, 40})
        compare_generation(*cpu, *gpu, c, prompt, seed * 1000 + prompt, s.label + ", " + k.label);
    }
  }
}

TEST(CudaForward, LongPromptCrossesPiecesAndTiles) {
  FI_SKIP_WITHOUT_CUDA();
  const Spec s = specs()[0];
  TestModel m(s, 7);
  const fi::ModelConfig& c = m.model().cfg;
  const fi::StageSpan all{0, c.num_layers, true, true};
  auto cpu = fi::make_cpu_stage(m.model(), all);
  auto gpu = fi::make_cuda_stage(m.model(), all);
  const ClampCase k = clamp_cases()[1];
  cpu->set_clamps(k.clamps, k.site);
  gpu->set_clamps(k.clamps, k.site);
  // 300 rows: two GEMM pieces (256 + 44); 300 keys: three attention tiles of 128. The cache
  // grows past its first capacity (64) by doubling during the prompt.
  compare_generation(*cpu, *gpu, c, 300, 77, s.label + ", long prompt");
  // The cache reused after reset(): a short prompt again.
  compare_generation(*cpu, *gpu, c, 7, 78, s.label + ", after reset");
}

TEST(CudaForward, TwoStagesEqualOne) {
  FI_SKIP_WITHOUT_CUDA();
  const std::vector<Spec> all_specs = specs();
  for (const Spec& s : {all_specs[0], all_specs[1]}) {  // untied and tied LM-head
    TestModel m(s, 11);
    const fi::ModelConfig& c = m.model().cfg;
    auto one = fi::make_cuda_stage(m.model(), {0, c.num_layers, true, true});
    auto a = fi::make_cuda_stage(m.model(), {0, 1, true, false});
    auto b = fi::make_cuda_stage(m.model(), {1, c.num_layers, false, true});
    const ClampCase k = clamp_cases()[2];  // clamps in both stages' layers
    for (fi::Stage* st : {one.get(), a.get(), b.get()}) st->set_clamps(k.clamps, k.site);
    const std::vector<int32_t> ids = random_ids(10, c.vocab_size, 5);
    const std::vector<int32_t> prompt(ids.begin(), ids.begin() + 7);
    expect_close(run({a.get(), b.get()}, c, prompt, 0), run({one.get()}, c, prompt, 0), 1e-6,
                 s.label + ": two stages, prompt");
    for (int64_t p = 7; p < 10; ++p)
      expect_close(run({a.get(), b.get()}, c, {ids[size_t(p)]}, p),
                   run({one.get()}, c, {ids[size_t(p)]}, p), 1e-6,
                   s.label + ": two stages, step " + std::to_string(p));
  }
}

// ---- without a GPU -----------------------------------------------------------------------

// The test checkpoints are valid models: they load and give finite, varied logits on the CPU.
TEST(CudaForwardModels, RunOnTheCpuStage) {
  uint64_t seed = 500;
  for (const Spec& s : specs()) {
    TestModel m(s, ++seed);
    const fi::ModelConfig& c = m.model().cfg;
    auto cpu = fi::make_cpu_stage(m.model(), {0, c.num_layers, true, true});
    cpu->set_clamps(clamp_cases()[1].clamps, fi::ClampSite::Act);
    const std::vector<float> l = run({cpu.get()}, c, random_ids(7, c.vocab_size, seed), 0);
    double mx = 0;
    for (float v : l) {
      ASSERT_TRUE(std::isfinite(v)) << s.label;
      mx = std::max(mx, double(std::fabs(v)));
    }
    EXPECT_GT(mx, 0.5) << s.label;  // not degenerate, not exploding
    EXPECT_LT(mx, 100.) << s.label;
  }
}

// The attention kernel's own source on CPU threads against the CPU stage's loop (which keeps
// every score, then one softmax), including more keys than one tile and head_dim > 128, a
// sliding window (keys j with i - window < j <= i), another scale and Gemma 2's soft-cap.
TEST(CudaForwardEmulated, AttentionKernelMatchesLoop) {
  struct Case {
    int64_t T, nh, nkv, hd, pos, window;
    double cap;
  };
  for (Case k : {Case{3, 4, 2, 16, 0, 0, 0}, Case{1, 3, 3, 8, 5, 0, 0}, Case{2, 2, 1, 160, 200, 0, 0},
                 Case{2, 2, 2, 64, 127, 0, 0}, Case{6, 2, 1, 16, 3, 4, 0}, Case{2, 2, 2, 32, 150, 130, 0},
                 Case{3, 4, 2, 16, 2, 0, 2.5}, Case{5, 2, 1, 16, 0, 2, 1.0}}) {
    const int64_t ldq = k.nh * k.hd + 5, kvd = k.nkv * k.hd, P = k.pos + k.T;
    const std::vector<float> q = fi::test::normal(size_t(k.T * ldq), 1.f, 1);
    const std::vector<float> kc = fi::test::normal(size_t(P * kvd), 1.f, 2);
    const std::vector<float> vc = fi::test::normal(size_t(P * kvd), 1.f, 3);
    std::vector<float> got(size_t(k.T * k.nh * k.hd));
    const float scale = float(k.cap > 0 ? 1.0 : 1.0 / std::sqrt(double(k.hd)));
    fi::test::attention_emulated(q.data(), ldq, kc.data(), vc.data(), k.T, k.nh, k.nkv, k.hd,
                                 k.pos, scale, k.window, float(k.cap), got.data());
    for (int64_t t = 0; t < k.T; ++t)
      for (int64_t h = 0; h < k.nh; ++h) {
        const int64_t kh = h / (k.nh / k.nkv), i_pos = k.pos + t;
        std::vector<double> sc(static_cast<size_t>(i_pos + 1), 0.0);
        double mx = -INFINITY, sum = 0;
        auto visible = [&](int64_t j) { return j <= i_pos && (k.window == 0 || i_pos - k.window < j); };
        for (int64_t j = 0; j <= i_pos; ++j) {
          if (!visible(j)) continue;
          double d = 0;
          for (int64_t i = 0; i < k.hd; ++i)
            d += double(q[size_t(t * ldq + h * k.hd + i)]) * kc[size_t(j * kvd + kh * k.hd + i)];
          d *= scale;
          if (k.cap > 0) d = std::tanh(d / k.cap) * k.cap;
          sc[size_t(j)] = d;
          mx = std::max(mx, d);
        }
        for (int64_t j = 0; j <= i_pos; ++j)
          sum += (sc[size_t(j)] = visible(j) ? std::exp(sc[size_t(j)] - mx) : 0.0);
        for (int64_t i = 0; i < k.hd; ++i) {
          double o = 0;
          for (int64_t j = 0; j <= i_pos; ++j) o += sc[size_t(j)] / sum * vc[size_t(j * kvd + kh * k.hd + i)];
          EXPECT_NEAR(got[size_t(t * k.nh * k.hd + h * k.hd + i)], o, 2e-5)
              << "T " << k.T << " pos " << k.pos << " hd " << k.hd << " window " << k.window
              << " cap " << k.cap << " at t " << t << " h " << h << " i " << i;
        }
      }
  }
}

}  // namespace
