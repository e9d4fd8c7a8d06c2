// The fused reduction kernel (log-sum-exp, top-k, bottom-k) against fi::reduce_row_naive on
// random and adversarial rows: ties, -inf, NaN, k = 1 and k = 1024, k > vocab, vocab not a
// multiple of the kernel's tile, sorted rows (the filter's worst case). Ids and logits must be
// identical; lse and probabilities agree to 1e-4 (the kernel sums in fp32 with ex2.approx); the
// entropy agrees with -sum p log p in long double to 1e-5 relative (fp32 sums) and the margin is
// the fp32 difference of the two best logits, bit for bit.
// Every case runs twice: on the device ("cuda", skipped without one) and as the same kernel
// source on CPU threads ("emulated", cuda_emulation.h), which runs everywhere.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>
#include <vector>

#include "cuda_test_util.h"
#include "decode/cuda/cuda_decoder_impl.h"
#include "decode/cuda/token_index_kernel.cuh"
#include "decode/token_index.h"
#include "decode/topk.h"
#include "reduce_emulated.h"

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

bool same_float(float a, float b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

bool close(float want, float got, double rel, double abs) {
  if (std::isnan(want) || std::isnan(got)) return std::isnan(want) && std::isnan(got);
  if (std::isinf(want) || std::isinf(got)) return want == got;
  return std::fabs(double(want) - double(got)) <= abs + rel * std::fabs(double(want));
}

// "" when the kernel matches the naive reference on every row, else the first fault.
using Reducer = void (*)(const float*, int64_t, int64_t, int, int, fi::ChunkResult&);

// The row's entropy in long double (NaN without a finite maximum or with a NaN), and its margin
// (NaN with fewer than two non-NaN logits, or k = 0: no top selection).
void row_stats(const float* x, int64_t vocab, int k, double* entropy, float* margin) {
  long double m = -INFINITY;
  bool nan = false;
  for (int64_t i = 0; i < vocab; ++i) {
    nan |= std::isnan(x[i]);
    if (!std::isnan(x[i])) m = std::max(m, (long double)x[i]);
  }
  long double s = 0, sx = 0;
  for (int64_t i = 0; i < vocab; ++i)
    if (x[i] != -INFINITY && !std::isnan(x[i])) {
      const long double e = std::exp((long double)x[i] - m);
      s += e;
      sx += e * ((long double)x[i] - m);
    }
  *entropy = nan || std::isinf(m) ? NAN : double(std::log(s) - sx / s);
  float a = -INFINITY, b = -INFINITY;
  int n = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    if (std::isnan(x[i])) continue;
    ++n;
    if (x[i] > a) {
      b = a;
      a = x[i];
    } else if (x[i] > b) {
      b = x[i];
    }
  }
  *margin = n >= 2 && k > 0 ? a - b : NAN;
}

class Reduce : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    emulated_ = std::string(GetParam()) == "emulated";
    if (!emulated_) FI_SKIP_WITHOUT_CUDA();
  }
  Reducer reducer() const { return emulated_ ? fi::test::reduce_rows_emulated : fi::gpu::reduce_rows_cuda; }
  // The emulation is slow (256 OS threads per block): fewer rows where the rows are long.
  int64_t rows(int64_t on_device, int64_t emulated) const { return emulated_ ? emulated : on_device; }
  std::string check(const std::vector<float>& logits, int64_t rows, int64_t vocab, int k, int b) const {
    return check_with(reducer(), logits, rows, vocab, k, b);
  }
  bool emulated_ = false;

 private:
  static std::string check_with(Reducer reduce, const std::vector<float>& logits, int64_t rows,
                                int64_t vocab, int k, int b);
};

std::string Reduce::check_with(Reducer reduce, const std::vector<float>& logits, int64_t rows,
                               int64_t vocab, int k, int b) {
  fi::ChunkResult got;
  reduce(logits.data(), rows, vocab, k, b, got);
  std::vector<int32_t> ti(k), bi(b);
  std::vector<float> tl(k), tp(k), bl(b);
  std::ostringstream err;
  for (int64_t r = 0; r < rows; ++r) {
    float lse = 0;
    fi::reduce_row_naive(logits.data() + r * vocab, vocab, k, b, ti.data(), tl.data(), tp.data(),
                         &lse, bi.data(), bl.data());
    if (!close(lse, got.lse[r], 1e-5, 1e-4)) {
      err << "row " << r << ": lse " << got.lse[r] << " vs " << lse;
      return err.str();
    }
    double h = 0;
    float mg = 0;
    row_stats(logits.data() + r * vocab, vocab, k, &h, &mg);
    if (!close(float(h), got.entropy[r], 1e-5, 1e-6)) {
      err << "row " << r << ": entropy " << got.entropy[r] << " vs " << h;
      return err.str();
    }
    if (!same_float(mg, got.margin[r])) {
      err << "row " << r << ": margin " << got.margin[r] << " vs " << mg;
      return err.str();
    }
    for (int i = 0; i < k; ++i) {
      const size_t at = size_t(r) * k + i;
      if (ti[i] != got.top_ids[at] || !same_float(tl[i], got.top_logits[at])) {
        err << "row " << r << " top " << i << ": (" << got.top_ids[at] << ", " << got.top_logits[at]
            << ") vs (" << ti[i] << ", " << tl[i] << ")";
        return err.str();
      }
      if (!close(tp[i], got.top_probs[at], 1e-4, 1e-30)) {
        err << "row " << r << " top " << i << ": prob " << got.top_probs[at] << " vs " << tp[i];
        return err.str();
      }
    }
    for (int i = 0; i < b; ++i) {
      const size_t at = size_t(r) * b + i;
      if (bi[i] != got.bottom_ids[at] || !same_float(bl[i], got.bottom_logits[at])) {
        err << "row " << r << " bottom " << i << ": (" << got.bottom_ids[at] << ", "
            << got.bottom_logits[at] << ") vs (" << bi[i] << ", " << bl[i] << ")";
        return err.str();
      }
    }
  }
  return "";
}

TEST_P(Reduce, RandomRows) {
  const int64_t rows = this->rows(7, 2), vocab = 5000;
  EXPECT_EQ("", check(fi::test::normal(rows * vocab, 3.f, 1), rows, vocab, 20, 5));
}

TEST_P(Reduce, LlamaVocab) {
  const int64_t rows = this->rows(3, 1), vocab = 128256;
  EXPECT_EQ("", check(fi::test::normal(rows * vocab, 2.f, 2), rows, vocab, 20, 20));
}

TEST_P(Reduce, VocabSizesAroundTheTile) {
  for (int64_t vocab : {1, 2, 31, 255, 1023, 1024, 1025, 2047, 2049, 3001, 4097}) {
    const int64_t rows = this->rows(3, 1);
    std::vector<float> x = fi::test::normal(rows * vocab, 1.f, 100 + vocab);
    for (int k : {1, 20}) EXPECT_EQ("", check(x, rows, vocab, k, k)) << "vocab " << vocab << " k " << k;
  }
}

TEST_P(Reduce, LargeK) {
  EXPECT_EQ("", check(fi::test::normal(4 * 3001, 1.f, 3), rows(4, 1), 3001, 256, 256));
  EXPECT_EQ("", check(fi::test::normal(2 * 5000, 1.f, 4), rows(2, 1), 5000, 1024, 1024));
  EXPECT_EQ("", check(fi::test::normal(2 * 700, 1.f, 5), 2, 700, 1024, 3));  // k > vocab
}

TEST_P(Reduce, OnlyLseOrOnlyBottom) {
  std::vector<float> x = fi::test::normal(3 * 2500, 1.f, 6);
  EXPECT_EQ("", check(x, rows(3, 1), 2500, 0, 0));
  EXPECT_EQ("", check(x, rows(3, 1), 2500, 0, 7));
  EXPECT_EQ("", check(x, rows(3, 1), 2500, 7, 0));
}

TEST_P(Reduce, Ties) {
  const int64_t vocab = 3000;
  std::vector<float> x;
  x.insert(x.end(), vocab, 1.f);  // one value everywhere: ids 0..k-1 both ways
  std::vector<float> few = fi::test::uniform(vocab, 0.f, 3.f, 7);
  for (float& v : few) v = std::floor(v) - 1.f;  // {-1, 0, 1}
  x.insert(x.end(), few.begin(), few.end());
  std::vector<float> zeros(vocab, 0.f);
  for (int64_t i = 0; i < vocab; i += 3) zeros[i] = -0.f;  // -0 and +0 tie
  x.insert(x.end(), zeros.begin(), zeros.end());
  for (int k : {1, 20, 256}) {
    if (emulated_ && k == 20) continue;  // the slow emulation: the extremes are enough
    EXPECT_EQ("", check(x, 3, vocab, k, k)) << "k " << k;
  }
}

TEST_P(Reduce, InfinitiesAndNaN) {
  const int64_t vocab = 2500;
  std::vector<float> x;
  std::vector<float> half_inf = fi::test::normal(vocab, 1.f, 8);
  for (int64_t i = 0; i < vocab; i += 2) half_inf[i] = -kInf;
  x.insert(x.end(), half_inf.begin(), half_inf.end());
  x.insert(x.end(), vocab, -kInf);  // all -inf: lse -inf, probabilities 0
  std::vector<float> three(vocab, -kInf);  // fewer finite values than k
  three[5] = 1.f;
  three[1500] = 2.f;
  three[2499] = 1.f;
  x.insert(x.end(), three.begin(), three.end());
  std::vector<float> nan = fi::test::normal(vocab, 1.f, 9);  // NaN never ranks, poisons the lse
  nan[0] = kNaN;
  nan[1234] = kNaN;
  x.insert(x.end(), nan.begin(), nan.end());
  x.insert(x.end(), vocab, kNaN);  // nothing ranks: ids -1
  EXPECT_EQ("", check(x, 5, vocab, 20, 20));
}

TEST_P(Reduce, SortedRows) {
  const int64_t vocab = 10000;
  std::vector<float> x(2 * vocab);
  for (int64_t i = 0; i < vocab; ++i) {
    x[i] = float(i) * 1e-3f;                  // ascending: every tile beats the threshold
    x[vocab + i] = float(vocab - i) * 1e-3f;  // descending
  }
  EXPECT_EQ("", check(x, 2, vocab, 50, 50));
}

TEST_P(Reduce, WinnersInTheLastTile) {
  const int64_t vocab = 4100;
  std::vector<float> x = fi::test::normal(vocab, 0.1f, 10);
  for (int64_t i = vocab - 30; i < vocab; ++i) x[i] = 5.f + float(i % 7);
  for (int64_t i = vocab - 60; i < vocab - 30; ++i) x[i] = -5.f - float(i % 5);
  EXPECT_EQ("", check(x, 1, vocab, 20, 20));
}

INSTANTIATE_TEST_SUITE_P(Backends, Reduce, ::testing::Values("cuda", "emulated"),
                         [](const ::testing::TestParamInfo<const char*>& i) { return std::string(i.param); });

}  // namespace

// The token index folded into the reduction: the reduction kernel (emulated) marks the tokens
// that may enter their lists, token_index_column_marked reads only the marked rows, and the
// lists must be bit-identical to TokenIndex::update over every row and token (the CPU index).
// Three calls (layers 2, 0, 2) from an index already holding M entries per token, so the marks
// are selective (12 tiles a row: the block's bound is refreshed too); rows random, rounded to 1/8 (ties decided by layer and neuron), flat, peaked,
// with NaN and -inf. The third call feeds the index an lse moved from the reduction's own, as
// the re-scoring of --gemm bf16 does: up (marks still valid), and down by more than kMarkMove
// (that row is read whole).
TEST(TokenMarks, FusedIndexMatchesCpuUpdate) {
  const int64_t V = 12000, M = 4, rows = 6, words = (V + 31) / 32;
  fi::TokenIndex want(V, M), got(V, M);
  std::vector<float> prior = fi::test::normal(size_t(V), 1.f, 51);
  for (int64_t v = 0; v < V; ++v)
    for (fi::TokenIndex* t : {&want, &got})
      for (int64_t j = 0; j < M; ++j) {
        t->logp[size_t(v * M + j)] = -5 + double(prior[size_t(v)]) - 0.25 * double(j);
        t->layer[size_t(v * M + j)] = 1;
        t->neuron[size_t(v * M + j)] = int32_t(v % 7 + 10 * j);
      }
  want.refresh_worst();
  got.refresh_worst();
  std::vector<float> worst_f(static_cast<size_t>(V));
  for (int64_t v = 0; v < V; ++v) worst_f[size_t(v)] = fi::gpu::round_down_f32(got.worst[size_t(v)]);
  const fi::gpu::TokenIndexLists lists{got.logp.data(), got.layer.data(), got.neuron.data(),
                                       got.worst.data(), worst_f.data(), M};
  const int32_t layers[3] = {2, 0, 2};
  int64_t marked = 0, total = 0;
  for (int call = 0; call < 3; ++call) {
    std::vector<float> x = fi::test::normal(size_t(rows * V), 2.f, 300 + uint64_t(call));
    for (int64_t v = 0; v < V; ++v) {
      x[size_t(0 * V + v)] = std::round(x[size_t(v)] * 8) / 8;  // ties
      x[size_t(1 * V + v)] *= 0.01f;                            // flat
      x[size_t(2 * V + v)] *= 0.5f;
    }
    x[size_t(2 * V + 1234)] = 25.f;  // peaked
    x[size_t(3 * V + 17)] = NAN;
    for (int64_t v = 0; v < V; v += 5) x[size_t(4 * V + v)] = -INFINITY;
    std::vector<uint32_t> marks(size_t(rows * words), 0xdeadbeefu);  // every word gets written
    fi::ChunkResult out;
    fi::test::reduce_rows_emulated_marked(x.data(), rows, V, 20, 0, worst_f.data(), marks.data(),
                                          words, out);
    std::vector<float> lse = out.lse;
    if (call == 2) {
      lse[0] -= 0.01f;  // below the marks' lse by more than kMarkMove: row 0 read whole
      lse[5] += 0.05f;  // above: fewer tokens can enter, the marks still hold
    }
    std::vector<double> lse_d(lse.begin(), lse.end());
    want.update(x.data(), V, rows, lse_d.data(), layers[call], call * 100, 0, V);
    for (int64_t v = 0; v < V; ++v)
      fi::gpu::token_index_column_marked(x.data(), V, rows, lse.data(), marks.data(), words,
                                         out.lse.data(), layers[call], call * 100, v, lists);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t v = 0; v < V; ++v) marked += (marks[size_t(r * words + v / 32)] >> (v % 32)) & 1u;
    total += rows * V;
    for (int64_t v = 0; v < V; ++v)
      ASSERT_EQ(worst_f[size_t(v)], fi::gpu::round_down_f32(got.worst[size_t(v)])) << "token " << v;
  }
  EXPECT_EQ(got.logp, want.logp);
  EXPECT_EQ(got.layer, want.layer);
  EXPECT_EQ(got.neuron, want.neuron);
  EXPECT_EQ(got.worst, want.worst);
  int64_t layer0 = 0;
  for (int32_t l : got.layer) layer0 += l == 0;
  EXPECT_GT(layer0, 0);  // the second call's rows did enter
  // The marks must be selective for the fold to pay: most tokens of most rows stay unmarked.
  std::printf("token marks: %lld of %lld (token, row) pairs marked (%.1f%%)\n", (long long)marked,
              (long long)total, 100.0 * double(marked) / double(total));
  EXPECT_LT(marked, total / 2);
}
