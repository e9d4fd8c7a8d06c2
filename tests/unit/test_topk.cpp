// The row kernel (RowReducer, streamed over vocab blocks) against a naive full sort and a
// long-double log-sum-exp: ties, equal rows, huge and tiny logits, k = 1 and k = vocab,
// vocabularies that are not a multiple of any block size.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "decode/topk.h"

namespace {

struct Out {
  std::vector<int32_t> ids, bids;
  std::vector<float> logits, probs, blogits;
  float lse = 0;
};

Out run_blocks(const std::vector<float>& x, int k, int b, int64_t block) {
  Out o;
  o.ids.resize(k);
  o.logits.resize(k);
  o.probs.resize(k);
  o.bids.resize(b);
  o.blogits.resize(b);
  fi::RowReducer r(k, b);
  for (int64_t v0 = 0; v0 < int64_t(x.size()); v0 += block)
    r.add_block(x.data() + v0, v0, std::min<int64_t>(block, int64_t(x.size()) - v0));
  r.finish(o.ids.data(), o.logits.data(), o.probs.data(), &o.lse, o.bids.data(), o.blogits.data());
  return o;
}

// Independent expectations: sort indices by (logit desc, id asc) and sum in long double.
void expect_matches(const std::vector<float>& x, int k, int b, int64_t block) {
  Out o = run_blocks(x, k, b, block);
  std::vector<int32_t> idx(x.size());
  for (size_t i = 0; i < x.size(); ++i) idx[i] = int32_t(i);
  std::sort(idx.begin(), idx.end(), [&](int32_t a, int32_t c) { return x[a] > x[c] || (x[a] == x[c] && a < c); });
  long double m = -INFINITY;
  for (float v : x) m = std::max(m, (long double)v);
  long double s = 0;
  for (float v : x) s += std::exp((long double)v - m);
  const double lse = double(m + std::log(s));
  EXPECT_NEAR(o.lse, lse, 2e-6 * std::max(1.0, std::fabs(lse))) << "block " << block;
  for (int i = 0; i < k; ++i) {
    ASSERT_EQ(o.ids[i], idx[i]) << "rank " << i << " block " << block;
    EXPECT_EQ(o.logits[i], x[idx[i]]);
    double p = std::exp(double(x[idx[i]]) - lse);
    EXPECT_NEAR(o.probs[i], p, 1e-5 * p + 1e-30);
  }
  std::sort(idx.begin(), idx.end(), [&](int32_t a, int32_t c) { return x[a] < x[c] || (x[a] == x[c] && a < c); });
  for (int i = 0; i < b; ++i) {
    ASSERT_EQ(o.bids[i], idx[i]) << "bottom rank " << i;
    EXPECT_EQ(o.blogits[i], x[idx[i]]);
  }
}

std::vector<float> randn(size_t n, float scale, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> x(n);
  for (auto& v : x) v = d(g);
  return x;
}

TEST(RowReducer, RandomRowsAnyBlockSize) {
  for (int64_t V : {1, 7, 1000, 4099, 128256}) {
    auto x = randn(size_t(V), 3.f, uint32_t(V));
    for (int64_t block : {1, 13, 2048, 1 << 20}) {
      if (V > 5000 && block < 1000) continue;
      expect_matches(x, int(std::min<int64_t>(20, V)), int(std::min<int64_t>(5, V)), block);
    }
  }
}

TEST(RowReducer, TiesGoToTheLowerId) {
  std::vector<float> x(1000, 0.f);
  for (int i = 0; i < 1000; i += 3) x[i] = 1.f;  // many equal maxima
  expect_matches(x, 50, 50, 64);
  std::vector<float> eq(777, 2.5f);  // an all-equal row: ids 0..k-1 at both ends
  Out o = run_blocks(eq, 10, 10, 100);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(o.ids[i], i);
    EXPECT_EQ(o.bids[i], i);
    EXPECT_NEAR(o.probs[i], 1.0 / 777, 1e-9);
  }
  EXPECT_NEAR(o.lse, 2.5 + std::log(777.0), 1e-6);
}

TEST(RowReducer, KEqualsVocabAndKOne) {
  auto x = randn(3001, 1.f, 7);
  expect_matches(x, 3001, 3001, 512);
  expect_matches(x, 1, 1, 512);
}

TEST(RowReducer, HugeAndTinyLogits) {
  auto x = randn(5000, 1.f, 9);
  for (auto& v : x) v *= 1e4f;  // range ±4e4: exp overflows naively
  expect_matches(x, 20, 5, 1024);
  for (auto& v : x) v = v * 1e-8f - 3e4f;  // all tiny differences around a huge negative
  expect_matches(x, 20, 5, 1024);
  std::vector<float> one(100, -1e30f);
  one[42] = 50.f;
  Out o = run_blocks(one, 3, 1, 16);
  EXPECT_EQ(o.ids[0], 42);
  EXPECT_FLOAT_EQ(o.probs[0], 1.f);
  EXPECT_FLOAT_EQ(o.lse, 50.f);
}

TEST(RowReducer, NegativeInfinityIsKeptOutOfTheSum) {
  std::vector<float> x(300, -std::numeric_limits<float>::infinity());
  x[5] = 1.f;
  x[250] = 1.f;
  Out o = run_blocks(x, 4, 2, 128);
  EXPECT_EQ(o.ids[0], 5);
  EXPECT_EQ(o.ids[1], 250);
  EXPECT_NEAR(o.lse, 1.0 + std::log(2.0), 1e-6);
  EXPECT_NEAR(o.probs[0], 0.5, 1e-6);
  EXPECT_EQ(o.probs[2], 0.f);
  EXPECT_EQ(o.bids[0], 0);  // the lowest -inf id
}

TEST(RowReducer, ResetGivesTheSameAnswer) {
  auto x = randn(4000, 2.f, 3);
  fi::RowReducer r(5, 0);
  std::vector<int32_t> a(5), b(5);
  std::vector<float> la(5), pa(5), lb(5), pb(5);
  float lsa, lsb;
  r.add_block(x.data(), 0, 4000);
  r.finish(a.data(), la.data(), pa.data(), &lsa, nullptr, nullptr);
  r.reset();
  r.add_block(x.data(), 0, 2000);
  r.add_block(x.data() + 2000, 2000, 2000);
  r.finish(b.data(), lb.data(), pb.data(), &lsb, nullptr, nullptr);
  EXPECT_EQ(a, b);
  EXPECT_NEAR(lsa, lsb, 1e-6);
}

TEST(RowReducer, NaiveReferenceAgrees) {
  auto x = randn(2500, 2.f, 11);
  std::vector<int32_t> ids(7), bids(3);
  std::vector<float> l(7), p(7), bl(3);
  float lse;
  fi::reduce_row_naive(x.data(), 2500, 7, 3, ids.data(), l.data(), p.data(), &lse, bids.data(), bl.data());
  Out o = run_blocks(x, 7, 3, 300);
  EXPECT_EQ(ids, o.ids);
  EXPECT_EQ(bids, o.bids);
  EXPECT_NEAR(lse, o.lse, 1e-5);
}

}  // namespace

// The CPU backend's split: blocks reduced by several reducers (interleaved, as threads take
// them), candidates merged, statistics folded in token order, must equal one reducer's answer
// bit for bit.
TEST(RowReducer, SplitOverThreadsEqualsOneReducer) {
  auto x = randn(10000, 2.f, 21);
  for (int i = 0; i < 10000; i += 97) x[i] = 7.f;  // exact ties across the parts
  const int64_t block = 512, nb = (10000 + block - 1) / block;
  for (int parts : {2, 3}) {
    std::vector<fi::RowReducer> red(parts, fi::RowReducer(25, 9));
    std::vector<fi::RowReducer::BlockStats> stats(nb);
    for (int64_t b = 0; b < nb; ++b) {
      int64_t v0 = b * block, n = std::min<int64_t>(block, 10000 - v0);
      stats[b] = fi::RowReducer::block_stats(x.data() + v0, n);
      red[b % parts].add_candidates(x.data() + v0, v0, n);
    }
    for (int p = 1; p < parts; ++p) red[0].merge_candidates(red[p]);
    for (auto st : stats) red[0].add_stats(st);
    Out a = run_blocks(x, 25, 9, block), o;
    o.ids.resize(25);
    o.logits.resize(25);
    o.probs.resize(25);
    o.bids.resize(9);
    o.blogits.resize(9);
    red[0].finish(o.ids.data(), o.logits.data(), o.probs.data(), &o.lse, o.bids.data(), o.blogits.data());
    EXPECT_EQ(o.ids, a.ids);
    EXPECT_EQ(o.bids, a.bids);
    EXPECT_EQ(o.probs, a.probs);
    EXPECT_EQ(o.lse, a.lse);
  }
}

namespace {

// -sum p log p and the top-1 minus top-2 logit, in long double over the whole row.
void expect_stats(const std::vector<float>& x, int k, int64_t block) {
  fi::RowReducer r(k, 0);
  for (int64_t v0 = 0; v0 < int64_t(x.size()); v0 += block)
    r.add_block(x.data() + v0, v0, std::min<int64_t>(block, int64_t(x.size()) - v0));
  long double m = -INFINITY;
  for (float v : x) m = std::max(m, (long double)v);
  long double s = 0, sx = 0;
  for (float v : x) {
    const long double e = std::exp((long double)v - m);
    s += e;
    sx += e * ((long double)v - m);
  }
  const double h = double(std::log(s) - sx / s);
  EXPECT_NEAR(r.entropy(), h, 1e-7 * std::max(1.0, h)) << "vocab " << x.size() << " block " << block;
  std::vector<float> sorted = x;
  std::sort(sorted.begin(), sorted.end(), std::greater<float>());
  EXPECT_EQ(r.margin(), sorted[0] - sorted[1]) << "k " << k;
}

}  // namespace

// The entropy and margin kept in the same pass: any block size, k = 1 (the reducer keeps two
// for the margin), peaked and flat rows, ties at the top (margin 0), and the undefined cases.
TEST(RowReducer, EntropyAndMargin) {
  for (int64_t V : {2, 1000, 4099, 128256}) {
    auto x = randn(size_t(V), 3.f, uint32_t(V) + 5);
    for (int64_t block : {1, 13, 2048, 1 << 20}) {
      if (V > 5000 && block < 1000) continue;
      for (int k : {1, 20}) expect_stats(x, k, block);
    }
  }
  auto peaked = randn(50000, 1.f, 31);
  peaked[777] = 40.f;  // p(777) ~ 1 - 1e-12: entropy ~ 1e-10, exact relative to itself
  expect_stats(peaked, 5, 2048);
  std::vector<float> flat(4096, 0.5f);  // uniform: log V, margin 0
  expect_stats(flat, 1, 1000);
  fi::RowReducer r(3, 0);
  r.add_block(flat.data(), 0, 4096);
  EXPECT_NEAR(r.entropy(), std::log(4096.0), 1e-12);
  EXPECT_EQ(r.margin(), 0.f);
  fi::RowReducer one(3, 0), nan(3, 0), none(3, 0);
  one.add_block(flat.data(), 0, 1);
  EXPECT_NEAR(one.entropy(), 0.0, 1e-15);
  EXPECT_TRUE(std::isnan(one.margin()));  // fewer than two tokens
  std::vector<float> withnan = flat;
  withnan[9] = std::numeric_limits<float>::quiet_NaN();
  nan.add_block(withnan.data(), 0, 4096);
  EXPECT_TRUE(std::isnan(nan.entropy()));
  EXPECT_EQ(nan.margin(), 0.f);  // NaN never ranks
  std::vector<float> ninf(10, -std::numeric_limits<float>::infinity());
  none.add_block(ninf.data(), 0, 10);
  EXPECT_TRUE(std::isnan(none.entropy()));
}

// The CPU backend's split (stats folded in token order, candidates merged): the same bits.
TEST(RowReducer, EntropySplitOverThreadsEqualsOneReducer) {
  auto x = randn(10000, 2.f, 41);
  const int64_t block = 512, nb = (10000 + block - 1) / block;
  fi::RowReducer one(1, 0), a(1, 0), b(1, 0);
  std::vector<fi::RowReducer::BlockStats> stats(nb);
  for (int64_t bl = 0; bl < nb; ++bl) {
    const int64_t v0 = bl * block, n = std::min<int64_t>(block, 10000 - v0);
    one.add_block(x.data() + v0, v0, n);
    stats[bl] = fi::RowReducer::block_stats(x.data() + v0, n);
    (bl % 2 ? b : a).add_candidates(x.data() + v0, v0, n);
  }
  a.merge_candidates(b);
  for (auto st : stats) a.add_stats(st);
  EXPECT_EQ(a.entropy(), one.entropy());
  EXPECT_EQ(a.margin(), one.margin());
}
