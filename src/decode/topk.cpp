// RowReducer: the per-row streaming reduction (log-sum-exp, top-k, bottom-k) shared by the CPU
// backend and used as the reference for the CUDA kernel.
#include "decode/topk.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace fi {
namespace {

// exp(t) for t <= 0; t below -87 (where expf leaves the normal range) gives exp(-87) ~ 1.6e-38,
// which cannot move a sum that holds exp(0) = 1.
inline float exp_nonpos(float t) {
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

// The hot loops of the reduction, written so the compiler vectorises them; cloned for AVX2 and
// AVX-512 and picked at load time. block_max: NaN-propagating max.
__attribute__((target_clones("avx512f", "avx2", "default")))
float block_max(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  bool nan = false;
  for (int64_t i = 0; i < n; ++i) {
    m = x[i] > m ? x[i] : m;
    nan |= x[i] != x[i];
  }
  return nan ? std::numeric_limits<float>::quiet_NaN() : m;
}

// sum over i of exp(x[i] - m), for x[i] <= m: a Cephes-style expf (range reduction by
// round(t·log2 e), degree-6 polynomial, 2^n by exponent bits; within 2 ulp of expf) written
// without library calls so it vectorises, summed into 16 double partial sums in a fixed order
// (the result depends only on the data, never on the machine's vector width).
__attribute__((target_clones("avx512f", "avx2", "default")))
double sum_exp_shifted(const float* x, int64_t n, float m) {
  constexpr int W = 16;
  double acc[W] = {};
  int64_t i = 0;
  for (; i + W <= n; i += W)
    for (int j = 0; j < W; ++j) acc[j] += double(exp_nonpos(x[i + j] - m));
  for (int j = 0; i < n; ++i, ++j) acc[j] += double(exp_nonpos(x[i] - m));
  double s = 0;
  for (int j = 0; j < W; ++j) s += acc[j];
  return s;
}

RowReducer::RowReducer(int top_k, int bottom_k) : k_(top_k), b_(bottom_k) {
  top_.reserve(k_);
  bottom_.reserve(b_);
}

void RowReducer::reset() {
  max_ = 0;
  sum_ = 0;
  any_ = false;
  top_.clear();
  bottom_.clear();
}

void RowReducer::add_block(const float* x, int64_t v0, int64_t n) {
  if (n <= 0) return;
  // log-sum-exp: block max, then the sum of exp(x - max) merged into the running state.
  float bm = block_max(x, n);
  if (bm > -std::numeric_limits<float>::infinity() && !std::isnan(bm)) {
    double s = sum_exp_shifted(x, n, bm);
    if (!any_) {
      max_ = bm;
      sum_ = s;
      any_ = true;
    } else if (bm > max_) {
      sum_ = sum_ * std::exp(max_ - double(bm)) + s;
      max_ = bm;
    } else {
      sum_ += s * std::exp(double(bm) - max_);
    }
  } else if (std::isnan(bm)) {
    max_ = bm;  // NaN poisons the lse, as it should
    sum_ = 1;
    any_ = true;
  }

  // Heaps keep their worst entry at the front. Tokens arrive in increasing id order, so a new
  // token beats the worst kept one only if its logit is strictly better (ties keep the lower id).
  auto top_cmp = [](const Entry& a, const Entry& b) { return top_before(a.logit, a.id, b.logit, b.id); };
  auto bot_cmp = [](const Entry& a, const Entry& b) { return bottom_before(a.logit, a.id, b.logit, b.id); };
  for (int64_t i = 0; i < n; ++i) {
    float l = x[i];
    if (std::isnan(l)) continue;  // NaN never ranks; it still poisons the lse, as it should
    int32_t id = int32_t(v0 + i);
    if (k_ > 0) {
      if (int(top_.size()) < k_) {
        top_.push_back({l, id});
        std::push_heap(top_.begin(), top_.end(), top_cmp);
      } else if (l > top_.front().logit) {
        std::pop_heap(top_.begin(), top_.end(), top_cmp);
        top_.back() = {l, id};
        std::push_heap(top_.begin(), top_.end(), top_cmp);
      }
    }
    if (b_ > 0) {
      if (int(bottom_.size()) < b_) {
        bottom_.push_back({l, id});
        std::push_heap(bottom_.begin(), bottom_.end(), bot_cmp);
      } else if (l < bottom_.front().logit) {
        std::pop_heap(bottom_.begin(), bottom_.end(), bot_cmp);
        bottom_.back() = {l, id};
        std::push_heap(bottom_.begin(), bottom_.end(), bot_cmp);
      }
    }
  }
}

double RowReducer::lse() const {
  return any_ ? max_ + std::log(sum_) : -double(std::numeric_limits<float>::infinity());
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
