// Norm modes against a double-precision loop written here: rms (plain and Gemma (1+w)),
// gamma, none; and the decode's norm against the forward pass's, bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "decode/decoder.h"
#include "model/rms_norm.h"

TEST(Norm, ModesMatchADoubleLoop) {
  const int64_t H = 37, R = 3;
  std::vector<float> x(R * H), g(H);
  for (int64_t i = 0; i < R * H; ++i) x[i] = std::sin(0.37 * i) * (1 + i % 5);
  for (int64_t i = 0; i < H; ++i) g[i] = 0.5f + 0.01f * i;
  for (auto mode : {fi::NormMode::Rms, fi::NormMode::Gamma, fi::NormMode::None})
    for (bool plus_one : {false, true}) {
      fi::DecodeParams p;
      p.norm = mode;
      p.norm_plus_one = plus_one;
      p.eps = 1e-5;
      std::vector<float> y = x;
      fi::apply_norm(y.data(), R, H, g.data(), p);
      for (int64_t r = 0; r < R; ++r) {
        double ss = 0;
        for (int64_t h = 0; h < H; ++h) ss += double(x[r * H + h]) * x[r * H + h];
        double inv = 1 / std::sqrt(ss / H + 1e-5);
        for (int64_t h = 0; h < H; ++h) {
          double gg = plus_one ? 1.0 + g[h] : g[h];
          double want = mode == fi::NormMode::None ? x[r * H + h]
                        : mode == fi::NormMode::Gamma ? x[r * H + h] * gg
                                                      : x[r * H + h] * inv * gg;
          EXPECT_NEAR(y[r * H + h], want, 1e-6 * std::max(1.0, std::fabs(want)));
        }
      }
    }
  EXPECT_EQ(fi::parse_norm("gamma"), fi::NormMode::Gamma);
  EXPECT_ANY_THROW(fi::parse_norm("layer"));
}

// The decode's norm and the forward pass's are the one model/rms_norm.h, to the bit, and that is
// the arithmetic both had before they were merged: the squares summed in double, then
// x * scale * g in fp32 (gamma mode: scale 1).
TEST(Norm, DecodeAndForwardAgreeToTheBit) {
  const int64_t H = 53;
  std::vector<float> x(H), g(H);
  for (int64_t i = 0; i < H; ++i) x[i] = float(std::sin(1.3 * i) * (1 + i % 7) * 1e3);
  for (int64_t i = 0; i < H; ++i) g[i] = float(std::cos(0.7 * i));
  for (auto mode : {fi::NormMode::Rms, fi::NormMode::Gamma})
    for (bool plus_one : {false, true}) {
      fi::DecodeParams p;
      p.norm = mode;
      p.norm_plus_one = plus_one;
      p.eps = 1e-6;
      std::vector<float> dec = x, fwd(H), old(H);
      fi::apply_norm(dec.data(), 1, H, g.data(), p);
      double ss = 0;
      for (int64_t i = 0; i < H; ++i) ss += double(x[i]) * double(x[i]);
      const float scale = mode == fi::NormMode::Rms ? float(1.0 / std::sqrt(ss / double(H) + p.eps)) : 1.f;
      for (int64_t i = 0; i < H; ++i) old[i] = x[i] * scale * (plus_one ? 1.f + g[i] : g[i]);
      EXPECT_EQ(std::memcmp(dec.data(), old.data(), H * 4), 0) << fi::norm_name(mode) << plus_one;
      if (mode != fi::NormMode::Rms) continue;
      fi::rms_norm(x.data(), g.data(), H, p.eps, plus_one, fwd.data());
      EXPECT_EQ(std::memcmp(dec.data(), fwd.data(), H * 4), 0) << plus_one;
    }
}
