// The CUDA forward stage (src/forward/cuda/) against the CPU stage on small random checkpoints
// written here: bf16, f16 and f32 weights; GQA, MHA and one kv head; Qwen2 biases; llama3
// rope_scaling; Gemma (1 + gamma norms, scaled embedding, tanh-GELU, tied LM-head); erf-GELU;
// Qwen 3's per-head q/k norms; Gemma 2's four norms, soft-caps, query_pre_attn_scalar and
// alternating sliding layers; Gemma 3's per-head (1 + w) q/k norms, four norms, local RoPE and
// head_dim 256; OLMo 2's post-norms without pre-norms and whole-width q/k norms; clamps at both
// sites. Logits within 1e-3 relative for prompts of 1, 7, 40 and 300 tokens
// (300: more rows than one GEMM piece, more keys than one attention tile) and 5 steps through
// the KV cache after each; a model split into two CUDA stages equals the one-stage model.
// Without a device those tests print "SKIPPED (no CUDA device)"; the attention and RMSNorm
// kernels' sources still run on CPU threads (attention_emulated.cpp, norm_emulated.cpp), and the
// test checkpoints are checked to load and run on the CPU stage.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "attention_emulated.h"
#include "moe_emulated.h"
#include "norm_emulated.h"
#include "common/half.h"
#include "cuda_test_util.h"
#include "forward/stage.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/rms_norm.h"

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
  // The layer's norms, as model/layer_tensors.cpp's tables: "llama" (before attention and the
  // MLP), "gemma2" (four: before and after each) or "olmo2" (after each only).
  std::string norms = "llama";
  std::string qk_norm;  // "" none, "head" ([hd], Qwen 3 / Gemma 3) or "width" ([qd], [kvd], OLMo 2)
  std::string extra;    // more config.json fields: `, "key": value, ...`
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
  s.resize(8);
  s[4].label = "bf16 qwen3, per-head q/k norms, head_dim 32";
  s[4].model_type = "qwen3";
  s[4].hd = 32;
  s[4].qk_norm = "head";
  s[4].tied = true;
  s[5].label = "f32 gemma2, four norms, soft-caps, window 5 on layers 0 and 2";
  s[5].dtype = DType::F32;
  s[5].model_type = "gemma2";
  s[5].norms = "gemma2";
  s[5].tied = true;
  s[5].extra = R"(, "query_pre_attn_scalar": 24, "sliding_window": 5, "attn_logit_softcapping": 50.0,)"
               R"( "final_logit_softcapping": 30.0)";
  s[6].label = "bf16 gemma3_text, (1 + w) q/k norms, four norms, local RoPE, head_dim 256";
  s[6].model_type = "gemma3_text";
  s[6].norms = "gemma2";
  s[6].qk_norm = "head";
  s[6].tied = true;
  s[6].nh = 2;
  s[6].nkv = 1;
  s[6].hd = 256;
  s[6].extra = R"(, "query_pre_attn_scalar": 16, "sliding_window": 6, "sliding_window_pattern": 2,)"
               R"( "rope_local_base_freq": 10000.0, "rope_theta": 1000000.0)";
  s[7].label = "f16 olmo2, post-norms only, whole-width q/k norms, GQA 4/2";
  s[7].dtype = DType::F16;
  s[7].model_type = "olmo2";
  s[7].norms = "olmo2";
  s[7].qk_norm = "width";
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
    const bool gemma = s.model_type.rfind("gemma", 0) == 0;  // (1 + w) norms
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
      if (s.norms != "olmo2") add(p + "input_layernorm.weight", {s.H}, 0.1f, g0);
      add(p + "self_attn.q_proj.weight", {qd, s.H}, 1.f / std::sqrt(float(s.H)), 0);
      add(p + "self_attn.k_proj.weight", {kvd, s.H}, 1.f / std::sqrt(float(s.H)), 0);
      add(p + "self_attn.v_proj.weight", {kvd, s.H}, 1.f / std::sqrt(float(s.H)), 0);
      if (!s.qk_norm.empty()) {
        const bool head = s.qk_norm == "head";
        add(p + "self_attn.q_norm.weight", {head ? s.hd : qd}, 0.1f, g0);
        add(p + "self_attn.k_norm.weight", {head ? s.hd : kvd}, 0.1f, g0);
      }
      if (s.bias) {
        add(p + "self_attn.q_proj.bias", {qd}, 0.3f, 0);
        add(p + "self_attn.k_proj.bias", {kvd}, 0.3f, 0);
        add(p + "self_attn.v_proj.bias", {kvd}, 0.3f, 0);
      }
      add(p + "self_attn.o_proj.weight", {s.H, qd}, 1.f / std::sqrt(float(qd)), 0);
      // post_attention_layernorm: the MLP's input norm in Llama, the attention output's otherwise.
      add(p + "post_attention_layernorm.weight", {s.H}, 0.1f, g0);
      if (s.norms == "gemma2") add(p + "pre_feedforward_layernorm.weight", {s.H}, 0.1f, g0);
      add(p + "mlp.gate_proj.weight", {s.I, s.H}, 1.f / std::sqrt(float(s.H)), 0);
      add(p + "mlp.up_proj.weight", {s.I, s.H}, 1.f / std::sqrt(float(s.H)), 0);
      add(p + "mlp.down_proj.weight", {s.H, s.I}, 1.f / std::sqrt(float(s.I)), 0);
      if (s.norms != "llama") add(p + "post_feedforward_layernorm.weight", {s.H}, 0.1f, g0);
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
    c << s.extra;
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
  for (const Spec& s : {specs()[0], specs()[6]}) {  // Llama; Gemma 3's q/k norms and post-norms
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
}

TEST(CudaForward, TwoStagesEqualOne) {
  FI_SKIP_WITHOUT_CUDA();
  const std::vector<Spec> all_specs = specs();
  // Untied and tied LM-head; OLMo 2's post-norms in both stages.
  for (const Spec& s : {all_specs[0], all_specs[1], all_specs[7]}) {
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
// sliding window (keys j with i - window < j <= i), another scale, Gemma 2's soft-cap, and
// values narrower than the keys (DeepSeek's MLA: nh = nkv, keys nope + rope dims, v_head_dim).
TEST(CudaForwardEmulated, AttentionKernelMatchesLoop) {
  struct Case {
    int64_t T, nh, nkv, hd, pos, window;
    double cap;
    int64_t vd = 0;  // 0: hd
  };
  for (Case k : {Case{3, 4, 2, 16, 0, 0, 0}, Case{1, 3, 3, 8, 5, 0, 0}, Case{2, 2, 1, 160, 200, 0, 0},
                 Case{2, 2, 2, 64, 127, 0, 0}, Case{6, 2, 1, 16, 3, 4, 0}, Case{2, 2, 2, 32, 150, 130, 0},
                 Case{3, 4, 2, 16, 2, 0, 2.5}, Case{5, 2, 1, 16, 0, 2, 1.0}, Case{3, 4, 4, 24, 2, 0, 0, 16},
                 Case{2, 2, 2, 192, 140, 0, 0, 128}}) {
    const int64_t vd = k.vd ? k.vd : k.hd;
    const int64_t ldq = k.nh * k.hd + 5, kvd = k.nkv * k.hd, vvd = k.nkv * vd, P = k.pos + k.T;
    const std::vector<float> q = fi::test::normal(size_t(k.T * ldq), 1.f, 1);
    const std::vector<float> kc = fi::test::normal(size_t(P * kvd), 1.f, 2);
    const std::vector<float> vc = fi::test::normal(size_t(P * vvd), 1.f, 3);
    std::vector<float> got(size_t(k.T * k.nh * vd));
    const float scale = float(k.cap > 0 ? 1.0 : 1.0 / std::sqrt(double(k.hd)));
    fi::test::attention_emulated(q.data(), ldq, kc.data(), vc.data(), k.T, k.nh, k.nkv, k.hd, vd,
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
        for (int64_t i = 0; i < vd; ++i) {
          double o = 0;
          for (int64_t j = 0; j <= i_pos; ++j) o += sc[size_t(j)] / sum * vc[size_t(j * vvd + kh * vd + i)];
          EXPECT_NEAR(got[size_t(t * k.nh * vd + h * vd + i)], o, 2e-5)
              << "T " << k.T << " pos " << k.pos << " hd " << k.hd << " vd " << vd << " window " << k.window
              << " cap " << k.cap << " at t " << t << " h " << h << " i " << i;
        }
      }
  }
}

// The mixture-of-experts kernels' own source on CPU threads: an expert's tokens gathered, and its
// output (a split GEMM's two halves, or one) weighted and added to those rows of a residual with
// a row stride, leaving every other row as it was; against plain loops.
TEST(CudaForwardEmulated, ExpertGatherScatterMatchLoop) {
  const int64_t T = 9, H = 40, ldo = 45;
  const std::vector<int32_t> idx = {0, 3, 4, 8};  // the tokens routed to one expert
  const int64_t n = int64_t(idx.size());
  const std::vector<float> in = fi::test::normal(size_t(T * H), 1.f, 7);
  std::vector<float> got(size_t(n * H), -1.f);
  fi::test::gather_rows_emulated(in.data(), H, idx.data(), n, got.data());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t h = 0; h < H; ++h) ASSERT_EQ(got[size_t(i * H + h)], in[size_t(idx[size_t(i)] * H + h)]);
  const std::vector<float> w = {0.25f, 0.5f, 1.5f, 0.125f};
  for (bool split : {false, true}) {
    const std::vector<float> y = fi::test::normal(size_t((split ? 2 : 1) * n * H), 1.f, 8);
    const std::vector<float> base = fi::test::normal(size_t(T * ldo), 1.f, 9);
    std::vector<float> out = base;
    fi::test::scatter_add_emulated(y.data(), n, H, split, idx.data(), w.data(), out.data(), ldo);
    std::vector<float> want = base;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t h = 0; h < H; ++h) {
        const double v = double(y[size_t(i * H + h)]) + (split ? double(y[size_t((n + i) * H + h)]) : 0.0);
        want[size_t(idx[size_t(i)] * ldo + h)] = float(base[size_t(idx[size_t(i)] * ldo + h)] + w[size_t(i)] * v);
      }
    for (size_t e = 0; e < out.size(); ++e)
      EXPECT_NEAR(out[e], want[e], 1e-6 * (1 + std::fabs(want[e]))) << "split " << split << " at " << e;
  }
}

// DeepSeek's MLA RoPE and cache kernel's own source on CPU threads against a plain loop of
// transformers' DeepseekV3Attention: q's rope part rotated per head, the one rope key rotated and
// put after each head's k_nope, v copied, both with interleaved and with rotate-half pairs, into
// cache rows pos.. (rows before pos untouched).
TEST(CudaForwardEmulated, MlaRopeCacheMatchesLoop) {
  const int64_t T = 3, nh = 2, nope = 6, rope = 8, vd = 5, kvr = 7, pos = 4, qk = nope + rope, half = rope / 2;
  const std::vector<float> q = fi::test::normal(size_t(T * nh * qk), 1.f, 11);
  const std::vector<float> kva = fi::test::normal(size_t(T * (kvr + rope)), 1.f, 12);
  const std::vector<float> kvb = fi::test::normal(size_t(T * nh * (nope + vd)), 1.f, 13);
  std::vector<float> cs(size_t(2 * T * half));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < half; ++i) {
      const double a = double(pos + t) * std::pow(10000.0, -2.0 * double(i) / double(rope));
      cs[size_t(t * half + i)] = float(std::cos(a));
      cs[size_t((T + t) * half + i)] = float(std::sin(a));
    }
  for (bool interleave : {true, false}) {
    std::vector<float> qr(q.size(), -9.f), kc(size_t((pos + T) * nh * qk), -9.f), vc(size_t((pos + T) * nh * vd), -9.f);
    fi::test::mla_rope_cache_emulated(q.data(), kva.data(), kvb.data(), cs.data(), cs.data() + T * half, T, nh,
                                      nope, rope, vd, kvr, interleave, qr.data(), kc.data(), vc.data(), pos);
    // x [rope] -> rotated, in double: pairs (x[2i], x[2i+1]) or (x[i], x[i+half]).
    auto rotated = [&](const float* x, int64_t t) {
      std::vector<double> r(static_cast<size_t>(rope));
      for (int64_t i = 0; i < half; ++i) {
        const double a = x[interleave ? 2 * i : i], b = x[interleave ? 2 * i + 1 : i + half];
        const double c = cs[size_t(t * half + i)], s = cs[size_t((T + t) * half + i)];
        r[size_t(i)] = a * c - b * s;
        r[size_t(i + half)] = b * c + a * s;
      }
      return r;
    };
    for (int64_t t = 0; t < T; ++t) {
      const std::vector<double> kr = rotated(&kva[size_t(t * (kvr + rope) + kvr)], t);
      for (int64_t h = 0; h < nh; ++h) {
        const std::vector<double> qrot = rotated(&q[size_t((t * nh + h) * qk + nope)], t);
        for (int64_t i = 0; i < qk; ++i) {
          const double wq = i < nope ? q[size_t((t * nh + h) * qk + i)] : qrot[size_t(i - nope)];
          const double wk = i < nope ? kvb[size_t((t * nh + h) * (nope + vd) + i)] : kr[size_t(i - nope)];
          EXPECT_NEAR(qr[size_t((t * nh + h) * qk + i)], wq, 1e-6) << "q t " << t << " h " << h << " i " << i;
          EXPECT_NEAR(kc[size_t(((pos + t) * nh + h) * qk + i)], wk, 1e-6) << "k t " << t << " h " << h << " i " << i;
        }
        for (int64_t j = 0; j < vd; ++j)
          EXPECT_EQ(vc[size_t(((pos + t) * nh + h) * vd + j)], kvb[size_t((t * nh + h) * (nope + vd) + nope + j)]);
      }
    }
    for (int64_t e = 0; e < pos * nh * qk; ++e) ASSERT_EQ(kc[size_t(e)], -9.f) << "a cache row before pos written";
    for (int64_t e = 0; e < pos * nh * vd; ++e) ASSERT_EQ(vc[size_t(e)], -9.f) << "a cache row before pos written";
  }
}

// The RMSNorm kernel's own source on CPU threads against a plain loop in double (and, to the
// bit, the CPU stage's fi::rms_norm): q/k norms per head (head_dim 16..256, 1..8 heads) and over
// the whole q or k width (OLMo 2), in place in a [T, q | k | v] row with untouched columns
// around them; post-norms added to a residual; gamma and (1 + gamma); rows of tiny, ordinary and
// large values (eps matters for the tiny ones).
TEST(CudaForwardEmulated, RmsNormKernelMatchesLoop) {
  struct Case {
    const char* what;
    int64_t rows, n, segs, ld_in, ld_out, off;  // segments start at column off of each row
    bool plus_one, accumulate, in_place;
  };
  const std::vector<Case> cases = {
      {"q per head, hd 16, 4 heads", 3, 16, 4, 16 * 8 + 3, 0, 0, false, false, true},
      {"k per head, hd 16, 2 heads, 1+w", 3, 16, 2, 16 * 8 + 3, 0, 64, true, false, true},
      {"q per head, hd 32, 8 heads, 1+w", 2, 32, 8, 32 * 12, 0, 0, true, false, true},
      {"q per head, hd 64, 1 head", 4, 64, 1, 64 * 3, 0, 0, false, false, true},
      {"q per head, hd 128, 4 heads", 2, 128, 4, 128 * 8, 0, 0, false, false, true},
      {"k per head, hd 160, 3 heads, 1+w", 2, 160, 3, 160 * 9 + 1, 0, 160 * 3, true, false, true},
      {"q per head, hd 256, 2 heads, 1+w", 2, 256, 2, 256 * 4, 0, 0, true, false, true},
      {"k per head, hd 256, 1 head", 3, 256, 1, 256 * 4, 0, 512, false, false, true},
      {"q whole width 4 x 16", 3, 64, 1, 64 + 2 * 32, 0, 0, false, false, true},
      {"k whole width 4 x 16", 3, 64, 1, 64 * 3, 0, 64, false, false, true},
      {"q whole width 40 x 128", 2, 5120, 1, 5120 + 2 * 1024, 0, 0, false, false, true},
      {"k whole width 8 x 128, 1+w", 2, 1024, 1, 5120 + 2 * 1024, 0, 5120, true, false, true},
      {"post-norm H 64, added", 5, 64, 1, 64, 64, 0, false, true, false},
      {"post-norm H 300, 1+w, added", 3, 300, 1, 300, 300, 0, true, true, false},
      {"post-norm H 2304, 1+w, added", 2, 2304, 1, 2304, 2304, 0, true, true, false},
      {"post-norm H 96, written", 2, 96, 1, 100, 97, 0, false, false, false},
  };
  const double eps = 1e-6;
  double worst_rel = 0;
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const Case& k = cases[ci];
    const int64_t ld_out = k.in_place ? k.ld_in : k.ld_out;
    std::vector<float> in = fi::test::normal(size_t(k.rows * k.ld_in), 1.f, 10 + ci);
    // Row 0 tiny (its mean square ~1e-8, near eps), row 1 large, the rest ordinary.
    for (int64_t i = 0; i < k.ld_in; ++i) in[size_t(i)] *= 1e-4f;
    if (k.rows > 1)
      for (int64_t i = 0; i < k.ld_in; ++i) in[size_t(k.ld_in + i)] *= 300.f;
    const std::vector<float> gamma =
        k.plus_one ? fi::test::normal(size_t(k.n), 0.3f, 20 + ci) : fi::test::uniform(size_t(k.n), 0.5f, 1.5f, 20 + ci);
    std::vector<float> out = k.in_place ? in : fi::test::normal(size_t(k.rows * ld_out), 1.f, 30 + ci);
    const std::vector<float> before = out;
    // In place (the q/k norms): the kernel reads and writes `out`, a copy of `in`.
    const float* src = k.in_place ? out.data() : in.data();
    fi::test::rms_norm_emulated(src + k.off, k.ld_in, out.data() + k.off, ld_out, k.rows,
                                k.n, k.segs, gamma.data(), k.plus_one, eps, k.accumulate);
    size_t not_bitwise = 0;
    for (int64_t r = 0; r < k.rows; ++r) {
      for (int64_t sg = 0; sg < k.segs; ++sg) {
        const float* x = &in[size_t(r * k.ld_in + k.off + sg * k.n)];
        const size_t o0 = size_t(r * ld_out + k.off + sg * k.n);
        double ss = 0;
        for (int64_t i = 0; i < k.n; ++i) ss += double(x[i]) * x[i];
        const double scale = 1.0 / std::sqrt(ss / double(k.n) + eps);
        std::vector<float> cpu(size_t(k.n));
        fi::rms_norm(x, gamma.data(), k.n, eps, k.plus_one, cpu.data());
        for (int64_t i = 0; i < k.n; ++i) {
          const double g = k.plus_one ? 1.0 + gamma[size_t(i)] : gamma[size_t(i)];
          const double y = double(x[i]) * scale * g;
          const double want = k.accumulate ? double(before[o0 + size_t(i)]) + y : y;
          const double got = out[o0 + size_t(i)];
          // Three fp32 roundings of y (scale, two products), one more for the sum: within a
          // few ulp of max(|want|, |y|) (the sum may cancel).
          const double ref = std::max(std::fabs(want), std::fabs(y));
          const double rel = ref > 0 ? std::fabs(got - want) / ref : std::fabs(got - want);
          worst_rel = std::max(worst_rel, rel);
          EXPECT_LE(rel, 4e-7) << k.what << ": row " << r << " segment " << sg << " dim " << i
                               << " got " << got << " want " << want;
          const float cpu_v = k.accumulate ? before[o0 + size_t(i)] + cpu[size_t(i)] : cpu[size_t(i)];
          not_bitwise += got != double(cpu_v);
        }
      }
    }
    EXPECT_EQ(not_bitwise, 0u) << k.what << ": values not bit-equal to the CPU stage's rms_norm";
    // Nothing outside the segments is touched (the v columns, the padding, the other heads' k).
    std::vector<char> inside(out.size(), 0);
    for (int64_t r = 0; r < k.rows; ++r)
      for (int64_t i = 0; i < k.segs * k.n; ++i) inside[size_t(r * ld_out + k.off + i)] = 1;
    size_t touched = 0;
    for (size_t i = 0; i < out.size(); ++i) touched += !inside[i] && out[i] != before[i];
    EXPECT_EQ(touched, 0u) << k.what << ": values outside the segments changed";
  }
  std::printf("  RMSNorm kernel, emulated: worst relative error vs the double loop %.3g\n", worst_rel);
}

}  // namespace
