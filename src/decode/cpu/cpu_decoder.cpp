// The CPU backend: norm, then logits = X · W_Uᵀ one vocab block at a time, each block reduced at
// once per row (log-sum-exp statistics, top-k, bottom-k) while it is still in cache. The vocab
// blocks are split over `threads` workers, each with its own block buffer and reducers, so the
// reduction runs as parallel as the GEMM. Without the token index a chunk's full logits are
// never held: memory is threads × rows × vocab_block floats; with it, the chunk's [rows, V]
// logits are kept until every row's lse is known.
// GEMM: exact = single-threaded OpenBLAS sgemm on fp32 (the default); bf16 = the row rounded to
// bf16 and one bf16 GEMM (decode/cpu/bf16_gemm.h), the candidates re-scored exactly and the lse
// corrected (decode/rescore.h); rows the error bound cannot certify go through the exact path.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <atomic>
#include <cstring>
#include <exception>
#include <thread>

#include "common/error.h"
#include "common/half.h"
#include "decode/cpu/bf16_gemm.h"
#include "decode/decoder.h"
#include "decode/rescore.h"
#include "decode/token_index.h"
#include "decode/topk.h"

extern "C" void openblas_set_num_threads(int);

namespace fi {
namespace {

typedef double vd8 __attribute__((vector_size(64)));
typedef float vf8 __attribute__((vector_size(32)));

// sum_h x[h] · w[h] in double (each product exact), in 8 lanes then the lanes in order.
__attribute__((target_clones("avx512f", "avx2", "default")))
double dot_exact(const float* x, const float* w, int64_t n) {
  vd8 acc = vd8{};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    vf8 a, b;
    std::memcpy(&a, x + i, sizeof a);
    std::memcpy(&b, w + i, sizeof b);
    acc += __builtin_convertvector(a, vd8) * __builtin_convertvector(b, vd8);
  }
  double s = 0;
  for (int j = 0; j < 8; ++j) s += acc[j];
  for (; i < n; ++i) s += double(x[i]) * double(w[i]);
  return s;
}

// The same with w in bf16 bits (widened exactly).
__attribute__((target_clones("avx512f", "avx2", "default")))
double dot_exact_bf16(const float* x, const uint16_t* w, int64_t n) {
  typedef uint32_t vu8 __attribute__((vector_size(32)));
  typedef uint16_t vh8 __attribute__((vector_size(16)));
  vd8 acc = vd8{};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    vf8 a;
    vh8 h;
    std::memcpy(&a, x + i, sizeof a);
    std::memcpy(&h, w + i, sizeof h);
    const vu8 u = __builtin_convertvector(h, vu8) << 16;
    vf8 b;
    std::memcpy(&b, &u, sizeof b);
    acc += __builtin_convertvector(a, vd8) * __builtin_convertvector(b, vd8);
  }
  double s = 0;
  for (int j = 0; j < 8; ++j) s += acc[j];
  for (; i < n; ++i) s += double(x[i]) * double(bf16_to_f32(w[i]));
  return s;
}

// Runs f(0..T-1) on T threads and rethrows the first error.
template <class F>
void parallel(int T, F f) {
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

class CpuDecoder final : public Decoder {
 public:
  CpuDecoder(const LmHead& head, std::vector<float> gamma, const DecodeParams& p, int threads)
      : head_(head), gamma_(std::move(gamma)), p_(p), threads_(std::max(1, threads)) {
    // Our workers split the rows; each sgemm runs on one thread, so OpenBLAS' own pool stays
    // idle instead of spinning against us.
    openblas_set_num_threads(1);
    if (p_.gemm == GemmMode::Bf16) {
      FI_CHECK(head_.bf16, "--gemm bf16: the CPU decoder needs the LM-head's bf16 copy");
      FI_CHECK(head_.f32 || head_.bf16_exact, "--gemm bf16: the LM-head's exact rows are missing");
      const int64_t V = head_.vocab, H = head_.hidden;
      std::vector<HeadStats> parts(static_cast<size_t>(threads_));
      parallel(threads_, [&](int t) {
        const int64_t r0 = V * t / threads_, r1 = V * (t + 1) / threads_;
        if (head_.f32) {
          parts[t] = head_stats_part(head_.f32, head_.bf16_exact ? nullptr : head_.bf16, r0, r1, H);
          return;
        }
        std::vector<float> rows(size_t(256 * H));  // widened 256 rows at a time
        for (int64_t r = r0; r < r1; r += 256) {
          const int64_t n = std::min<int64_t>(256, r1 - r);
          for (int64_t i = 0; i < n * H; ++i) rows[i] = bf16_to_f32(head_.bf16[r * H + i]);
          merge_head_stats(parts[t], head_stats_part(rows.data(), nullptr, 0, n, H));
        }
      });
      for (const HeadStats& s : parts) merge_head_stats(hstats_, s);
      finish_head_stats(hstats_, V);
      gemms_.resize(size_t(threads_));
    }
  }
  const char* name() const override { return "cpu"; }
  std::string gemm_info() const override {
    if (p_.gemm == GemmMode::Exact) return "exact: fp32 OpenBLAS sgemm";
    return "bf16: " + Bf16Gemm::engine() + ", candidates re-scored exactly";
  }
  int64_t redecoded_rows() const override { return redecoded_; }
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
    if (ti_) all_logits_.resize(size_t(rows * V));
    row_lse_.assign(size_t(rows), 0.0);
    if (p_.gemm == GemmMode::Bf16) {
      decode_bf16(rows, out);
    } else {
      pass(xn_.data(), nullptr, rows, int(K), int(B), ti_ ? all_logits_.data() : nullptr);
      for (int64_t r = 0; r < rows; ++r) finish_exact_row(r, r, out);
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
  // One pass over the vocabulary for `rows` rows: per vocab block the GEMM (fp32 sgemm of x32,
  // or with x16 the bf16 GEMM of the rounded rows), then per row the block's log-sum-exp
  // statistics and its candidates into reducers_[0..T) (k, b each). Thread t takes vocab blocks
  // [nb·t/T, nb·(t+1)/T) for all rows, so each block of W_U is packed once per chunk. The
  // statistics are folded in token order afterwards and the candidates merged into
  // reducers_[0], so the result does not depend on T. keep: [rows, V] logits kept whole, or null.
  void pass(const float* x32, const uint16_t* x16, int64_t rows, int k, int b, float* keep) {
    const int64_t V = head_.vocab, nb = (V + kVocabBlock - 1) / kVocabBlock;
    const int T = int(std::min<int64_t>(threads_, nb));
    stats_.resize(size_t(rows * nb));  // stats: [rows, nb]
    reducers_.assign(size_t(T), std::vector<RowReducer>(size_t(rows), RowReducer(k, b)));
    parallel(T, [&](int t) { decode_blocks(x32, x16, rows, nb * t / T, nb * (t + 1) / T, t, keep); });
    for (int64_t r = 0; r < rows; ++r) {
      RowReducer& red = reducers_[0][r];
      for (int t = 1; t < T; ++t) red.merge_candidates(reducers_[t][r]);
      for (int64_t bl = 0; bl < nb; ++bl) red.add_stats(stats_[r * nb + bl]);
    }
  }

  // Vocab blocks [b0, b1) for every row, on worker t.
  void decode_blocks(const float* x32, const uint16_t* x16, int64_t rows, int64_t b0, int64_t b1,
                     int t, float* keep) {
    const int64_t H = head_.hidden, V = head_.vocab, nb = (V + kVocabBlock - 1) / kVocabBlock;
    std::vector<RowReducer>& red = reducers_[t];
    std::vector<float> own;  // block: [rows, vb], or a window of the whole chunk's logits
    if (!keep) own.resize(size_t(rows * kVocabBlock));
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t v0 = b * kVocabBlock, vb = std::min(kVocabBlock, V - v0);
      float* block = keep ? keep + v0 : own.data();
      const int64_t ld = keep ? V : vb;
      // block[r, j] = sum_h x[r, h] * W[v0 + j, h]
      if (x16)
        gemms_[t].run(x16, x32, rows, head_.bf16 + v0 * H, vb, H, block, ld);
      else if (!head_.f32)  // exact rows of a bf16-only head: sgemm on the widened block
        gemms_[t].run_f32(x32, rows, head_.bf16 + v0 * H, vb, H, block, ld);
      else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(vb), int(H), 1.f, x32,
                    int(H), head_.f32 + v0 * H, int(H), 0.f, block, int(ld));
      if (p_.softcap > 0) {  // the model's own final soft-cap, before anything reads the logits
        const float c = p_.softcap;
        for (int64_t r = 0; r < rows; ++r)
          for (float* q = block + r * ld; q < block + r * ld + vb; ++q) *q = c * std::tanh(*q / c);
      }
      for (int64_t r = 0; r < rows; ++r) {
        stats_[r * nb + b] = RowReducer::block_stats(block + r * ld, vb);
        red[r].add_candidates(block + r * ld, v0, vb);
      }
    }
  }

  // Row r of the last pass (its reducer) into row `to` of out; its exact lse for the index.
  void finish_exact_row(int64_t r, int64_t to, ChunkResult& out) {
    const int64_t K = p_.top_k, B = p_.bottom_k;
    RowReducer& red = reducers_[0][r];
    row_lse_[to] = red.lse();
    out.entropy[to] = float(red.entropy());
    out.margin[to] = red.margin();
    red.finish(out.top_ids.data() + to * K, out.top_logits.data() + to * K,
               out.top_probs.data() + to * K, out.lse.data() + to, out.bottom_ids.data() + to * B,
               out.bottom_logits.data() + to * B);
  }

  void decode_bf16(int64_t rows, ChunkResult& out) {
    const int64_t H = head_.hidden, V = head_.vocab, K = p_.top_k, B = p_.bottom_k;
    const int kc = int(std::min<int64_t>(K + kRescoreMargin, V));
    const int bc = B > 0 ? int(std::min<int64_t>(B + kRescoreMargin, V)) : 0;
    xg16_.resize(size_t(rows * H));  // the rows rounded to bf16: [rows, H] bits and as fp32
    xg32_.resize(size_t(rows * H));
    for (int64_t i = 0; i < rows * H; ++i) {
      xg16_[i] = f32_to_bf16(xn_[i]);
      xg32_[i] = bf16_to_f32(xg16_[i]);
    }
    float* keep = ti_ ? all_logits_.data() : nullptr;
    pass(xg32_.data(), xg16_.data(), rows, kc, bc, keep);
    std::vector<uint8_t> certified(size_t(rows), 0);
    parallel(threads_, [&](int t) {
      std::vector<int32_t> ti(kc), bi(bc);
      std::vector<float> tl(kc), tp(kc), bl(bc);
      std::vector<double> te(kc), be(bc);
      float lse_dummy;
      for (int64_t r = rows * t / threads_; r < rows * (t + 1) / threads_; ++r) {
        RowReducer& red = reducers_[0][r];
        const double lse_approx = red.lse(), entropy_approx = red.entropy();
        red.finish(ti.data(), tl.data(), tp.data(), &lse_dummy, bi.data(), bl.data());
        const float* xr = xn_.data() + r * H;
        auto rescore = [&](const std::vector<int32_t>& ids, std::vector<double>& ex, int cap) {
          int n = 0;
          while (n < cap && ids[n] >= 0) {
            const int64_t v = ids[n];
            ex[n] = head_.f32 ? dot_exact(xr, head_.f32 + v * H, H) : dot_exact_bf16(xr, head_.bf16 + v * H, H);
            ++n;
          }
          return n;
        };
        const int nt = rescore(ti, te, kc), nbt = rescore(bi, be, bc);
        const RowResidual res = row_residual(xr, xg32_.data() + r * H, hstats_);
        const double lse = corrected_lse(lse_approx, tl.data(), te.data(), nt, res.shift);
        // cap: what was asked for, so a vocabulary smaller than that counts as all candidates
        const Candidates top{ti.data(), tl.data(), te.data(), nt, int(K) + kRescoreMargin};
        const Candidates bot{bi.data(), bl.data(), be.data(), nbt, B > 0 ? int(B) + kRescoreMargin : 0};
        certified[r] = finish_rescored_row(
            top, bot, lse, logit_error_bound(res, hstats_), int(K), int(B),
            out.top_ids.data() + r * K, out.top_logits.data() + r * K, out.top_probs.data() + r * K,
            out.lse.data() + r, out.bottom_ids.data() + r * B, out.bottom_logits.data() + r * B,
            out.margin.data() + r);
        out.entropy[r] = float(corrected_entropy(lse_approx, entropy_approx, tl.data(), te.data(), nt,
                                                 res.shift, lse));
        row_lse_[r] = lse;
        if (keep) {  // the index sees the exact logits where they are known
          for (int i = 0; i < nt; ++i) keep[r * V + ti[i]] = float(te[i]);
          for (int i = 0; i < nbt; ++i) keep[r * V + bi[i]] = float(be[i]);
        }
      }
    });
    std::vector<int64_t> redo;
    for (int64_t r = 0; r < rows; ++r)
      if (!certified[r]) redo.push_back(r);
    if (redo.empty()) return;
    // The rows the bound could not certify, again through the exact path.
    const int64_t n = int64_t(redo.size());
    std::vector<float> xr(size_t(n * H)), logits(keep ? size_t(n * V) : 0);
    for (int64_t i = 0; i < n; ++i) std::memcpy(xr.data() + i * H, xn_.data() + redo[i] * H, size_t(H) * 4);
    pass(xr.data(), nullptr, n, int(K), int(B), keep ? logits.data() : nullptr);
    for (int64_t i = 0; i < n; ++i) {
      finish_exact_row(i, redo[i], out);
      if (keep) std::memcpy(keep + redo[i] * V, logits.data() + i * V, size_t(V) * 4);
    }
    redecoded_ += n;
  }

  // A vocab block of 2048 tokens: rows/threads × 2048 floats, a few MB, stays in L2/L3 until
  // reduced, and the sgemm per block is large enough (≥ 2·rows·2048·H flops) to run at full speed.
  static constexpr int64_t kVocabBlock = 2048;
  LmHead head_;
  std::vector<float> gamma_;
  DecodeParams p_;
  int threads_;
  std::vector<float> xn_, all_logits_, xg32_;
  std::vector<uint16_t> xg16_;
  std::vector<double> row_lse_;
  std::vector<RowReducer::BlockStats> stats_;
  std::vector<std::vector<RowReducer>> reducers_;
  std::vector<Bf16Gemm> gemms_;  // one per worker (bf16 mode)
  HeadStats hstats_;
  int64_t redecoded_ = 0;
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
