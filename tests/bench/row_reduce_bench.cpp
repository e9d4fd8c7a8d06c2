// The CPU row reduction alone (fi::RowReducer: block statistics with the entropy's sum, and the
// top-20 candidates, 2048-token blocks as the CPU decoder uses), one thread, R rows of V random
// logits (default 256 x 128256), best of 5. Not a test. To compare with another revision, build
// this file against that revision's src/decode/topk.cpp, e.g.
//   g++ -O2 -std=c++20 -Wno-psabi -I$REV/src tests/bench/row_reduce_bench.cpp $REV/src/decode/topk.cpp
// usage: row_reduce_bench [ROWS] [VOCAB]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "decode/topk.h"

int main(int argc, char** argv) {
  const int64_t R = argc > 1 ? std::atoll(argv[1]) : 256, V = argc > 2 ? std::atoll(argv[2]) : 128256;
  const int64_t B = 2048;
  std::vector<float> x(size_t(V * R));  // logits: [R, V]
  std::mt19937 g(1);
  std::normal_distribution<float> d(0.f, 3.f);
  for (auto& v : x) v = d(g);
  double best = 1e9, sink = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t r = 0; r < R; ++r) {
      fi::RowReducer red(20, 0);
      const float* row = x.data() + r * V;
      for (int64_t v0 = 0; v0 < V; v0 += B) {
        const int64_t n = std::min(B, V - v0);
        red.add_stats(fi::RowReducer::block_stats(row + v0, n));
        red.add_candidates(row + v0, v0, n);
      }
      sink += red.lse();
    }
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::printf("row reduction: %.4f s for %lld rows of %lld logits (%.2f ns a logit; checksum %g)\n", best,
              (long long)R, (long long)V, 1e9 * best / double(R * V), sink);
}
