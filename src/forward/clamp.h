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

// expert: kDenseMlp for a dense layer's MLP, e >= 0 for routed expert e of an MoE layer (the
// clamp acts at the positions routed to it, as the expert's MLP runs only there), kSharedExpert
// for an MoE layer's shared expert(s).
inline constexpr int64_t kDenseMlp = -1, kSharedExpert = -2;
struct Clamp {
  int64_t layer = 0, neuron = 0;
  float value = 0;
  int64_t expert = kDenseMlp;
  // A routed expert's clamp only: route every position to the expert (--force-route). Where the
  // router did not choose it, it takes the place of the router's last choice; the weights are then
  // computed over the chosen experts as the router computes them (renormalised where the model
  // does), so the expert counts as if the router had picked it.
  bool force_route = false;
};

// "L:N=V" (a dense layer's neuron), "L:eE:N=V" (routed expert E's), "L:s:N=V" (the shared
// expert's); throws naming the spec.
Clamp parse_clamp(const std::string& spec);
std::string clamp_name(const Clamp& c);
// What a routed expert's clamp does to the routing, for a notice ("" for other clamps).
std::string route_notice(const Clamp& c);
int64_t parse_expert(const std::string& s);  // "E" (>= 0) or "s" (kSharedExpert); throws otherwise  // "L:N", "L:eE:N", "L:s:N"
// Comma-separated numbers ("0,5,10.5,-2"); throws naming the option on a bad entry.
std::vector<float> parse_values(const std::string& list, const std::string& option);

}  // namespace fi
