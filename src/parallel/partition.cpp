// The decode plan: work items in (matrix, layer, chunk) order and contiguous per-rank shares.
#include "parallel/partition.h"

#include <algorithm>

#include "common/error.h"

namespace fi {

int64_t num_chunks(int64_t neurons, int64_t chunk_rows) {
  FI_CHECK(chunk_rows > 0, "--chunk-rows must be positive");
  return (neurons + chunk_rows - 1) / chunk_rows;
}

std::vector<WorkItem> make_plan(const std::vector<PlanGroup>& groups, int64_t chunk_rows) {
  std::vector<WorkItem> plan;
  for (size_t g = 0; g < groups.size(); ++g) {
    const int64_t N = groups[g].neurons, C = num_chunks(N, chunk_rows);
    for (int64_t s = 0; s < groups[g].slices; ++s)
      for (int64_t c = 0; c < C; ++c) {
        int64_t row0 = c * chunk_rows;
        plan.push_back({int(g), int(s), c, row0, std::min(chunk_rows, N - row0)});
      }
  }
  return plan;
}

std::vector<WorkItem> make_plan(int num_matrices, int num_layers, int64_t neurons,
                                int64_t chunk_rows) {
  return make_plan(std::vector<PlanGroup>(size_t(num_matrices), PlanGroup{num_layers, neurons}), chunk_rows);
}

// The first (items % world) ranks take one item more: sizes differ by at most one.
Range rank_share(size_t items, int rank, int world) {
  size_t w = size_t(world), r = size_t(rank), base = items / w, extra = items % w;
  size_t begin = r * base + std::min(r, extra);
  return {begin, begin + base + (r < extra ? 1 : 0)};
}

size_t num_rounds(size_t items, int world) { return (items + size_t(world) - 1) / size_t(world); }

}  // namespace fi

namespace fi {

// Interior stages only hold layers, so an optimal split keeps them as even as possible: try
// every size of the first and the last stage and spread the rest evenly between.
std::vector<int64_t> split_layers(int64_t layers, int stages, double first_extra, double last_extra) {
  FI_CHECK(stages >= 1, "the pipeline needs at least one stage");
  if (stages > layers)
    FI_FAIL("the forward pipeline has " + std::to_string(stages) + " ranks but the model only " +
            std::to_string(layers) + " layers (at most one rank per layer)");
  if (stages == 1) return {0, layers};
  const int64_t mid = stages - 2;
  double best_max = 0, best_sq = 0;
  std::vector<int64_t> best;
  for (int64_t a = 1; a <= layers - stages + 1; ++a)
    for (int64_t b = 1; a + b + mid <= layers; ++b) {
      if (mid == 0 && a + b != layers) continue;
      const int64_t m = layers - a - b;
      std::vector<double> load = {double(a) + first_extra};
      for (int64_t s = 0; s < mid; ++s) load.push_back(double(m / mid + (s < m % mid ? 1 : 0)));
      load.push_back(double(b) + last_extra);
      double mx = 0, sq = 0;
      for (double x : load) {
        mx = std::max(mx, x);
        sq += x * x;
      }
      if (best.empty() || mx < best_max || (mx == best_max && sq < best_sq)) {
        best_max = mx;
        best_sq = sq;
        best = {0, a};
        for (int64_t s = 0; s < mid; ++s) best.push_back(best.back() + m / mid + (s < m % mid ? 1 : 0));
        best.push_back(layers);
      }
    }
  return best;
}

}  // namespace fi
