// The CPU stage of the forward pass (see stage.h), computing in fp32. Per layer, for every
// dense family (the tensors each has are model/layer_tensors.cpp's tables):
//   a = o(attn(rope(qn(q)), rope(kn(k)), v)) of pre(x);   x += post_attn(a)
//   m = down(act(gate(n)) * up(n)) of n = pre_mlp(x);     x += post_mlp(m)
// where a norm the family lacks is the identity: Llama-style layers have the pre-norms only,
// OLMo 2 the post-norms only, Gemma 2/3 all four; qn/kn are Qwen 3's and Gemma 3's per-head or
// OLMo 2's whole-width q/k RMSNorms. Attention is causal, over a window on sliding layers, scaled
// by 1/sqrt(query_pre_attn_scalar or head_dim), soft-capped where the config says (Gemma 2); the
// last stage adds the final norm, the LM-head and the final soft-cap. Matrices stay in the
// checkpoint's dtype (forward/weight.h: 2 bytes per parameter for bf16) and are widened exactly
// as they are used.
#include <algorithm>
#include <cmath>
#include <functional>

#include "common/error.h"
#include "forward/ops.h"
#include "forward/stage.h"
#include "forward/weight.h"
#include "model/layer_tensors.h"
#include "model/rms_norm.h"

namespace fi {
namespace {

std::vector<float> read_if(const LayerTensors& t, Role r) {
  const ModelTensor* m = t.find(r);
  return m ? m->read_f32() : std::vector<float>();
}

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
  void layers(float* x, int64_t T, int64_t pos) override { run(x, T, pos, span_.first, span_.last); }
  void layer_range(float* x, int64_t T, int64_t first, int64_t last) override;
  bool layer_range_batch(float* x, int64_t B, int64_t T, int64_t first, int64_t last,
                         const std::vector<std::vector<Clamp>>& clamps, ClampSite site) override;
  void head(const float* x, int64_t n, float* logits) override;

 private:
  // Norm gammas are empty where the family has no such norm.
  struct Layer {
    std::vector<float> attn_norm, mlp_norm, post_attn_norm, post_mlp_norm;  // [H]
    std::vector<float> q_norm, k_norm;  // [hd] per head, or [nh*hd], [nkv*hd] over the width
    std::vector<float> q_bias, k_bias, v_bias;
    Weight q, k, v, qkv, o;  // q: [nh*hd, H], k, v: [nkv*hd, H] or qkv: all three by rows; o: [H, nh*hd]
    Weight gate, up, gate_up, down;  // gate, up: [I, H] or gate_up: [2I, H]; down: [H, I]
    // An MoE layer: the router [E, H], each routed expert's MLP, the shared expert(s) and
    // Qwen2-MoE's shared_expert_gate [1, H] (empty where the family has none).
    struct Mlp {
      Weight gate, up, down;
    };
    bool moe = false;
    Weight router, shared_router;
    std::vector<float> router_bias;  // DeepSeek's e_score_correction_bias [E]
    // DeepSeek's MLA (multi-head latent attention); q_a empty: q is the plain q weight.
    bool mla = false;
    Weight q_a, q_b, kv_a, kv_b;
    std::vector<float> q_a_norm, kv_a_norm;
    std::vector<Mlp> experts;
    Mlp shared;
    bool sliding = false;            // attends to the last sliding_window positions only
    std::vector<float> k_cache, v_cache;  // [positions, nkv*hd]; MLA: nh*(nope+rope), nh*v_head_dim
  };
  int64_t k_width(const Layer& w) const {  // the k cache's values per position
    const ModelConfig& c = config();
    return w.mla ? c.num_heads * (c.mla.qk_nope_head_dim + c.mla.qk_rope_head_dim) : c.num_kv_heads * c.head_dim;
  }
  const ModelConfig& config() const { return model_.cfg; }
  void norm_rows(const float* x, const std::vector<float>& w, int64_t rows, int64_t n, float* out) const;
  void project_qkv(Layer& w, const float* xn, int64_t T, int64_t pos, float* q);
  void attention(Layer& w, const float* xn, int64_t T, int64_t pos, float* out);  // xn, out: [T, H]
  void mla_attention(Layer& w, const float* xn, int64_t T, int64_t pos, float* out);
  void mlp(int64_t l, const float* xn, int64_t T, float* out);                   // xn, out: [T, H]
  void moe_mlp(int64_t l, Layer& w, const float* xn, int64_t T, float* out);
  // rows: the batch row of each of the T rows (an expert's gathered tokens); null: row t is t.
  void activate_clamped(int64_t l, int64_t e, float* g, float* u, int64_t I, int64_t T,
                        const int64_t* rows = nullptr) const;
  // The clamps of batch row t: its sequence's in a batch (layer_range_batch), else clamps_.
  const std::vector<Clamp>& clamps_of(int64_t t) const { return seq_ > 0 ? seq_clamps_[size_t(t / seq_)] : clamps_; }
  // down(act(gate·x) * up·x) of I neurons with the clamps of (layer l, expert e).
  void gated(int64_t l, int64_t e, const Weight& gate, const Weight& up, const Weight& down, int64_t I,
             const float* xn, int64_t T, float* out, const int64_t* rows = nullptr);
  void run(float* x, int64_t T, int64_t pos, int64_t first, int64_t last);  // layers [first, last)

  const Model& model_;
  StageSpan span_;
  Act act_;
  std::vector<Layer> layers_;                // layers span_.first .. span_.last - 1
  std::vector<float> final_norm_;
  Weight lm_head_;    // [V, H] (the embedding when tied)
  Weight embedding_;  // [V, H]: tied model, embed stage without the head (untied: read per token)
  std::vector<Clamp> clamps_;
  ClampSite site_ = ClampSite::Act;
  // A batch (layer_range_batch): rows come in sequences of seq_ positions, each from position 0,
  // sequence b clamped by seq_clamps_[b]. seq_ = 0: one sequence of every row, clamped by clamps_.
  int64_t seq_ = 0;
  std::vector<std::vector<Clamp>> seq_clamps_;
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
    w.attn_norm = read_if(t, Role::AttnNorm);
    w.mlp_norm = read_if(t, Role::MlpNorm);
    w.post_attn_norm = read_if(t, Role::PostAttnNorm);
    w.post_mlp_norm = read_if(t, Role::PostMlpNorm);
    w.q_norm = read_if(t, Role::QNorm);
    w.k_norm = read_if(t, Role::KNorm);
    if (t.find(Role::KVA)) {  // DeepSeek's MLA
      w.mla = true;
      if (t.find(Role::QA)) {
        w.q_a = Weight::load(t[Role::QA]);
        w.q_a_norm = t[Role::QANorm].read_f32();
        w.q_b = Weight::load(t[Role::QB]);
      } else {
        w.q = Weight::load(t[Role::Q]);
      }
      w.kv_a = Weight::load(t[Role::KVA]);
      w.kv_a_norm = t[Role::KVANorm].read_f32();
      w.kv_b = Weight::load(t[Role::KVB]);
    } else if (t.find(Role::QKV)) {  // Phi-3: q, k, v rows of one matrix
      w.qkv = Weight::load(t[Role::QKV]);
    } else {
      w.q = Weight::load(t[Role::Q]);
      w.k = Weight::load(t[Role::K]);
      w.v = Weight::load(t[Role::V]);
    }
    w.o = Weight::load(t[Role::O]);
    if (t.find(Role::QBias)) {  // Qwen2's q/k/v biases (the three together)
      w.q_bias = t[Role::QBias].read_f32();
      w.k_bias = t[Role::KBias].read_f32();
      w.v_bias = t[Role::VBias].read_f32();
    }
    if (c.is_moe_layer(l)) {  // experts in table order: every gate, then every up, then every down
      w.moe = true;
      w.router = Weight::load(t[Role::Router]);
      w.router_bias = read_if(t, Role::RouterBias);
      w.experts.resize(size_t(c.moe.experts));
      size_t gi = 0, ui = 0, di = 0;
      for (const ModelTensor& m : t.tensors) {
        if (m.role == Role::ExpertGate) w.experts.at(gi++).gate = Weight::load(m);
        if (m.role == Role::ExpertUp) w.experts.at(ui++).up = Weight::load(m);
        if (m.role == Role::ExpertDown) w.experts.at(di++).down = Weight::load(m);
      }
      if (t.find(Role::SharedGate)) {
        w.shared = {Weight::load(t[Role::SharedGate]), Weight::load(t[Role::SharedUp]), Weight::load(t[Role::SharedDown])};
        if (t.find(Role::SharedRouter)) w.shared_router = Weight::load(t[Role::SharedRouter]);
      }
    } else if (t.find(Role::GateUp)) {  // Phi-3: gate rows, then up rows
      w.gate_up = Weight::load(t[Role::GateUp]);
    } else {
      w.gate = Weight::load(t[Role::Gate]);
      w.up = Weight::load(t[Role::Up]);
    }
    if (!w.moe) w.down = Weight::load(t[Role::Down]);
    w.sliding = c.sliding_window > 0 && c.sliding_layers.at(size_t(l)) != 0;
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

// out [rows, n] = RMSNorm of each row of x [rows, n] by w [n]; a copy when w is empty (no norm).
void CpuStage::norm_rows(const float* x, const std::vector<float>& w, int64_t rows, int64_t n,
                         float* out) const {
  const ModelConfig& c = config();
  if (w.empty()) {
    if (out != x) std::copy(x, x + rows * n, out);
    return;
  }
  for (int64_t r = 0; r < rows; ++r) rms_norm(&x[r * n], w.data(), n, c.rms_norm_eps, c.norm_plus_one, &out[r * n]);
}

// q [T, nh*hd] and the cache rows pos.. of k and v: the projections, q/k norms and RoPE.
void CpuStage::project_qkv(Layer& w, const float* xn, int64_t T, int64_t pos, float* q) {
  const ModelConfig& c = config();
  const int64_t hd = c.head_dim, nh = c.num_heads, nkv = c.num_kv_heads;
  const int64_t qd = nh * hd, kvd = nkv * hd;
  float* k = w.k_cache.data() + pos * kvd;
  float* v = w.v_cache.data() + pos * kvd;
  if (!w.qkv.empty()) {
    std::vector<float> all(size_t(T * (qd + 2 * kvd)));
    linear(xn, T, w.qkv, {}, all.data());
    for (int64_t t = 0; t < T; ++t) {
      const float* r = &all[size_t(t * (qd + 2 * kvd))];
      std::copy(r, r + qd, q + t * qd);
      std::copy(r + qd, r + qd + kvd, k + t * kvd);
      std::copy(r + qd + kvd, r + qd + 2 * kvd, v + t * kvd);
    }
  } else {
    linear(xn, T, w.q, w.q_bias, q);
    linear(xn, T, w.k, w.k_bias, k);
    linear(xn, T, w.v, w.v_bias, v);
  }
  // q/k norms before RoPE: per head ([hd] gamma) or over the whole width (OLMo 2).
  if (!w.q_norm.empty()) {
    const int64_t n = int64_t(w.q_norm.size());
    norm_rows(q, w.q_norm, T * qd / n, n, q);
  }
  if (!w.k_norm.empty()) {
    const int64_t n = int64_t(w.k_norm.size());
    norm_rows(k, w.k_norm, T * kvd / n, n, k);
  }
  const int64_t S = seq_ > 0 ? seq_ : T;  // positions per sequence
  const RopeFreqs rf = rope_freqs(c, pos + S, w.sliding);
  std::vector<float> cs(size_t(hd / 2)), sn(size_t(hd / 2));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < hd / 2; ++i) {
      const double a = double(pos + t % S) * rf.inv_freq[size_t(i)];
      cs[size_t(i)] = float(std::cos(a) * rf.attention_factor);
      sn[size_t(i)] = float(std::sin(a) * rf.attention_factor);
    }
    for (int64_t h = 0; h < nh; ++h) rope_rotate(&q[t * qd + h * hd], hd, cs.data(), sn.data());
    for (int64_t h = 0; h < nkv; ++h) rope_rotate(&k[t * kvd + h * hd], hd, cs.data(), sn.data());
  }
}

// Grouped-query causal attention over the cached positions plus the T new ones: query position
// i sees keys j with i - window < j <= i on a sliding layer (transformers' sliding mask), all
// j <= i otherwise.
void CpuStage::attention(Layer& w, const float* xn, int64_t T, int64_t pos, float* out) {
  const ModelConfig& c = config();
  const int64_t hd = c.head_dim, nh = c.num_heads, nkv = c.num_kv_heads;
  const int64_t qd = nh * hd, kvd = nkv * hd, P = pos + T;
  std::vector<float> q(size_t(T * qd));
  w.k_cache.resize(size_t(P * kvd));
  w.v_cache.resize(size_t(P * kvd));
  project_qkv(w, xn, T, pos, q.data());

  std::vector<float> ctx(static_cast<size_t>(T * qd), 0.f), score(static_cast<size_t>(P));
  const double scalar = c.query_pre_attn_scalar > 0 ? c.query_pre_attn_scalar : double(hd);
  const float scale = float(1.0 / std::sqrt(scalar));
  const int64_t group = nh / nkv;
  const int64_t S = seq_ > 0 ? seq_ : T;  // a batch's sequences (pos 0) sit one after the other
  for (int64_t t = 0; t < T; ++t) {
    const int64_t base = (t / S) * S, last = base + pos + t % S;
    const int64_t first = w.sliding ? std::max<int64_t>(base, last - c.sliding_window + 1) : base;
    for (int64_t h = 0; h < nh; ++h) {
      const float* qh = &q[t * qd + h * hd];
      const int64_t kh = h / group;
      float mx = -INFINITY;
      for (int64_t j = first; j <= last; ++j) {
        const float* kj = &w.k_cache[j * kvd + kh * hd];
        float s = 0;
        for (int64_t i = 0; i < hd; ++i) s += qh[i] * kj[i];
        score[j] = softcap(s * scale, c.attn_logit_softcapping);
        mx = std::max(mx, score[j]);
      }
      double sum = 0;
      for (int64_t j = first; j <= last; ++j) sum += (score[j] = std::exp(score[j] - mx));
      float* o = &ctx[t * qd + h * hd];
      for (int64_t j = first; j <= last; ++j) {
        const float p = float(score[j] / sum);
        const float* vj = &w.v_cache[j * kvd + kh * hd];
        for (int64_t i = 0; i < hd; ++i) o[i] += p * vj[i];
      }
    }
  }
  linear(ctx.data(), T, w.o, {}, out);
}

// DeepSeek-V3's multi-head latent attention, as transformers' DeepseekV3Attention computes it:
// q = q_b(norm(q_a(x))) (or q_proj(x)), per head [nope | rope]; kv_a(x) = [latent | k_rope];
// kv_b(norm(latent)) = per head [k_nope | v]; the key of head h is [k_nope_h | k_rope] (one RoPE
// key shared by the heads). RoPE over the rope parts (qk_rope_head_dim = head_dim; pairs
// de-interleaved first where rope_interleave), scores scaled by 1/sqrt(nope + rope) times
// yarn's mscale(factor, mscale_all_dim)^2 where the config has mscale_all_dim.
void CpuStage::mla_attention(Layer& w, const float* xn, int64_t T, int64_t pos, float* out) {
  const ModelConfig& c = config();
  const MlaConfig& a = c.mla;
  const int64_t nh = c.num_heads, nope = a.qk_nope_head_dim, rope = a.qk_rope_head_dim, vd = a.v_head_dim;
  const int64_t qk = nope + rope, kvr = a.kv_lora_rank, P = pos + T;
  std::vector<float> q(size_t(T * nh * qk));
  if (w.q_a.empty()) {
    linear(xn, T, w.q, {}, q.data());
  } else {
    std::vector<float> qa(size_t(T * a.q_lora_rank));
    linear(xn, T, w.q_a, {}, qa.data());
    norm_rows(qa.data(), w.q_a_norm, T, a.q_lora_rank, qa.data());
    linear(qa.data(), T, w.q_b, {}, q.data());
  }
  std::vector<float> kva(size_t(T * (kvr + rope))), latent(size_t(T * kvr));
  linear(xn, T, w.kv_a, {}, kva.data());
  for (int64_t t = 0; t < T; ++t) std::copy(&kva[size_t(t * (kvr + rope))], &kva[size_t(t * (kvr + rope) + kvr)], &latent[size_t(t * kvr)]);
  norm_rows(latent.data(), w.kv_a_norm, T, kvr, latent.data());
  std::vector<float> kvb(size_t(T * nh * (nope + vd)));
  linear(latent.data(), T, w.kv_b, {}, kvb.data());

  const int64_t S = seq_ > 0 ? seq_ : T;  // a batch's sequences (pos 0) sit one after the other
  const RopeFreqs rf = rope_freqs(c, pos + S, false);
  std::vector<float> cs(size_t(rope / 2)), sn(size_t(rope / 2)), tmp(static_cast<size_t>(rope));
  auto rotate = [&](float* x) {  // the rope part of one head, at the position cs/sn were made for
    if (a.rope_interleave) {
      for (int64_t i = 0; i < rope / 2; ++i) {
        tmp[size_t(i)] = x[2 * i];
        tmp[size_t(rope / 2 + i)] = x[2 * i + 1];
      }
      std::copy(tmp.begin(), tmp.end(), x);
    }
    rope_rotate(x, rope, cs.data(), sn.data());
  };
  w.k_cache.resize(size_t(P * nh * qk));
  w.v_cache.resize(size_t(P * nh * vd));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < rope / 2; ++i) {
      const double ang = double(pos + t % S) * rf.inv_freq[size_t(i)];
      cs[size_t(i)] = float(std::cos(ang) * rf.attention_factor);
      sn[size_t(i)] = float(std::sin(ang) * rf.attention_factor);
    }
    float* k_rope = &kva[size_t(t * (kvr + rope) + kvr)];
    rotate(k_rope);
    for (int64_t h = 0; h < nh; ++h) {
      rotate(&q[size_t((t * nh + h) * qk + nope)]);
      float* k = &w.k_cache[size_t(((pos + t) * nh + h) * qk)];
      const float* kv = &kvb[size_t((t * nh + h) * (nope + vd))];
      std::copy(kv, kv + nope, k);
      std::copy(k_rope, k_rope + rope, k + nope);
      std::copy(kv + nope, kv + nope + vd, &w.v_cache[size_t(((pos + t) * nh + h) * vd)]);
    }
  }
  double scale = 1.0 / std::sqrt(double(qk));
  if (c.rope_scaling.mscale_all_dim > 0 && c.rope_scaling.factor > 1) {
    const double m = 0.1 * c.rope_scaling.mscale_all_dim * std::log(c.rope_scaling.factor) + 1.0;
    scale *= m * m;
  }
  std::vector<float> ctx(size_t(T * nh * vd), 0.f), score(static_cast<size_t>(P));
  for (int64_t t = 0; t < T; ++t) {
    const int64_t base = (t / S) * S, last = base + pos + t % S;
    for (int64_t h = 0; h < nh; ++h) {
      const float* qh = &q[size_t((t * nh + h) * qk)];
      float mx = -INFINITY;
      for (int64_t j = base; j <= last; ++j) {
        const float* kj = &w.k_cache[size_t((j * nh + h) * qk)];
        float s = 0;
        for (int64_t i = 0; i < qk; ++i) s += qh[i] * kj[i];
        score[size_t(j)] = float(s * scale);
        mx = std::max(mx, score[size_t(j)]);
      }
      double sum = 0;
      for (int64_t j = base; j <= last; ++j) sum += (score[size_t(j)] = std::exp(score[size_t(j)] - mx));
      float* o = &ctx[size_t((t * nh + h) * vd)];
      for (int64_t j = base; j <= last; ++j) {
        const float p = float(score[size_t(j)] / sum);
        const float* vj = &w.v_cache[size_t((j * nh + h) * vd)];
        for (int64_t i = 0; i < vd; ++i) o[i] += p * vj[i];
      }
    }
  }
  linear(ctx.data(), T, w.o, {}, out);
}

// The gated MLP with the clamp hooks: h = act(gate·x) * (up·x), out = down·h.
void CpuStage::mlp(int64_t l, const float* xn, int64_t T, float* out) {
  const int64_t I = config().intermediate_size;
  Layer& w = layers_[size_t(l - span_.first)];
  if (w.moe) return moe_mlp(l, w, xn, T, out);
  if (w.gate_up.empty()) return gated(l, kDenseMlp, w.gate, w.up, w.down, I, xn, T, out);
  std::vector<float> g(size_t(T * I)), u(size_t(T * I));
  std::vector<float> gu(size_t(T * 2 * I));
  linear(xn, T, w.gate_up, {}, gu.data());
  for (int64_t t = 0; t < T; ++t) {
    std::copy(&gu[size_t(t * 2 * I)], &gu[size_t(t * 2 * I + I)], &g[size_t(t * I)]);
    std::copy(&gu[size_t(t * 2 * I + I)], &gu[size_t(t * 2 * I + 2 * I)], &u[size_t(t * I)]);
  }
  activate_clamped(l, kDenseMlp, g.data(), u.data(), I, T);
  linear(g.data(), T, w.down, {}, out);
}

void CpuStage::gated(int64_t l, int64_t e, const Weight& gate, const Weight& up, const Weight& down, int64_t I,
                     const float* xn, int64_t T, float* out, const int64_t* rows) {
  std::vector<float> g(size_t(T * I)), u(size_t(T * I));
  linear(xn, T, gate, {}, g.data());
  linear(xn, T, up, {}, u.data());
  activate_clamped(l, e, g.data(), u.data(), I, T, rows);
  linear(g.data(), T, down, {}, out);
}

// g = act(g) * u over [T, I], with the clamps of (layer l, expert e) at their site.
void CpuStage::activate_clamped(int64_t l, int64_t e, float* g, float* u, int64_t I, int64_t T,
                                const int64_t* rows) const {
  auto clamp = [&](ClampSite site, float* m) {
    for (int64_t t = 0; t < T; ++t)
      for (const Clamp& k : clamps_of(rows ? rows[t] : t))
        if (k.layer == l && k.expert == e && site_ == site) m[t * I + k.neuron] = k.value;
  };
  // Site up: the up_proj output is replaced before the multiply (still gated by act(gate)).
  clamp(ClampSite::Up, u);
  for (int64_t i = 0; i < T * I; ++i) g[i] = apply_act(act_, g[i]) * u[i];
  // Site act: the down_proj input itself is replaced, so the neuron writes value · down[:, n].
  clamp(ClampSite::Act, g);
}

// A mixture-of-experts MLP as Mixtral, Qwen2-MoE, Qwen3-MoE and DeepSeek-V3 compute it: the
// router's choice of experts and their weights (route_experts, forward/ops.h); out = sum of
// weight x expert(x), plus the shared expert(s) (times sigmoid(shared_expert_gate·x) in
// Qwen2-MoE). Each expert runs
// on the tokens routed to it, so a clamp on it acts at those positions only (unless the clamp
// forces the route: then the expert is among every position's chosen ones).
void CpuStage::moe_mlp(int64_t l, Layer& w, const float* xn, int64_t T, float* out) {
  const ModelConfig& c = config();
  const int64_t H = c.hidden_size, E = c.moe.experts, N = c.moe.expert_size;
  std::vector<float> logits(size_t(T * E));
  linear(xn, T, w.router, {}, logits.data());
  const ExpertRoute route = route_experts(c, l, logits.data(), T, w.router_bias,
                                          [this](int64_t t) -> const std::vector<Clamp>& { return clamps_of(t); });
  const std::vector<std::vector<int64_t>>& tokens = route.tokens;
  const std::vector<std::vector<float>>& weights = route.weights;
  std::fill(out, out + T * H, 0.f);
  std::vector<float> xs, ys;
  for (int64_t e = 0; e < E; ++e) {
    const std::vector<int64_t>& ts = tokens[size_t(e)];
    if (ts.empty()) continue;
    const int64_t n = int64_t(ts.size());
    xs.resize(size_t(n * H));
    ys.resize(size_t(n * H));
    for (int64_t i = 0; i < n; ++i) std::copy(xn + ts[size_t(i)] * H, xn + (ts[size_t(i)] + 1) * H, &xs[size_t(i * H)]);
    const Layer::Mlp& m = w.experts[size_t(e)];
    gated(l, e, m.gate, m.up, m.down, N, xs.data(), n, ys.data(), ts.data());
    for (int64_t i = 0; i < n; ++i)
      for (int64_t h = 0; h < H; ++h) out[ts[size_t(i)] * H + h] += weights[size_t(e)][size_t(i)] * ys[size_t(i * H + h)];
  }
  if (w.shared.gate.empty()) return;
  ys.resize(size_t(T * H));
  gated(l, kSharedExpert, w.shared.gate, w.shared.up, w.shared.down, c.moe.shared_size, xn, T, ys.data());
  std::vector<float> gate(size_t(T), 1.f);
  if (!w.shared_router.empty()) {
    linear(xn, T, w.shared_router, {}, gate.data());
    for (float& g : gate) g = 1.f / (1.f + std::exp(-g));
  }
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) out[t * H + h] += gate[size_t(t)] * ys[size_t(t * H + h)];
}

void CpuStage::layer_range(float* x, int64_t T, int64_t first, int64_t last) {
  first = std::max(first, span_.first);
  last = std::min(last, span_.last);
  for (int64_t l = first; l < last; ++l) {
    layers_[size_t(l - span_.first)].k_cache.clear();
    layers_[size_t(l - span_.first)].v_cache.clear();
  }
  run(x, T, 0, first, last);
}

bool CpuStage::layer_range_batch(float* x, int64_t B, int64_t T, int64_t first, int64_t last,
                                 const std::vector<std::vector<Clamp>>& clamps, ClampSite site) {
  FI_CHECK(int64_t(clamps.size()) == B && B > 0 && T > 0, "forward: a batch of one clamp list per sequence");
  first = std::max(first, span_.first);
  last = std::min(last, span_.last);
  for (int64_t l = first; l < last; ++l) {
    layers_[size_t(l - span_.first)].k_cache.clear();
    layers_[size_t(l - span_.first)].v_cache.clear();
  }
  seq_ = T;
  seq_clamps_ = clamps;
  site_ = site;
  try {
    run(x, B * T, 0, first, last);
  } catch (...) {
    seq_ = 0;
    throw;
  }
  seq_ = 0;
  seq_clamps_.clear();
  return true;
}

void CpuStage::run(float* x, int64_t T, int64_t pos, int64_t first, int64_t last) {
  const ModelConfig& c = config();
  const int64_t H = c.hidden_size;
  std::vector<float> xn(size_t(T * H)), y(size_t(T * H));
  for (int64_t l = first; l < last; ++l) {
    Layer& w = layers_[size_t(l - span_.first)];
    FI_CHECK(int64_t(w.k_cache.size()) == pos * k_width(w),
             "forward: the KV cache does not hold the positions before this call");
    norm_rows(x, w.attn_norm, T, H, xn.data());
    if (w.mla) mla_attention(w, xn.data(), T, pos, y.data());
    else attention(w, xn.data(), T, pos, y.data());
    norm_rows(y.data(), w.post_attn_norm, T, H, y.data());
    for (int64_t i = 0; i < T * H; ++i) x[i] += y[i];
    norm_rows(x, w.mlp_norm, T, H, xn.data());
    mlp(l, xn.data(), T, y.data());
    norm_rows(y.data(), w.post_mlp_norm, T, H, y.data());
    for (int64_t i = 0; i < T * H; ++i) x[i] += y[i];
  }
}

void CpuStage::head(const float* x, int64_t n, float* logits) {
  const ModelConfig& c = config();
  const int64_t H = c.hidden_size;
  FI_CHECK(span_.head, "forward: head() on a stage without the LM-head");
  std::vector<float> xn(size_t(n * H));
  norm_rows(x, final_norm_, n, H, xn.data());
  linear(xn.data(), n, lm_head_, {}, logits);
  if (c.final_logit_softcapping > 0)
    for (int64_t i = 0; i < n * c.vocab_size; ++i) logits[i] = softcap(logits[i], c.final_logit_softcapping);
}

}  // namespace

std::unique_ptr<Stage> make_cpu_stage(const Model& model, const StageSpan& span) {
  return std::make_unique<CpuStage>(model, span);
}

}  // namespace fi
