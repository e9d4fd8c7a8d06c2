// The decode's norm modes (rms, gamma, none) and their names; rms is the model's final RMSNorm.
#include "common/error.h"
#include "decode/decoder.h"
#include "model/rms_norm.h"

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

// x: [rows, hidden], normed in place by the one CPU RMSNorm (model/rms_norm.h); gamma mode is
// its gamma step with scale 1.
void apply_norm(float* x, int64_t rows, int64_t hidden, const float* gamma, const DecodeParams& p) {
  if (p.norm == NormMode::None) return;
  for (int64_t r = 0; r < rows; ++r) {
    float* v = x + r * hidden;
    const float scale = p.norm == NormMode::Rms ? rms_scale(v, hidden, p.eps) : 1.f;
    scale_by_gamma(v, scale, gamma, hidden, p.norm_plus_one, v);
  }
}

}  // namespace fi
