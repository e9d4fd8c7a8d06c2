// The decode's input side: a work item's neuron vectors read from the checkpoint in their
// stored dtype (bf16, f16, f32, FP8 with its scale) by a reader thread that runs one item ahead
// of the backend into two reusable buffers, and their exact widening to fp32 on several threads
// (what the CPU backend is given; a GPU backend can upload the stored bytes instead).
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "io/checkpoint.h"

namespace fi {

// What to read: `count` neurons from `first`: rows [first, first+count) of a [N, width]
// tensor (up, gate), or with `columns` columns [first, first+count) of a [width, N] one (down).
struct FeedItem {
  std::string tensor;
  int64_t first = 0, count = 0;
  bool columns = false;
};

// One item as stored. data, rows: [count, width]; columns: [width, count] (each tensor row's
// segment, not transposed). FP8: scale is set; element (r, c) of the tensor is q * scale->at(r, c).
struct RowBlock {
  DType dtype = DType::F32;
  int64_t first = 0, count = 0, width = 0;
  bool columns = false;
  const uint8_t* data = nullptr;
  const Checkpoint::Scale* scale = nullptr;
  uint64_t bytes() const { return uint64_t(count) * uint64_t(width) * dtype_size(dtype); }
};

// x: [count, width] fp32, neuron n's vector in row n: exactly what Checkpoint::read_rows_f32 /
// read_cols_f32 give (the same single fp32 rounding for FP8). threads >= 1 share the neurons.
void widen_block(const RowBlock& b, float* x, int threads);

// Memory for the stored bytes: page-aligned host memory by default; the CUDA backend gives
// pinned memory (cudaHostAlloc, Decoder::host_alloc) so that uploads from it need no staging
// copy and run asynchronously. Both are called on the reader thread (release also at the end).
struct HostAlloc {
  std::function<void*(size_t bytes)> alloc;  // empty: aligned_alloc(4096, ...); null: out of memory
  std::function<void(void* p)> release;
};

// Reads the items in order on its own thread, at most one ahead of the one the caller holds.
class RowFeed {
 public:
  // readers: threads that share one item's read (a row block's byte range split between them).
  RowFeed(const Checkpoint& ck, std::vector<FeedItem> items, HostAlloc mem = {}, int readers = 1);
  ~RowFeed();  // stops the reader after the read in flight
  RowFeed(const RowFeed&) = delete;
  RowFeed& operator=(const RowFeed&) = delete;

  // The next item, read; valid until the following call. Rethrows that item's read error.
  const RowBlock& next();
  size_t size() const { return items_.size(); }

 private:
  struct Slot {
    uint8_t* buf = nullptr;
    uint64_t cap = 0;
    RowBlock block;
    std::exception_ptr error;
  };
  void run();                            // the reader thread
  void read_into(Slot& s, const FeedItem& it);
  void reserve(Slot& s, uint64_t bytes);

  const Checkpoint& ck_;
  const std::vector<FeedItem> items_;
  HostAlloc mem_;
  int readers_ = 1;
  Slot slots_[2];
  std::map<std::string, Checkpoint::Scale> scales_;  // per FP8 tensor, read once (reader thread)
  std::vector<uint8_t> scratch_;                     // whole tensor rows of a wide column read
  std::mutex mu_;
  std::condition_variable cv_;
  size_t produced_ = 0, released_ = 0, taken_ = 0;  // items read / given back / handed out
  bool stop_ = false;
  std::thread reader_;
};

}  // namespace fi
