// RowReducer: the per-row streaming reduction (log-sum-exp, top-k, bottom-k) shared by the CPU
// backend and used as the reference for the CUDA kernel.
#include "decode/topk.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

namespace fi {
namespace {

// exp(t) for t <= 0; t below -87 (where expf leaves the normal range) gives exp(-87) ~ 1.6e-38,
// which cannot move a sum that holds exp(0) = 1.
inline float exp_nonpos(float t) {  // scalar form, for row tails
  t = t < -87.f ? -87.f : t;
  const float magic = 12582912.f;  // 1.5 * 2^23: adding it rounds to the nearest integer
  float r = t * 1.44269504088896341f + magic;
  int32_t ni;
  std::memcpy(&ni, &r, 4);
  ni -= 0x4B400000;  // the integer n now sits in the low mantissa bits
  float fn = r - magic;
  float z = t - fn * 0.693359375f;  // t - n ln2, ln2 split in two for exactness
  z = z - fn * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * z + 1.3981999507e-3f;
  p = p * z + 8.3334519073e-3f;
  p = p * z + 4.1665795894e-2f;
  p = p * z + 1.6666665459e-1f;
  p = p * z + 5.0000001201e-1f;
  float y = p * z * z + z + 1.f;
  int32_t bits = (ni + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return y * scale;
}

// "a ranks before b" for top-k: higher logit, then lower id.
inline bool top_before(float la, int32_t ia, float lb, int32_t ib) {
  return la > lb || (la == lb && ia < ib);
}
// "a ranks before b" for bottom-k: lower logit, then lower id.
inline bool bottom_before(float la, int32_t ia, float lb, int32_t ib) {
  return la < lb || (la == lb && ia < ib);
}

}  // namespace

// The hot loops, on 16-lane GCC/Clang vector types: one AVX-512 register, two AVX2 or four SSE
// registers, chosen per machine at load time by target_clones. Every lane does the same IEEE
// operations in the same order on every ISA (no FMA contraction), so results never depend on
// the machine's vector width.
typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
typedef double vd __attribute__((vector_size(128)));
constexpr int64_t W = 16;
// The scan compares in 8-lane groups: GCC 12 lowers 16-lane comparisons to scalar code.
typedef float vf8 __attribute__((vector_size(32)));
typedef int32_t vi8 __attribute__((vector_size(32)));

__attribute__((always_inline)) inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
__attribute__((always_inline)) inline bool any(vi m) {
  uint64_t q[8];
  std::memcpy(q, &m, sizeof q);
  return (q[0] | q[1] | q[2] | q[3] | q[4] | q[5] | q[6] | q[7]) != 0;
}

// exp(t) for t <= 0, 16 lanes: the same steps as exp_nonpos.
__attribute__((always_inline)) inline vf exp_nonpos(vf t) {
  const vf lo = vf{} - 87.f, magic = vf{} + 12582912.f;
  t = t < lo ? lo : t;
  vf r = t * 1.44269504088896341f + magic;
  vi ni = std::bit_cast<vi>(r) - 0x4B400000;
  vf fn = r - magic;
  vf z = t - fn * 0.693359375f;
  z = z - fn * -2.12194440e-4f;
  vf p = vf{} + 1.9875691500e-4f;
  p = p * z + 1.3981999507e-3f;
  p = p * z + 8.3334519073e-3f;
  p = p * z + 4.1665795894e-2f;
  p = p * z + 1.6666665459e-1f;
  p = p * z + 5.0000001201e-1f;
  vf y = p * z * z + z + 1.f;
  vi bits = (ni + 127) << 23;
  return y * std::bit_cast<vf>(bits);
}

// NaN-propagating max of x[0..n).
__attribute__((target_clones("avx512f", "avx2", "default")))
float block_max(const float* x, int64_t n) {
  vf m = vf{} - std::numeric_limits<float>::infinity();
  vi nan = vi{};
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    vf v = load(x + i);
    m = v > m ? v : m;
    nan |= v != v;
  }
  float best = -std::numeric_limits<float>::infinity();
  bool has_nan = any(nan);
  for (int64_t j = 0; j < W; ++j) best = m[j] > best ? m[j] : best;
  for (; i < n; ++i) {
    best = x[i] > best ? x[i] : best;
    has_nan |= x[i] != x[i];
  }
  return has_nan ? std::numeric_limits<float>::quiet_NaN() : best;
}

// sum over i of e_i = exp(x[i] - m) for x[i] <= m, and of e_i·(x[i] - m) (the entropy's term,
// with x[i] - m clamped at -87 as the exponent is: a -inf logit adds ~1e-36, nothing), in 16
// double lanes (lane j takes i = j mod 16), then the lanes in order.
__attribute__((target_clones("avx512f", "avx2", "default")))
void sum_exp_shifted(const float* x, int64_t n, float m, double* sum, double* tsum) {
  const vf lo = vf{} - 87.f;
  vd acc = vd{}, acct = vd{};
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    vf t = load(x + i) - m;
    t = t < lo ? lo : t;
    const vd e = __builtin_convertvector(exp_nonpos(t), vd);
    acc += e;
    acct += e * __builtin_convertvector(t, vd);
  }
  double s[W], st[W];
  std::memcpy(s, &acc, sizeof s);
  std::memcpy(st, &acct, sizeof st);
  for (int64_t j = 0; i < n; ++i, ++j) {
    const float t = std::max(x[i] - m, -87.f);
    const double e = double(exp_nonpos(t));
    s[j] += e;
    st[j] += e * double(t);
  }
  double total = 0, ttotal = 0;
  for (int64_t j = 0; j < W; ++j) {
    total += s[j];
    ttotal += st[j];
  }
  *sum = total;
  *tsum = ttotal;
}

// The first index >= i of an 8-lane group holding a logit above `hi` or below `lo`, or the
// start of the row's tail (fewer than 8 left).
__attribute__((target_clones("avx512f", "avx2", "default")))
int64_t next_candidate(const float* x, int64_t i, int64_t n, float hi, float lo) {
  const vf8 vh = vf8{} + hi, vl = vf8{} + lo;
  for (; i + 8 <= n; i += 8) {
    vf8 v;
    std::memcpy(&v, x + i, sizeof v);
    vi8 m = (v > vh) | (v < vl);
    uint64_t q[4];
    std::memcpy(q, &m, sizeof q);
    if ((q[0] | q[1] | q[2] | q[3]) != 0) return i;
  }
  return i;
}

RowReducer::RowReducer(int top_k, int bottom_k)
    : k_(top_k), b_(bottom_k), kc_(top_k > 0 ? std::max(top_k, 2) : 0) {
  top_.reserve(kc_);
  bottom_.reserve(b_);
}

void RowReducer::reset() {
  max_ = 0;
  sum_ = 0;
  tsum_ = 0;
  any_ = false;
  top_.clear();
  bottom_.clear();
}

RowReducer::BlockStats RowReducer::block_stats(const float* x, int64_t n) {
  float bm = block_max(x, n);
  if (bm > -std::numeric_limits<float>::infinity() && !std::isnan(bm)) {
    BlockStats st{bm, 0.0, 0.0};
    sum_exp_shifted(x, n, bm, &st.sum, &st.tsum);
    return st;
  }
  return {bm, 0.0, 0.0};  // empty, all -inf, or NaN
}

void RowReducer::add_stats(BlockStats st) {
  // log-sum-exp: the block's max and sum of exp(x - max) merged into the running state.
  // The entropy's sum moves with the reference point: sum e^(x-m')·(x-m') over a part kept
  // relative to m is e^(m-m')·(tsum + (m-m')·sum).
  const float bm = st.max;
  const double s = st.sum, t = st.tsum;
  if (bm > -std::numeric_limits<float>::infinity() && !std::isnan(bm)) {
    if (!any_) {
      max_ = bm;
      sum_ = s;
      tsum_ = t;
      any_ = true;
    } else if (bm > max_) {
      const double d = max_ - double(bm), e = std::exp(d);
      tsum_ = (tsum_ + d * sum_) * e + t;
      sum_ = sum_ * e + s;
      max_ = bm;
    } else {
      const double d = double(bm) - max_, e = std::exp(d);
      tsum_ += (t + d * s) * e;
      sum_ += s * e;
    }
  } else if (std::isnan(bm)) {
    max_ = bm;  // NaN poisons the lse and the entropy, as it should
    sum_ = 1;
    tsum_ = bm;
    any_ = true;
  }
}

void RowReducer::add_block(const float* x, int64_t v0, int64_t n) {
  if (n <= 0) return;
  add_stats(block_stats(x, n));
  add_candidates(x, v0, n);
}

// Offers e to a heap of at most cap entries that keeps its worst entry at the front, under the
// order `before` (the full tie rule, so entries may arrive in any id order).
template <class Before>
void offer(std::vector<RowReducer::Entry>& heap, int cap, RowReducer::Entry e, Before before) {
  auto cmp = [&](const RowReducer::Entry& a, const RowReducer::Entry& b) {
    return before(a.logit, a.id, b.logit, b.id);
  };
  if (int(heap.size()) < cap) {
    heap.push_back(e);
    std::push_heap(heap.begin(), heap.end(), cmp);
  } else if (cap > 0 && cmp(e, heap.front())) {
    std::pop_heap(heap.begin(), heap.end(), cmp);
    heap.back() = e;
    std::push_heap(heap.begin(), heap.end(), cmp);
  }
}

void RowReducer::merge_candidates(const RowReducer& o) {
  for (const Entry& e : o.top_) offer(top_, kc_, e, top_before);
  for (const Entry& e : o.bottom_) offer(bottom_, b_, e, bottom_before);
}

void RowReducer::add_candidates(const float* x, int64_t v0, int64_t n) {
  if (n <= 0) return;
  auto consider = [&](int64_t i) {
    float l = x[i];
    if (std::isnan(l)) return;  // NaN never ranks; it still poisons the lse, as it should
    offer(top_, kc_, {l, int32_t(v0 + i)}, top_before);
    offer(bottom_, b_, {l, int32_t(v0 + i)}, bottom_before);
  };
  // While a heap is filling every token is a candidate; after that a vector scan skips the
  // 8-token groups holding nothing above the k-th best or below the b-th worst.
  const float inf = std::numeric_limits<float>::infinity();
  int64_t i = 0;
  while (i < n && (int(top_.size()) < kc_ || int(bottom_.size()) < b_)) consider(i++);
  while (i < n) {
    const float hi = kc_ > 0 ? top_.front().logit : inf, lo = b_ > 0 ? bottom_.front().logit : -inf;
    int64_t g = next_candidate(x, i, n, hi, lo);
    int64_t end = std::min(n, g + 8);
    for (; g < end; ++g) consider(g);
    i = end;
  }
}

double RowReducer::lse() const {
  return any_ ? max_ + std::log(sum_) : -double(std::numeric_limits<float>::infinity());
}

double RowReducer::entropy() const {
  if (!any_ || std::isnan(max_)) return std::numeric_limits<double>::quiet_NaN();
  return std::log(sum_) - tsum_ / sum_;
}

float RowReducer::margin() const {
  if (top_.size() < 2) return std::numeric_limits<float>::quiet_NaN();
  // The best two of the heap (sorted or not): any order of the rest.
  Entry a = top_[0], b = top_[1];
  if (top_before(b.logit, b.id, a.logit, a.id)) std::swap(a, b);
  for (size_t i = 2; i < top_.size(); ++i) {
    const Entry& e = top_[i];
    if (top_before(e.logit, e.id, a.logit, a.id)) {
      b = a;
      a = e;
    } else if (top_before(e.logit, e.id, b.logit, b.id)) {
      b = e;
    }
  }
  return a.logit - b.logit;
}

void RowReducer::finish(int32_t* top_ids, float* top_logits, float* top_probs, float* lse,
                        int32_t* bottom_ids, float* bottom_logits) {
  const float ninf = -std::numeric_limits<float>::infinity();
  double l = this->lse();
  *lse = float(l);
  std::sort(top_.begin(), top_.end(),
            [](const Entry& a, const Entry& b) { return top_before(a.logit, a.id, b.logit, b.id); });
  for (int i = 0; i < k_; ++i) {
    bool have = i < int(top_.size());
    top_ids[i] = have ? top_[i].id : -1;
    top_logits[i] = have ? top_[i].logit : ninf;
    top_probs[i] = have && any_ ? float(std::exp(double(top_[i].logit) - l)) : 0.f;
  }
  std::sort(bottom_.begin(), bottom_.end(), [](const Entry& a, const Entry& b) {
    return bottom_before(a.logit, a.id, b.logit, b.id);
  });
  for (int i = 0; i < b_; ++i) {
    bool have = i < int(bottom_.size());
    bottom_ids[i] = have ? bottom_[i].id : -1;
    bottom_logits[i] = have ? bottom_[i].logit : std::numeric_limits<float>::infinity();
  }
}

void reduce_row_naive(const float* x, int64_t vocab, int top_k, int bottom_k, int32_t* top_ids,
                      float* top_logits, float* top_probs, float* lse, int32_t* bottom_ids,
                      float* bottom_logits) {
  std::vector<int32_t> order;
  for (int64_t i = 0; i < vocab; ++i)
    if (!std::isnan(x[i])) order.push_back(int32_t(i));
  double m = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i) m = std::max(m, double(x[i]));
  double s = 0;
  for (int64_t i = 0; i < vocab; ++i) s += std::exp(double(x[i]) - m);
  double l = std::isinf(m) && m < 0 ? m : m + std::log(s);
  *lse = float(l);
  std::vector<int32_t> o = order;
  std::stable_sort(o.begin(), o.end(), [&](int32_t a, int32_t b) { return x[a] > x[b]; });
  for (int i = 0; i < top_k; ++i) {
    bool have = i < int(o.size());
    top_ids[i] = have ? o[i] : -1;
    top_logits[i] = have ? x[o[i]] : -INFINITY;
    top_probs[i] = have && !(std::isinf(l) && l < 0) ? float(std::exp(double(x[o[i]]) - l)) : 0.f;
  }
  o = order;
  std::stable_sort(o.begin(), o.end(), [&](int32_t a, int32_t b) { return x[a] < x[b]; });
  for (int i = 0; i < bottom_k; ++i) {
    bool have = i < int(o.size());
    bottom_ids[i] = have ? o[i] : -1;
    bottom_logits[i] = have ? x[o[i]] : INFINITY;
  }
}

}  // namespace fi
