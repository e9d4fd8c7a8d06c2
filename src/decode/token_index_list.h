// One token's list in the token index (decode/token_index.h): its M best (logp, layer, neuron),
// best first. The order and the insertion, shared by the CPU index and the CUDA kernel
// (decode/cuda/token_index_kernel.cuh), so both keep exactly the same lists from the same values.
// In a mixture-of-experts map `layer` is the entry's TiKey (decode/token_index.h): (layer, group,
// expert) packed so that its integer order is theirs, which makes this order the version 2 one
// (logp, layer, group, expert, neuron) with no change here or in the kernel.
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define FI_HOST_DEVICE __host__ __device__
#else
#define FI_HOST_DEVICE
#endif

namespace fi {

// The index's total order: higher log-probability first, then lower layer, then lower neuron;
// an empty slot (layer -1) after every entry.
FI_HOST_DEVICE inline bool ti_better(double a, int32_t la, int32_t na, double b, int32_t lb, int32_t nb) {
  if (a != b) return a > b;
  if (la != lb) return la >= 0 && (lb < 0 || la < lb);
  return na < nb;
}

// Inserts (x, l, n) into the sorted list lp/ly/nr of length m if it beats the last entry.
FI_HOST_DEVICE inline void ti_insert(double* lp, int32_t* ly, int32_t* nr, int64_t m, double x, int32_t l,
                                     int32_t n) {
  if (!ti_better(x, l, n, lp[m - 1], ly[m - 1], nr[m - 1])) return;
  int64_t i = m - 1;
  while (i > 0 && ti_better(x, l, n, lp[i - 1], ly[i - 1], nr[i - 1])) {
    lp[i] = lp[i - 1];
    ly[i] = ly[i - 1];
    nr[i] = nr[i - 1];
    --i;
  }
  lp[i] = x;
  ly[i] = l;
  nr[i] = n;
}

}  // namespace fi
