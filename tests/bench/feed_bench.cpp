// The decode's reader alone (io/row_feed.h): every chunk of one matrix of every layer delivered
// in its stored dtype, as the decode asks for them, timed as GB/s beside `cat` of the shard
// files that hold them to /dev/null in the same run (the rate any backend could be fed at on this
// machine). Both should read from the page cache: run the files through `cat` once first
// (tests/bench/feed_bench.sh does). With --widen T the blocks are also widened to fp32 on T
// threads, as the CPU backend receives them. Not a test.
// usage: feed_bench MODEL_DIR [--matrix up|gate|down] [--chunk-rows R] [--reps N] [--widen T]
//        [--readers N] (threads sharing each item's read)
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"
#include "io/row_feed.h"

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Args {
  std::string dir, matrix = "up";
  int64_t chunk_rows = 4096;
  int reps = 3, widen = 0, readers = 1;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    auto value = [&] {
      if (i + 1 >= argc) FI_FAIL(s + " needs a value");
      return std::string(argv[++i]);
    };
    if (s == "--matrix") a.matrix = value();
    else if (s == "--chunk-rows") a.chunk_rows = std::atoll(value().c_str());
    else if (s == "--reps") a.reps = std::atoi(value().c_str());
    else if (s == "--widen") a.widen = std::atoi(value().c_str());
    else if (s == "--readers") a.readers = std::atoi(value().c_str());
    else if (a.dir.empty() && s[0] != '-') a.dir = s;
    else FI_FAIL("unknown argument " + s);
  }
  FI_CHECK(!a.dir.empty(), "usage: feed_bench MODEL_DIR [--matrix up|gate|down] [--chunk-rows R] [--reps N] [--widen T]");
  FI_CHECK(a.chunk_rows > 0 && a.reps > 0 && a.widen >= 0, "--chunk-rows and --reps must be positive");
  return a;
}

}  // namespace

int main(int argc, char** argv) try {
  const Args a = parse(argc, argv);
  fi::Checkpoint ck(a.dir);
  // The matrix of every layer, in the Llama layout's names: model.layers.L.mlp.<m>_proj.weight.
  std::vector<fi::FeedItem> items;
  std::set<std::string> files;
  uint64_t bytes = 0;
  for (int64_t l = 0;; ++l) {
    const std::string t = "model.layers." + std::to_string(l) + ".mlp." + a.matrix + "_proj.weight";
    if (!ck.has(t)) break;
    const fi::TensorInfo& info = ck.info(t);
    FI_CHECK(info.shape.size() == 2, t + " is not 2-D");
    const bool cols = a.matrix == "down";
    const int64_t n = info.shape[cols ? 1 : 0];
    for (int64_t r = 0; r < n; r += a.chunk_rows) items.push_back({t, r, std::min(a.chunk_rows, n - r), cols});
    bytes += info.end - info.begin;
    files.insert(ck.file_of(t).path());
  }
  FI_CHECK(!items.empty(), a.dir + ": no model.layers.0.mlp." + a.matrix + "_proj.weight");
  uint64_t file_bytes = 0;
  std::string cat = "cat";
  for (const std::string& f : files) {
    struct stat st {};
    if (::stat(f.c_str(), &st) == 0) file_bytes += uint64_t(st.st_size);
    cat += " '" + f + "'";
  }
  cat += " > /dev/null";
  std::printf("%s: %zu chunks of %lld rows of %s, %.3f GB in %s; cat: %zu files, %.3f GB\n", a.dir.c_str(),
              items.size(), (long long)a.chunk_rows, a.matrix.c_str(), bytes / 1e9,
              fi::dtype_name(ck.info(items[0].tensor).dtype), files.size(), file_bytes / 1e9);
  double best_feed = 1e30, best_cat = 1e30, best_widen = 1e30;
  std::vector<float> x;
  for (int rep = 0; rep < a.reps; ++rep) {  // alternated, so both see the same machine
    auto t0 = Clock::now();
    if (std::system(cat.c_str()) != 0) FI_FAIL("cat failed");
    best_cat = std::min(best_cat, since(t0));
    t0 = Clock::now();
    {
      fi::RowFeed feed(ck, items, {}, a.readers);
      uint64_t got = 0;
      for (size_t i = 0; i < feed.size(); ++i) got += feed.next().bytes();
      FI_CHECK(got == bytes, "the reader delivered " + std::to_string(got) + " bytes of " + std::to_string(bytes));
    }
    best_feed = std::min(best_feed, since(t0));
    if (a.widen == 0) continue;
    t0 = Clock::now();
    {
      fi::RowFeed feed(ck, items, {}, a.readers);
      for (size_t i = 0; i < feed.size(); ++i) {
        const fi::RowBlock& b = feed.next();
        x.resize(size_t(b.count * b.width));
        fi::widen_block(b, x.data(), a.widen);
      }
    }
    best_widen = std::min(best_widen, since(t0));
  }
  const double feed_gbs = bytes / best_feed / 1e9, cat_gbs = file_bytes / best_cat / 1e9;
  std::printf("reader (%d thread%s): %.3f s, %.2f GB/s (best of %d)\n", a.readers, a.readers > 1 ? "s" : "",
              best_feed, feed_gbs, a.reps);
  std::printf("cat:    %.3f s, %.2f GB/s (best of %d)\n", best_cat, cat_gbs, a.reps);
  std::printf("ratio reader / cat: %.2f\n", feed_gbs / cat_gbs);
  if (a.widen > 0)
    std::printf("reader + fp32 widening on %d thread%s: %.3f s, %.2f GB/s of stored rows\n", a.widen,
                a.widen > 1 ? "s" : "", best_widen, bytes / best_widen / 1e9);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "feed_bench: error: %s\n", e.what());
  return 1;
}
