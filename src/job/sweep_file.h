// The sweep's output file (docs/SWEEP_FORMAT.md), owned here once: its names, the writer (rank 0
// alone: a sweep's results are small, a few hundred bytes a neuron) and the reader used by
// --resume, `sweep --json` and `inspect`. K neurons, nV clamp values, P prompts.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "h5/h5.h"

namespace fi::sweep {

inline constexpr const char* kFormat = "flashinterp-sweep";
inline constexpr int64_t kFormatVersion = 1;
inline constexpr int kTopN = 5;  // the decoded top tokens whose mean change is delta_top5

// A neuron's group of the map (the `group` dataset, attr group_names "dense,moe,shared").
inline constexpr int32_t kGroupDense = 0, kGroupMoe = 1, kGroupShared = 2;

// What identifies a neuron and what the map says it means. matrix: 0 up, 1 gate, 2 down; group:
// kGroupDense (/up), kGroupMoe (/moe/up, expert = the routed expert's id) or kGroupShared
// (/shared/up); expert -1 but for a routed expert.
struct Neuron {
  int32_t matrix = 0, layer = 0, expert = -1, neuron = 0, group = kGroupDense;
  int32_t top[kTopN] = {-1, -1, -1, -1, -1};  // the map's top tokens (-1 past its top_k)
  float map_top_prob = 0;                     // the map's top-1 probability
  float map_entropy = -1;                     // the map's exact entropy (nats), -1 when it has none
};

// One neuron's results, as the rank that swept it computed them.
struct Result {
  float score = 0, top1_share = 0;
  std::vector<float> base_logp;   // [P]: log p(top token), unclamped
  std::vector<float> delta;       // [nV, P]: log p(top token) clamped - unclamped
  std::vector<float> delta_top5;  // [nV, P]: the same, averaged over the map's top-5 tokens
  std::vector<uint8_t> top1;      // [nV, P]: the top token is the argmax of the clamped run
};

// Root attributes that are not datasets.
struct Meta {
  std::string model_dir, map_path, map_fingerprint, fingerprint, site, backend, command_line;
  std::string prompts_json;  // the prompt texts as a JSON array (ids are the prompt_ids dataset)
  int64_t world_size = 1;
  int64_t stages = 1;  // ranks per pipeline (1: each rank held the whole model)
};

// Writes OUT.partial on rank 0: creates it with every dataset allocated (neurons, values and
// prompt ids written at once), or reopens one for --resume.
class Writer {
 public:
  Writer(const std::string& path, const Meta& meta, const std::vector<Neuron>& neurons,
         const std::vector<float>& values, const std::vector<std::vector<int32_t>>& prompts);
  explicit Writer(const std::string& path);  // --resume: reopens for writing
  // Neurons [first, first + results.size()) of the file: results, then (after a flush) their
  // done bits, so a kill between the two redoes them.
  void write(int64_t first, const std::vector<Result>& results, int64_t nv, int64_t np, int round);
  void finish(double elapsed_s);  // complete = 1, flushed

 private:
  std::string path_;
  h5::Handle f_;
};

// The fields --resume and --json need.
struct Contents {
  std::string format, fingerprint, map_fingerprint;
  int64_t complete = 0;
  std::vector<uint8_t> done;  // [K]
  std::vector<int32_t> matrix, group, layer, expert, neuron, token;
  std::vector<float> score, top1_share, values, delta;  // delta: [K, nV, P]
  int64_t prompts = 0;
};
// Throws naming the path unless it is a sweep file of this format version.
Contents read(const std::string& path, bool with_results);

}  // namespace fi::sweep
