// The forward pass's pieces against their formulas (llama3 RoPE frequencies, rotation, RMSNorm,
// activations, clamp parsing) and a tiny 1-layer GQA model against a naive double-precision loop.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "common/error.h"
#include "forward/clamp.h"
#include "forward/generate.h"
#include "forward/forward.h"
#include "forward/ops.h"
#include "io/safetensors.h"
#include "model/layer_tensors.h"
#include "model/rms_norm.h"

namespace fs = std::filesystem;
using namespace fi;

namespace {

ModelConfig llama31_8b() {
  ModelConfig c;
  c.head_dim = 128;
  c.rope_theta = 500000;
  c.rope_scaling.type = "llama3";
  c.rope_scaling.factor = 8;
  c.rope_scaling.low_freq_factor = 1;
  c.rope_scaling.high_freq_factor = 4;
  c.rope_scaling.original_max_position_embeddings = 8192;
  return c;
}

TEST(Rope, Llama3FrequenciesFollowTheBands) {
  const ModelConfig c = llama31_8b();
  const std::vector<double> f = rope_inv_freq(c);
  ASSERT_EQ(f.size(), 64u);
  int kept = 0, divided = 0, blended = 0;
  for (int i = 0; i < 64; ++i) {
    const double plain = 1.0 / std::pow(500000.0, 2.0 * i / 128.0);
    const double wavelen = 2 * M_PI / plain;
    double want;
    if (wavelen < 8192.0 / 4) {  // short wavelengths: unchanged
      want = plain;
      ++kept;
    } else if (wavelen > 8192.0 / 1) {  // long wavelengths: divided by the factor
      want = plain / 8;
      ++divided;
    } else {  // in between: the blend of FACTS.md
      const double s = (8192.0 / wavelen - 1) / (4 - 1);
      want = (1 - s) * plain / 8 + s * plain;
      ++blended;
    }
    EXPECT_NEAR(f[i], want, 1e-12 * plain) << "frequency " << i;
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(blended, 0);  // all three bands occur for Llama 3.1
  EXPECT_DOUBLE_EQ(f[0], 1.0);
}

TEST(Rope, PlainWithoutScaling) {
  ModelConfig c = llama31_8b();
  c.rope_scaling = {};
  c.rope_theta = 10000;
  c.head_dim = 8;
  const std::vector<double> f = rope_inv_freq(c);
  ASSERT_EQ(f.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(f[i], std::pow(10000.0, -i / 4.0), 1e-15);
}

// Each rope_scaling type against its formula in transformers' modeling_rope_utils, worked by hand.
ModelConfig small_rope(const std::string& type) {
  ModelConfig c;
  c.path = "config.json";
  c.head_dim = 8;
  c.rope_theta = 10000;
  c.max_position_embeddings = 64;
  c.rope_scaling.type = type;
  c.rope_scaling.factor = 4;
  return c;
}
double plain(int i) { return std::pow(10000.0, -i / 4.0); }

TEST(Rope, LinearDividesEveryFrequency) {
  const RopeFreqs r = rope_freqs(small_rope("linear"), 1000, false);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(r.inv_freq[i], plain(i) / 4, 1e-15);
  EXPECT_EQ(r.attention_factor, 1);
}

TEST(Rope, DynamicChangesTheBaseOnlyPastMaxPositions) {
  const ModelConfig c = small_rope("dynamic");
  for (int64_t len : {1, 64}) {
    const RopeFreqs r = rope_freqs(c, len, false);
    for (int i = 0; i < 4; ++i) EXPECT_NEAR(r.inv_freq[i], plain(i), 1e-15) << len;
  }
  // 128 positions: base 10000 · (4 · 128/64 - 3)^(8/6) = 10000 · 5^(4/3)
  const RopeFreqs r = rope_freqs(c, 128, false);
  const double base = 10000 * std::pow(5.0, 4.0 / 3.0);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(r.inv_freq[i], std::pow(base, -i / 4.0), 1e-14);
}

TEST(Rope, YarnBlendsByTheRampAndScalesAttention) {
  // original 64 positions: beta_fast 32 -> dimension -0.50 (floor -1, clamped to 0), beta_slow 1
  // -> 1.008 (ceil 2); the ramp over pairs 0..3 is 0, 0.5, 1, 1.
  ModelConfig c = small_rope("yarn");
  c.rope_scaling.original_max_position_embeddings = 64;
  RopeFreqs r = rope_freqs(c, 10, false);
  const double ramp[4] = {0, 0.5, 1, 1};
  for (int i = 0; i < 4; ++i)
    EXPECT_NEAR(r.inv_freq[i], plain(i) * (1 - ramp[i]) + plain(i) / 4 * ramp[i], 1e-15) << i;
  EXPECT_NEAR(r.attention_factor, 0.1 * std::log(4.0) + 1, 1e-15);
  c.rope_scaling.original_max_position_embeddings = 0;  // falls back to max_position_embeddings
  EXPECT_EQ(rope_freqs(c, 10, false).inv_freq, r.inv_freq);
  c.rope_scaling.mscale = 2;  // DeepSeek: (0.1 · 2 ln 4 + 1) / (0.1 · 1 ln 4 + 1)
  c.rope_scaling.mscale_all_dim = 1;
  EXPECT_NEAR(rope_freqs(c, 10, false).attention_factor,
              (0.2 * std::log(4.0) + 1) / (0.1 * std::log(4.0) + 1), 1e-15);
  c.rope_scaling.attention_factor = 0.7;  // given: used as is
  EXPECT_EQ(rope_freqs(c, 10, false).attention_factor, 0.7);
}

TEST(Rope, LongropeShortThenLongFactors) {
  ModelConfig c = small_rope("longrope");
  c.rope_scaling.short_factor = {1, 2, 3, 4};
  c.rope_scaling.long_factor = {5, 6, 7, 8};
  c.rope_scaling.original_max_position_embeddings = 16;  // max 64: factor 4
  const double att = std::sqrt(1 + std::log(4.0) / std::log(16.0));
  for (int64_t len : {1, 16, 17}) {
    const RopeFreqs r = rope_freqs(c, len, false);
    for (int i = 0; i < 4; ++i) EXPECT_NEAR(r.inv_freq[i], plain(i) / (len > 16 ? 5 + i : 1 + i), 1e-15);
    EXPECT_NEAR(r.attention_factor, att, 1e-15);
  }
}

TEST(Rope, Gemma3LocalLayersUsePlainLocalTheta) {
  ModelConfig c = small_rope("linear");
  c.rope_local_theta = 100;
  const RopeFreqs local = rope_freqs(c, 5, true), global = rope_freqs(c, 5, false);
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(local.inv_freq[i], std::pow(100.0, -i / 4.0), 1e-15);
    EXPECT_NEAR(global.inv_freq[i], plain(i) / 4, 1e-15);
  }
  c.rope_local_theta = 0;  // no local theta: every layer the same
  EXPECT_EQ(rope_freqs(c, 5, true).inv_freq, global.inv_freq);
}

TEST(Softcap, TanhTimesCap) {
  EXPECT_EQ(softcap(3.f, 0), 3.f);
  EXPECT_NEAR(softcap(45.f, 30), std::tanh(1.5) * 30, 1e-5);
  EXPECT_NEAR(softcap(-1e6f, 50), -50, 1e-4);
}

// The CUDA stage runs every family's layer tensors (the MoE routers, experts and MLA included)
// and FP8 checkpoints; it refuses a head_dim its attention kernel cannot hold, and MLA heads
// (nope + rope dims for the keys, v_head_dim for the values) over the same limit, naming the
// config and the limit.
TEST(CudaStageRefusal, EveryFamilyRunsHeadDimIsBounded) {
  ModelConfig c;
  c.path = "m/config.json";
  c.head_dim = 256;
  for (const ModelFamily& f : model_families()) {
    c.model_type = f.model_type;
    EXPECT_EQ(cuda_stage_refusal(c), "") << f.model_type;
  }
  c.model_type = "llama";
  c.quant_method = "fbgemm_fp8";
  EXPECT_EQ(cuda_stage_refusal(c), "");
  c.model_type = "qwen3";
  c.head_dim = kCudaMaxHeadDim + 2;
  EXPECT_EQ(cuda_stage_refusal(c), "m/config.json: the CUDA forward takes head_dim up to 512 (this "
                                   "config has 514); use --backend cpu");
  c.model_type = "deepseek_v3";
  c.head_dim = 64;
  c.mla = {1536, 512, 128, 64, 128, true};  // DeepSeek-V3's: keys of 192 dims, values of 128
  EXPECT_EQ(cuda_stage_refusal(c), "");
  c.mla.qk_nope_head_dim = 512;
  EXPECT_EQ(cuda_stage_refusal(c), "m/config.json: the CUDA forward takes MLA heads of up to 512 dims (this "
                                   "config has qk_nope_head_dim + qk_rope_head_dim 576, v_head_dim 128); use "
                                   "--backend cpu");
}

TEST(Rope, RotateHalfIsAComplexRotationOfPairs) {
  // Pair (x[i], x[i+d/2]) as a complex number, rotated by angle a_i.
  float x[6] = {1, 2, 3, -4, 5, 0.5f};
  const float a[3] = {0.3f, -1.2f, 2.5f};
  float cs[3], sn[3];
  for (int i = 0; i < 3; ++i) cs[i] = std::cos(a[i]), sn[i] = std::sin(a[i]);
  float y[6];
  std::copy(x, x + 6, y);
  rope_rotate(y, 6, cs, sn);
  for (int i = 0; i < 3; ++i) {
    std::complex<double> z(x[i], x[i + 3]), r = z * std::polar(1.0, double(a[i]));
    EXPECT_NEAR(y[i], r.real(), 1e-6);
    EXPECT_NEAR(y[i + 3], r.imag(), 1e-6);
  }
}

TEST(Norm, RmsNormAndGemmaPlusOne) {
  const float x[4] = {1, -2, 3, 0.5f}, w[4] = {0.5f, 1, 2, -1};
  const double ms = (1 + 4 + 9 + 0.25) / 4, eps = 1e-5, r = 1 / std::sqrt(ms + eps);
  float y[4], z[4];
  rms_norm(x, w, 4, eps, false, y);
  rms_norm(x, w, 4, eps, true, z);
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(y[i], x[i] * r * w[i], 1e-6);
    EXPECT_NEAR(z[i], x[i] * r * (1 + w[i]), 1e-6);
  }
}

TEST(Act, KnownValues) {
  EXPECT_NEAR(apply_act(parse_act("silu"), 1.f), 0.7310585786, 1e-6);
  EXPECT_NEAR(apply_act(parse_act("gelu_pytorch_tanh"), 1.f), 0.8411919906, 1e-6);
  EXPECT_NEAR(apply_act(parse_act("gelu"), 1.f), 0.8413447461, 1e-6);
  EXPECT_THROW(parse_act("relu2"), Error);
}

TEST(Clamp, Parsing) {
  Clamp c = parse_clamp("3:1234=-7.5");
  EXPECT_EQ(c.layer, 3);
  EXPECT_EQ(c.neuron, 1234);
  EXPECT_FLOAT_EQ(c.value, -7.5f);
  for (const char* bad : {"3:12", "3=4", ":1=2", "a:1=2", "1:2=x", "1:2=nan", "1:2=3=4", "1=2:3"})
    EXPECT_THROW(parse_clamp(bad), Error) << bad;
  EXPECT_EQ(parse_values("0,5,10.5,-2", "--values"), (std::vector<float>{0, 5, 10.5f, -2}));
  EXPECT_THROW(parse_values("0,,1", "--values"), Error);
  EXPECT_THROW(parse_values("", "--values"), Error);
  EXPECT_EQ(parse_clamp_site("up"), ClampSite::Up);
  EXPECT_THROW(parse_clamp_site("down"), Error);
}

// ---- a tiny model against a naive loop ----------------------------------------------------
constexpr int V = 11, H = 8, I = 12, NH = 2, NKV = 1, HD = 4, QD = NH * HD, KVD = NKV * HD;

struct Tiny {
  std::map<std::string, std::vector<float>> w;
  fs::path dir;
};

Tiny make_tiny() {
  Tiny t;
  t.dir = fs::temp_directory_path() / ("fi_test_forward_" + std::to_string(::getpid()));
  fs::create_directories(t.dir);
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.f, 0.5f);
  std::vector<TensorData> tensors;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float base) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = base + nd(rng);
    t.w[name] = v;
    std::vector<uint8_t> bytes(v.size() * 4);
    std::memcpy(bytes.data(), v.data(), bytes.size());
    tensors.push_back({name, DType::F32, shape, bytes});
  };
  add("model.embed_tokens.weight", {V, H}, 0);
  add("lm_head.weight", {V, H}, 0);
  add("model.norm.weight", {H}, 1);
  add("model.layers.0.input_layernorm.weight", {H}, 1);
  add("model.layers.0.self_attn.q_proj.weight", {QD, H}, 0);
  add("model.layers.0.self_attn.k_proj.weight", {KVD, H}, 0);
  add("model.layers.0.self_attn.v_proj.weight", {KVD, H}, 0);
  add("model.layers.0.self_attn.o_proj.weight", {H, QD}, 0);
  add("model.layers.0.post_attention_layernorm.weight", {H}, 1);
  add("model.layers.0.mlp.gate_proj.weight", {I, H}, 0);
  add("model.layers.0.mlp.up_proj.weight", {I, H}, 0);
  add("model.layers.0.mlp.down_proj.weight", {H, I}, 0);
  write_safetensors((t.dir / "model.safetensors").string(), tensors);
  std::ofstream(t.dir / "config.json")
      << R"({"model_type": "llama", "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 11, "rms_norm_eps": 1e-5,
            "rope_theta": 10.0, "tie_word_embeddings": false})";
  return t;
}

// logits [T, V] of the whole sequence, straight from the definitions, in double.
std::vector<double> naive(Tiny& t, const std::vector<int>& ids, int clamp_n, double clamp_v, bool up_site) {
  auto W = [&](const std::string& n) -> const std::vector<float>& { return t.w.at(n); };
  const std::string p = "model.layers.0.";
  const int T = int(ids.size());
  auto norm = [](const double* x, const std::vector<float>& g, double* out) {
    double ss = 0;
    for (int i = 0; i < H; ++i) ss += x[i] * x[i];
    for (int i = 0; i < H; ++i) out[i] = x[i] / std::sqrt(ss / H + 1e-5) * g[i];
  };
  auto mat = [](const std::vector<float>& w, int rows, int cols, const double* x, double* y) {
    for (int r = 0; r < rows; ++r) {
      y[r] = 0;
      for (int c = 0; c < cols; ++c) y[r] += double(w[size_t(r * cols + c)]) * x[c];
    }
  };
  std::vector<double> x(size_t(T * H)), q(size_t(T * QD)), k(size_t(T * KVD)), v(size_t(T * KVD));
  for (int t0 = 0; t0 < T; ++t0)
    for (int h = 0; h < H; ++h) x[size_t(t0 * H + h)] = W("model.embed_tokens.weight")[size_t(ids[t0] * H + h)];
  for (int s = 0; s < T; ++s) {
    double n[H];
    norm(&x[size_t(s * H)], W(p + "input_layernorm.weight"), n);
    mat(W(p + "self_attn.q_proj.weight"), QD, H, n, &q[size_t(s * QD)]);
    mat(W(p + "self_attn.k_proj.weight"), KVD, H, n, &k[size_t(s * KVD)]);
    mat(W(p + "self_attn.v_proj.weight"), KVD, H, n, &v[size_t(s * KVD)]);
    auto rot = [&](double* a) {  // theta 10, rotate-half
      for (int i = 0; i < HD / 2; ++i) {
        double ang = s * std::pow(10.0, -2.0 * i / HD), c = std::cos(ang), sn = std::sin(ang);
        double a1 = a[i], a2 = a[i + HD / 2];
        a[i] = a1 * c - a2 * sn;
        a[i + HD / 2] = a2 * c + a1 * sn;
      }
    };
    for (int h = 0; h < NH; ++h) rot(&q[size_t(s * QD + h * HD)]);
    rot(&k[size_t(s * KVD)]);
  }
  std::vector<double> logits(size_t(T * V));
  for (int s = 0; s < T; ++s) {
    double ctx[QD] = {0}, o[H], n[H], g[I], u[I], d[H];
    for (int h = 0; h < NH; ++h) {  // both query heads read the one kv head
      std::vector<double> sc(size_t(s + 1));
      double mx = -1e300, sum = 0;
      for (int j = 0; j <= s; ++j) {
        sc[j] = 0;
        for (int i = 0; i < HD; ++i) sc[j] += q[size_t(s * QD + h * HD + i)] * k[size_t(j * KVD + i)];
        sc[j] /= std::sqrt(double(HD));
        mx = std::max(mx, sc[j]);
      }
      for (int j = 0; j <= s; ++j) sum += (sc[j] = std::exp(sc[j] - mx));
      for (int j = 0; j <= s; ++j)
        for (int i = 0; i < HD; ++i) ctx[h * HD + i] += sc[j] / sum * v[size_t(j * KVD + i)];
    }
    mat(W(p + "self_attn.o_proj.weight"), H, QD, ctx, o);
    for (int i = 0; i < H; ++i) x[size_t(s * H + i)] += o[i];
    norm(&x[size_t(s * H)], W(p + "post_attention_layernorm.weight"), n);
    mat(W(p + "mlp.gate_proj.weight"), I, H, n, g);
    mat(W(p + "mlp.up_proj.weight"), I, H, n, u);
    if (clamp_n >= 0 && up_site) u[clamp_n] = clamp_v;
    for (int i = 0; i < I; ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
    if (clamp_n >= 0 && !up_site) g[clamp_n] = clamp_v;
    mat(W(p + "mlp.down_proj.weight"), H, I, g, d);
    for (int i = 0; i < H; ++i) x[size_t(s * H + i)] += d[i];
    norm(&x[size_t(s * H)], W("model.norm.weight"), n);
    mat(W("lm_head.weight"), V, H, n, &logits[size_t(s * V)]);
  }
  return logits;
}

TEST(Forward, TinyModelMatchesNaiveLoopWithCacheAndClamps) {
  Tiny t = make_tiny();
  Model model(t.dir.string());
  Forward f(model, {"cpu"});
  const std::vector<int32_t> ids = {3, 7, 1, 10, 0, 4};
  const std::vector<int> ids_i(ids.begin(), ids.end());
  struct Case {
    int n;
    double v;
    bool up;
  };
  for (Case c : {Case{-1, 0, false}, Case{5, 2.5, false}, Case{5, 2.5, true}, Case{0, -4, true}}) {
    std::vector<Clamp> cl;
    if (c.n >= 0) cl.push_back({0, c.n, float(c.v)});
    f.set_clamps(cl, c.up ? ClampSite::Up : ClampSite::Act);
    const std::vector<double> want = naive(t, ids_i, c.n, c.v, c.up);
    f.reset();
    const std::vector<float> all = f.forward(ids, true);  // one prefill
    ASSERT_EQ(all.size(), ids.size() * V);
    for (size_t i = 0; i < all.size(); ++i) EXPECT_NEAR(all[i], want[i], 2e-5) << "clamp " << c.n << " at " << i;
    f.reset();  // the same through the KV cache: 2 tokens, then one at a time
    std::vector<float> last = f.forward({ids[0], ids[1]});
    for (size_t s = 2; s < ids.size(); ++s) last = f.forward({ids[s]});
    EXPECT_EQ(f.position(), int64_t(ids.size()));
    for (int i = 0; i < V; ++i) EXPECT_NEAR(last[i], want[(ids.size() - 1) * V + i], 2e-5);
  }
  EXPECT_THROW(f.set_clamps({{1, 0, 1.f}}, ClampSite::Act), Error);   // layer out of range
  EXPECT_THROW(f.set_clamps({{0, 12, 1.f}}, ClampSite::Act), Error);  // neuron out of range
  EXPECT_THROW(f.forward({11}), Error);                                // token out of range
  std::error_code ec;
  fs::remove_all(t.dir, ec);
}

TEST(Generate, GreedyIsArgmaxOfEachStep) {
  Tiny t = make_tiny();
  Model model(t.dir.string());
  Forward f(model, {"cpu"});
  GenerateOptions o;
  o.max_new_tokens = 4;
  std::vector<int32_t> seq = {2, 9};
  std::vector<int32_t> out = generate(f, seq, o);
  ASSERT_EQ(out.size(), 4u);
  for (int32_t id : out) {
    const std::vector<double> want = naive(t, std::vector<int>(seq.begin(), seq.end()), -1, 0, false);
    int best = 0;
    for (int i = 1; i < V; ++i)
      if (want[(seq.size() - 1) * V + i] > want[(seq.size() - 1) * V + best]) best = i;
    EXPECT_EQ(id, best);
    seq.push_back(id);
  }
  o.stop_ids = {out[1]};  // stops before the first occurrence of the stop id
  EXPECT_EQ(generate(f, {2, 9}, o), std::vector<int32_t>(out.begin(), std::find(out.begin(), out.end(), out[1])));
  std::error_code ec;
  fs::remove_all(t.dir, ec);
}

}  // namespace
