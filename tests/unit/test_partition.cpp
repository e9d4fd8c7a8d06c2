// The decode plan: every row of every (matrix, layer) exactly once, chunks independent of the
// rank count, shares contiguous and within one item of each other for 1..many ranks.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>

#include "parallel/partition.h"

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

// split_layers against every contiguous split (brute force over cut positions): the heaviest
// stage is the least possible, and the split is valid (contiguous, each stage >= 1 layer).
namespace {
double best_max_brute(int64_t L, int S, double fe, double le) {
  double best = 1e300;
  std::vector<int64_t> cut(size_t(S + 1));
  cut[0] = 0;
  cut[size_t(S)] = L;
  std::function<void(int)> rec = [&](int s) {
    if (s == S) {
      double mx = 0;
      for (int i = 0; i < S; ++i) {
        double w = double(cut[size_t(i) + 1] - cut[size_t(i)]);
        if (w < 1) return;
        if (i == 0) w += fe;
        if (i == S - 1) w += le;
        mx = std::max(mx, w);
      }
      best = std::min(best, mx);
      return;
    }
    for (int64_t c = cut[size_t(s) - 1] + 1; c < L; ++c) {
      cut[size_t(s)] = c;
      rec(s + 1);
    }
  };
  if (S == 1) return double(L) + fe + le;
  rec(1);
  return best;
}
}  // namespace

TEST(Partition, SplitLayersIsOptimalAndValid) {
  for (int64_t L : {1, 2, 3, 5, 8, 13}) {
    for (int S = 1; S <= std::min<int64_t>(L, 5); ++S) {
      for (double e : {0.0, 0.6, 1.23, 2.4, 7.0}) {
        const std::vector<int64_t> b = fi::split_layers(L, S, e, e);
        ASSERT_EQ(b.size(), size_t(S + 1));
        EXPECT_EQ(b.front(), 0);
        EXPECT_EQ(b.back(), L);
        double mx = 0;
        for (int i = 0; i < S; ++i) {
          ASSERT_GE(b[size_t(i) + 1] - b[size_t(i)], 1) << L << " " << S << " " << e;
          double w = double(b[size_t(i) + 1] - b[size_t(i)]) + (i == 0 ? e : 0) + (i == S - 1 ? e : 0);
          mx = std::max(mx, w);
        }
        EXPECT_DOUBLE_EQ(mx, best_max_brute(L, S, e, e)) << "L=" << L << " S=" << S << " e=" << e;
      }
    }
  }
  // 70B shape (80 layers, embedding ~1.23 layers) over 4 GPUs, by hand: the middle stages hold
  // at least 21 each (42 layers left when the ends take 19 + 1.23 = 20.23), so 19 | 21 | 21 | 19.
  EXPECT_EQ(fi::split_layers(80, 4, 1.23, 1.23), (std::vector<int64_t>{0, 19, 40, 61, 80}));
  EXPECT_THROW(fi::split_layers(3, 4, 0, 0), std::exception);  // more ranks than layers
}

// Groups of different widths (a version 2 map: dense, routed, shared): in group, slice, chunk
// order, each slice's rows once, and the dense overload the same as one group per matrix.
TEST(Partition, GroupsOfDifferentWidths) {
  const std::vector<fi::PlanGroup> groups = {{2, 96}, {2 * 4, 32}, {2, 48}};
  const int64_t cr = 16;
  auto plan = fi::make_plan(groups, cr);
  size_t i = 0;
  for (size_t g = 0; g < groups.size(); ++g)
    for (int64_t s = 0; s < groups[g].slices; ++s)
      for (int64_t c = 0; c < fi::num_chunks(groups[g].neurons, cr); ++c, ++i) {
        ASSERT_LT(i, plan.size());
        EXPECT_EQ(plan[i].matrix, int(g));
        EXPECT_EQ(plan[i].layer_index, int(s));
        EXPECT_EQ(plan[i].chunk, c);
        EXPECT_EQ(plan[i].row0, c * cr);
        EXPECT_EQ(plan[i].rows, std::min(cr, groups[g].neurons - c * cr));
      }
  EXPECT_EQ(i, plan.size());
  auto dense = fi::make_plan(3, 4, 100, 7), same = fi::make_plan(std::vector<fi::PlanGroup>(3, {4, 100}), 7);
  ASSERT_EQ(dense.size(), same.size());
  for (size_t k = 0; k < dense.size(); ++k)
    EXPECT_TRUE(dense[k].matrix == same[k].matrix && dense[k].layer_index == same[k].layer_index &&
                dense[k].chunk == same[k].chunk && dense[k].row0 == same[k].row0 && dense[k].rows == same[k].rows);
}
