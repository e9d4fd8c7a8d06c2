// decode_fingerprint: a string of "name:size:hash;" items and options, compared as a whole.
#include "job/fingerprint.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "common/error.h"
#include "map/format.h"

namespace fi {
namespace {

constexpr uint64_t kFnvStart = 1469598103934665603ull;

// FNV-1a over bytes: a cheap content hash for the fingerprint.
uint64_t fnv1a(const void* p, size_t n, uint64_t h = kFnvStart) {
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<const uint8_t*>(p)[i]) * 1099511628211ull;
  return h;
}

uint64_t hash_file_prefix(const std::string& path, uint64_t max_bytes, uint64_t* size) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) FI_FAIL(path + ": cannot open");
  std::vector<char> buf(1 << 16);
  uint64_t h = kFnvStart, total = 0;
  size_t n;
  while (total < max_bytes && (n = std::fread(buf.data(), 1, std::min<uint64_t>(buf.size(), max_bytes - total), f)) > 0) {
    h = fnv1a(buf.data(), n, h);
    total += n;
  }
  std::fseek(f, 0, SEEK_END);
  *size = uint64_t(std::ftell(f));
  std::fclose(f);
  return h;
}

// 16 blocks of 4 KiB at evenly spaced offsets, the first at byte 0 and the last ending at the
// tensor's end (the whole tensor when it is smaller than that).
uint64_t hash_tensor_sample(const Model& m, const std::string& name) {
  constexpr uint64_t kBlock = 4096, kBlocks = 16;
  const TensorInfo& t = m.ckpt.info(name);
  const SafetensorsFile& f = m.ckpt.file_of(name);
  const uint64_t size = t.end - t.begin;
  std::vector<char> buf(kBlock);
  uint64_t h = fnv1a(&size, sizeof size);
  if (size <= kBlock * kBlocks) {
    for (uint64_t off = 0; off < size; off += kBlock) {
      const uint64_t n = std::min(kBlock, size - off);
      f.read_bytes(t, off, n, buf.data());
      h = fnv1a(buf.data(), n, h);
    }
    return h;
  }
  for (uint64_t i = 0; i < kBlocks; ++i) {
    const uint64_t off = (size - kBlock) * i / (kBlocks - 1);
    f.read_bytes(t, off, kBlock, buf.data());
    h = fnv1a(buf.data(), kBlock, h);
  }
  return h;
}

}  // namespace

std::string decode_fingerprint(const FingerprintInputs& in) {
  const Model& m = in.model;
  std::ostringstream o;
  const bool v2 = in.format_version >= map::kFormatVersionMoe;
  o << "format_version=" << (v2 ? map::kFormatVersionMoe : map::kFormatVersionDense) << ";tool_version=" << FI_VERSION << ";";
  for (const auto& sh : m.ckpt.shards()) {
    uint64_t size = 0, h = hash_file_prefix(sh->path(), sh->header_bytes(), &size);
    o << sh->path().substr(sh->path().find_last_of('/') + 1) << ":" << size << ":" << std::hex << h
      << std::dec << ";";
  }
  for (const char* f : {"/config.json", "/tokenizer.json"}) {
    uint64_t size = 0, h = hash_file_prefix(m.dir + f, UINT64_MAX, &size);
    o << (f + 1) << ":" << size << ":" << std::hex << h << std::dec << ";";
  }
  // The weights themselves, one hash over every tensor the decode reads, in a fixed order.
  uint64_t w = kFnvStart;
  std::vector<std::string> names = {m.names.final_norm, m.lm_head_name()};
  if (v2) {
    // An MoE checkpoint has tens of thousands of expert tensors (DeepSeek-V3: ~44k of the decode's):
    // sample at most kMaxSampled of them, evenly spaced in plan order, first and last included,
    // so rank 0's start-up reads stay ~4k blocks. A fine-tune or another seed differs in all of them.
    constexpr size_t kMaxSampled = 254;
    const size_t n = in.tensors.size();
    for (size_t i = 0; i < std::min(n, kMaxSampled); ++i)
      names.push_back(in.tensors[n <= kMaxSampled ? i : i * (n - 1) / (kMaxSampled - 1)]);
  } else
    for (Matrix x : in.mats)
      for (int64_t l : in.layers) names.push_back(m.names.matrix(x, l));
  for (const std::string& n : names) {
    const uint64_t h = hash_tensor_sample(m, n);
    w = fnv1a(&h, sizeof h, w);
  }
  o << "weights:" << names.size() << ":" << std::hex << w << std::dec << ";";
  o << "matrices=";
  for (Matrix x : in.mats) o << matrix_name(x) << ",";
  o << ";layers=" << in.layers.front() << "-" << in.layers.back() << ";top_k=" << in.p.top_k
    << ";bottom_k=" << in.p.bottom_k << ";norm=" << norm_name(in.p.norm) << ";chunk_rows=" << in.p.chunk_rows
    << ";token_index=" << in.token_index << ";backend=" << in.backend;
  // Maps from before the per-neuron statistics lack their datasets: --resume refuses them here.
  o << ";stats=entropy,margin";
  if (v2) o << ";experts=" << in.experts << ";groups=" << in.groups;
  return o.str();
}

std::string fingerprint_difference(const std::string& theirs, const std::string& ours) {
  auto items = [](const std::string& s) {
    std::vector<std::string> v;
    std::stringstream in(s);
    for (std::string x; std::getline(in, x, ';');) v.push_back(x);
    return v;
  };
  const std::vector<std::string> a = items(theirs), b = items(ours);
  for (size_t i = 0; i < std::max(a.size(), b.size()); ++i) {
    const std::string x = i < a.size() ? a[i] : "(none)", y = i < b.size() ? b[i] : "(none)";
    if (x != y) return "theirs " + x + ", ours " + y;
  }
  return "the same";
}

}  // namespace fi
