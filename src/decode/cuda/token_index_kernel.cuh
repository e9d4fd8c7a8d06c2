// The token index on the device (decode/token_index.h): one thread per token folds the rows of a
// logits piece into that token's list of its M best (logp, layer, neuron), with the same order
// and insertion as the CPU (decode/token_index_list.h). Most rows fail the first comparison
// against the token's M-th entry, kept in a register, so the kernel is one coalesced read of the
// logits (rows in order, each row's tokens side by side). token_index_column is plain C++ too:
// the tests run it on the CPU against TokenIndex::update.
#pragma once
#include <cstdint>

#include "decode/token_index_list.h"

namespace fi::gpu {

// The device copy of one TokenIndex: [vocab, m] lists and [vocab] M-th logp.
struct TokenIndexLists {
  double* logp = nullptr;
  int32_t* layer = nullptr;
  int32_t* neuron = nullptr;
  double* worst = nullptr;
  int64_t m = 0;
};

// Token v: rows 0..rows-1 of logits [rows, ld] (neurons row0.. of `layer`), logp = logit - lse[r].
FI_HOST_DEVICE inline void token_index_column(const float* logits, int64_t ld, int64_t rows,
                                              const float* lse, int32_t layer, int64_t row0, int64_t v,
                                              const TokenIndexLists& t) {
  double* lp = t.logp + v * t.m;
  int32_t* ly = t.layer + v * t.m;
  int32_t* nr = t.neuron + v * t.m;
  double worst = t.worst[v];
  for (int64_t r = 0; r < rows; ++r) {
    const double x = double(logits[r * ld + v]) - double(lse[r]);
    if (x < worst) continue;  // cannot enter (ties may, by layer and neuron: ti_insert decides)
    ti_insert(lp, ly, nr, t.m, x, layer, int32_t(row0 + r));
    worst = lp[t.m - 1];
  }
  t.worst[v] = worst;
}

#ifdef __CUDACC__
// Shape: one thread per token, blocks of 256; grid = ceil(vocab / 256).
__global__ void __launch_bounds__(256)
    token_index_kernel(const float* __restrict__ logits, int64_t ld, int64_t rows, int64_t vocab,
                       const float* __restrict__ lse, int32_t layer, int64_t row0, TokenIndexLists t) {
  const int64_t v = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (v < vocab) token_index_column(logits, ld, rows, lse, layer, row0, v, t);
}
#endif

}  // namespace fi::gpu
