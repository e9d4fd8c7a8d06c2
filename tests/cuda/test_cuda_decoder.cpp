// The whole CUDA decoder (norm + conversion, cuBLAS GEMM, reduction, pipelined pieces) on a small
// random LM-head against the CPU decoder: top-k equal up to near ties, probabilities within
// 1e-3 relative. Scales: with one 16-bit GEMM the normed rows are rounded to bf16/f16, which
// moves logits by ~1.1e-3 × |x|·|w|/sqrt(H); those cases use small weights (nearly flat
// distributions) where that stays inside the contract. fp32 heads and split_input (hi + lo)
// are tested at realistic scales.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "common/error.h"
#include "cuda_test_util.h"
#include "decode/cuda/cuda_decoder_impl.h"
#include "decode/topk.h"

namespace {

using fi::DType;
using fi::NormMode;

struct Case {
  DType dtype = DType::BF16;
  int64_t vocab = 3001, hidden = 256, rows = 300;
  float w_sigma = 0.1f, x_sigma = 1.f;
  NormMode norm = NormMode::Rms;
  bool plus_one = false, split = false;
  int k = 20, b = 5;
  int64_t sub_rows = 64;  // 300 rows in 5 pieces: both buffers reused, the pipeline exercised
  fi::test::Tolerance tol;
};

struct Data {
  std::vector<float> w;       // [V, H] as the checkpoint holds it, widened
  std::vector<uint16_t> raw;  // [V, H] 16-bit words (16-bit heads)
  std::vector<float> gamma;   // [H]
  std::vector<float> x;       // [rows, H]
};

Data make_data(const Case& s, uint64_t seed) {
  Data d;
  std::vector<float> w = fi::test::normal(size_t(s.vocab) * s.hidden, s.w_sigma, seed);
  if (s.dtype == DType::BF16) d.w = fi::test::round_bf16(w, &d.raw);
  else if (s.dtype == DType::F16) d.w = fi::test::round_f16(w, &d.raw);
  else d.w = w;
  d.gamma = fi::test::uniform(size_t(s.hidden), s.plus_one ? -0.5f : 0.5f, s.plus_one ? 0.5f : 1.5f,
                              seed + 1);
  d.x = fi::test::normal(size_t(s.rows) * s.hidden, s.x_sigma, seed + 2);
  return d;
}

fi::DecodeParams params(const Case& s) {
  fi::DecodeParams p;
  p.top_k = s.k;
  p.bottom_k = s.b;
  p.norm = s.norm;
  p.norm_plus_one = s.plus_one;
  p.eps = 1e-5;
  return p;
}

std::unique_ptr<fi::gpu::CudaDecoder> make_gpu(const Case& s, const Data& d) {
  const void* host = s.dtype == DType::F32 ? static_cast<const void*>(d.w.data())
                                           : static_cast<const void*>(d.raw.data());
  fi::gpu::select_device(MPI_COMM_NULL);
  fi::gpu::CudaDecoderOptions o;
  o.split_input = s.split;
  o.sub_rows = s.sub_rows;
  return std::make_unique<fi::gpu::CudaDecoder>(
      fi::gpu::upload_lm_head(host, s.dtype, s.vocab, s.hidden), d.gamma, params(s), o);
}

fi::ChunkResult cpu_decode(const Case& s, const Data& d) {
  fi::LmHead head{s.vocab, s.hidden, d.w.data()};
  auto cpu = fi::make_cpu_decoder(head, d.gamma, params(s));
  fi::ChunkResult r;
  cpu->decode(d.x.data(), s.rows, r);
  return r;
}

std::string run_case(const Case& s, uint64_t seed) {
  const Data d = make_data(s, seed);
  const fi::ChunkResult want = cpu_decode(s, d);
  auto gpu = make_gpu(s, d);
  fi::ChunkResult got;
  gpu->decode(d.x.data(), s.rows, got);
  return fi::test::compare_decodes(want, got, s.k, s.b, s.tol);
}

TEST(CudaDecoder, F32HeadRealisticScale) {
  FI_SKIP_WITHOUT_CUDA();
  Case s;
  s.dtype = DType::F32;
  EXPECT_EQ("", run_case(s, 11));
}

TEST(CudaDecoder, Bf16SplitInputRealisticScale) {
  FI_SKIP_WITHOUT_CUDA();
  Case s;
  s.split = true;
  EXPECT_EQ("", run_case(s, 12));
}

TEST(CudaDecoder, F16SplitInputGemmaNorm) {
  FI_SKIP_WITHOUT_CUDA();
  Case s;
  s.dtype = DType::F16;
  s.split = true;
  s.plus_one = true;
  EXPECT_EQ("", run_case(s, 13));
}

TEST(CudaDecoder, Bf16OneGemmSmallWeights) {
  FI_SKIP_WITHOUT_CUDA();
  Case s;
  s.w_sigma = 0.003f;  // logit error ~5e-5: probabilities stay within 1e-3
  s.tol.logit_abs = 1e-3;
  s.tol.lse_abs = 1e-3;
  s.tol.max_swapped = 0.5;  // flat distributions: near ties everywhere
  EXPECT_EQ("", run_case(s, 14));
}

TEST(CudaDecoder, GammaAndNoneNorms) {
  FI_SKIP_WITHOUT_CUDA();
  for (NormMode m : {NormMode::Gamma, NormMode::None}) {
    Case s;
    s.norm = m;
    s.split = true;
    s.x_sigma = 0.5f;
    EXPECT_EQ("", run_case(s, 15)) << fi::norm_name(m);
  }
}

TEST(CudaDecoder, LargeKOddShapes) {
  FI_SKIP_WITHOUT_CUDA();
  Case s;
  s.dtype = DType::F32;
  s.vocab = 2049;
  s.hidden = 72;
  s.rows = 37;
  s.k = 256;
  s.b = 16;
  s.sub_rows = 16;
  s.tol.max_swapped = 0.2;  // deep in a 256-long list neighbours are close
  EXPECT_EQ("", run_case(s, 16));
}

TEST(CudaDecoder, DeviceInputMatchesHostInput) {
  FI_SKIP_WITHOUT_CUDA();
  Case s;
  s.split = true;
  Data d = make_data(s, 17);
  std::vector<uint16_t> xraw;
  d.x = fi::test::round_bf16(d.x, &xraw);  // the rows as a bf16 checkpoint holds them
  auto gpu = make_gpu(s, d);
  fi::ChunkResult host, dev;
  gpu->decode(d.x.data(), s.rows, host);
  // upload_lm_head copies any [rows, hidden] matrix to the device.
  fi::gpu::DeviceLmHead rows_on_device =
      fi::gpu::upload_lm_head(xraw.data(), DType::BF16, s.rows, s.hidden);
  gpu->decode_device(rows_on_device.data.get(), DType::BF16, s.rows, dev);
  // Widening bf16 is exact, so both paths see the same fp32 rows: identical results.
  EXPECT_EQ(host.top_ids, dev.top_ids);
  EXPECT_EQ(host.top_logits, dev.top_logits);
  EXPECT_EQ(host.top_probs, dev.top_probs);
  EXPECT_EQ(host.lse, dev.lse);
  EXPECT_EQ(host.bottom_ids, dev.bottom_ids);
}

TEST(CudaDecoder, RepeatableAndEmptyCalls) {
  FI_SKIP_WITHOUT_CUDA();
  Case s;
  const Data d = make_data(s, 18);
  auto gpu = make_gpu(s, d);
  fi::ChunkResult a, b, none, one;
  gpu->decode(d.x.data(), s.rows, a);
  gpu->decode(d.x.data(), s.rows, b);
  EXPECT_EQ(a.top_ids, b.top_ids);
  EXPECT_EQ(a.top_probs, b.top_probs);
  EXPECT_EQ(a.lse, b.lse);
  gpu->decode(d.x.data(), 0, none);
  EXPECT_EQ(none.rows, 0);
  gpu->decode(d.x.data(), 1, one);  // one row, one piece
  ASSERT_EQ(one.rows, 1);
  EXPECT_EQ(std::vector<int32_t>(a.top_ids.begin(), a.top_ids.begin() + s.k), one.top_ids);
}

TEST(CudaDecoder, TooLargeKIsAnError) {
  FI_SKIP_WITHOUT_CUDA();
  Case s;
  s.k = 5000;
  s.rows = 2;
  const Data d = make_data(s, 19);
  EXPECT_THROW(make_gpu(s, d), fi::Error);
}

}  // namespace
