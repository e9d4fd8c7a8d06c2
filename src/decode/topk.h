// The row reduction every backend must match (the CPU backend uses it directly; the CUDA
// kernel is tested against it): over a row's logits, streamed in vocab blocks of any size,
// exact log-sum-exp, top-k by logit (ties: lower token id first) and bottom-k (lowest logits,
// ties: lower token id first), and in the same pass the row's exact entropy and rank-1 margin.
// Blocks must arrive in increasing token order.
#pragma once
#include <cstdint>
#include <vector>

namespace fi {

class RowReducer {
 public:
  RowReducer(int top_k, int bottom_k);
  void reset();
  // logits: [n] fp32 for tokens [v0, v0+n)
  void add_block(const float* logits, int64_t v0, int64_t n);

  // add_block in two halves, for blocks reduced on several threads: block_stats (any thread)
  // gives a block's (max, sum of exp(x - max)); add_stats folds them into the log-sum-exp and
  // must see the blocks in token order; add_candidates updates top/bottom-k (blocks in
  // increasing token order per reducer) and merge_candidates joins another reducer's.
  struct BlockStats {
    float max;
    double sum;   // sum of e^(x - max)
    double tsum;  // sum of e^(x - max) · (x - max): the entropy's term (H = log sum - tsum / sum)
  };
  static BlockStats block_stats(const float* logits, int64_t n);
  void add_stats(BlockStats st);
  void add_candidates(const float* logits, int64_t v0, int64_t n);
  void merge_candidates(const RowReducer& other);
  // ids/logits/probs: [top_k]; bottom ids/logits: [bottom_k]; best first.
  // Entries beyond the number of tokens seen are id -1, logit -inf, prob 0.
  void finish(int32_t* top_ids, float* top_logits, float* top_probs, float* lse,
              int32_t* bottom_ids, float* bottom_logits);
  double lse() const;  // the exact log-sum-exp in double (top_probs are exp(logit - this))
  // The entropy in nats of softmax over every logit seen, -sum p·log p = lse - sum p·x, in double;
  // NaN for a row without a finite maximum or with a NaN logit.
  double entropy() const;
  // The rank-1 margin: the best logit minus the second best (ties: 0), in fp32 (the difference
  // of the two stored top logits, rounded once); NaN with fewer than two ranked tokens. The
  // reducer keeps at least two top candidates for it whatever top_k is (top_k > 0).
  float margin() const;

 public:
  struct Entry {
    float logit;
    int32_t id;
  };

 private:
  int k_, b_;
  int kc_;  // top candidates kept: max(k, 2) for the margin (0 when k = 0)
  double max_ = 0, sum_ = 0;  // streaming log-sum-exp state: lse = max + log(sum)
  double tsum_ = 0;           // sum of e^(x - max_)·(x - max_) over the same tokens
  bool any_ = false;
  std::vector<Entry> top_, bottom_;  // heaps: top_ has its worst (lowest) entry at the front
};

// Naive reference over a whole row (sort everything), for tests.
// (Entropy and margin: tests compute them independently, in float64 numpy or long double.)
void reduce_row_naive(const float* logits, int64_t vocab, int top_k, int bottom_k,
                      int32_t* top_ids, float* top_logits, float* top_probs, float* lse,
                      int32_t* bottom_ids, float* bottom_logits);

}  // namespace fi
