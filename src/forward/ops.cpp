// RoPE and gate activations of the forward pass (see ops.h); RMSNorm is model/rms_norm.h.
#include "forward/ops.h"

#include <cmath>

#include "common/error.h"

namespace fi {

std::vector<double> rope_inv_freq(const ModelConfig& cfg) {
  const int64_t d = cfg.head_dim;
  std::vector<double> f(size_t(d / 2));
  for (int64_t i = 0; i < d / 2; ++i) f[i] = std::pow(cfg.rope_theta, -double(2 * i) / double(d));
  const RopeScaling& s = cfg.rope_scaling;
  if (s.type != "llama3") return f;
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
  return f;
}

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

}  // namespace fi
