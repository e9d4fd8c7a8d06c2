// The one-16-bit-GEMM decode (`--gemm bf16`), shared by both backends: one GEMM on the normed row
// rounded to bf16 (RNE) gives approximate logits y~; the top (k + margin) and bottom (b + margin)
// tokens by y~ are re-scored exactly (the fp32 normed row against the exact LM-head rows, summed
// in double), and the log-sum-exp is corrected: the candidates' approximate terms are replaced
// by their exact ones, and the rest (the tail) is shifted by the mean LM-head row's error.
// A rigorous bound E on |y~ - y| certifies each row's top-k and bottom-k ids; a row it cannot
// certify is decoded again exactly by the backend (CPU: fp32 sgemm; CUDA: the hi + lo GEMM).
// The error measurements behind the bound are in README.md, "Numerics".
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "decode/decoder.h"

namespace fi {

// Candidates re-scored beyond top_k (and beyond bottom_k when bottom_k > 0). 64 more rows of
// H multiply-adds each are nothing next to the V·H GEMM; the margin only sets how often the
// certificate fails (each failure costs one exact row).
constexpr int kRescoreMargin = 64;

// The LM-head W [V, H] (exact values) and W~ (the GEMM's bf16 copy; W~ = W for bf16 heads): the
// mean rows and the largest row norms the re-scoring needs, computed once.
struct HeadStats {
  std::vector<double> mean_exact, mean_gemm;  // [H] mean over the V rows of W and of W~
  double max_norm_gemm = 0;                   // max_v |w~_v|
  double max_norm_diff = 0;                   // max_v |w~_v - w_v| (0 for bf16 heads)
  double spread = 0;  // tr(C) / H, C the covariance of the rows of W: their variance per channel
  int64_t hidden = 0;
};
// w: [rows, H] fp32 exact; wg: [rows, H] bf16 bits of W~, or nullptr when W~ = W. Rows
// [r0, r1) only; merge the parts with merge_head_stats, then finish_head_stats(V).
HeadStats head_stats_part(const float* w, const uint16_t* wg, int64_t r0, int64_t r1, int64_t H);
void merge_head_stats(HeadStats& into, const HeadStats& part);
void finish_head_stats(HeadStats& s, int64_t vocab);  // sums -> means

// Per row: x the exact normed row (fp32), x~ its bf16 rounding (the GEMM's input).
struct RowResidual {
  double delta_norm = 0;   // |x~ - x|
  double gemm_norm = 0;    // |x~|
  double shift = 0;        // the tail's mean of y~ - y (row_residual)
};
// shift: y~_v - y_v = w~_v·x~ - w_v·x averaged over the tail, which softmax weights by exp(y~):
// for rows of W spread as N(w̄, C) that weighting moves their mean to w̄ + C x~ (an exponential
// tilt), so with d = x~ - x and C ≈ spread·I, shift = w̄~·x~ - w̄·x + spread·(x~·d) - spread·|d|²/2
// (the last term: E exp(-e) = exp(-E e + Var e / 2)).
RowResidual row_residual(const float* x, const float* xg, const HeadStats& s);
// A bound on |y~_v - y_v| for every token v (any fp32 summation order of the GEMM).
double logit_error_bound(const RowResidual& r, const HeadStats& s);

// The log-sum-exp corrected from the exact candidates: lse_approx over y~ (all tokens),
// approx/exact: [n] y~ and y of the top candidates (the tokens whose terms are replaced).
double corrected_lse(double lse_approx, const float* approx, const double* exact, int n, double shift);

// The entropy corrected the same way (tail shifted by `shift`, candidates exact): H = -sum p·log p
// with the candidates' terms exact (exact[i] - lse) and every other token's log-probability its
// approximate one moved by delta = lse_approx - shift - lse. entropy_approx: the entropy over y~
// (RowReducer::entropy of the one-GEMM logits); lse: corrected_lse.
double corrected_entropy(double lse_approx, double entropy_approx, const float* approx,
                         const double* exact, int n, double shift, double lse);

// One row's final result from its candidates. Top candidates: ids/approx/exact [nt] (best first by
// approx; nt < top_k + margin only when the vocabulary had no more tokens), likewise bottom
// [nb] (lowest approx first). lse: corrected_lse. Writes top_k / bottom_k entries as
// RowReducer::finish does (exact logits; ties lower id first; -1 / -inf past the candidates),
// and the margin (RowReducer::margin: the best exact logit minus the second, fp32).
// Returns true when the bound E certifies that no other token belongs in the top-k or bottom-k
// (nor, for the margin, in the top two).
struct Candidates {
  const int32_t* ids;
  const float* approx;
  const double* exact;
  int n;    // candidates held
  int cap;  // candidates asked for (k + margin); n < cap: every token was a candidate
};
bool finish_rescored_row(const Candidates& top, const Candidates& bottom, double lse, double bound,
                         int top_k, int bottom_k, int32_t* top_ids, float* top_logits,
                         float* top_probs, float* lse_out, int32_t* bottom_ids, float* bottom_logits,
                         float* margin);

}  // namespace fi
