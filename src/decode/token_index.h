// The token -> neuron index: for every token, the M (layer, neuron) pairs that give it the
// highest probability, best first, ties to the lower (layer, neuron). Kept per rank while the
// logits chunks are in memory, merged over ranks at the end (the order is total, so the merged
// index is the same bits for any number of ranks).
// A mixture-of-experts map (format version 2) indexes every group of a matrix in one list:
// an entry's source is (layer, group, expert). The lists hold it packed into one int32 `layer`
// key (TiKey below) whose integer order is the order of (layer, group, expert), so the list
// code, its MPI merge and the CUDA kernel (token_index_list.h) are the same for both versions.
#pragma once
#include <mpi.h>

#include <cstdint>
#include <vector>

namespace fi {

// Group codes of a version 2 index (docs/MAP_FORMAT.md): /up, /moe/up, /shared/up.
enum TiGroup : int8_t { kTiDense = 0, kTiRouted = 1, kTiShared = 2 };

// (layer, group, expert) <-> one ordered int32 key. A dense model (experts == 0): key = layer,
// so a version 1 index is stored as it always was. Else key = (layer * 3 + group) * (E + 1) +
// expert + 1 (expert -1 outside routed groups). Empty slots are -1 in both.
struct TiKey {
  int64_t experts = 0;  // the model's routed experts per MoE layer
  int32_t key(int64_t layer, int group, int64_t expert) const;
  void split(int32_t key, int32_t* layer, int8_t* group, int32_t* expert) const;
  // Throws when the keys of num_layers layers would not fit an int32.
  void check_fits(int64_t num_layers) const;
};

struct TokenIndex {
  int64_t vocab = 0, m = 0;
  std::vector<double> logp;    // [V, M] log-probability; -inf marks an empty slot
  std::vector<int32_t> layer;  // [V, M] model layer id, or its TiKey; -1 when empty
  std::vector<int32_t> neuron; // [V, M]; -1 when empty
  std::vector<double> worst;   // [V] logp of each token's M-th entry, contiguous for the scan
  TokenIndex() = default;
  TokenIndex(int64_t vocab, int64_t m);
  // logits: [rows, ld] for neurons row0.. of `layer` (a TiKey), lse: [rows] of those rows; only tokens
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
