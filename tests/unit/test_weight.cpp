// The CPU forward's matrix products (forward/weight.h) against a double-precision loop over the
// widened weights: bf16, f16 and f32 matrices, one token (the per-row widening dot products on
// all cores) and several (SGEMM over widened row blocks, here several blocks), widths that are
// not multiples of the 8 vector lanes, with and without a bias.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "common/half.h"
#include "forward/weight.h"

namespace {

fi::Weight random_weight(fi::DType d, int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> n(0.f, 0.5f);
  fi::Weight w;
  w.dtype = d;
  w.rows = rows;
  w.cols = cols;
  for (int64_t i = 0; i < rows * cols; ++i) {
    const float v = n(g);
    if (d == fi::DType::F32) w.f32.push_back(v);
    else w.h16.push_back(d == fi::DType::BF16 ? fi::f32_to_bf16(v) : fi::f32_to_f16(v));
  }
  return w;
}

double widened(const fi::Weight& w, int64_t r, int64_t c) {
  const size_t i = size_t(r * w.cols + c);
  if (w.dtype == fi::DType::F32) return w.f32[i];
  return w.dtype == fi::DType::BF16 ? fi::bf16_to_f32(w.h16[i]) : fi::f16_to_f32(w.h16[i]);
}

TEST(Weight, LinearMatchesDoubleLoop) {
  std::mt19937_64 g(5);
  std::normal_distribution<float> n(0.f, 1.f);
  for (fi::DType d : {fi::DType::BF16, fi::DType::F16, fi::DType::F32}) {
    // cols 37 and 301: lanes' tails; cols 70001: blocks of 29 rows in the SGEMM path, so 300
    // rows take 11 blocks.
    for (int64_t cols : {37, 301, 70001}) {
      const int64_t rows = 300;
      const fi::Weight w = random_weight(d, rows, cols, uint64_t(cols) + uint64_t(d));
      std::vector<float> bias(static_cast<size_t>(rows));
      for (float& b : bias) b = n(g);
      for (int64_t T : {1, 5}) {
        std::vector<float> x(size_t(T * cols)), y(size_t(T * rows));
        for (float& v : x) v = n(g);
        for (bool with_bias : {false, true}) {
          fi::linear(x.data(), T, w, with_bias ? bias : std::vector<float>{}, y.data());
          for (int64_t t = 0; t < T; ++t)
            for (int64_t r = 0; r < rows; ++r) {
              double want = with_bias ? bias[size_t(r)] : 0, mag = std::fabs(want);
              for (int64_t c = 0; c < cols; ++c) {
                const double p = widened(w, r, c) * x[size_t(t * cols + c)];
                want += p;
                mag += std::fabs(p);
              }
              // fp32 accumulation: within a few float epsilons of the sum of |terms|.
              ASSERT_NEAR(y[size_t(t * rows + r)], want, 4e-6 * mag)
                  << "dtype " << int(d) << " cols " << cols << " T " << T << " row " << r;
            }
        }
      }
      std::vector<float> row(static_cast<size_t>(cols));
      w.row(7, row.data());
      for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(double(row[size_t(c)]), widened(w, 7, c));
    }
  }
}

}  // namespace
