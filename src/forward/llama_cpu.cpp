// The CPU stage of the forward pass (see stage.h), computing in fp32. Per layer:
// x += o(attn(rope(q), rope(k), v)) of norm(x); x += down(act(gate(n)) * up(n)) of n = norm(x);
// the last stage adds the final norm and the LM-head. Matrices stay in the checkpoint's dtype
// (forward/weight.h: 2 bytes per parameter for bf16) and are widened exactly as they are used.
#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "forward/ops.h"
#include "forward/stage.h"
#include "forward/weight.h"
#include "model/layer_tensors.h"
#include "model/rms_norm.h"

namespace fi {
namespace {
class CpuStage final : public Stage {
 public:
  CpuStage(const Model& model, const StageSpan& span);
  const char* name() const override { return "cpu"; }
  void set_clamps(const std::vector<Clamp>& clamps, ClampSite site) override {
    clamps_ = clamps;
    site_ = site;
  }
  void reset() override {
    for (Layer& w : layers_) {
      w.k_cache.clear();
      w.v_cache.clear();
    }
  }
  void embed(const std::vector<int32_t>& tokens, float* x) override;
  void layers(float* x, int64_t T, int64_t pos) override;
  void head(const float* x, int64_t n, float* logits) override;

 private:
  struct Layer {
    std::vector<float> attn_norm, mlp_norm, q_bias, k_bias, v_bias;
    Weight q, k, v, o;       // q: [nh*hd, H], k, v: [nkv*hd, H], o: [H, nh*hd]
    Weight gate, up, down;   // gate, up: [I, H]; down: [H, I]
    std::vector<float> k_cache, v_cache;          // [positions, nkv*hd]
  };
  const ModelConfig& config() const { return model_.cfg; }
  void attention(Layer& w, const float* xn, int64_t T, int64_t pos, float* out);  // xn, out: [T, H]
  void mlp(int64_t l, const float* xn, int64_t T, float* out);                   // xn, out: [T, H]

  const Model& model_;
  StageSpan span_;
  Act act_;
  std::vector<Layer> layers_;                // layers span_.first .. span_.last - 1
  std::vector<float> final_norm_;
  Weight lm_head_;    // [V, H] (the embedding when tied)
  Weight embedding_;  // [V, H]: tied model, embed stage without the head (untied: read per token)
  std::vector<double> inv_freq_;             // [hd/2]
  std::vector<Clamp> clamps_;
  ClampSite site_ = ClampSite::Act;
};

// The tensors as model/layer_tensors.h lists and checks them for each layer.
CpuStage::CpuStage(const Model& model, const StageSpan& span)
    : model_(model), span_(span), act_(parse_act(model.cfg.hidden_act)) {
  const ModelConfig& c = model.cfg;
  check_forward_supported(c);
  check_layer_span(c, span.first, span.last);
  layers_.resize(size_t(span.last - span.first));
  for (int64_t l = span.first; l < span.last; ++l) {
    Layer& w = layers_[size_t(l - span.first)];
    const LayerTensors t = layer_tensors(model, l);
    w.attn_norm = t[Role::AttnNorm].read_f32();
    w.q = Weight::load(t[Role::Q]);
    w.k = Weight::load(t[Role::K]);
    w.v = Weight::load(t[Role::V]);
    w.o = Weight::load(t[Role::O]);
    if (t.find(Role::QBias)) {  // Qwen2's q/k/v biases (the three together)
      w.q_bias = t[Role::QBias].read_f32();
      w.k_bias = t[Role::KBias].read_f32();
      w.v_bias = t[Role::VBias].read_f32();
    }
    w.mlp_norm = t[Role::MlpNorm].read_f32();
    w.gate = Weight::load(t[Role::Gate]);
    w.up = Weight::load(t[Role::Up]);
    w.down = Weight::load(t[Role::Down]);
  }
  if (span.head) {
    final_norm_ = model_tensor(model, Role::FinalNorm).read_f32();
    lm_head_ = Weight::load(model_tensor(model, Role::LmHead));
  }
  // A tied embedding is the LM-head already loaded on a one-stage model; an untied one is read
  // from disk a row per token (checked here all the same).
  if (span.embed && c.tie_word_embeddings && !span.head)
    embedding_ = Weight::load(model_tensor(model, Role::Embed));
  if (span.embed && !c.tie_word_embeddings) model_tensor(model, Role::Embed);
  inv_freq_ = rope_inv_freq(c);
}

void CpuStage::embed(const std::vector<int32_t>& tokens, float* x) {
  const ModelConfig& c = config();
  const int64_t H = c.hidden_size;
  FI_CHECK(span_.embed, "forward: embed() on a stage without the embedding");
  const SafetensorsFile* file = c.tie_word_embeddings ? nullptr : &model_.ckpt.file_of(model_.names.embed);
  const Weight& table = embedding_.empty() ? lm_head_ : embedding_;
  check_token_ids(c, tokens);
  for (size_t t = 0; t < tokens.size(); ++t) {
    const int64_t id = tokens[t];
    float* row = x + t * H;
    if (file) {
      file->read_rows_f32(model_.ckpt.info(model_.names.embed), id, 1, row);
    } else {
      table.row(id, row);

    }
    // Gemma scales the embedding by sqrt(hidden_size) (rounded to the activation dtype, fp32 here).
    if (c.norm_plus_one) {
      const float s = float(std::sqrt(double(H)));
      for (int64_t h = 0; h < H; ++h) row[h] *= s;
    }
  }
}

// Grouped-query causal attention over the cached positions plus the T new ones.
void CpuStage::attention(Layer& w, const float* xn, int64_t T, int64_t pos, float* out) {
  const ModelConfig& c = config();
  const int64_t hd = c.head_dim, nh = c.num_heads, nkv = c.num_kv_heads;
  const int64_t qd = nh * hd, kvd = nkv * hd, P = pos + T;
  std::vector<float> q(size_t(T * qd));
  w.k_cache.resize(size_t(P * kvd));
  w.v_cache.resize(size_t(P * kvd));
  linear(xn, T, w.q, w.q_bias, q.data());
  linear(xn, T, w.k, w.k_bias, w.k_cache.data() + pos * kvd);
  linear(xn, T, w.v, w.v_bias, w.v_cache.data() + pos * kvd);

  std::vector<float> cs(size_t(hd / 2)), sn(size_t(hd / 2));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < hd / 2; ++i) {
      const double a = double(pos + t) * inv_freq_[i];
      cs[i] = float(std::cos(a));
      sn[i] = float(std::sin(a));
    }
    for (int64_t h = 0; h < nh; ++h) rope_rotate(&q[t * qd + h * hd], hd, cs.data(), sn.data());
    for (int64_t h = 0; h < nkv; ++h)
      rope_rotate(&w.k_cache[(pos + t) * kvd + h * hd], hd, cs.data(), sn.data());
  }

  std::vector<float> ctx(static_cast<size_t>(T * qd), 0.f), score(static_cast<size_t>(P));
  const float scale = float(1.0 / std::sqrt(double(hd)));
  const int64_t group = nh / nkv;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t last = pos + t;  // causal: keys 0..last
    for (int64_t h = 0; h < nh; ++h) {
      const float* qh = &q[t * qd + h * hd];
      const int64_t kh = h / group;
      float mx = -INFINITY;
      for (int64_t j = 0; j <= last; ++j) {
        const float* kj = &w.k_cache[j * kvd + kh * hd];
        float s = 0;
        for (int64_t i = 0; i < hd; ++i) s += qh[i] * kj[i];
        score[j] = s * scale;
        mx = std::max(mx, score[j]);
      }
      double sum = 0;
      for (int64_t j = 0; j <= last; ++j) sum += (score[j] = std::exp(score[j] - mx));
      float* o = &ctx[t * qd + h * hd];
      for (int64_t j = 0; j <= last; ++j) {
        const float p = float(score[j] / sum);
        const float* vj = &w.v_cache[j * kvd + kh * hd];
        for (int64_t i = 0; i < hd; ++i) o[i] += p * vj[i];
      }
    }
  }
  linear(ctx.data(), T, w.o, {}, out);
}

// SwiGLU MLP with the clamp hooks: h = act(gate·x) * (up·x), out = down·h.
void CpuStage::mlp(int64_t l, const float* xn, int64_t T, float* out) {
  const int64_t I = config().intermediate_size;
  Layer& w = layers_[size_t(l - span_.first)];
  std::vector<float> g(size_t(T * I)), u(size_t(T * I));
  linear(xn, T, w.gate, {}, g.data());
  linear(xn, T, w.up, {}, u.data());
  // Site up: the up_proj output is replaced before the multiply (still gated by act(gate)).
  for (const Clamp& k : clamps_)
    if (k.layer == l && site_ == ClampSite::Up)
      for (int64_t t = 0; t < T; ++t) u[t * I + k.neuron] = k.value;
  for (int64_t i = 0; i < T * I; ++i) g[i] = apply_act(act_, g[i]) * u[i];
  // Site act: the down_proj input itself is replaced, so the neuron writes value · down[:, n].
  for (const Clamp& k : clamps_)
    if (k.layer == l && site_ == ClampSite::Act)
      for (int64_t t = 0; t < T; ++t) g[t * I + k.neuron] = k.value;
  linear(g.data(), T, w.down, {}, out);
}

void CpuStage::layers(float* x, int64_t T, int64_t pos) {
  const ModelConfig& c = config();
  const int64_t H = c.hidden_size;
  std::vector<float> xn(size_t(T * H)), y(size_t(T * H));
  for (int64_t l = span_.first; l < span_.last; ++l) {
    Layer& w = layers_[size_t(l - span_.first)];
    FI_CHECK(int64_t(w.k_cache.size()) == pos * c.num_kv_heads * c.head_dim,
             "forward: the KV cache does not hold the positions before this call");
    for (int64_t t = 0; t < T; ++t)
      rms_norm(&x[t * H], w.attn_norm.data(), H, c.rms_norm_eps, c.norm_plus_one, &xn[t * H]);
    attention(w, xn.data(), T, pos, y.data());
    for (int64_t i = 0; i < T * H; ++i) x[i] += y[i];
    for (int64_t t = 0; t < T; ++t)
      rms_norm(&x[t * H], w.mlp_norm.data(), H, c.rms_norm_eps, c.norm_plus_one, &xn[t * H]);
    mlp(l, xn.data(), T, y.data());
    for (int64_t i = 0; i < T * H; ++i) x[i] += y[i];
  }
}

void CpuStage::head(const float* x, int64_t n, float* logits) {
  const ModelConfig& c = config();
  const int64_t H = c.hidden_size;
  FI_CHECK(span_.head, "forward: head() on a stage without the LM-head");
  std::vector<float> xn(size_t(n * H));
  for (int64_t t = 0; t < n; ++t)
    rms_norm(&x[t * H], final_norm_.data(), H, c.rms_norm_eps, c.norm_plus_one, &xn[t * H]);
  linear(xn.data(), n, lm_head_, {}, logits);
}

}  // namespace

std::unique_ptr<Stage> make_cpu_stage(const Model& model, const StageSpan& span) {
  return std::make_unique<CpuStage>(model, span);
}

}  // namespace fi
