// The re-scoring of the one-16-bit-GEMM decode (decode/rescore.h): head statistics, the error
// bound, the corrected log-sum-exp and the final selection among the exact candidates.
#include "decode/rescore.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "common/error.h"
#include "common/half.h"

namespace fi {

GemmMode parse_gemm(const std::string& s, bool cuda) {
  if (s == "exact") return GemmMode::Exact;
  if (s == "bf16") return GemmMode::Bf16;
  // CUDA: one GEMM instead of two, within the measured 1e-3 (README, Numerics). CPU: the exact
  // path stays the default (bf16 is opt-in there: its speed depends on the CPU's instructions).
  if (s == "auto") return cuda ? GemmMode::Bf16 : GemmMode::Exact;
  FI_FAIL("--gemm: unknown mode '" + s + "' (expected auto, exact or bf16)");
}

const char* gemm_name(GemmMode g) { return g == GemmMode::Bf16 ? "bf16" : "exact"; }

namespace {

typedef double vd8 __attribute__((vector_size(64)));
typedef float vf8 __attribute__((vector_size(32)));

// Row v of a bf16 head (W~ = W): mean[h] += w[h]; returns |w|² (8 double lanes, then in order).
__attribute__((target_clones("avx512f", "avx2", "default")))
double add_row(const float* w, int64_t H, double* mean) {
  vd8 acc = vd8{};
  int64_t h = 0;
  for (; h + 8 <= H; h += 8) {
    vf8 a;
    std::memcpy(&a, w + h, sizeof a);
    const vd8 d = __builtin_convertvector(a, vd8);
    vd8 m;
    std::memcpy(&m, mean + h, sizeof m);
    m += d;
    std::memcpy(mean + h, &m, sizeof m);
    acc += d * d;
  }
  double s = 0;
  for (int j = 0; j < 8; ++j) s += acc[j];
  for (; h < H; ++h) {
    mean[h] += w[h];
    s += double(w[h]) * w[h];
  }
  return s;
}

}  // namespace

HeadStats head_stats_part(const float* w, const uint16_t* wg, int64_t r0, int64_t r1, int64_t H) {
  HeadStats s;
  s.hidden = H;
  s.mean_exact.assign(size_t(H), 0.0);
  s.mean_gemm.assign(size_t(H), 0.0);
  for (int64_t v = r0; v < r1; ++v) {
    const float* row = w + v * H;
    if (!wg) {  // W~ = W: one vectorised pass
      const double n2 = add_row(row, H, s.mean_exact.data());
      s.spread += n2;
      s.max_norm_gemm = std::max(s.max_norm_gemm, std::sqrt(n2));
      continue;
    }
    double ng = 0, nd = 0, ne = 0;
    for (int64_t h = 0; h < H; ++h) {
      const double e = row[h], g = double(bf16_to_f32(wg[v * H + h]));
      s.mean_exact[h] += e;
      s.mean_gemm[h] += g;
      ng += g * g;
      nd += (g - e) * (g - e);
      ne += e * e;
    }
    s.spread += ne;  // the sum of |w_v|², until finish_head_stats
    s.max_norm_gemm = std::max(s.max_norm_gemm, std::sqrt(ng));
    s.max_norm_diff = std::max(s.max_norm_diff, std::sqrt(nd));
  }
  if (!wg) s.mean_gemm = s.mean_exact;
  return s;
}

void merge_head_stats(HeadStats& into, const HeadStats& p) {
  if (into.mean_exact.empty()) {
    into = p;
    return;
  }
  for (size_t h = 0; h < into.mean_exact.size(); ++h) {
    into.mean_exact[h] += p.mean_exact[h];
    into.mean_gemm[h] += p.mean_gemm[h];
  }
  into.spread += p.spread;
  into.max_norm_gemm = std::max(into.max_norm_gemm, p.max_norm_gemm);
  into.max_norm_diff = std::max(into.max_norm_diff, p.max_norm_diff);
}

void finish_head_stats(HeadStats& s, int64_t vocab) {
  for (double& m : s.mean_exact) m /= double(vocab);
  for (double& m : s.mean_gemm) m /= double(vocab);
  double mean2 = 0;
  for (double m : s.mean_exact) mean2 += m * m;
  s.spread = std::max(0.0, s.spread / double(vocab) - mean2) / double(s.hidden);  // tr(C) / H
}

RowResidual row_residual(const float* x, const float* xg, const HeadStats& s) {
  RowResidual r;
  double d2 = 0, g2 = 0, gd = 0;
  for (int64_t h = 0; h < s.hidden; ++h) {
    const double e = x[h], g = xg[h];
    d2 += (g - e) * (g - e);
    g2 += g * g;
    gd += g * (g - e);
    r.shift += s.mean_gemm[h] * g - s.mean_exact[h] * e;
  }
  r.shift += s.spread * (gd - 0.5 * d2);
  r.delta_norm = std::sqrt(d2);
  r.gemm_norm = std::sqrt(g2);
  return r;
}

// y~ - y = [fl(w~·x~) - w~·x~] + w~·(x~ - x) + (w~ - w)·x. The first term is at most
// γ_H Σ|w~_h x~_h| <= γ_H |w~||x~| in any fp32 summation order (γ_H = H u / (1 - H u), u = 2^-24),
// the others at most |w~||x~ - x| and |w~ - w||x| by Cauchy–Schwarz, with |x| <= |x~| + |x~ - x|.
double logit_error_bound(const RowResidual& r, const HeadStats& s) {
  const double u = std::ldexp(1.0, -24), Hu = double(s.hidden) * u;
  const double gamma = Hu / (1 - Hu);
  const double x_norm = r.gemm_norm + r.delta_norm;
  const double b = s.max_norm_gemm * (gamma * r.gemm_norm + r.delta_norm) + s.max_norm_diff * x_norm;
  return b * (1 + 1e-6);  // the bound's own rounding
}

// Z / Z~ = (1 - Σ_C p~_c) · exp(-shift) + Σ_C exp(y_c - lse~), p~_c = exp(y~_c - lse~): the tail
// (every token but the candidates C) keeps its approximate terms, moved by the mean error.
double corrected_lse(double lse_approx, const float* approx, const double* exact, int n, double shift) {
  if (!std::isfinite(lse_approx)) return lse_approx;
  double pc = 0, ex = 0;
  for (int i = 0; i < n; ++i) {
    pc += std::exp(double(approx[i]) - lse_approx);
    ex += std::exp(exact[i] - lse_approx);
  }
  const double tail = std::max(0.0, 1.0 - pc);
  return lse_approx + std::log(tail * std::exp(-shift) + ex);
}

// With a_v = y~_v - lse~ and p~_v = e^a_v: the tail's exact log-probability is a_v + delta, its
// probability p~_v·e^delta, so its part of -sum p log p is -e^delta·(sum_tail p~ a + delta·sum_tail p~),
// where -sum_tail p~ a = H~ + sum_C p~_c a_c and sum_tail p~ = 1 - sum_C p~_c.
double corrected_entropy(double lse_approx, double entropy_approx, const float* approx,
                         const double* exact, int n, double shift, double lse) {
  if (!std::isfinite(lse_approx) || !std::isfinite(lse)) return std::numeric_limits<double>::quiet_NaN();
  double pc = 0, pca = 0, cand = 0;
  for (int i = 0; i < n; ++i) {
    const double a = double(approx[i]) - lse_approx, p = std::exp(a);
    pc += p;
    pca += p * a;
    const double b = exact[i] - lse;
    cand -= std::exp(b) * b;
  }
  const double tail = std::max(0.0, 1.0 - pc), tail_h = std::max(0.0, entropy_approx + pca);
  const double delta = lse_approx - shift - lse;
  return cand + std::exp(delta) * (tail_h - delta * tail);
}

namespace {

// Indices 0..n-1 of the candidates, ordered by their exact logit rounded to fp32 (what the map
// stores): best first (top) or lowest first (bottom), ties lower id first.
std::vector<int> order_by_exact(const Candidates& c, bool top) {
  std::vector<int> o(size_t(c.n));
  std::iota(o.begin(), o.end(), 0);
  std::sort(o.begin(), o.end(), [&](int a, int b) {
    const float la = float(c.exact[a]), lb = float(c.exact[b]);
    if (la != lb) return top ? la > lb : la < lb;
    return c.ids[a] < c.ids[b];
  });
  return o;
}

}  // namespace

bool finish_rescored_row(const Candidates& top, const Candidates& bottom, double lse, double bound,
                         int top_k, int bottom_k, int32_t* top_ids, float* top_logits,
                         float* top_probs, float* lse_out, int32_t* bottom_ids, float* bottom_logits,
                         float* margin) {
  const float inf = std::numeric_limits<float>::infinity();
  *lse_out = float(lse);
  bool certified = std::isfinite(lse);
  const std::vector<int> ot = order_by_exact(top, true);
  for (int i = 0; i < top_k; ++i) {
    const bool have = i < top.n;
    top_ids[i] = have ? top.ids[ot[i]] : -1;
    top_logits[i] = have ? float(top.exact[ot[i]]) : -inf;
    top_probs[i] = have && std::isfinite(lse) ? float(std::exp(double(top_logits[i]) - lse)) : 0.f;
  }
  *margin = top.n >= 2 ? float(top.exact[ot[0]]) - float(top.exact[ot[1]])
                       : std::numeric_limits<float>::quiet_NaN();
  // Every token outside the candidates has y~ <= the last candidate's, so y <= that + bound.
  // The margin needs the top two, so at least two are certified.
  const int kk = top_k > 0 ? std::max(top_k, 2) : 0;
  if (kk > 0 && top.n == top.cap && top.n >= kk)
    certified = certified && top.exact[ot[kk - 1]] > double(top.approx[top.n - 1]) + bound;
  const std::vector<int> ob = order_by_exact(bottom, false);
  for (int i = 0; i < bottom_k; ++i) {
    const bool have = i < bottom.n;
    bottom_ids[i] = have ? bottom.ids[ob[i]] : -1;
    bottom_logits[i] = have ? float(bottom.exact[ob[i]]) : inf;
  }
  if (bottom_k > 0 && bottom.n == bottom.cap && bottom.n >= bottom_k)
    certified = certified && bottom.exact[ob[bottom_k - 1]] < double(bottom.approx[bottom.n - 1]) - bound;
  return certified;
}

}  // namespace fi
