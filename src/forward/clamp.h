// Neuron clamps for the forward pass: `L:N=V` sets MLP neuron N of layer L to V at every position.
// Two sites: Act (default) clamps the down_proj input act(gate)·up; Up clamps the up_proj output
// before the multiply, so the neuron then contributes act(gate)·V, still gated by its input.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace fi {

enum class ClampSite { Act, Up };
ClampSite parse_clamp_site(const std::string& s);  // "act" | "up"; throws otherwise
const char* clamp_site_name(ClampSite s);

struct Clamp {
  int64_t layer = 0, neuron = 0;
  float value = 0;
};

Clamp parse_clamp(const std::string& spec);  // "L:N=V"; throws naming the spec
// Comma-separated numbers ("0,5,10.5,-2"); throws naming the option on a bad entry.
std::vector<float> parse_values(const std::string& list, const std::string& option);

}  // namespace fi
