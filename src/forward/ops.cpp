// RoPE, gate activations and the soft-cap of the forward pass (see ops.h); RMSNorm is
// model/rms_norm.h.
#include "forward/ops.h"

#include <algorithm>
#include <cmath>

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

}  // namespace fi
