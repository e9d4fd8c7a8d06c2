// The decode plan: every row of every (matrix, layer) exactly once, chunks independent of the
// rank count, shares contiguous and within one item of each other for 1..many ranks.
#include <gtest/gtest.h>

#include "dist/partition.h"

TEST(Partition, EveryRowOnceInOrder) {
  for (int64_t N : {1, 5, 1000, 14336})
    for (int64_t cr : {1, 7, 512, 20000}) {
      auto plan = fi::make_plan(3, 4, N, cr);
      ASSERT_EQ(int64_t(plan.size()), 3 * 4 * fi::num_chunks(N, cr));
      std::vector<int64_t> covered(3 * 4, 0);
      for (size_t i = 0; i < plan.size(); ++i) {
        const auto& w = plan[i];
        EXPECT_EQ(w.row0, w.chunk * cr);
        EXPECT_GT(w.rows, 0);
        EXPECT_LE(w.row0 + w.rows, N);
        EXPECT_EQ(covered[w.matrix * 4 + w.layer_index], w.row0);  // contiguous, no overlap
        covered[w.matrix * 4 + w.layer_index] += w.rows;
      }
      for (int64_t c : covered) EXPECT_EQ(c, N);
    }
}

TEST(Partition, SharesAreContiguousAndBalanced) {
  for (size_t items : {0, 1, 2, 7, 100, 1792})
    for (int world : {1, 2, 3, 8, 64, 1000}) {
      size_t next = 0, mn = SIZE_MAX, mx = 0;
      for (int r = 0; r < world; ++r) {
        fi::Range s = fi::rank_share(items, r, world);
        EXPECT_EQ(s.begin, next);
        next = s.end;
        mn = std::min(mn, s.size());
        mx = std::max(mx, s.size());
      }
      EXPECT_EQ(next, items);
      EXPECT_LE(mx - mn, 1u);
      EXPECT_EQ(fi::num_rounds(items, world), mx);
    }
}

TEST(Partition, BadChunkRowsIsAnError) { EXPECT_ANY_THROW(fi::num_chunks(10, 0)); }
