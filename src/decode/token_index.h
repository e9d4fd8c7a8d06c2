// The token -> neuron index: for every token, the M (layer, neuron) pairs that give it the
// highest probability, best first, ties to the lower (layer, neuron). Kept per rank while the
// logits chunks are in memory, merged over ranks at the end (the order is total, so the merged
// index is the same bits for any number of ranks).
#pragma once
#include <mpi.h>

#include <cstdint>
#include <vector>

namespace fi {

struct TokenIndex {
  int64_t vocab = 0, m = 0;
  std::vector<double> logp;    // [V, M] log-probability; -inf marks an empty slot
  std::vector<int32_t> layer;  // [V, M] model layer id; -1 when empty
  std::vector<int32_t> neuron; // [V, M]; -1 when empty
  std::vector<double> worst;   // [V] logp of each token's M-th entry, contiguous for the scan
  TokenIndex() = default;
  TokenIndex(int64_t vocab, int64_t m);
  // logits: [rows, ld] for neurons row0.. of `layer`, lse: [rows] of those rows; only tokens
  // [v0, v1) are touched, so threads may update disjoint token ranges at once.
  void update(const float* logits, int64_t ld, int64_t rows, const double* lse, int32_t layer,
              int64_t row0, int64_t v0, int64_t v1);
  void merge(const TokenIndex& other);  // this = best M of both, per token
  std::vector<float> probs() const;     // [V, M] exp(logp), 0 when empty
  void refresh_worst();                 // after logp was filled from elsewhere (a resumed map)
};

// Merges every rank's index into rank 0's (MPI_Reduce with a merge operator). Collective.
void reduce_token_index(TokenIndex& ti, MPI_Comm comm);

}  // namespace fi
