// The CPU backend: norm, then logits = X · W_Uᵀ by single-threaded OpenBLAS sgemm, one vocab
// block at a time, each block reduced at once per row (log-sum-exp statistics, top-k, bottom-k)
// while it is still in cache. The vocab blocks are split over `threads` workers, each with its
// own block buffer and reducers, so the reduction runs as parallel as the GEMM. Without the
// token index a chunk's full logits are never held: memory is threads × rows × vocab_block
// floats; with it, the chunk's [rows, V] logits are kept until every row's lse is known.
#include <cblas.h>

#include <algorithm>
#include <exception>
#include <thread>

#include "common/error.h"
#include "decode/decoder.h"
#include "decode/token_index.h"
#include "decode/topk.h"

extern "C" void openblas_set_num_threads(int);

namespace fi {
namespace {

class CpuDecoder final : public Decoder {
 public:
  CpuDecoder(const LmHead& head, std::vector<float> gamma, const DecodeParams& p, int threads)
      : head_(head), gamma_(std::move(gamma)), p_(p), threads_(std::max(1, threads)) {
    // Our workers split the rows; each sgemm runs on one thread, so OpenBLAS' own pool stays
    // idle instead of spinning against us.
    openblas_set_num_threads(1);
  }
  const char* name() const override { return "cpu"; }
  void set_token_index_target(TokenIndex* ti, int32_t layer, int64_t row0) override {
    ti_ = ti;
    ti_layer_ = layer;
    ti_row0_ = row0;
  }

  void decode(const float* x, int64_t rows, ChunkResult& out) override {
    const int64_t H = head_.hidden, V = head_.vocab, K = p_.top_k, B = p_.bottom_k;
    xn_.assign(x, x + rows * H);  // xn: [rows, H]
    apply_norm(xn_.data(), rows, H, gamma_.data(), p_);
    out.resize(rows, int(K), int(B));
    const int64_t nb = (V + kVocabBlock - 1) / kVocabBlock;
    const int T = int(std::min<int64_t>(threads_, nb));
    // Thread t takes vocab blocks [nb·t/T, nb·(t+1)/T) for all rows of the chunk, so each block
    // of W_U is packed by OpenBLAS once per chunk. Its candidates go to its own reducers; the
    // per-block log-sum-exp statistics are kept and folded in token order afterwards, so the
    // result does not depend on T.
    stats_.resize(size_t(rows * nb));  // stats: [rows, nb]
    reducers_.assign(size_t(T), std::vector<RowReducer>(size_t(rows), RowReducer(int(K), int(B))));
    if (ti_) all_logits_.resize(size_t(rows * V));
    parallel(T, [&](int t) { decode_blocks(rows, nb * t / T, nb * (t + 1) / T, reducers_[t]); });
    row_lse_.assign(size_t(rows), 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      RowReducer& red = reducers_[0][r];
      for (int t = 1; t < T; ++t) red.merge_candidates(reducers_[t][r]);
      for (int64_t b = 0; b < nb; ++b) red.add_stats(stats_[r * nb + b]);
      row_lse_[r] = red.lse();
      red.finish(out.top_ids.data() + r * K, out.top_logits.data() + r * K,
                 out.top_probs.data() + r * K, out.lse.data() + r, out.bottom_ids.data() + r * B,
                 out.bottom_logits.data() + r * B);
    }
    // With the token index on, the chunk's logits were kept whole ([rows, V]) until every row's
    // log-sum-exp was known; now the threads update disjoint token ranges of the index.
    if (ti_) {
      parallel(threads_, [&](int t) {
        ti_->update(all_logits_.data(), V, rows, row_lse_.data(), ti_layer_, ti_row0_,
                    V * t / threads_, V * (t + 1) / threads_);
      });
    }
    ti_ = nullptr;
  }

 private:
  // Runs f(0..T-1) on T threads and rethrows the first error.
  template <class F>
  static void parallel(int T, F f) {
    std::vector<std::thread> pool;
    std::vector<std::exception_ptr> errors(T);
    for (int t = 0; t < T; ++t)
      pool.emplace_back([&, t] {
        try {
          f(t);
        } catch (...) {
          errors[t] = std::current_exception();
        }
      });
    for (auto& th : pool) th.join();
    for (auto& e : errors)
      if (e) std::rethrow_exception(e);
  }

  // Vocab blocks [b0, b1) for every row of the chunk, on one thread.
  void decode_blocks(int64_t rows, int64_t b0, int64_t b1, std::vector<RowReducer>& red) {
    const int64_t H = head_.hidden, V = head_.vocab, nb = (V + kVocabBlock - 1) / kVocabBlock;
    std::vector<float> own;  // block: [rows, vb], or a window of the whole chunk's logits
    if (!ti_) own.resize(size_t(rows * kVocabBlock));
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t v0 = b * kVocabBlock, vb = std::min(kVocabBlock, V - v0);
      float* block = ti_ ? all_logits_.data() + v0 : own.data();
      const int64_t ld = ti_ ? V : vb;
      // block[r, j] = sum_h xn[r, h] * W_U[v0 + j, h]
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(vb), int(H), 1.f,
                  xn_.data(), int(H), head_.f32 + v0 * H, int(H), 0.f, block, int(ld));
      for (int64_t r = 0; r < rows; ++r) {
        stats_[r * nb + b] = RowReducer::block_stats(block + r * ld, vb);
        red[r].add_candidates(block + r * ld, v0, vb);
      }
    }
  }

  // A vocab block of 2048 tokens: rows/threads × 2048 floats, a few MB, stays in L2/L3 until
  // reduced, and the sgemm per block is large enough (≥ 2·rows·2048·H flops) to run at full speed.
  static constexpr int64_t kVocabBlock = 2048;
  LmHead head_;
  std::vector<float> gamma_;
  DecodeParams p_;
  int threads_;
  std::vector<float> xn_, all_logits_;
  std::vector<double> row_lse_;
  std::vector<RowReducer::BlockStats> stats_;
  std::vector<std::vector<RowReducer>> reducers_;
  TokenIndex* ti_ = nullptr;
  int32_t ti_layer_ = 0;
  int64_t ti_row0_ = 0;
};

}  // namespace

std::unique_ptr<Decoder> make_cpu_decoder(const LmHead& head, const std::vector<float>& gamma,
                                          const DecodeParams& p, int threads) {
  FI_CHECK(int64_t(gamma.size()) == head.hidden, "norm weight size differs from hidden size");
  return std::make_unique<CpuDecoder>(head, gamma, p, threads);
}

}  // namespace fi
