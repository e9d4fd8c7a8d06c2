// TokenIndex: per-token sorted lists of the best (logp, layer, neuron), and their MPI merge.
#include "decode/token_index.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "common/error.h"
#include "decode/token_index_list.h"

namespace fi {

int32_t TiKey::key(int64_t layer, int group, int64_t expert) const {
  if (experts == 0) return int32_t(layer);
  return int32_t((layer * 3 + group) * (experts + 1) + expert + 1);
}

void TiKey::split(int32_t key, int32_t* layer, int8_t* group, int32_t* expert) const {
  if (key < 0) {
    *layer = -1, *group = -1, *expert = -1;
    return;
  }
  if (experts == 0) {
    *layer = key, *group = kTiDense, *expert = -1;
    return;
  }
  const int64_t e1 = experts + 1;
  *expert = int32_t(key % e1) - 1;
  *group = int8_t((key / e1) % 3);
  *layer = int32_t(key / e1 / 3);
}

void TiKey::check_fits(int64_t num_layers) const {
  FI_CHECK(double(num_layers) * 3.0 * double(experts + 1) < 2147483647.0,
           "the token index keys of " + std::to_string(num_layers) + " layers of " + std::to_string(experts) +
               " experts do not fit an int32");
}

TokenIndex::TokenIndex(int64_t v, int64_t mm)
    : vocab(v), m(mm), logp(size_t(v * mm), -std::numeric_limits<double>::infinity()),
      layer(size_t(v * mm), -1), neuron(size_t(v * mm), -1),
      worst(size_t(v), -std::numeric_limits<double>::infinity()) {}

void TokenIndex::refresh_worst() {
  worst.resize(size_t(vocab));
  for (int64_t v = 0; v < vocab; ++v) worst[size_t(v)] = logp[size_t(v * m + m - 1)];
}

// The first token >= v in [v, v1) whose logp x[t] - s could enter its list (>= its M-th
// entry), scanning 4 tokens at a time in double; v1 when none.
__attribute__((target_clones("avx512f", "avx2", "default")))
int64_t next_token_candidate(const float* x, double s, const double* worst, int64_t v, int64_t v1) {
  typedef float vf4 __attribute__((vector_size(16)));
  typedef double vd4 __attribute__((vector_size(32)));
  typedef int64_t vl4 __attribute__((vector_size(32)));
  for (; v + 4 <= v1; v += 4) {
    vf4 f;
    vd4 w;
    std::memcpy(&f, x + v, sizeof f);
    std::memcpy(&w, worst + v, sizeof w);
    vl4 m = (__builtin_convertvector(f, vd4) - s) >= w;
    int64_t q[4];
    std::memcpy(q, &m, sizeof q);
    if ((q[0] | q[1] | q[2] | q[3]) != 0) return v;
  }
  for (; v < v1; ++v)
    if (double(x[v]) - s >= worst[v]) return v;
  return v1;
}

void TokenIndex::update(const float* logits, int64_t ld, int64_t rows, const double* lse,
                        int32_t l, int64_t row0, int64_t v0, int64_t v1) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = logits + r * ld;
    const double s = lse[r];
    const int32_t n = int32_t(row0 + r);
    // Most tokens' logp is far below their M-th best: a vector scan of the contiguous `worst`
    // array finds the few that are not.
    for (int64_t v = next_token_candidate(x, s, worst.data(), v0, v1); v < v1;
         v = next_token_candidate(x, s, worst.data(), v + 1, v1)) {
      const double lp = double(x[v]) - s;
      ti_insert(&logp[size_t(v * m)], &layer[size_t(v * m)], &neuron[size_t(v * m)], m, lp, l, n);
      worst[size_t(v)] = logp[size_t(v * m + m - 1)];
    }
  }
}

void TokenIndex::merge(const TokenIndex& o) {
  FI_CHECK(o.vocab == vocab && o.m == m, "token index shapes differ");
  for (int64_t v = 0; v < vocab; ++v)
    for (int64_t j = 0; j < m; ++j) {
      size_t i = size_t(v * m + j);
      if (o.layer[i] < 0) break;
      ti_insert(&logp[size_t(v * m)], &layer[size_t(v * m)], &neuron[size_t(v * m)], m, o.logp[i],
             o.layer[i], o.neuron[i]);
    }
  refresh_worst();
}

std::vector<float> TokenIndex::probs() const {
  std::vector<float> p(logp.size());
  for (size_t i = 0; i < p.size(); ++i) p[i] = layer[i] < 0 ? 0.f : float(std::exp(logp[i]));
  return p;
}

namespace {

// The wire form of one token's list: m entries of {double logp; int32 layer; int32 neuron}.
struct Entry {
  double logp;
  int32_t layer, neuron;
};
int64_t g_m = 0;  // the list length for the reduction operator (one reduction at a time)

extern "C" void merge_op(void* in, void* inout, int* len, MPI_Datatype*) {
  auto* a = static_cast<Entry*>(in);
  auto* b = static_cast<Entry*>(inout);
  std::vector<Entry> out(static_cast<size_t>(g_m));
  for (int t = 0; t < *len; ++t) {
    Entry* x = a + t * g_m;
    Entry* y = b + t * g_m;
    int64_t i = 0, j = 0;
    for (int64_t k = 0; k < g_m; ++k) {
      bool take_x = ti_better(x[i].logp, x[i].layer, x[i].neuron, y[j].logp, y[j].layer, y[j].neuron);
      out[size_t(k)] = take_x ? x[i++] : y[j++];
    }
    std::memcpy(y, out.data(), size_t(g_m) * sizeof(Entry));
  }
}

}  // namespace

void reduce_token_index(TokenIndex& ti, MPI_Comm comm) {
  int size = 1, rank = 0;
  MPI_Comm_size(comm, &size);
  MPI_Comm_rank(comm, &rank);
  if (size == 1 || ti.m == 0) return;
  std::vector<Entry> mine(ti.logp.size()), merged(rank == 0 ? ti.logp.size() : 0);
  for (size_t i = 0; i < mine.size(); ++i) mine[i] = {ti.logp[i], ti.layer[i], ti.neuron[i]};
  MPI_Datatype list;
  MPI_Type_contiguous(int(ti.m * int64_t(sizeof(Entry))), MPI_BYTE, &list);
  MPI_Type_commit(&list);
  MPI_Op op;
  MPI_Op_create(merge_op, 1, &op);
  g_m = ti.m;
  // In pieces of 4096 tokens, so counts stay far from int limits.
  const int64_t step = 4096;
  for (int64_t v = 0; v < ti.vocab; v += step) {
    int n = int(std::min(step, ti.vocab - v));
    MPI_Reduce(mine.data() + v * ti.m, rank == 0 ? merged.data() + v * ti.m : nullptr, n, list, op,
               0, comm);
  }
  MPI_Op_free(&op);
  MPI_Type_free(&list);
  if (rank == 0)
    for (size_t i = 0; i < merged.size(); ++i) {
      ti.logp[i] = merged[i].logp;
      ti.layer[i] = merged[i].layer;
      ti.neuron[i] = merged[i].neuron;
    }
  if (rank == 0) ti.refresh_worst();
}

}  // namespace fi
