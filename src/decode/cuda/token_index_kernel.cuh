// The token index on the device (decode/token_index.h): one thread per token folds the rows of a
// logits piece into that token's list of its M best (logp, layer, neuron), with the same order
// and insertion as the CPU (decode/token_index_list.h). The logits are not read again: the row
// reduction (row_reduce_kernel.cuh) marks, in the same pass that computes the lse, every token of
// every row that may enter its list (TokenMarks: one bit per token and row), and the thread of a
// token reads only its marked rows' logits, each re-checked exactly against the final lse. So the
// per-token work is one 4-byte mark word per row, shared by the warp's 32 tokens.
// token_index_column_marked is plain C++ too: the tests run it on the CPU against
// TokenIndex::update, after the reduction kernel's own source (the emulator) made the marks.
#pragma once
#include <cmath>
#include <cstdint>

#include "decode/token_index_list.h"

namespace fi::gpu {

// The device copy of one TokenIndex: [vocab, m] lists, [vocab] M-th logp, and the same rounded
// down to fp32 (worst_f <= worst), the threshold the reduction's marking reads.
struct TokenIndexLists {
  double* logp = nullptr;
  int32_t* layer = nullptr;
  int32_t* neuron = nullptr;
  double* worst = nullptr;
  float* worst_f = nullptr;
  int64_t m = 0;
};

// What the reduction kernel needs to mark tokens: worst: [vocab] fp32 lower bounds of each
// token's M-th logp; marks: [rows, ld] words, bit j % 32 of word j / 32 for token j (null: off).
struct TokenMarks {
  const float* worst = nullptr;
  uint32_t* marks = nullptr;
  int64_t ld = 0;  // words per row, >= ceil(vocab / 32)
};

// The slack the marking subtracts from its running lower bound lb on the row's lse: far above
// the fp32 rounding that could put the final lse (other summation order, other reference point)
// below a partial one (~1e-5 here), so lb stays below the final lse with room to spare. A row
// whose lse used by the index moved below the marks' lse by more than kMarkMove (the re-scoring's
// correction, --gemm bf16) has its marks ignored: all its tokens are checked.
FI_HOST_DEVICE inline float mark_slack(float lb) { return 2e-3f + 1e-5f * (lb < 0 ? -lb : lb); }
constexpr double kMarkMove = 1e-3;

// w rounded toward -inf to fp32: a lower bound the marking may compare with.
FI_HOST_DEVICE inline float round_down_f32(double w) {
  float f = float(w);
  if (double(f) > w) f = nextafterf(f, -INFINITY);
  return f;
}

// Token v: rows 0..rows-1 of logits [rows, ld] (neurons row0.. of `layer`), logp = logit - lse[r].
// marks (with marks_ld words per row) and lse_marks, the lse the marks were made against: a row
// with lse[r] >= lse_marks[r] - kMarkMove is read only where its mark is set (a row without them
// is read whole, as is every row when marks is null).
FI_HOST_DEVICE inline void token_index_column_marked(const float* logits, int64_t ld, int64_t rows,
                                                     const float* lse, const uint32_t* marks,
                                                     int64_t marks_ld, const float* lse_marks,
                                                     int32_t layer, int64_t row0, int64_t v,
                                                     const TokenIndexLists& t) {
  double* lp = t.logp + v * t.m;
  int32_t* ly = t.layer + v * t.m;
  int32_t* nr = t.neuron + v * t.m;
  double worst = t.worst[v];
  for (int64_t r = 0; r < rows; ++r) {
    if (marks && double(lse[r]) >= double(lse_marks[r]) - kMarkMove &&
        ((marks[r * marks_ld + v / 32] >> (v % 32)) & 1u) == 0)
      continue;  // unmarked: its logp is below the list's last entry (row_reduce_kernel)
    const double x = double(logits[r * ld + v]) - double(lse[r]);
    if (x < worst) continue;  // cannot enter (ties may, by layer and neuron: ti_insert decides)
    ti_insert(lp, ly, nr, t.m, x, layer, int32_t(row0 + r));
    worst = lp[t.m - 1];
  }
  t.worst[v] = worst;
  if (t.worst_f) t.worst_f[v] = round_down_f32(worst);
}

// Every row read (no marks): the same lists.
FI_HOST_DEVICE inline void token_index_column(const float* logits, int64_t ld, int64_t rows,
                                              const float* lse, int32_t layer, int64_t row0, int64_t v,
                                              const TokenIndexLists& t) {
  token_index_column_marked(logits, ld, rows, lse, nullptr, 0, nullptr, layer, row0, v, t);
}

#ifdef __CUDACC__
// Shape: one thread per token, blocks of 256; grid = ceil(vocab / 256).
__global__ void __launch_bounds__(256)
    token_index_kernel(const float* __restrict__ logits, int64_t ld, int64_t rows, int64_t vocab,
                       const float* __restrict__ lse, const uint32_t* __restrict__ marks, int64_t marks_ld,
                       const float* __restrict__ lse_marks, int32_t layer, int64_t row0, TokenIndexLists t) {
  const int64_t v = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (v < vocab) token_index_column_marked(logits, ld, rows, lse, marks, marks_ld, lse_marks, layer, row0, v, t);
}
#endif

}  // namespace fi::gpu
