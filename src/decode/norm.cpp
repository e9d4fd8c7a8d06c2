// The decode's norm modes (rms, gamma, none) and their names; rms is the model's final RMSNorm.
#include <cmath>

#include "common/error.h"
#include "decode/decoder.h"

namespace fi {

NormMode parse_norm(const std::string& s) {
  if (s == "rms") return NormMode::Rms;
  if (s == "gamma") return NormMode::Gamma;
  if (s == "none") return NormMode::None;
  FI_FAIL("--norm: unknown mode '" + s + "' (expected rms, gamma or none)");
}

const char* norm_name(NormMode n) {
  switch (n) {
    case NormMode::Rms: return "rms";
    case NormMode::Gamma: return "gamma";
    case NormMode::None: return "none";
  }
  return "?";
}

// x: [rows, hidden], normed in place. The mean of squares is summed in double.
void apply_norm(float* x, int64_t rows, int64_t hidden, const float* gamma, const DecodeParams& p) {
  if (p.norm == NormMode::None) return;
  for (int64_t r = 0; r < rows; ++r) {
    float* v = x + r * hidden;
    float scale = 1.f;
    if (p.norm == NormMode::Rms) {
      double ss = 0;
      for (int64_t i = 0; i < hidden; ++i) ss += double(v[i]) * double(v[i]);
      scale = float(1.0 / std::sqrt(ss / double(hidden) + p.eps));
    }
    for (int64_t i = 0; i < hidden; ++i) {
      float g = p.norm_plus_one ? 1.f + gamma[i] : gamma[i];
      v[i] = v[i] * scale * g;
    }
  }
}

}  // namespace fi
