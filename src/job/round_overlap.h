// The decode's rounds as a two-stage pipeline: this rank's chunk of round r+1 is decoded on a
// worker thread while the main thread writes round r (the writer's collective MPI and HDF5 calls
// never leave the main thread). Two ChunkResult buffers alternate: round r's is being written
// while round r+1's is being filled. At most one decode is in flight; the caller starts the next
// one only when nothing after the write needs the decoder's quiet state (a token index save, a
// stop), which is what keeps every save's `included` chunks exactly those whose data is written.
#pragma once
#include <chrono>
#include <cstddef>
#include <functional>
#include <future>
#include <system_error>
#include <utility>

#include "decode/chunk_result.h"

namespace fi {

class RoundOverlap {
 public:
  // decode(round, out): this rank's item of `round` into out; runs on the worker thread.
  explicit RoundOverlap(std::function<void(size_t, ChunkResult&)> decode) : decode_(std::move(decode)) {}
  // A decode in flight is waited for (its error dropped): the buffers it fills outlive it.
  ~RoundOverlap() {
    if (inflight_.valid()) inflight_.wait();
  }
  RoundOverlap(const RoundOverlap&) = delete;
  RoundOverlap& operator=(const RoundOverlap&) = delete;

  // Starts round r's decode on the worker thread (round r - 1's must be collected). Never
  // throws: the caller is outside any collective check here, so a thread that cannot be made
  // leaves the decode to collect(), which reports the failure.
  void start(size_t round) {
    try {
      launch(round);
    } catch (const std::system_error&) {
    }
  }
  // Round r's result (its decode started here if it was not yet); valid until round r + 2
  // starts. Rethrows the decode's error.
  ChunkResult& collect(size_t round) {
    launch(round);
    const auto t0 = std::chrono::steady_clock::now();
    started_ = false;
    inflight_.get();
    wait_s_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return res_[round % 2];
  }
  // The last collected round's decode time, and how long collect() waited for it (the part of
  // the decode that the write before it did not hide).
  double decode_s() const { return decode_s_; }
  double wait_s() const { return wait_s_; }

 private:
  void launch(size_t round) {
    if (started_ && round_ == round) return;
    inflight_ = std::async(std::launch::async, [this, round] {
      const auto t0 = std::chrono::steady_clock::now();
      decode_(round, res_[round % 2]);
      decode_s_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    });
    round_ = round;
    started_ = true;
  }

  std::function<void(size_t, ChunkResult&)> decode_;
  ChunkResult res_[2];
  std::future<void> inflight_;
  size_t round_ = 0;
  bool started_ = false;
  double decode_s_ = 0, wait_s_ = 0;
};

}  // namespace fi
