// The decode plan, pure (no MPI): the work list of (group, slice, row chunk) and its split
// over ranks. A group is one map group (/up, or in a version 2 map also /moe/up, /shared/up);
// a slice is one [N] run of neurons of it: a layer of a dense or shared group, a (layer, expert)
// of a routed group (slice = layer_index * E + expert_index). Items are ordered group, slice,
// chunk; rank r gets one contiguous run, and no rank has more than one item more than another.
// Chunks depend only on chunk_rows, never on the number of ranks, so every rank count computes
// the same rows the same way.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace fi {

struct WorkItem {
  int matrix = 0;       // index into the decode's group list (a version 1 map: its matrices)
  int layer_index = 0;  // the slice: layer index (dense, shared) or layer_index * E + expert index
  int64_t chunk = 0;    // chunk number within the slice
  int64_t row0 = 0, rows = 0;
};

// One group of the plan: `slices` runs of `neurons` rows each.
struct PlanGroup {
  int64_t slices = 0, neurons = 0;
};

std::vector<WorkItem> make_plan(const std::vector<PlanGroup>& groups, int64_t chunk_rows);
// The dense case: num_matrices groups of num_layers slices of `neurons`.
std::vector<WorkItem> make_plan(int num_matrices, int num_layers, int64_t neurons,
                                int64_t chunk_rows);
int64_t num_chunks(int64_t neurons, int64_t chunk_rows);

struct Range {
  size_t begin = 0, end = 0;
  size_t size() const { return end - begin; }
};
Range rank_share(size_t items, int rank, int world);
// Collective write rounds: every rank takes part in each (the most items any rank has).
size_t num_rounds(size_t items, int world);

}  // namespace fi

namespace fi {

// The layers of a forward pipeline over `stages` ranks: stage s runs layers [b[s], b[s+1])
// (b has stages + 1 entries, b[0] = 0, b[stages] = layers), each at least one layer. A layer
// weighs 1; the first stage also carries first_extra and the last last_extra (the embedding and
// the LM-head in layer-equivalents of memory). The split minimises the heaviest stage, then
// evens the loads (least sum of squares). Throws when stages > layers.
std::vector<int64_t> split_layers(int64_t layers, int stages, double first_extra, double last_extra);

}  // namespace fi
