// The fused reduction kernel (log-sum-exp, top-k, bottom-k) against fi::reduce_row_naive on
// random and adversarial rows: ties, -inf, NaN, k = 1 and k = 1024, k > vocab, vocab not a
// multiple of the kernel's tile, sorted rows (the filter's worst case). Ids and logits must be
// identical; lse and probabilities agree to 1e-4 (the kernel sums in fp32 with ex2.approx).
// Every case runs twice: on the device ("cuda", skipped without one) and as the same kernel
// source on CPU threads ("emulated", cuda_emulation.h), which runs everywhere.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <sstream>
#include <vector>

#include "cuda_test_util.h"
#include "decode/cuda/cuda_decoder_impl.h"
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
