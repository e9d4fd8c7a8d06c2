// MapReader: the read side of map/format.h over the h5/ wrappers.
#include "map/map_reader.h"

#include <algorithm>

#include <cmath>

#include "common/error.h"
#include "decode/chunk_result.h"
#include "decode/token_index.h"
#include "map/format.h"

namespace fi {

MapReader::MapReader(const std::string& path) : path_(path) {
  h5::silence_errors();
  f_ = h5::open_file(path, false);
}

std::unique_ptr<MapReader> MapReader::try_open(const std::string& path) {
  h5::silence_errors();
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) return nullptr;
  return std::unique_ptr<MapReader>(new MapReader(path, h5::Handle(id, H5Fclose, path)));
}

void MapReader::require_map(bool complete) const {
  using namespace map;
  if (!h5::has_attr(f_, kAttrFormat) || h5::read_attr_string(f_, kAttrFormat) != kFormat)
    FI_FAIL(path_ + ": not a flashinterp map");
  const int64_t v = h5::has_attr(f_, kAttrFormatVersion) ? h5::read_attr_int(f_, kAttrFormatVersion) : -1;
  if (v != kFormatVersionDense && v != kFormatVersionMoe)
    FI_FAIL(path_ + ": map format_version " + std::to_string(v) + ", this flashinterp reads " +
            std::to_string(kFormatVersionDense) + " and " + std::to_string(kFormatVersionMoe));
  if (complete && (!h5::has_attr(f_, kAttrComplete) || h5::read_attr_int(f_, kAttrComplete) != 1))
    FI_FAIL(path_ + ": the map is incomplete (complete = 0)");
}

int64_t MapReader::format_version() const {
  return h5::has_attr(f_, map::kAttrFormatVersion) ? h5::read_attr_int(f_, map::kAttrFormatVersion) : -1;
}

bool MapReader::has_fingerprint() const { return h5::has_attr(f_, map::kAttrFingerprint); }
std::string MapReader::fingerprint() const { return h5::read_attr_string(f_, map::kAttrFingerprint); }

std::vector<int64_t> MapReader::layers(const std::string& matrix) const {
  if (!h5::exists(f_, "/" + matrix)) FI_FAIL(path_ + ": the map has no '" + matrix + "' matrix");
  h5::Handle g(H5Gopen2(f_, matrix.c_str(), H5P_DEFAULT), H5Gclose, path_ + ": cannot open /" + matrix);
  if (!h5::has_attr(g, map::kAttrLayers)) FI_FAIL(path_ + ": /" + matrix + " has no layers attribute");
  return h5::read_attr_ints(g, map::kAttrLayers);
}

std::vector<uint8_t> MapReader::done(const std::string& matrix) const {
  return h5::read_u8(f_, "/" + matrix + "/" + map::kDone);
}

std::vector<uint8_t> MapReader::index_included(const std::string& group) const {
  const std::string v2 = "/" + group + "/" + map::kTiIncluded;  // version 2: in the group itself
  if (h5::exists(f_, v2)) return h5::read_u8(f_, v2);
  return h5::read_u8(f_, "/" + group + "/" + map::kTokenIndex + "/" + map::kTiIncluded);
}

void MapReader::read_token_index(const std::string& matrix, TokenIndex& ti, const TiKey& key) const {
  const std::string v2 = std::string("/") + map::kTokenIndex + "/" + matrix + "/";
  const bool packed = h5::exists(f_, std::string("/") + map::kTokenIndex + "/" + matrix);
  const std::string g = packed ? v2 : "/" + matrix + "/" + map::kTokenIndex + "/";
  auto read = [&](const char* name, hid_t type, void* dst) {
    h5::Handle ds = h5::open_dataset(f_, g + name);
    FI_CHECK(h5::dataset_dims(ds) == (std::vector<hsize_t>{hsize_t(ti.vocab), hsize_t(ti.m)}),
             path_ + ": " + g + name + " does not have the shape [vocab, M] of this run");
    h5::read_slab(ds, type, {}, {}, dst);
  };
  read(map::kTiLayer, H5T_NATIVE_INT32, ti.layer.data());
  read(map::kTiNeuron, H5T_NATIVE_INT32, ti.neuron.data());
  read(map::kTiLogp, H5T_NATIVE_DOUBLE, ti.logp.data());
  std::vector<int8_t> group(packed ? ti.layer.size() : 0);
  std::vector<int32_t> expert(group.size());
  if (packed) {
    read(map::kTiGroup, H5T_NATIVE_INT8, group.data());
    read(map::kTiExpert, H5T_NATIVE_INT32, expert.data());
  }
  for (size_t i = 0; i < ti.layer.size(); ++i) {
    // A slot never written holds the fill value 0 everywhere (group 0 = dense, expert 0 would
    // be a routed entry's: both empty); one that names no real group is dropped as damaged.
    const bool never = ti.layer[i] == 0 && ti.neuron[i] == 0 && ti.logp[i] == 0 && (!packed || expert[i] == 0);
    bool empty = ti.layer[i] < 0 || ti.neuron[i] < 0 || never;
    if (packed && !empty) {
      const int gr = group[i];
      const bool routed = gr == kTiRouted;
      if (gr < 0 || gr > 2 || (routed ? expert[i] < 0 || expert[i] >= key.experts : expert[i] != -1) ||
          (key.experts == 0 && gr != kTiDense)) {
        ti.layer[i] = int32_t(1) << 30;  // out of range: sane_token_index refuses the index
        continue;
      }
      ti.layer[i] = key.key(ti.layer[i], gr, expert[i]);
    }
    if (empty) {
      ti.layer[i] = ti.neuron[i] = -1;
      ti.logp[i] = -INFINITY;
    }
  }
  ti.refresh_worst();
}

std::vector<uint8_t> MapReader::sane_chunks(const std::string& group, int64_t vocab,
                                            int64_t chunk_rows) const {
  const std::string g = "/" + group + "/";
  h5::Handle lse = h5::open_dataset(f_, g + kChunkFields[3].name);  // logsumexp [L, N] or [L, E, N]
  const std::vector<hsize_t> ld = h5::dataset_dims(lse);
  FI_CHECK(ld.size() == 2 || ld.size() == 3, path_ + ": " + g + "logsumexp is not 2-D or 3-D");
  // One read per layer: S slices (1, or the experts) of N neurons.
  const hsize_t L = ld[0], S = ld.size() == 3 ? ld[1] : 1, N = ld.back();
  const int64_t C = (int64_t(N) + chunk_rows - 1) / chunk_rows;
  std::vector<uint8_t> ok(size_t(L * S) * size_t(C), 1);
  // x: the index of a neuron within the layer's [S, N] block
  auto bad = [&](hsize_t l, hsize_t x) {
    ok[size_t(l * S + x / N) * size_t(C) + size_t(int64_t(x % N) / chunk_rows)] = 0;
  };
  auto layer_slab = [&](hsize_t l, hsize_t k, std::vector<hsize_t>* start, std::vector<hsize_t>* count) {
    *start = {l};
    *count = {1};
    if (ld.size() == 3) start->push_back(0), count->push_back(S);
    start->push_back(0), count->push_back(N);
    if (k > 0) start->push_back(0), count->push_back(k);
  };
  std::vector<hsize_t> start, count;
  for (hsize_t l = 0; l < L; ++l) {
    std::vector<float> v(S * N);
    layer_slab(l, 0, &start, &count);
    h5::read_slab(lse, H5T_NATIVE_FLOAT, start, count, v.data());
    for (hsize_t n = 0; n < S * N; ++n)
      if (!std::isfinite(v[n])) bad(l, n);
    for (int i : {0, 2, 4}) {  // top_ids, top_probs, bottom_ids
      const std::string name = g + kChunkFields[i].name;
      if (!h5::exists(f_, name)) continue;
      h5::Handle d = h5::open_dataset(f_, name);
      const hsize_t K = h5::dataset_dims(d).back();
      if (K == 0) continue;
      layer_slab(l, K, &start, &count);
      if (kChunkFields[i].is_int) {
        std::vector<int32_t> ids(size_t(S * N * K));
        h5::read_slab(d, H5T_NATIVE_INT32, start, count, ids.data());
        for (size_t x = 0; x < ids.size(); ++x)
          if (ids[x] < -1 || ids[x] >= vocab) bad(l, x / K);
      } else {
        std::vector<float> p(size_t(S * N * K));
        h5::read_slab(d, H5T_NATIVE_FLOAT, start, count, p.data());
        for (size_t x = 0; x < p.size(); ++x)
          if (!(p[x] >= 0.f && p[x] <= 1.f)) bad(l, x / K);
      }
    }
  }
  return ok;
}

bool MapReader::sane_token_index(const TokenIndex& ti, const TiKey& key, int64_t num_layers,
                                 const int64_t neurons[3]) {
  for (size_t i = 0; i < ti.layer.size(); ++i) {
    if (ti.layer[i] < 0) continue;  // empty
    int32_t layer = 0, expert = 0;
    int8_t group = 0;
    key.split(ti.layer[i], &layer, &group, &expert);
    if (layer >= num_layers || ti.neuron[i] < 0 || ti.neuron[i] >= neurons[group] || !(ti.logp[i] <= 0))
      return false;
  }
  return true;
}

int32_t MapReader::top_token(const std::string& group, int64_t layer, int64_t neuron, int64_t expert) const {
  const std::vector<int64_t> ls = layers(group);
  const auto li = std::find(ls.begin(), ls.end(), layer);
  if (li == ls.end()) FI_FAIL(path_ + ": the map has no layer " + std::to_string(layer) + " in /" + group);
  std::vector<hsize_t> at = {hsize_t(li - ls.begin())};
  const bool routed = group.rfind("moe/", 0) == 0;
  if (routed) {  // the expert's index along axis 1
    h5::Handle g(H5Gopen2(f_, group.c_str(), H5P_DEFAULT), H5Gclose, path_ + ": cannot open /" + group);
    const std::vector<int64_t> es = h5::has_attr(g, map::kAttrExperts) ? h5::read_attr_ints(g, map::kAttrExperts)
                                                                       : std::vector<int64_t>{};
    const auto ei = std::find(es.begin(), es.end(), expert);
    if (ei == es.end()) FI_FAIL(path_ + ": the map has no expert " + std::to_string(expert) + " in /" + group);
    at.push_back(hsize_t(ei - es.begin()));
  }
  const std::string name = "/" + group + "/" + kChunkFields[0].name;  // top_ids
  h5::Handle d = h5::open_dataset(f_, name);
  const std::vector<hsize_t> dims = h5::dataset_dims(d);
  if (dims.size() != at.size() + 2) FI_FAIL(path_ + ": " + name + " is not " + std::to_string(at.size() + 2) + "-D");
  if (neuron < 0 || hsize_t(neuron) >= dims[at.size()] || dims.back() == 0)
    FI_FAIL(path_ + ": neuron " + std::to_string(neuron) + " is not in " + name);
  at.push_back(hsize_t(neuron));
  at.push_back(0);
  int32_t id = -1;
  h5::read_slab(d, H5T_NATIVE_INT32, at, std::vector<hsize_t>(at.size(), 1), &id);
  return id;
}

}  // namespace fi
