// The decode plan: work items in (matrix, layer, chunk) order and contiguous per-rank shares.
#include "dist/partition.h"

#include <algorithm>

#include "common/error.h"

namespace fi {

int64_t num_chunks(int64_t neurons, int64_t chunk_rows) {
  FI_CHECK(chunk_rows > 0, "--chunk-rows must be positive");
  return (neurons + chunk_rows - 1) / chunk_rows;
}

std::vector<WorkItem> make_plan(int num_matrices, int num_layers, int64_t neurons,
                                int64_t chunk_rows) {
  std::vector<WorkItem> plan;
  const int64_t C = num_chunks(neurons, chunk_rows);
  for (int m = 0; m < num_matrices; ++m)
    for (int l = 0; l < num_layers; ++l)
      for (int64_t c = 0; c < C; ++c) {
        int64_t row0 = c * chunk_rows;
        plan.push_back({m, l, c, row0, std::min(chunk_rows, neurons - row0)});
      }
  return plan;
}

// The first (items % world) ranks take one item more: sizes differ by at most one.
Range rank_share(size_t items, int rank, int world) {
  size_t w = size_t(world), r = size_t(rank), base = items / w, extra = items % w;
  size_t begin = r * base + std::min(r, extra);
  return {begin, begin + base + (r < extra ? 1 : 0)};
}

size_t num_rounds(size_t items, int world) { return (items + size_t(world) - 1) / size_t(world); }

}  // namespace fi
