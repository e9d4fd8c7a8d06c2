// Parsing of clamp specifications and sites (see clamp.h); every malformed input is an error
// naming what was given, never a silent default.
#include "forward/clamp.h"

#include <cerrno>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "common/error.h"

namespace fi {
namespace {

bool parse_int(const std::string& s, int64_t& out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno || *end) return false;
  out = v;
  return true;
}

bool parse_float(const std::string& s, float& out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s.c_str(), &end);
  // Finite in float32 too: 1e39 is a double but an fp32 inf, which would make every logit NaN.
  if (errno || *end || !std::isfinite(v) || std::fabs(v) > double(FLT_MAX)) return false;
  out = float(v);
  return true;
}

}  // namespace

ClampSite parse_clamp_site(const std::string& s) {
  if (s == "act") return ClampSite::Act;
  if (s == "up") return ClampSite::Up;
  FI_FAIL("--clamp-site: expected act or up, got '" + s + "'");
}

const char* clamp_site_name(ClampSite s) { return s == ClampSite::Act ? "act" : "up"; }

Clamp parse_clamp(const std::string& spec) {
  Clamp c;
  const size_t colon = spec.find(':'), eq = spec.find('=');
  if (colon == std::string::npos || eq == std::string::npos || eq < colon ||
      !parse_int(spec.substr(0, colon), c.layer) ||
      !parse_int(spec.substr(colon + 1, eq - colon - 1), c.neuron) ||
      !parse_float(spec.substr(eq + 1), c.value))
    FI_FAIL("--clamp: expected LAYER:NEURON=VALUE (e.g. 1:18=10), got '" + spec + "'");
  return c;
}

std::vector<float> parse_values(const std::string& list, const std::string& option) {
  std::vector<float> out;
  std::stringstream ss(list);
  for (std::string item; std::getline(ss, item, ',');) {
    float v;
    if (!parse_float(item, v)) FI_FAIL(option + ": '" + item + "' is not a finite number in float32's range (|v| <= 3.4e38)");
    out.push_back(v);
  }
  if (out.empty()) FI_FAIL(option + ": expected a comma-separated list of numbers");
  return out;
}

}  // namespace fi
