// The token index's packed source key (decode/token_index.h TiKey): a dense model's key is the
// layer id (version 1 lists unchanged); an MoE model's round-trips (layer, group, expert) and its
// integer order is their lexicographic order, so ti_insert keeps the version 2 order
// (logp, layer, group, expert, neuron), checked against a sort of the tuples.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <tuple>
#include <vector>

#include "decode/token_index.h"
#include "decode/token_index_list.h"

TEST(TiKey, DenseIsTheLayer) {
  const fi::TiKey k{0};
  for (int32_t l : {0, 1, 7, 125}) {
    EXPECT_EQ(k.key(l, fi::kTiDense, -1), l);
    int32_t layer = 0, expert = 0;
    int8_t group = 0;
    k.split(l, &layer, &group, &expert);
    EXPECT_EQ(std::make_tuple(layer, int(group), expert), std::make_tuple(l, 0, -1));
  }
}

TEST(TiKey, RoundTripAndOrder) {
  const fi::TiKey k{256};
  k.check_fits(61);
  std::vector<std::tuple<int32_t, int, int32_t>> src;
  for (int32_t l : {0, 3, 60})
    for (int g : {0, 1, 2})
      for (int32_t e : {-1, 0, 5, 255}) {
        if ((g == fi::kTiRouted) != (e >= 0)) continue;
        src.emplace_back(l, g, e);
      }
  for (size_t a = 0; a < src.size(); ++a) {
    const auto [l, g, e] = src[a];
    int32_t layer = 0, expert = 0;
    int8_t group = 0;
    k.split(k.key(l, g, e), &layer, &group, &expert);
    EXPECT_EQ(std::make_tuple(layer, int(group), expert), src[a]);
    for (size_t b = 0; b < src.size(); ++b) {
      const auto [l2, g2, e2] = src[b];
      EXPECT_EQ(k.key(l, g, e) < k.key(l2, g2, e2), src[a] < src[b]);
    }
  }
  int32_t layer = 0, expert = 0;
  int8_t group = 0;
  k.split(-1, &layer, &group, &expert);
  EXPECT_EQ(std::make_tuple(layer, int(group), expert), std::make_tuple(-1, -1, -1));
  EXPECT_ANY_THROW(fi::TiKey{1 << 20}.check_fits(1000));
}

// ti_insert over keys gives the best M of random entries in the version 2 order.
TEST(TiKey, ListOrderIsTheVersion2Order) {
  const fi::TiKey k{8};
  std::mt19937 rng(7);
  const int64_t M = 6;
  std::vector<double> lp(M, -INFINITY);
  std::vector<int32_t> ly(M, -1), nr(M, -1);
  using Entry = std::tuple<double, int32_t, int, int32_t, int32_t>;  // -logp, layer, group, expert, neuron
  std::vector<Entry> all;
  for (int i = 0; i < 400; ++i) {
    const int32_t l = int32_t(rng() % 3), g = int(rng() % 3), e = g == fi::kTiRouted ? int32_t(rng() % 8) : -1;
    const int32_t n = int32_t(rng() % 4);
    const double x = -double(rng() % 5);  // many exact ties
    if (std::find_if(all.begin(), all.end(), [&](const Entry& q) {
          return std::get<1>(q) == l && std::get<2>(q) == g && std::get<3>(q) == e && std::get<4>(q) == n;
        }) != all.end())
      continue;  // each neuron once
    all.emplace_back(-x, l, g, e, n);
    fi::ti_insert(lp.data(), ly.data(), nr.data(), M, x, k.key(l, g, e), n);
  }
  std::sort(all.begin(), all.end());
  for (int64_t j = 0; j < M; ++j) {
    int32_t layer = 0, expert = 0;
    int8_t group = 0;
    k.split(ly[size_t(j)], &layer, &group, &expert);
    EXPECT_EQ(Entry(-lp[size_t(j)], layer, int(group), expert, nr[size_t(j)]), all[size_t(j)]) << "slot " << j;
  }
}
