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
  bool ok = colon != std::string::npos && eq != std::string::npos && eq > colon &&
            parse_int(spec.substr(0, colon), c.layer) && parse_float(spec.substr(eq + 1), c.value);
  std::string mid = ok ? spec.substr(colon + 1, eq - colon - 1) : "";
  const size_t colon2 = mid.find(':');
  if (ok && colon2 != std::string::npos) {  // L:eE:N or L:s:N
    const std::string which = mid.substr(0, colon2);
    if (which == "s") c.expert = kSharedExpert;
    else ok = which.size() > 1 && which[0] == 'e' && parse_int(which.substr(1), c.expert) && c.expert >= 0;
    mid = mid.substr(colon2 + 1);
  }
  if (!ok || !parse_int(mid, c.neuron))
    FI_FAIL("--clamp: expected LAYER:NEURON=VALUE (e.g. 1:18=10), LAYER:eEXPERT:NEURON=VALUE for a routed "
            "expert's neuron or LAYER:s:NEURON=VALUE for the shared expert's, got '" + spec + "'");
  return c;
}

int64_t parse_expert(const std::string& s) {
  int64_t e = 0;
  if (s == "s") return kSharedExpert;
  if (!parse_int(s, e) || e < 0) FI_FAIL("--expert: expected an expert number (0, 1, ...) or s (the shared expert), got '" + s + "'");
  return e;
}

std::string clamp_name(const Clamp& c) {
  const std::string l = std::to_string(c.layer) + ":", n = std::to_string(c.neuron);
  if (c.expert == kSharedExpert) return l + "s:" + n;
  if (c.expert >= 0) return l + "e" + std::to_string(c.expert) + ":" + n;
  return l + n;
}

std::string route_notice(const Clamp& c) {
  if (c.expert < 0) return "";
  const std::string e = std::to_string(c.expert);
  if (c.force_route)
    return "clamp " + clamp_name(c) + ": every position is routed to expert " + e +
           " (--force-route; in place of the router's last choice where it did not choose it)";
  return "clamp " + clamp_name(c) + " acts at the positions the router sends to expert " + e +
         " (--force-route: at every position)";
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
