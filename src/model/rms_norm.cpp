// The CPU RMSNorm (see rms_norm.h). -ffp-contract=off (top CMakeLists) keeps every multiply and
// add apart, so the result does not depend on the machine.
#include "model/rms_norm.h"

#include <cmath>

namespace fi {

float rms_scale(const float* x, int64_t n, double eps) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += double(x[i]) * double(x[i]);
  return float(1.0 / std::sqrt(ss / double(n) + eps));
}

void scale_by_gamma(const float* x, float scale, const float* w, int64_t n, bool plus_one, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale * (plus_one ? 1.f + w[i] : w[i]);
}

void rms_norm(const float* x, const float* w, int64_t n, double eps, bool plus_one, float* out) {
  scale_by_gamma(x, rms_scale(x, n, eps), w, n, plus_one, out);
}

}  // namespace fi
