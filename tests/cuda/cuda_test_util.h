// Helpers for the CUDA tests: the skip line, random data, and the comparison of two decodes that
// tolerates exact and near ties (the contract: top-k equal up to ties, probabilities within
// 1e-3 relative).
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/half.h"
#include "decode/decoder.h"
#include "gpu/device.h"

// Every CUDA test starts with this: without a device it reports the skip and passes.
#define FI_SKIP_WITHOUT_CUDA() \
  if (!::fi::cuda_available()) GTEST_SKIP() << "SKIPPED (no CUDA device)"

namespace fi::test {

inline std::vector<float> normal(size_t n, float sigma, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.f, sigma);
  std::vector<float> v(n);
  for (float& x : v) x = d(g);
  return v;
}

inline std::vector<float> uniform(size_t n, float lo, float hi, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(g);
  return v;
}

// Rounds to bf16 / f16 and back (the values a 16-bit checkpoint holds); raw: the 16-bit words.
inline std::vector<float> round_bf16(const std::vector<float>& v, std::vector<uint16_t>* raw) {
  std::vector<float> out(v.size());
  if (raw) raw->resize(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const uint16_t h = f32_to_bf16(v[i]);
    if (raw) (*raw)[i] = h;
    out[i] = bf16_to_f32(h);
  }
  return out;
}

inline std::vector<float> round_f16(const std::vector<float>& v, std::vector<uint16_t>* raw) {
  std::vector<float> out(v.size());
  if (raw) raw->resize(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const uint16_t h = f32_to_f16(v[i]);
    if (raw) (*raw)[i] = h;
    out[i] = f16_to_f32(h);
  }
  return out;
}

struct Tolerance {
  double logit_abs = 1e-4;  // |gpu logit - cpu logit| at the same rank position
  double lse_abs = 1e-4;
  double prob_rel = 1e-3;   // the contract
  double max_swapped = 0.05;  // fraction of top-k positions whose ids may differ by near ties
};

// "" when got (GPU) matches want (CPU) within tol, else the first fault.
// Positions may hold different ids only where the two logits at that position are within
// 2 × logit_abs of another entry (a near tie the rounding may order either way).
inline std::string compare_decodes(const ChunkResult& want, const ChunkResult& got, int k, int b,
                                   const Tolerance& tol) {
  std::ostringstream err;
  if (want.rows != got.rows) return "rows differ";
  int64_t swapped = 0, positions = 0;
  for (int64_t r = 0; r < want.rows; ++r) {
    const double dl = std::fabs(double(want.lse[r]) - double(got.lse[r]));
    if (!(dl <= tol.lse_abs)) {
      err << "row " << r << ": lse " << got.lse[r] << " vs cpu " << want.lse[r];
      return err.str();
    }
    // The entropy weighs the logits' errors by log p (about log V): 10 x the lse's tolerance.
    const double dh = std::fabs(double(want.entropy[r]) - double(got.entropy[r]));
    if (!(dh <= 10 * tol.lse_abs + tol.prob_rel * std::fabs(double(want.entropy[r])))) {
      err << "row " << r << ": entropy " << got.entropy[r] << " vs cpu " << want.entropy[r];
      return err.str();
    }
    if (k > 0 && !(std::fabs(double(want.margin[r]) - double(got.margin[r])) <= 2 * tol.logit_abs)) {
      err << "row " << r << ": margin " << got.margin[r] << " vs cpu " << want.margin[r];
      return err.str();
    }
    for (int i = 0; i < k; ++i) {
      const size_t at = size_t(r) * k + i;
      ++positions;
      const double wl = want.top_logits[at], gl = got.top_logits[at];
      if (!(std::fabs(wl - gl) <= tol.logit_abs)) {
        err << "row " << r << " top " << i << ": logit " << gl << " (id " << got.top_ids[at]
            << ") vs cpu " << wl << " (id " << want.top_ids[at] << ")";
        return err.str();
      }
      if (want.top_ids[at] != got.top_ids[at]) {
        ++swapped;
        // A swap is a near tie: some neighbour of this position in the CPU list has a logit
        // within 2 tol of this one.
        bool near = false;
        for (int j = 0; j < k; ++j)
          if (j != i && std::fabs(double(want.top_logits[size_t(r) * k + j]) - wl) <= 2 * tol.logit_abs)
            near = true;
        if (i == k - 1) near = true;  // the last place may go to the (k+1)-th CPU token
        if (!near) {
          err << "row " << r << " top " << i << ": id " << got.top_ids[at] << " vs cpu "
              << want.top_ids[at] << " with no near tie (logit " << wl << ")";
          return err.str();
        }
        continue;
      }
      const double wp = want.top_probs[at], gp = got.top_probs[at];
      if (!(std::fabs(wp - gp) <= tol.prob_rel * std::fabs(wp) + 1e-30)) {
        err << "row " << r << " top " << i << " (id " << want.top_ids[at] << "): prob " << gp
            << " vs cpu " << wp << " (relative " << std::fabs(wp - gp) / wp << ")";
        return err.str();
      }
    }
    for (int i = 0; i < b; ++i) {
      const size_t at = size_t(r) * b + i;
      const double wl = want.bottom_logits[at], gl = got.bottom_logits[at];
      if (!(std::fabs(wl - gl) <= tol.logit_abs)) {
        err << "row " << r << " bottom " << i << ": logit " << gl << " vs cpu " << wl;
        return err.str();
      }
    }
  }
  if (positions && double(swapped) > tol.max_swapped * double(positions)) {
    err << swapped << " of " << positions << " top-k positions hold different ids";
    return err.str();
  }
  return "";
}

}  // namespace fi::test
