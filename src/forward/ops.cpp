// RoPE, gate activations and the soft-cap of the forward pass (see ops.h); RMSNorm is
// model/rms_norm.h.
#include "forward/ops.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "common/error.h"

namespace fi {
namespace {

void llama3(const RopeScaling& s, std::vector<double>& f) {
  const double low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
  const double high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
  for (double& x : f) {
    const double wavelen = 2 * M_PI / x;
    if (wavelen > low_wavelen) {
      x = x / s.factor;
    } else if (wavelen >= high_wavelen) {  // medium band: blend scaled and plain
      double t = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) /
                 (s.high_freq_factor - s.low_freq_factor);
      x = (1 - t) * x / s.factor + t * x;
    }
  }
}

double yarn_mscale(double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; }

// The dimension pair index at which a frequency turns `rotations` times in `length` positions.
double yarn_dim(double rotations, double d, double base, double length) {
  return d * std::log(length / (rotations * 2 * M_PI)) / (2 * std::log(base));
}

double yarn(const ModelConfig& c, std::vector<double>& f) {
  const RopeScaling& s = c.rope_scaling;
  const double d = double(c.head_dim), base = c.rope_theta;
  const double original = s.original_max_position_embeddings > 0 ? s.original_max_position_embeddings
                                                                 : double(c.max_position_embeddings);
  double low = yarn_dim(s.beta_fast, d, base, original), high = yarn_dim(s.beta_slow, d, base, original);
  if (s.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, d - 1);
  if (low == high) high += 0.001;  // as transformers: no division by zero
  for (size_t i = 0; i < f.size(); ++i) {
    // ramp 0: the plain frequency (extrapolation); 1: divided by the factor (interpolation)
    const double ramp = std::clamp((double(i) - low) / (high - low), 0.0, 1.0);
    f[i] = f[i] / s.factor * ramp + f[i] * (1 - ramp);
  }
  if (s.attention_factor > 0) return s.attention_factor;
  if (s.mscale > 0 && s.mscale_all_dim > 0)
    return yarn_mscale(s.factor, s.mscale) / yarn_mscale(s.factor, s.mscale_all_dim);
  return yarn_mscale(s.factor, 1);
}

double longrope(const ModelConfig& c, int64_t seq_len, std::vector<double>& f) {
  const RopeScaling& s = c.rope_scaling;
  const double original = s.original_max_position_embeddings;
  const std::vector<double>& ext = double(seq_len) > original ? s.long_factor : s.short_factor;
  for (size_t i = 0; i < f.size(); ++i) f[i] /= ext[i];
  if (s.attention_factor > 0) return s.attention_factor;
  const double factor = c.max_position_embeddings > 0 ? double(c.max_position_embeddings) / original : s.factor;
  return factor <= 1 ? 1.0 : std::sqrt(1 + std::log(factor) / std::log(original));
}

}  // namespace

RopeFreqs rope_freqs(const ModelConfig& c, int64_t seq_len, bool local) {
  const int64_t d = c.head_dim;
  const RopeScaling& s = c.rope_scaling;
  RopeFreqs r;
  double base = local && c.rope_local_theta > 0 ? c.rope_local_theta : c.rope_theta;
  const bool scaled = !(local && c.rope_local_theta > 0);
  if (scaled && s.type == "dynamic") {
    const double max_pos = double(c.max_position_embeddings);
    const double len = std::max(double(seq_len), max_pos);
    base *= std::pow(s.factor * len / max_pos - (s.factor - 1), double(d) / double(d - 2));
  }
  r.inv_freq.resize(size_t(d / 2));
  for (int64_t i = 0; i < d / 2; ++i) r.inv_freq[size_t(i)] = std::pow(base, -double(2 * i) / double(d));
  if (!scaled) return r;
  if (s.type == "llama3") llama3(s, r.inv_freq);
  if (s.type == "linear")
    for (double& x : r.inv_freq) x /= s.factor;
  if (s.type == "yarn") r.attention_factor = yarn(c, r.inv_freq);
  if (s.type == "longrope") r.attention_factor = longrope(c, seq_len, r.inv_freq);
  return r;
}

std::vector<double> rope_inv_freq(const ModelConfig& cfg) { return rope_freqs(cfg, 0, false).inv_freq; }

void rope_rotate(float* x, int64_t head_dim, const float* cos, const float* sin) {
  const int64_t h = head_dim / 2;
  for (int64_t i = 0; i < h; ++i) {
    const float a = x[i], b = x[i + h];
    x[i] = a * cos[i] - b * sin[i];
    x[i + h] = b * cos[i] + a * sin[i];
  }
}

Act parse_act(const std::string& a) {
  if (a == "silu" || a == "swish") return Act::Silu;
  if (a == "gelu_pytorch_tanh" || a == "gelu_new") return Act::GeluTanh;
  if (a == "gelu") return Act::GeluErf;
  FI_FAIL("hidden_act '" + a + "' is not supported by the forward pass "
          "(supported: silu, gelu_pytorch_tanh, gelu_new, gelu)");
}

float apply_act(Act a, float x) {
  switch (a) {
    case Act::Silu: return x / (1.f + std::exp(-x));
    case Act::GeluTanh: {
      const float k = 0.7978845608028654f;  // sqrt(2/pi)
      return 0.5f * x * (1.f + std::tanh(k * (x + 0.044715f * x * x * x)));
    }
    case Act::GeluErf: return 0.5f * x * (1.f + std::erf(x * 0.7071067811865476f));
  }
  return x;
}

float softcap(float x, double cap) {
  if (cap <= 0) return x;
  const float c = float(cap);
  return std::tanh(x / c) * c;
}

namespace {

// DeepSeek-V3's choice of experts (DeepseekV3TopkRouter): the scores plus the bias, then the
// topk_group best groups kept (see route_experts).
void route_groups(const MoeConfig& m, const std::vector<float>& bias, std::vector<float>& choice) {
  const size_t E = choice.size();
  for (size_t e = 0; e < E && !bias.empty(); ++e) choice[e] += bias[e];
  if (m.n_group <= 1 || m.topk_group >= m.n_group) return;
  const size_t G = size_t(m.n_group), per = E / G;
  std::vector<float> group(G);
  for (size_t g = 0; g < G; ++g) {
    std::vector<float> s(choice.begin() + long(g * per), choice.begin() + long((g + 1) * per));
    std::partial_sort(s.begin(), s.begin() + std::min<long>(2, long(per)), s.end(), std::greater<float>());
    group[g] = s[0] + (per > 1 ? s[1] : 0.f);
  }
  std::vector<size_t> order(G);
  for (size_t g = 0; g < G; ++g) order[g] = g;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return group[a] > group[b]; });
  for (size_t i = size_t(m.topk_group); i < G; ++i)
    std::fill(choice.begin() + long(order[i] * per), choice.begin() + long((order[i] + 1) * per), 0.f);
}

}  // namespace

ExpertRoute route_experts(const ModelConfig& c, int64_t layer, const float* logits, int64_t T,
                          const std::vector<float>& bias,
                          const std::function<const std::vector<Clamp>&(int64_t t)>& clamps_of) {
  const MoeConfig& m = c.moe;
  const int64_t E = m.experts, K = m.experts_per_token;
  const size_t ne = size_t(E);
  ExpertRoute out;
  out.tokens.resize(ne);
  out.weights.resize(ne);
  const bool sigmoid = m.scoring_func == "sigmoid";
  std::vector<int64_t> order(ne);
  std::vector<float> p(ne), choice(ne);
  for (int64_t t = 0; t < T; ++t) {
    const float* r = &logits[size_t(t * E)];
    if (sigmoid) {
      for (int64_t e = 0; e < E; ++e) p[size_t(e)] = 1.f / (1.f + std::exp(-r[e]));
    } else {
      const float mx = *std::max_element(r, r + E);
      float sum = 0;
      for (int64_t e = 0; e < E; ++e) sum += (p[size_t(e)] = std::exp(r[e] - mx));
      for (float& x : p) x /= sum;
    }
    choice = p;
    if (sigmoid) route_groups(m, bias, choice);
    for (const Clamp& k : clamps_of(t))  // --force-route: chosen first, whatever its score
      if (k.force_route && k.layer == layer && k.expert >= 0) choice[size_t(k.expert)] = INFINITY;
    for (int64_t e = 0; e < E; ++e) order[size_t(e)] = e;
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return choice[size_t(a)] > choice[size_t(b)]; });
    float top = 0;
    for (int64_t k = 0; k < K; ++k) top += p[size_t(order[size_t(k)])];
    if (sigmoid) top += 1e-20f;
    const float scaling = float(m.routed_scaling_factor);
    for (int64_t k = 0; k < K; ++k) {
      const size_t e = size_t(order[size_t(k)]);
      out.tokens[e].push_back(t);
      out.weights[e].push_back((m.norm_topk_prob ? p[e] / top : p[e]) * scaling);
    }
  }
  return out;
}

}  // namespace fi
