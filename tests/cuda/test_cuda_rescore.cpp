// The re-scoring kernel of --gemm bf16 (decode/cuda/rescore_kernel.cuh), run as its own source on
// CPU threads (cuda_emulation.h), against independent host computations: the candidates' exact
// logits (double dot products of the fp32 row with the widened head rows), their copy into the
// logits buffer, the row statistics (|x~ - x|, |x~|) and, against the CPU backend's functions
// (decode/rescore.h), the tail shift and the corrected log-sum-exp; bf16 and f16 heads (every f16
// bit pattern widened as fi::f16_to_f32 does), rows with fewer candidates than asked for.
// Runs everywhere: the kernel's device launch is covered by test_cuda_decoder where a GPU is.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "common/half.h"
#include "decode/cuda/kernels.h"
#include "decode/rescore.h"
#include "rescore_emulated.h"

namespace {

struct Case {
  bool bf16;
  int64_t V, H, rows;
  int kc, bc;
};

void run_case(const Case& c) {
  std::mt19937_64 rng(42 + c.V + c.H);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int64_t V = c.V, H = c.H, R = c.rows;
  auto to_bits = [&](float f) { return c.bf16 ? fi::f32_to_bf16(f) : fi::f32_to_f16(f); };
  auto widen = [&](uint16_t b) { return c.bf16 ? fi::bf16_to_f32(b) : fi::f16_to_f32(b); };
  std::vector<uint16_t> w(size_t(V * H)), xg(size_t(R * H));
  std::vector<float> wf(size_t(V * H)), xn(size_t(R * H));
  for (size_t i = 0; i < w.size(); ++i) {
    w[i] = to_bits(0.05f * nd(rng) + (i % size_t(H) == 3 ? 0.1f : 0.f));  // a common direction
    wf[i] = widen(w[i]);
  }
  for (size_t i = 0; i < xn.size(); ++i) {
    xn[i] = 3.f * nd(rng);
    xg[i] = to_bits(xn[i]);
  }
  // The head's statistics as the CPU backend computes them (W~ = W).
  fi::HeadStats hs = fi::head_stats_part(wf.data(), nullptr, 0, V, H);
  fi::finish_head_stats(hs, V);
  // Approximate logits from the rounded rows, and candidates by them (as the reduction would).
  const int nc = c.kc + c.bc;
  std::vector<float> logits(size_t(R * V));
  std::vector<int32_t> tid(size_t(R * c.kc), -1), bid(size_t(R * c.bc), -1);
  std::vector<float> tl(size_t(R * c.kc)), bl(size_t(R * c.bc)), lse(static_cast<size_t>(R));
  for (int64_t r = 0; r < R; ++r) {
    std::vector<std::pair<float, int32_t>> o;
    double m = -INFINITY;
    for (int64_t v = 0; v < V; ++v) {
      double s = 0;
      for (int64_t h = 0; h < H; ++h) s += double(widen(xg[r * H + h])) * wf[v * H + h];
      logits[r * V + v] = float(s);
      o.push_back({float(s), int32_t(v)});
      m = std::max(m, s);
    }
    double z = 0;
    for (auto& e : o) z += std::exp(double(e.first) - m);
    lse[r] = float(m + std::log(z));
    std::sort(o.begin(), o.end(), [](auto a, auto b) { return a.first > b.first; });
    // the last row holds fewer candidates than asked for (ids -1 after), as past a small vocab
    const int nt = r == R - 1 ? c.kc / 2 : c.kc, nb = r == R - 1 ? c.bc / 2 : c.bc;
    for (int i = 0; i < nt; ++i) {
      tid[r * c.kc + i] = o[i].second;
      tl[r * c.kc + i] = o[i].first;
    }
    for (int i = 0; i < nb; ++i) {
      bid[r * c.bc + i] = o[V - 1 - i].second;
      bl[r * c.bc + i] = o[V - 1 - i].first;
    }
  }
  fi::gpu::RowOutputs cand;
  cand.top_ids = tid.data();
  cand.top_logits = tl.data();
  cand.bottom_ids = bid.data();
  cand.bottom_logits = bl.data();
  cand.lse = lse.data();
  std::vector<double> exact(size_t(R * nc), NAN), stats(size_t(R * 4));
  std::vector<float> lse_out(static_cast<size_t>(R));
  std::vector<float> patched = logits;
  fi::test::rescore_rows_emulated(xn.data(), xg.data(), w.data(), c.bf16, R, H, hs.mean_exact.data(),
                                  hs.spread, cand, c.kc, c.bc, exact.data(), stats.data(),
                                  lse_out.data(), patched.data(), V);
  for (int64_t r = 0; r < R; ++r) {
    std::vector<float> xgf(static_cast<size_t>(H));
    for (int64_t h = 0; h < H; ++h) xgf[h] = widen(xg[r * H + h]);
    std::vector<double> te;
    for (int i = 0; i < nc; ++i) {
      const int32_t id = i < c.kc ? tid[r * c.kc + i] : bid[r * c.bc + i - c.kc];
      if (id < 0) continue;
      double want = 0;
      for (int64_t h = 0; h < H; ++h) want += double(xn[r * H + h]) * double(wf[id * H + h]);
      const double got = exact[r * nc + i];
      ASSERT_NEAR(got, want, 1e-12 * (1 + std::fabs(want))) << "row " << r << " candidate " << i;
      ASSERT_EQ(patched[r * V + id], float(got)) << "row " << r << " id " << id << ": logits not patched";
      if (i < c.kc) te.push_back(got);
    }
    const fi::RowResidual res = fi::row_residual(xn.data() + r * H, xgf.data(), hs);
    EXPECT_NEAR(stats[r * 4 + 1], res.delta_norm, 1e-12 * (1 + res.delta_norm));
    EXPECT_NEAR(stats[r * 4 + 2], res.gemm_norm, 1e-12 * res.gemm_norm);
    EXPECT_NEAR(stats[r * 4 + 3], res.shift, 1e-12 * (1 + std::fabs(res.shift)));
    const double want_lse = fi::corrected_lse(lse[r], tl.data() + r * c.kc, te.data(), int(te.size()), res.shift);
    EXPECT_NEAR(stats[r * 4], want_lse, 1e-12 * (1 + std::fabs(want_lse)));
    EXPECT_EQ(lse_out[r], float(stats[r * 4]));
  }
  // Only candidates were written.
  size_t changed = 0;
  for (size_t i = 0; i < logits.size(); ++i) changed += patched[i] != logits[i];
  EXPECT_LE(changed, size_t(R * nc));
}

TEST(RescoreEmulated, Bf16) { run_case({true, 700, 96, 3, 24, 8}); }
TEST(RescoreEmulated, F16NoBottom) { run_case({false, 500, 70, 2, 40, 0}); }

// The kernel's f16 widening against fi::f16_to_f32 for every bit pattern but NaNs, through the
// kernel (H = 1, one candidate per pattern is too slow; one row of the head per pattern instead).
TEST(RescoreEmulated, F16EveryPattern) {
  const int64_t V = 65536, H = 1;
  std::vector<uint16_t> w(V);
  for (int64_t i = 0; i < V; ++i) w[size_t(i)] = uint16_t(i);
  const int kc = 1024;
  for (int64_t base = 0; base < V; base += kc * 8) {
    const int R = 8;
    std::vector<int32_t> tid(size_t(R * kc));
    std::vector<float> tl(size_t(R * kc), 0.f), lse(size_t(R), 0.f), xn(size_t(R), 1.f),
        logits(size_t(R * V), 0.f), lse_out(static_cast<size_t>(R));
    std::vector<uint16_t> xg(size_t(R), fi::f32_to_f16(1.f));
    for (int r = 0; r < R; ++r)
      for (int i = 0; i < kc; ++i) tid[size_t(r * kc + i)] = int32_t(base + r * kc + i);
    std::vector<double> exact(size_t(R * kc)), stats(size_t(R * 4)), mean(1, 0.0);
    fi::gpu::RowOutputs cand;
    cand.top_ids = tid.data();
    cand.top_logits = tl.data();
    cand.lse = lse.data();
    fi::test::rescore_rows_emulated(xn.data(), xg.data(), w.data(), false, R, H, mean.data(), 0.0,
                                    cand, kc, 0, exact.data(), stats.data(), lse_out.data(),
                                    logits.data(), V);
    for (int i = 0; i < R * kc; ++i) {
      const float want = fi::f16_to_f32(uint16_t(tid[size_t(i)]));
      if (std::isnan(want)) continue;
      ASSERT_EQ(exact[size_t(i)], double(want)) << "f16 bits " << tid[size_t(i)];
    }
  }
}

}  // namespace
