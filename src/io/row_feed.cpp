// The reader thread of the decode's input and the widening of what it read (io/row_feed.h).
// Reads are pread's of byte ranges straight into the slot: one range for rows, one per tensor
// row for a narrow column segment, blocks of whole rows (then copied) for a wide one.
#include "io/row_feed.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>

#include <sys/mman.h>

#include "common/error.h"
#include "common/half.h"

namespace fi {
namespace {

// Every FP8 code widened, both formats (the table widen_to_f32 uses, built the same way).
const std::array<float, 256>& fp8_table(DType d) {
  static const auto t = [] {
    std::array<std::array<float, 256>, 2> t{};
    for (int c = 0; c < 256; ++c) {
      t[0][size_t(c)] = fp8_to_f32(DType::F8_E4M3, uint8_t(c));
      t[1][size_t(c)] = fp8_to_f32(DType::F8_E5M2, uint8_t(c));
    }
    return t;
  }();
  return t[d == DType::F8_E4M3 ? 0 : 1];
}

// Neurons [n0, n1) of a rows block: each row widened, then (FP8) times its scale.
void widen_rows(const RowBlock& b, float* x, int64_t n0, int64_t n1) {
  const size_t w = dtype_size(b.dtype);
  for (int64_t n = n0; n < n1; ++n) {
    float* row = x + n * b.width;
    widen_to_f32(b.dtype, b.data + size_t(n * b.width) * w, size_t(b.width), row);
    if (!b.scale) continue;
    for (int64_t c = 0; c < b.width; ++c) row[c] *= b.scale->at(b.first + n, c);
  }
}

// Neurons [n0, n1) of a columns block ([width, count] stored -> [count, width]), in tiles so
// that both the reads and the writes stay within a few cache lines per row.
void widen_cols(const RowBlock& b, float* x, int64_t n0, int64_t n1) {
  constexpr int64_t kTile = 32;
  const int64_t W = b.width, C = b.count;
  const auto* fp8 = is_fp8(b.dtype) ? fp8_table(b.dtype).data() : nullptr;
  for (int64_t r0 = 0; r0 < W; r0 += kTile) {
    const int64_t r1 = std::min(W, r0 + kTile);
    for (int64_t c0 = n0; c0 < n1; c0 += kTile) {
      const int64_t c1 = std::min(n1, c0 + kTile);
      for (int64_t r = r0; r < r1; ++r) {
        const uint8_t* src = b.data + size_t(r * C) * dtype_size(b.dtype);
        for (int64_t c = c0; c < c1; ++c) {
          float v;
          if (fp8) {
            v = fp8[src[c]] * b.scale->at(r, b.first + c);
          } else if (b.dtype == DType::F32) {
            std::memcpy(&v, src + 4 * c, 4);
          } else {
            uint16_t h;
            std::memcpy(&h, src + 2 * c, 2);
            v = b.dtype == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
          }
          x[c * W + r] = v;
        }
      }
    }
  }
}

// Bytes [off, off + n) of t into dst, the range cut in `parts` pieces read at once (one each
// on threads: one thread's copy out of the page cache is short of what the memory can do).
void read_split(const SafetensorsFile& f, const TensorInfo& t, uint64_t off, uint64_t n, uint8_t* dst, int parts) {
  const uint64_t per = ((n + uint64_t(parts) - 1) / uint64_t(parts) + 4095) & ~uint64_t(4095);
  if (parts <= 1 || n < (4u << 20)) return f.read_bytes(t, off, n, dst);
  std::vector<std::thread> pool;
  std::vector<std::exception_ptr> errors(static_cast<size_t>(parts));
  for (int p = 0; p < parts; ++p) {
    const uint64_t a = std::min(n, uint64_t(p) * per), len = std::min(n, a + per) - a;
    if (len == 0) continue;
    pool.emplace_back([&, p, a, len] {
      try {
        f.read_bytes(t, off + a, len, dst + a);
      } catch (...) {
        errors[size_t(p)] = std::current_exception();
      }
    });
  }
  for (auto& th : pool) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace

void widen_block(const RowBlock& b, float* x, int threads) {
  FI_CHECK(!is_fp8(b.dtype) || b.scale, "widen_block: an FP8 block without its scale");
  auto part = [&](int64_t n0, int64_t n1) {
    if (b.columns) widen_cols(b, x, n0, n1);
    else widen_rows(b, x, n0, n1);
  };
  // Threads only where there is enough to share (64 KiB stored each; a thread costs ~20 us).
  const int64_t T = std::max<int64_t>(1, std::min<int64_t>(threads, int64_t(b.bytes() >> 16)));
  if (T == 1 || b.count < 2) return part(0, b.count);
  std::vector<std::thread> pool;
  const int64_t per = (b.count + T - 1) / T;
  for (int64_t t = 1; t < T; ++t)
    if (t * per < b.count) pool.emplace_back(part, t * per, std::min(b.count, (t + 1) * per));
  part(0, std::min(b.count, per));
  for (auto& th : pool) th.join();
}

RowFeed::RowFeed(const Checkpoint& ck, std::vector<FeedItem> items, HostAlloc mem, int readers)
    : ck_(ck), items_(std::move(items)), mem_(std::move(mem)), readers_(std::max(1, readers)) {
  if (!items_.empty()) reader_ = std::thread(&RowFeed::run, this);
}

RowFeed::~RowFeed() {
  {
    std::lock_guard<std::mutex> g(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (reader_.joinable()) reader_.join();
  for (Slot& s : slots_) {
    if (!s.buf) continue;
    if (mem_.release) mem_.release(s.buf);
    else std::free(s.buf);
  }
}

const RowBlock& RowFeed::next() {
  std::unique_lock<std::mutex> lk(mu_);
  FI_CHECK(taken_ < items_.size(), "RowFeed: every item was read already");
  released_ = taken_;  // the caller is done with the item it held: the reader may refill its slot
  cv_.notify_all();
  cv_.wait(lk, [&] { return produced_ > taken_; });
  Slot& s = slots_[taken_++ % 2];
  if (s.error) std::rethrow_exception(s.error);
  return s.block;
}

void RowFeed::run() {
  for (size_t i = 0; i < items_.size(); ++i) {
    Slot* s;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || i < released_ + 2; });  // slot i % 2 is free
      if (stop_) return;
      s = &slots_[i % 2];
    }
    bool failed = false;
    try {
      read_into(*s, items_[i]);
    } catch (...) {
      s->error = std::current_exception();
      failed = true;
    }
    {
      std::lock_guard<std::mutex> g(mu_);
      produced_ = i + 1;
    }
    cv_.notify_all();
    if (failed) return;  // the job ends at this item
  }
}

void RowFeed::reserve(Slot& s, uint64_t bytes) {
  if (bytes <= s.cap) return;
  if (s.buf) mem_.release ? mem_.release(s.buf) : std::free(s.buf);
  s.cap = 0;
  const uint64_t n = (bytes + 4095) & ~uint64_t(4095);
  s.buf = static_cast<uint8_t*>(mem_.alloc ? mem_.alloc(n) : std::aligned_alloc(4096, n));
  if (!s.buf) FI_FAIL("out of memory: " + std::to_string(n >> 20) + " MiB for a chunk's rows");
  if (!mem_.alloc) ::madvise(s.buf, n, MADV_HUGEPAGE);  // fewer TLB misses as the reads land (a hint)
  s.cap = n;
}

void RowFeed::read_into(Slot& s, const FeedItem& it) {
  const SafetensorsFile& f = ck_.file_of(it.tensor);
  const TensorInfo& t = f.info(it.tensor);
  if (t.shape.size() != 2) FI_FAIL(f.path() + ": tensor '" + it.tensor + "' is not 2-D");
  const int64_t N = t.shape[it.columns ? 1 : 0], W = t.shape[it.columns ? 0 : 1];
  if (it.first < 0 || it.count < 0 || it.first > N || it.count > N - it.first)
    FI_FAIL(f.path() + ": tensor '" + it.tensor + "': " + (it.columns ? "columns" : "rows") + " [" +
            std::to_string(it.first) + ", " + std::to_string(it.first) + "+" + std::to_string(it.count) +
            ") outside [0, " + std::to_string(N) + ")");
  RowBlock& b = s.block;
  b = RowBlock{t.dtype, it.first, it.count, W, it.columns, nullptr, nullptr};
  if (is_fp8(t.dtype)) {
    auto sc = scales_.find(it.tensor);
    if (sc == scales_.end()) sc = scales_.emplace(it.tensor, ck_.scale_of(it.tensor)).first;
    b.scale = &sc->second;
  }
  reserve(s, std::max<uint64_t>(b.bytes(), 1));
  b.data = s.buf;
  const uint64_t w = dtype_size(t.dtype);
  if (!it.columns) return read_split(f, t, uint64_t(it.first) * uint64_t(W) * w, b.bytes(), s.buf, readers_);
  // Columns: the segment of each of the W tensor rows; whole rows at a time when it is most of one.
  const uint64_t seg = uint64_t(it.count) * w, span = uint64_t(N) * w, off = uint64_t(it.first) * w;
  if (seg == 0) return;
  if (2 * seg < span) {
    for (int64_t r = 0; r < W; ++r) f.read_bytes(t, uint64_t(r) * span + off, seg, s.buf + uint64_t(r) * seg);
    return;
  }
  const uint64_t block = std::max<uint64_t>(1, (16u << 20) / span);
  scratch_.resize(size_t(std::min<uint64_t>(block, uint64_t(W)) * span));
  for (uint64_t r0 = 0; r0 < uint64_t(W); r0 += block) {
    const uint64_t nr = std::min(block, uint64_t(W) - r0);
    f.read_bytes(t, r0 * span, nr * span, scratch_.data());
    for (uint64_t r = 0; r < nr; ++r) std::memcpy(s.buf + (r0 + r) * seg, scratch_.data() + r * span + off, seg);
  }
}

}  // namespace fi
