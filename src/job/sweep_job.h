// `flashinterp sweep`: a causal score for many decoded neurons at once. For each selected neuron
// of a map, clamp it at each value over each prompt and record how the log-probability of its
// decoded top token (and top-5) at the next position changes against the unclamped run. The
// neurons are split over pipelines of S ranks (S = 1: each rank holds the whole model; else each
// stage a layer range, for a model that does not fit one rank); the hidden states entering a
// layer are computed once per prompt and reused for every neuron and value of that layer, so a
// neuron costs (layers from its own) x values x prompts. Resumable like decode. The file:
// job/sweep_file.h, docs/SWEEP_FORMAT.md.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "job/sweep_file.h"
#include "model/config.h"
#include "parallel/mpi_env.h"

namespace fi {

struct SweepOptions {
  std::string model_dir, map, out;
  std::string select;    // top:K | layer:L | list:FILE
  std::string matrices;  // for top:/layer:, comma-separated; each names that matrix in every group
                         // of the map (up: /up, /moe/up, /shared/up); "" = every group
  std::string site = "act", backend = "auto";
  std::vector<float> values;
  std::vector<std::vector<int32_t>> prompts;  // token ids, BOS first
  std::vector<std::string> prompt_texts;
  int64_t round_neurons = 4;  // neurons per pipeline per round (the resume granularity)
  int64_t stages = 0;         // ranks per pipeline; 0: the fewest whose share of the model fits
  bool overwrite = false, resume = false, quiet = false;
  bool force_route = false;  // a routed expert's clamp routes every position to its expert
  std::string command_line;
};

// One line of a --select list file: `up 20 1234`, `moe/up 20 3 1234`, `shared/up 20 1234`.
struct ListedNeuron {
  std::string matrix;  // up | gate | down | moe/up ... | shared/up ...
  int64_t layer = -1, expert = -1, neuron = -1;
};
// Parses the text of a list file ('#' starts a comment; blank lines skipped); throws naming the
// file and line on a malformed one. Expert and shared-expert lines need a map with those groups
// (format version 2), checked against the map later.
std::vector<ListedNeuron> parse_neuron_list(const std::string& text, const std::string& path);

// Runs the sweep; collective over comms.world. Returns 0, or kExitStopped (75) after a stop
// signal with the work so far in OUT.partial. Throws JobFailed after a reported error.
int run_sweep(const SweepOptions& opt, const Comms& comms);

// The cost model `inspect --sweep` prints: forward FLOPs and weight bytes of one clamped run
// from layer `layer` (layers layer.. on `tokens` positions, the LM-head on the last; an MoE
// layer: its router, shared expert and experts_per_token routed experts for the FLOPs, every
// expert for the weights read).
struct SweepCost {
  double flops = 0;         // multiply-adds x 2
  double weight_bytes = 0;  // the weights one run reads (2 bytes a parameter: bf16)
};
SweepCost sweep_run_cost(const ModelConfig& cfg, int64_t layer, int64_t tokens);

// The causal score of one neuron: the least-squares slope of the prompt-mean delta [nV, P] over
// the values (0 when they are all equal).
double sweep_slope(const std::vector<float>& values, const std::vector<double>& delta, int64_t np);

}  // namespace fi
