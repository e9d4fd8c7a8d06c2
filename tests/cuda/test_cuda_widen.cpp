// The device side of the decode's input (io/row_feed.h, gpu/widen.h): the widening kernel's
// source, emulated on CPU threads, against the host's widen_block bit for bit, for bf16, f16,
// f32 and FP8 (block and per-row scales), rows and columns of down; on a device, the kernel
// itself, and the CUDA decoder fed stored blocks (decode_block) against the same decoder fed the
// host-widened rows: identical results.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "decode/cuda/cuda_decoder_impl.h"
#include "gpu/buffers.h"
#include "gpu/check.h"
#include "gpu/widen.h"
#include "widen_emulated.h"

namespace {

using fi::DType;

// A stored block of random finite codes; for FP8 a scale in blocks of 8 x 16 of a tensor of
// `tensor_rows` rows, or per row.
struct Stored {
  std::vector<uint8_t> bytes;
  fi::Checkpoint::Scale scale;
  std::vector<float> table;  // FP8: the value of every code
  fi::RowBlock meta;         // shape and dtype; block() points it at this object's bytes
  fi::RowBlock block() const {
    fi::RowBlock b = meta;
    b.data = bytes.data();
    b.scale = fi::is_fp8(b.dtype) ? &scale : nullptr;
    return b;
  }
};

Stored make_block(DType d, bool columns, int64_t count, int64_t width, int64_t first, bool per_row, uint64_t seed) {
  Stored s;
  std::mt19937_64 g(seed);
  const size_t w = fi::dtype_size(d), n = size_t(count * width);
  s.bytes.resize(n * w);
  for (size_t i = 0; i < n; ++i) {
    uint32_t u = uint32_t(g());
    if (d == DType::F32) u = (u & 0x807fffffu) | ((100u + u % 41u) << 23);
    if (d == DType::BF16) u = u & 0xbfffu;        // exponent's top bit clear: finite
    if (d == DType::F16) u = u & 0xbbffu;         // likewise
    if (d == DType::F8_E4M3) u = u & 0xb7u;       // never 0x7f / 0xff (NaN)
    if (d == DType::F8_E5M2) u = u & 0xbbu;       // never e = 31
    std::memcpy(&s.bytes[i * w], &u, w);
  }
  // The tensor: rows [N, width] with N = first + count, or columns [width, N].
  const int64_t N = first + count, R = columns ? width : N, C = columns ? N : width;
  if (fi::is_fp8(d)) {
    std::uniform_real_distribution<float> u(0.01f, 3.f);
    if (per_row) {
      s.scale.br = 1;
      s.scale.bc = C;
      s.scale.sc = 1;
      s.scale.s.resize(size_t(R));
    } else {
      s.scale.br = 8;
      s.scale.bc = 16;
      s.scale.sc = (C + 15) / 16;
      s.scale.s.resize(size_t(((R + 7) / 8) * s.scale.sc));
    }
    for (float& v : s.scale.s) v = u(g);
    s.table.resize(256);
    for (int c = 0; c < 256; ++c) s.table[size_t(c)] = fi::fp8_to_f32(d, uint8_t(c));
  }
  s.meta = fi::RowBlock{d, first, count, width, columns, nullptr, nullptr};
  return s;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

const DType kAll[] = {DType::BF16, DType::F16, DType::F32, DType::F8_E4M3, DType::F8_E5M2};

TEST(WidenEmulated, EveryDtypeRowsAndColumnsBitForBit) {
  uint64_t seed = 1;
  for (DType d : kAll)
    for (bool columns : {false, true})
      for (bool per_row : {false, true}) {
        const Stored s = make_block(d, columns, 45, 70, 13, per_row, seed++);
        std::vector<float> want(size_t(45 * 70)), got(want.size(), -7.f);
        fi::widen_block(s.block(), want.data(), 1);
        fi::test::widen_emulated(s.block(), s.bytes.data(), s.table.data(), s.scale.s.data(), got.data());
        EXPECT_TRUE(same_bits(want, got)) << fi::dtype_name(d) << (columns ? " columns" : " rows")
                                          << (per_row ? " per-row scale" : "");
      }
}

// f16 subnormals, signed zeros and the extremes go through the kernel's own bit conversion.
TEST(WidenEmulated, F16EveryPattern) {
  Stored s = make_block(DType::F16, false, 256, 256, 0, false, 9);
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t h = uint16_t(i);
    std::memcpy(&s.bytes[size_t(i) * 2], &h, 2);
  }
  std::vector<float> want(65536), got(65536);
  fi::widen_block(s.block(), want.data(), 1);
  fi::test::widen_emulated(s.block(), s.bytes.data(), nullptr, nullptr, got.data());
  EXPECT_TRUE(same_bits(want, got));  // NaN payloads included
}

TEST(WidenDevice, KernelMatchesHost) {
  FI_SKIP_WITHOUT_CUDA();
  fi::gpu::select_device(MPI_COMM_NULL);
  uint64_t seed = 100;
  for (DType d : kAll)
    for (bool columns : {false, true}) {
      const Stored s = make_block(d, columns, 300, 257, 40, false, seed++);
      std::vector<float> want(size_t(300 * 257)), got(want.size());
      fi::widen_block(s.block(), want.data(), 2);
      fi::gpu::DeviceBuffer x(s.bytes.size(), "x"), out(want.size() * 4, "out"), t(256 * 4, "t"),
          sc(std::max<size_t>(4, s.scale.s.size() * 4), "sc");
      FI_CUDA_CHECK(cudaMemcpy(x.get(), s.bytes.data(), s.bytes.size(), cudaMemcpyHostToDevice));
      if (fi::is_fp8(d)) {
        FI_CUDA_CHECK(cudaMemcpy(t.get(), s.table.data(), 256 * 4, cudaMemcpyHostToDevice));
        FI_CUDA_CHECK(cudaMemcpy(sc.get(), s.scale.s.data(), s.scale.s.size() * 4, cudaMemcpyHostToDevice));
      }
      fi::gpu::launch_widen(s.block(), x.get(), static_cast<const float*>(t.get()),
                            static_cast<const float*>(sc.get()), static_cast<float*>(out.get()), nullptr);
      FI_CUDA_CHECK(cudaDeviceSynchronize());
      out.copy_to_host(got.data(), got.size() * 4);
      EXPECT_TRUE(same_bits(want, got)) << fi::dtype_name(d) << (columns ? " columns" : " rows");
    }
}

// The decoder given stored blocks (every path of decode_block) and given the same rows widened
// on the host: the same fp32 rows reach the norm, so the results are identical.
TEST(WidenDevice, DecoderStoredBlocksMatchWidenedRows) {
  FI_SKIP_WITHOUT_CUDA();
  const int64_t V = 3001, H = 256, rows = 300;
  std::vector<uint16_t> raw;
  const std::vector<float> w = fi::test::round_bf16(fi::test::normal(size_t(V * H), 0.1f, 5), &raw);
  const std::vector<float> gamma = fi::test::uniform(size_t(H), 0.5f, 1.5f, 6);
  fi::gpu::select_device(MPI_COMM_NULL);
  for (bool rescore : {false, true}) {
    fi::gpu::CudaDecoderOptions o;
    o.split_input = !rescore;
    o.rescore = rescore;
    o.sub_rows = 64;
    fi::DecodeParams p;
    p.top_k = 20;
    p.bottom_k = 5;
    fi::gpu::CudaDecoder dec(fi::gpu::upload_lm_head(raw.data(), DType::BF16, V, H), gamma, p, o);
    uint64_t seed = 50;
    for (DType d : kAll)
      for (bool columns : {false, true}) {
        const Stored s = make_block(d, columns, rows, H, 7, false, seed++);
        std::vector<float> x(size_t(rows * H));
        fi::widen_block(s.block(), x.data(), 2);
        fi::ChunkResult a, b;
        dec.decode(x.data(), rows, a);
        ASSERT_TRUE(dec.takes_block(s.block()));
        dec.decode_block(s.block(), b);
        const std::string what = std::string(fi::dtype_name(d)) + (columns ? " columns" : " rows");
        EXPECT_EQ(a.top_ids, b.top_ids) << what;
        EXPECT_EQ(a.top_probs, b.top_probs) << what;
        EXPECT_EQ(a.lse, b.lse) << what;
        EXPECT_EQ(a.bottom_ids, b.bottom_ids) << what;
        EXPECT_EQ(a.bottom_logits, b.bottom_logits) << what;
      }
  }
}

}  // namespace
