// The decode's reader (io/row_feed.h): rows and column segments of bf16, f16, f32 and FP8 (per
// block and per row scales) tensors, read ahead in order and widened on 1 and 3 threads, against
// a naive per-element decode of the stored bits (FP8: q * s in double, rounded once to fp32),
// and bit for bit against Checkpoint::read_rows_f32 / read_cols_f32; a bad item fails at its turn.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "io/row_feed.h"

namespace {

using fi::DType;
constexpr int64_t W = 37, N = 50;  // up-like tensors are [N, W], down-like ones [W, N]

// The value of one stored element, decoded by hand from its bits.
double naive_value(DType d, const uint8_t* p) {
  if (d == DType::F32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  if (fi::is_fp8(d)) return fi::fp8_to_f32(d, *p);  // checked code by code in test_checkpoint
  const uint16_t h = uint16_t(p[0] | p[1] << 8);
  const int sign = h & 0x8000 ? -1 : 1;
  if (d == DType::BF16) {
    const int e = (h >> 7) & 0xff, m = h & 0x7f;
    if (e == 0xff) return NAN;  // inf, NaN: not drawn
    return e == 0 ? sign * std::ldexp(double(m), -126 - 7) : sign * std::ldexp(double(128 + m), e - 127 - 7);
  }
  const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e == 0x1f) return NAN;
  return e == 0 ? sign * std::ldexp(double(m), -14 - 10) : sign * std::ldexp(double(1024 + m), e - 15 - 10);
}

// Random finite codes of dtype d, rows x cols.
std::vector<uint8_t> random_codes(DType d, int64_t n, std::mt19937& rng) {
  std::vector<uint8_t> b(size_t(n) * fi::dtype_size(d));
  for (size_t i = 0; i < size_t(n); ++i) {
    for (;;) {
      for (size_t k = 0; k < fi::dtype_size(d); ++k) b[i * fi::dtype_size(d) + k] = uint8_t(rng());
      if (d == DType::F32) {  // a sane range: sign, exponent 100..140
        uint32_t u = uint32_t(rng());
        u = (u & 0x807fffffu) | ((100u + u % 41u) << 23);
        std::memcpy(&b[i * 4], &u, 4);
      }
      if (std::isfinite(naive_value(d, &b[i * fi::dtype_size(d)]))) break;
    }
  }
  return b;
}

fi::TensorData f32_tensor(const std::string& name, std::vector<int64_t> shape, const std::vector<float>& v) {
  fi::TensorData t{name, DType::F32, std::move(shape), std::vector<uint8_t>(v.size() * 4)};
  std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
  return t;
}

class RowFeedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fi_test_row_feed_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    std::mt19937 rng(7);
    std::vector<fi::TensorData> t;
    for (DType d : {DType::BF16, DType::F16, DType::F32, DType::F8_E4M3, DType::F8_E5M2}) {
      const std::string n = fi::dtype_name(d);
      codes_["up_" + n] = random_codes(d, N * W, rng);
      codes_["down_" + n] = random_codes(d, W * N, rng);
      t.push_back({"up_" + n, d, {N, W}, codes_["up_" + n]});
      t.push_back({"down_" + n, d, {W, N}, codes_["down_" + n]});
    }
    // FP8 scales: E4M3 per block of 8 x 16 (DeepSeek-V3 style), E5M2 per row.
    std::uniform_real_distribution<float> s(0.01f, 3.f);
    auto scales = [&](int64_t n) {
      std::vector<float> v(static_cast<size_t>(n));
      for (float& x : v) x = s(rng);
      return v;
    };
    const int64_t nb = (N + 7) / 8, wb = (W + 15) / 16;
    t.push_back(f32_tensor("up_F8_E4M3_scale_inv", {nb, (W + 15) / 16}, scales(nb * wb)));
    t.push_back(f32_tensor("down_F8_E4M3_scale_inv", {(W + 7) / 8, (N + 15) / 16}, scales(((W + 7) / 8) * ((N + 15) / 16))));
    t.push_back(f32_tensor("up_F8_E5M2_scale", {N, 1}, scales(N)));
    t.push_back(f32_tensor("down_F8_E5M2_scale", {W}, scales(W)));
    fi::write_safetensors(dir_ + "/model.safetensors", t);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Neuron n's expected vector of a FeedItem, from the stored bits: [count, W].
  std::vector<float> expected(const fi::Checkpoint& ck, const fi::FeedItem& it) const {
    const fi::TensorInfo& t = ck.info(it.tensor);
    const std::vector<uint8_t>& b = codes_.at(it.tensor);
    const size_t w = fi::dtype_size(t.dtype);
    fi::Checkpoint::Scale sc;
    if (fi::is_fp8(t.dtype)) sc = ck.scale_of(it.tensor);
    std::vector<float> x(size_t(it.count * W));
    for (int64_t n = 0; n < it.count; ++n)
      for (int64_t i = 0; i < W; ++i) {
        const int64_t r = it.columns ? i : it.first + n, c = it.columns ? it.first + n : i;  // tensor element
        const double v = naive_value(t.dtype, &b[size_t(r * t.shape[1] + c) * w]);
        x[size_t(n * W + i)] = fi::is_fp8(t.dtype) ? float(v * double(sc.at(r, c))) : float(v);
      }
    return x;
  }
  std::string dir_;
  std::map<std::string, std::vector<uint8_t>> codes_;
};

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

TEST_F(RowFeedTest, EveryDtypeRowsAndColumnsInOrder) {
  fi::Checkpoint ck(dir_);
  ck.set_weight_block(8, 16);
  std::vector<fi::FeedItem> items;
  for (DType d : {DType::BF16, DType::F16, DType::F32, DType::F8_E4M3, DType::F8_E5M2}) {
    const std::string n = fi::dtype_name(d);
    items.push_back({"up_" + n, 5, 20, false});
    items.push_back({"up_" + n, 0, N, false});
    items.push_back({"down_" + n, 3, 10, true});   // a narrow segment: one read per tensor row
    items.push_back({"down_" + n, 11, 39, true});  // most of each row: whole rows, then copied
    items.push_back({"down_" + n, 49, 1, true});
  }
  fi::RowFeed feed(ck, items);
  ASSERT_EQ(feed.size(), items.size());
  for (const fi::FeedItem& it : items) {
    const fi::RowBlock& b = feed.next();
    ASSERT_EQ(b.count, it.count);
    ASSERT_EQ(b.width, W);
    ASSERT_EQ(b.dtype, ck.info(it.tensor).dtype);
    const std::vector<float> want = expected(ck, it);
    std::vector<float> old(want.size());  // the reads the decode used before the feed
    if (it.columns) ck.read_cols_f32(it.tensor, it.first, it.count, old.data());
    else ck.read_rows_f32(it.tensor, it.first, it.count, old.data());
    for (int threads : {1, 3}) {
      std::vector<float> x(want.size(), -1.f);
      fi::widen_block(b, x.data(), threads);
      EXPECT_TRUE(same_bits(x, want)) << it.tensor << " first " << it.first << " threads " << threads;
      EXPECT_TRUE(same_bits(x, old)) << it.tensor << " first " << it.first << " threads " << threads;
    }
  }
  EXPECT_THROW(feed.next(), fi::Error);  // nothing left
}

// Large enough that the widening shares its rows between threads (64 KiB stored each).
TEST_F(RowFeedTest, ThreadsShareALargeBlock) {
  std::mt19937 rng(3);
  const int64_t R = 300, C = 512;
  const auto q = random_codes(DType::BF16, R * C, rng);
  fi::write_safetensors(dir_ + "/model.safetensors", {{"big", DType::BF16, {R, C}, q}});
  fi::Checkpoint ck(dir_);
  fi::RowFeed feed(ck, {{"big", 0, R, false}, {"big", 17, 400, true}});
  for (bool columns : {false, true}) {
    const fi::RowBlock& b = feed.next();
    std::vector<float> x(size_t(b.count * b.width)), old(x.size());
    fi::widen_block(b, x.data(), 4);
    if (columns) ck.read_cols_f32("big", 17, 400, old.data());
    else ck.read_rows_f32("big", 0, R, old.data());
    EXPECT_TRUE(same_bits(x, old)) << columns;
  }
}

// The reader fails on an item out of range; the items before it still come, then its error.
TEST_F(RowFeedTest, ABadItemFailsAtItsTurn) {
  fi::Checkpoint ck(dir_);
  ck.set_weight_block(8, 16);
  fi::RowFeed feed(ck, {{"up_BF16", 0, 4, false}, {"up_BF16", 48, 4, false}, {"up_BF16", 0, 4, false}});
  EXPECT_EQ(feed.next().count, 4);
  try {
    feed.next();
    FAIL() << "no error";
  } catch (const fi::Error& e) {
    EXPECT_NE(std::string(e.what()).find("tensor 'up_BF16': rows [48, 48+4) outside [0, 50)"), std::string::npos)
        << e.what();
  }
}

// A feed dropped half-way (a stop signal, a failed round) ends its reader.
TEST_F(RowFeedTest, DroppedEarly) {
  fi::Checkpoint ck(dir_);
  std::vector<fi::FeedItem> items(20, {"up_F32", 0, N, false});
  fi::RowFeed feed(ck, items);
  EXPECT_EQ(feed.next().count, N);
}

// A caller's allocator (the CUDA backend's pinned memory, Decoder::host_alloc) holds every
// block: each buffer it gave is given back once, and the rows read into it are the same.
TEST_F(RowFeedTest, TheCallersAllocator) {
  fi::Checkpoint ck(dir_);
  std::mutex mu;  // the reader thread allocates while the test looks
  std::map<void*, size_t> live;
  size_t made = 0;
  fi::HostAlloc mem{[&](size_t n) {
                      void* p = std::aligned_alloc(64, n);
                      std::lock_guard<std::mutex> g(mu);
                      live[p] = n;
                      ++made;
                      return p;
                    },
                    [&](void* p) {
                      std::lock_guard<std::mutex> g(mu);
                      EXPECT_EQ(live.erase(p), 1u) << "a buffer it did not give, or given back twice";
                      std::free(p);
                    }};
  {
    const std::vector<fi::FeedItem> items = {{"up_BF16", 0, 4, false}, {"up_F32", 0, N, false}, {"down_F16", 3, 10, true}};
    fi::RowFeed feed(ck, items, mem);
    for (const fi::FeedItem& it : items) {
      const fi::RowBlock& b = feed.next();
      bool inside = false;
      std::lock_guard<std::mutex> g(mu);
      for (const auto& [p, n] : live)
        inside |= b.data >= static_cast<uint8_t*>(p) && b.data + b.bytes() <= static_cast<uint8_t*>(p) + n;
      EXPECT_TRUE(inside) << it.tensor << ": the block is not in the allocator's memory";
      std::vector<float> x(size_t(b.count * b.width));
      fi::widen_block(b, x.data(), 1);
      EXPECT_TRUE(same_bits(x, expected(ck, it))) << it.tensor;
    }
  }
  EXPECT_GE(made, 2u);
  EXPECT_TRUE(live.empty()) << live.size() << " buffers not given back";
}

// An allocator that cannot give the memory (pinned memory exhausted): that item's error, in turn.
TEST_F(RowFeedTest, AnAllocatorOutOfMemory) {
  fi::Checkpoint ck(dir_);
  fi::RowFeed feed(ck, {{"up_F32", 0, N, false}}, {[](size_t) -> void* { return nullptr; }, [](void*) {}});
  try {
    feed.next();
    FAIL() << "no error";
  } catch (const fi::Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of memory"), std::string::npos) << e.what();
  }
}

}  // namespace
